"""Which implementation serves a call: the fused Numba kernel or the core (the reference).

``backend="auto"`` (default) uses the kernel for NumPy arrays and CPU torch tensors of float32 /
float64 (float16 / bfloat16 are computed as float32) when Numba is installed and the input has at
least :data:`AUTO_THRESHOLD` elements; below that, the call overhead of the kernel outweighs its
gain (measured in ``benchmarks/RESULTS.md``). ``backend="numba"`` asks for the kernel (an error if
it cannot serve the call), ``backend="core"`` for the core.

The kernel does not serve: JAX, TensorFlow and other arrays (they have their own compiled paths),
inputs that only broadcast against each other, a ``y_true`` that needs a gradient, and the
Jensen–Shannon endpoints ``beta ∈ {0, 1}``.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import numpy as np

BACKENDS = ("auto", "core", "numba")
AUTO_THRESHOLD = 1 << 16

_numba_installed: bool | None = None


def numba_installed() -> bool:
    """Whether Numba can be imported (checked once, without importing it)."""
    global _numba_installed
    if _numba_installed is None:
        _numba_installed = importlib.util.find_spec("numba") is not None
    return _numba_installed


def _array_kind(xp: Any, x: Any) -> str | None:
    """``"numpy"``, ``"torch"`` (CPU tensor) or None (an array the kernel does not serve)."""
    if xp is np:
        return "numpy"
    if getattr(xp, "__name__", "") == "array_api_compat.torch" and x.device.type == "cpu":
        return "torch"
    return None


def unsupported_reason(options: Any, xp: Any, y_true: Any, y_pred: Any) -> str | None:
    """Why the fused kernel cannot serve this call (None when it can)."""
    if _array_kind(xp, y_pred) is None:
        return f"arrays of {getattr(xp, '__name__', xp)} on this device"
    if str(y_pred.dtype).rsplit(".", 1)[-1] not in ("float32", "float64"):
        return f"dtype {y_pred.dtype}"
    if tuple(y_true.shape) != tuple(y_pred.shape):
        return "y_true and y_pred of different (broadcast) shapes"
    if getattr(y_true, "requires_grad", False):
        return "a y_true that requires a gradient"
    if options.beta in (0.0, 1.0):
        return "beta at an endpoint (0 or 1)"
    if not numba_installed():
        return "Numba is not installed (pip install kldiv[numba])"
    return None


def use_kernel(options: Any, xp: Any, y_true: Any, y_pred: Any) -> bool:
    """Decide for one call; raises ``ValueError`` when ``backend="numba"`` cannot be honoured."""
    if options.backend == "core":
        return False
    reason = unsupported_reason(options, xp, y_true, y_pred)
    if options.backend == "numba":
        if reason is not None:
            raise ValueError(
                f"Option `backend`: expected inputs that the Numba kernel serves; received {reason}. "
                "Use backend='auto' or 'core'."
            )
        return True
    return reason is None and math.prod(y_pred.shape) >= AUTO_THRESHOLD
