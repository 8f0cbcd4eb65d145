"""The one decision of a call: which implementation serves it, in which dtype, as how many autograd nodes.

:func:`plan` is the only place that chooses between a fused kernel (Numba on CPU, Triton on CUDA)
and the core; every entry point (the agnostic losses and through them the Keras, tf_keras, PyTorch
and JAX adapters; the chunked and fused-linear losses) describes its inputs as a :class:`Request`
and follows the :class:`Plan` it gets back.

``backend="auto"`` (default) uses a kernel for arrays of float32 / float64 (float16 / bfloat16 are
computed as float32) with at least :data:`AUTO_THRESHOLD` (2¹², 4,096) elements: the Numba kernel for
NumPy arrays and CPU torch tensors when Numba is installed, the Triton kernel for CUDA torch tensors
when Triton is installed. ``benchmarks/auto_threshold.py`` times both paths from 2⁸ to 2²⁰ elements;
the kernel was faster than the core at every size from 200–1,000 elements on NumPy arrays and on
torch tensors, with or without a gradient, on an Intel Xeon (AVX-512) and an AMD EPYC (AVX2)
(``benchmarks/RESULTS.md``, session 13): below 2¹² elements both take a fraction of a millisecond,
and a tiny call keeps the core (no kernel import or compiled-code load for it).
Chunked and fused-linear calls have no threshold: their chunks are large by construction.
``backend="numba"`` / ``"triton"`` asks for that kernel (an error if it cannot serve the call),
``backend="core"`` for the core. ``backend="triton"`` also accepts CPU torch tensors while
``TRITON_INTERPRET=1`` (Triton's interpreter: how the kernel is tested without a GPU).

Neither kernel serves: JAX, TensorFlow and other arrays (they have their own compiled paths),
inputs that only broadcast against each other, a ``y_true`` that needs a gradient, the Jensen–Shannon
endpoints ``beta ∈ {0, 1}``, a dense teacher compared on a top-k support (``topk=``), and any call
while ``torch.compile`` traces (the core is a graph of torch ops; a kernel call would break it).
Nothing here imports Numba, Triton or torch.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from .._namespace import dtype_name

BACKENDS = ("auto", "core", "numba", "triton")
AUTO_THRESHOLD = 1 << 12
_KERNEL_NAMES = {"numba": "Numba", "triton": "Triton"}
_LOW_PRECISION = ("float16", "bfloat16")


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


@dataclasses.dataclass(frozen=True)
class Request:
    """What :func:`plan` needs to know about a call's inputs (no arrays: every entry point can say it).

    Attributes:
        arrays: ``"numpy"``, ``"torch"`` (a CPU tensor), ``"cuda"`` (a CUDA tensor) or None (an array
            no kernel serves: JAX, TensorFlow, other devices).
        dtype: ``y_pred``'s dtype name, before any widening.
        same_dtype: ``y_true`` has ``y_pred``'s dtype.
        same_shape: ``y_true`` and ``y_pred`` have one shape (no broadcasting).
        elements: the number of elements of ``y_pred``.
        y_true_grad: ``y_true`` (the teacher) needs a gradient.
        chunked: a chunked / fused-linear call (no size threshold).
        support: a chunked call comparing a dense teacher on a chosen top-k support (``support=``,
            ``topk=``: :func:`kldiv.core.topk.support_log_probs`), which no kernel computes.
        source: the arrays' library and device, for error messages.
    """

    arrays: str | None
    dtype: str
    same_dtype: bool = True
    same_shape: bool = True
    elements: int = 0
    y_true_grad: bool = False
    chunked: bool = False
    support: bool = False
    source: str = ""


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one call runs.

    Attributes:
        kernel: ``"numba"``, ``"triton"`` or None (the core).
        widen: float16 / bfloat16 inputs are widened to float32 before computing (every path but
            the Triton kernel, which reads them as they are and accumulates in float32).
        gradient_scale: with a torch kernel and a reduction whose gradient is one number known on
            the host, that number: the divergence and its reduction are then one autograd node whose
            kernel gradient is pre-scaled by it. None otherwise (a node per operation).
    """

    kernel: str | None
    widen: bool
    gradient_scale: float | None = None

    @property
    def one_node(self) -> bool:
        return self.gradient_scale is not None


CORE = Plan(kernel=None, widen=True)


def array_kind(xp: Any, x: Any) -> str | None:
    """``"numpy"``, ``"torch"`` (CPU tensor), ``"cuda"`` (CUDA tensor) or None (no kernel serves it)."""
    if xp is np:
        return "numpy"
    if getattr(xp, "__name__", "") == "array_api_compat.torch" and x.device.type in ("cpu", "cuda"):
        return "torch" if x.device.type == "cpu" else "cuda"
    return None


def describe(xp: Any, y_true: Any, y_pred: Any) -> Request:
    """The :class:`Request` of a call on two arrays of namespace ``xp``."""
    device = getattr(getattr(y_pred, "device", None), "type", None)
    return Request(
        arrays=array_kind(xp, y_pred),
        dtype=dtype_name(y_pred.dtype),
        same_dtype=y_true.dtype == y_pred.dtype,
        same_shape=tuple(y_true.shape) == tuple(y_pred.shape),
        elements=0 if None in tuple(y_pred.shape) else math.prod(y_pred.shape),  # None: symbolic
        y_true_grad=bool(getattr(y_true, "requires_grad", False)),
        source=f"{getattr(xp, '__name__', xp)} on {device or 'its device'}",
    )


def _serves_arrays(kernel: str, arrays: str | None) -> bool:
    if kernel == "numba":
        return arrays in ("numpy", "torch")
    return arrays == "cuda" or (arrays == "torch" and triton_interpreter())


def unsupported_reason(options: Any, request: Request, kernel: str) -> str | None:
    """Why the fused ``kernel`` (``"numba"`` or ``"triton"``) cannot serve this call (None when it can)."""
    if not _serves_arrays(kernel, request.arrays):
        return f"arrays of {request.source or request.arrays}"
    computed = request.dtype
    if computed in _LOW_PRECISION and kernel == "numba":
        computed = "float32"  # widened first; only Triton reads the narrow dtypes
    if computed not in ("float32", "float64", *(_LOW_PRECISION if kernel == "triton" else ())):
        return f"dtype {request.dtype}"
    if not request.same_dtype:
        return "y_true and y_pred of different dtypes"
    if not request.same_shape:
        return "y_true and y_pred of different (broadcast) shapes"
    if request.y_true_grad:
        return "a y_true that requires a gradient"
    if options.beta in (0.0, 1.0):
        return "beta at an endpoint (0 or 1)"
    if request.support:
        return "a dense teacher compared on a top-k support (the topk option)"
    if not _installed(kernel):
        return f"{_KERNEL_NAMES[kernel]} is not installed (pip install kldiv[{kernel}])"
    return None


def _kernel(options: Any, request: Request) -> str | None:
    if options.backend == "core":
        return None
    if options.backend in _KERNEL_NAMES:
        reason = unsupported_reason(options, request, options.backend)
        if reason is not None:
            raise ValueError(
                f"Option `backend`: expected inputs that the {_KERNEL_NAMES[options.backend]} kernel "
                f"serves; received {reason}. Use backend='auto' or 'core'."
            )
        return options.backend
    if _dynamo_tracing():
        return None
    kernel = "triton" if request.arrays == "cuda" else "numba"
    if unsupported_reason(options, request, kernel) is not None:
        return None
    if request.chunked or request.elements >= AUTO_THRESHOLD:
        return kernel
    return None


def plan(
    options: Any, request: Request, reduction_gradient: Callable[[], float | None] | None = None
) -> Plan:
    """Decide one call; raises ``ValueError`` when ``backend="numba"`` / ``"triton"`` cannot serve it.

    ``reduction_gradient`` returns ``∂ reduction / ∂ L_i`` when it is one number known on the host
    (:func:`kldiv.core.reductions.host_gradient`); it is asked only where a torch kernel could use
    it for a one-node graph.
    """
    kernel = _kernel(options, request)
    if kernel is None:
        return CORE
    narrow = kernel == "triton" and request.dtype in _LOW_PRECISION and not options.validate
    scale = None
    if request.arrays != "numpy" and not request.chunked and reduction_gradient is not None:
        scale = reduction_gradient()
    return Plan(kernel=kernel, widen=not narrow, gradient_scale=scale)


def _dynamo_tracing() -> bool:
    """True while ``torch.compile`` traces (checked only when torch is already imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and bool(torch.compiler.is_compiling())
