"""Session-wide test setup.

TensorFlow and Triton each bundle their own LLVM. Importing TensorFlow first and Triton second in
one process aborts it ("LLVM ERROR: inconsistency in registered CommandLine options"); the other
order works. PyTorch imports Triton lazily (``torch.compile`` → ``torch._dynamo`` →
``has_triton_package``), so a test process that has already loaded TensorFlow for the Keras
conformance tests would crash at its first ``torch.compile``. Loading Triton before anything else
fixes the order for the whole session.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("triton") is not None:
    import triton  # noqa: F401  (import order matters: see the module docstring)
