"""Run a fused kernel for a prepared call: NumPy directly, torch through ``autograd.Function``.

The kernels work on ``[rows, n]`` views with the distribution axis last; inputs with another
``axis`` are moved (one copy). Per-sample values come back in the compute dtype, shaped like the
core's result, with ``T²`` applied when asked. Which kernel runs is the plan's
(:func:`kldiv.kernels.dispatch.plan`): NumPy arrays always go to the Numba kernel, torch tensors to
the one the plan names; each is imported on first use. Logit maps (soft cap, logit scale) are applied
to the inputs before the kernel (:mod:`kldiv.kernels.torch_function` for tensors, with the chain
rule's factor on the gradient).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np


def per_sample_numpy(
    options: Any,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    keep: Any,
    axis: int,
    record: Callable[[np.ndarray], None] | None = None,
) -> np.ndarray:
    """Per-sample divergence of NumPy arrays (no gradient: NumPy has no autograd); ``record``
    receives a copy of the values before ``T²``."""
    from .numba_cpu import fused_rows

    t, p = _rows_last(y_true, axis), _rows_last(y_pred, axis)
    batch_shape, n = p.shape[:-1], p.shape[-1]
    rows = math.prod(batch_shape)
    keep_rows = None if keep is None else np.broadcast_to(keep, batch_shape).reshape(rows)
    if not options.teacher_map.identity:
        t = np.ascontiguousarray(options.teacher_map.apply(np, t))
    if not options.student_map.identity:
        p = np.ascontiguousarray(options.student_map.apply(np, p))
    outside = np.empty(rows, dtype=np.uint8)
    values, _ = fused_rows(
        t.reshape(rows, n),
        p.reshape(rows, n),
        np.ones(rows),
        keep_rows,
        want_grad=False,
        outside=outside,
        **options.formula_arguments(),
    )
    if not options.validate:  # (validate=True has raised on such values already)
        _warn_outside(options, np.bitwise_or.reduce(outside) if rows else 0)
    if record is not None:
        record(values.reshape(batch_shape).copy())
    values *= options.loss_scale
    return values.astype(p.dtype, copy=False).reshape(batch_shape)


def _rows_last(x: np.ndarray, axis: int) -> np.ndarray:
    """``x`` with ``axis`` moved last, C-contiguous (no copy, and no ``moveaxis``, when it already is)."""
    if axis not in (-1, x.ndim - 1):
        x = np.moveaxis(x, axis, -1)
    return np.ascontiguousarray(x)


def _warn_outside(options: Any, bits: int) -> None:
    """The warning of :func:`kldiv._validate.warn_outside_unit_interval` for a kernel's row flags."""
    from .._validate import warn_outside_unit_interval
    from .numba_cpu import OUTSIDE_PRED, OUTSIDE_TRUE

    outside = [
        argument for argument, bit in (("y_true", OUTSIDE_TRUE), ("y_pred", OUTSIDE_PRED)) if bits & bit
    ]
    if outside:
        warn_outside_unit_interval(outside, options.epsilon)


def per_sample_torch(
    options: Any,
    y_true: Any,
    y_pred: Any,
    keep: Any,
    axis: int,
    grad_scale_hint: float,
    reduce: Callable[[Any], Any] | None = None,
    *,
    kernel: str,
    record: Callable[[Any], None] | None = None,
) -> Any:
    """Per-sample divergence of torch tensors, differentiable w.r.t. ``y_pred``; with ``reduce``,
    ``reduce(per-sample divergence)`` as one autograd node. ``kernel`` (``"numba"`` or ``"triton"``)
    is the plan's (:func:`kldiv.kernels.dispatch.plan`).

    ``grad_scale_hint`` is the gradient each row is expected to receive from the reduction (e.g.
    ``1/rows`` for a mean); the kernel writes the gradient pre-scaled by it, so that on the CPU the
    backward pass returns it untouched when the guess is right (one pass over the data saved). On
    CUDA the backward pass always multiplies by ``upstream / hint`` (checking the guess would
    synchronise with the host). ``reduce`` must be a reduction whose gradient is exactly
    ``grad_scale_hint`` at every row (an unweighted sum or mean); the node's upstream gradient is
    then one scalar and the stored gradient is scaled by it alone. ``record`` receives the per-sample
    values before ``T²``, detached (``return_stats``).
    """
    import torch

    from .torch_function import FusedDivergence, fused_forward

    arguments = (y_true, y_pred, keep, axis, options, kernel, grad_scale_hint, reduce, record)
    if not (y_pred.requires_grad and torch.is_grad_enabled()):  # no gradient: no autograd node
        return fused_forward(None, *arguments)
    return FusedDivergence.apply(*arguments)
