"""Fused Triton kernels for torch tensors on a GPU: value and gradient w.r.t. ``y_pred`` in one launch.

:func:`fused_rows_triton` has the contract of :func:`kldiv.kernels.numba_cpu.fused_rows`; the kernel
(:mod:`.kernel`) compiles the formulas of :mod:`kldiv.core.grads` and the launcher (:mod:`.launcher`)
decides tile sizes per call. Importing this package imports torch and triton; ``import kldiv`` never
does (:mod:`kldiv.kernels.dispatch` loads it on first use). Under ``TRITON_INTERPRET=1`` (set before
triton is imported) the kernel runs on CPU tensors through Triton's interpreter — how CI tests it.
"""

from __future__ import annotations

from .launcher import fused_rows_triton, launch_config

__all__ = ["fused_rows_triton", "launch_config"]
