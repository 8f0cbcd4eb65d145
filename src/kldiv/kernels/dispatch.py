"""Which implementation serves a call: a fused kernel (Numba on CPU, Triton on CUDA) or the core.

``backend="auto"`` (default) uses a kernel for arrays of float32 / float64 (float16 / bfloat16 are
computed as float32) with at least :data:`AUTO_THRESHOLD_NUMPY` (NumPy, 2¹⁵),
:data:`AUTO_THRESHOLD_GRAD` (a torch ``y_pred`` that requires a gradient, 2¹³) or
:data:`AUTO_THRESHOLD` (other torch tensors, 2¹⁷) elements: the Numba kernel for NumPy arrays and CPU
torch tensors when Numba is installed, the Triton kernel for CUDA torch tensors when Triton is
installed. Below the threshold, the call overhead of a kernel outweighs its gain:
``benchmarks/auto_threshold.py`` times both paths from 2⁸ to 2²⁰ elements; the kernel wins from
16 K elements on NumPy arrays, from 4–16 K on torch tensors with a gradient (one autograd node
against the core's six) and from 65–262 K on torch tensors without one (``benchmarks/RESULTS.md``).
``backend="numba"`` / ``"triton"`` asks for that kernel (an error if it cannot serve the call),
``backend="core"`` for the core. ``backend="triton"`` also accepts CPU torch tensors while
``TRITON_INTERPRET=1`` (Triton's interpreter: how the kernel is tested without a GPU).

Neither kernel serves: JAX, TensorFlow and other arrays (they have their own compiled paths),
inputs that only broadcast against each other, a ``y_true`` that needs a gradient, and the
Jensen–Shannon endpoints ``beta ∈ {0, 1}``. Nothing here imports Numba, Triton or torch.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import sys
from typing import Any

import numpy as np

from .._namespace import dtype_name

BACKENDS = ("auto", "core", "numba", "triton")
AUTO_THRESHOLD = 1 << 17
AUTO_THRESHOLD_GRAD = 1 << 13
AUTO_THRESHOLD_NUMPY = 1 << 15
_KERNEL_NAMES = {"numba": "Numba", "triton": "Triton"}


@functools.cache
def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def numba_installed() -> bool:
    """Whether Numba can be imported (checked once, without importing it)."""
    return _installed("numba")


def triton_installed() -> bool:
    """Whether Triton can be imported (checked once, without importing it)."""
    return _installed("triton")


def triton_interpreter() -> bool:
    """Whether ``TRITON_INTERPRET`` asks Triton to run kernels on the CPU (read per call)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def _array_kind(xp: Any, x: Any) -> str | None:
    """``"numpy"``, ``"torch"`` (CPU tensor), ``"cuda"`` (CUDA tensor) or None (no kernel serves it)."""
    if xp is np:
        return "numpy"
    if getattr(xp, "__name__", "") == "array_api_compat.torch" and x.device.type in ("cpu", "cuda"):
        return "torch" if x.device.type == "cpu" else "cuda"
    return None


def kernel_for(xp: Any, x: Any) -> str:
    """The kernel ``backend="auto"`` considers: ``"triton"`` for CUDA tensors, else ``"numba"``."""
    return "triton" if _array_kind(xp, x) == "cuda" else "numba"


def _serves_arrays(kernel: str, kind: str | None) -> bool:
    if kernel == "numba":
        return kind in ("numpy", "torch")
    return kind == "cuda" or (kind == "torch" and triton_interpreter())


def unsupported_reason(options: Any, xp: Any, y_true: Any, y_pred: Any, kernel: str = "numba") -> str | None:
    """Why the fused ``kernel`` (``"numba"`` or ``"triton"``) cannot serve this call (None when it can)."""
    if not _serves_arrays(kernel, _array_kind(xp, y_pred)):
        device = getattr(getattr(y_pred, "device", None), "type", None)
        return f"arrays of {getattr(xp, '__name__', xp)} on {device or 'this device'}"
    narrow_ok = kernel == "triton" and dtype_name(y_pred.dtype) in ("float16", "bfloat16")
    if dtype_name(y_pred.dtype) not in ("float32", "float64") and not narrow_ok:
        return f"dtype {y_pred.dtype}"
    if y_true.dtype != y_pred.dtype:
        return f"y_true of dtype {y_true.dtype} and y_pred of dtype {y_pred.dtype}"
    if tuple(y_true.shape) != tuple(y_pred.shape):
        return "y_true and y_pred of different (broadcast) shapes"
    if getattr(y_true, "requires_grad", False):
        return "a y_true that requires a gradient"
    if options.beta in (0.0, 1.0):
        return "beta at an endpoint (0 or 1)"
    if not _installed(kernel):
        return f"{_KERNEL_NAMES[kernel]} is not installed (pip install kldiv[{kernel}])"
    return None


def reads_low_precision(options: Any, xp: Any, y_true: Any, y_pred: Any) -> bool:
    """Whether float16 / bfloat16 inputs may go to the Triton kernel as they are (CUDA tensors, or
    ``backend="triton"`` under the interpreter), so that widening them can wait for the decision."""
    if options.backend not in ("auto", "triton") or y_true.dtype != y_pred.dtype:
        return False
    if dtype_name(y_pred.dtype) not in ("float16", "bfloat16"):
        return False
    kind = _array_kind(xp, y_pred)  # CUDA, or CPU tensors that backend="triton" sends to the interpreter
    return kind == "cuda" or (options.backend == "triton" and _serves_arrays("triton", kind))


def use_kernel(options: Any, xp: Any, y_true: Any, y_pred: Any) -> bool:
    """Decide for one call; raises ``ValueError`` when ``backend="numba"`` / ``"triton"`` cannot be
    honoured. Which kernel runs follows from the arrays (:func:`kldiv.kernels.fused.per_sample_torch`)."""
    if options.backend == "core":
        return False
    if options.backend in _KERNEL_NAMES:
        reason = unsupported_reason(options, xp, y_true, y_pred, options.backend)
        if reason is not None:
            raise ValueError(
                f"Option `backend`: expected inputs that the {_KERNEL_NAMES[options.backend]} kernel serves; "
                f"received {reason}. Use backend='auto' or 'core'."
            )
        return True
    if _dynamo_tracing():
        return False  # torch.compile: the core is a graph of torch ops; a kernel call would break it
    reason = unsupported_reason(options, xp, y_true, y_pred, kernel_for(xp, y_pred))
    return reason is None and math.prod(y_pred.shape) >= auto_threshold(xp, y_pred)


def auto_threshold(xp: Any, y_pred: Any) -> int:
    """The fewest elements from which ``backend="auto"`` runs a kernel for this ``y_pred``."""
    if xp is np:
        return AUTO_THRESHOLD_NUMPY
    torch = sys.modules.get("torch")
    if getattr(y_pred, "requires_grad", False) and torch is not None and torch.is_grad_enabled():
        return AUTO_THRESHOLD_GRAD
    return AUTO_THRESHOLD


def _dynamo_tracing() -> bool:
    """True while ``torch.compile`` traces (checked only when torch is already imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and bool(torch.compiler.is_compiling())
