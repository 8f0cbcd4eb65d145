"""Evaluation of a prepared call by its plan: the core's formula or a fused kernel.

The second half of every loss call (the first is :func:`kldiv._prepare.prepare`, the decision
:func:`kldiv.kernels.dispatch.plan`). Both branches give the same per-sample values: 0 at masked
positions (with exactly 0 gradient there), multiplied by :attr:`kldiv.Options.loss_scale`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _validate
from ._prepare import Prepared
from .core import masking
from .core.divergences import distributions, divergence_of
from .kernels.dispatch import Plan
from .options import Options

Array = Any


def per_sample(options: Options, prepared: Prepared, plan: Plan, stats: Any = None) -> Array:
    """The per-sample divergence of ``prepared``, in the compute dtype. ``stats``: a collector of the
    call's statistics (``return_stats``, :class:`kldiv.torch._stats.Collector`) or None."""
    if plan.kernel is not None:
        return _kernel(options, prepared, plan, 1.0, None, stats)
    if prepared.xp is np:
        _check_unit_interval(options, prepared)
        # Exact mode's documented +inf (p = 0 < t) and all -inf logit rows are results, not
        # accidents: keep NumPy from warning about the log(0) behind them.
        with np.errstate(divide="ignore", invalid="ignore"):
            return _core(options, prepared, stats)
    return _core(options, prepared, stats)


def reduced(
    options: Options, prepared: Prepared, plan: Plan, reduce: Callable[[Array], Array], stats: Any = None
) -> Array:
    """``reduce(per-sample divergence)``; one autograd node when the plan says so (the kernel's
    gradient, pre-scaled by the reduction's host-known gradient, is handed to autograd as it is)."""
    if not plan.one_node:
        return reduce(per_sample(options, prepared, plan, stats))
    return _kernel(options, prepared, plan, plan.gradient_scale, reduce, stats)


def _kernel(
    options: Options,
    prepared: Prepared,
    plan: Plan,
    scale: float,
    reduce: Callable[[Array], Array] | None,
    stats: Any,
) -> Array:
    """The plan's kernel on ``prepared`` (with ``reduce``: as one autograd node); the kernel hands its
    per-sample values to ``stats``, which derives the other statistics from the inputs."""
    from .kernels import fused

    record = None if stats is None else functools.partial(stats.per_token, prepared)
    if prepared.xp is np:  # the kernel flags values outside [0, 1] while each row is in cache
        values = fused.per_sample_numpy(
            options, prepared.y_true, prepared.y_pred, prepared.keep, prepared.axis, record
        )
    else:
        values = fused.per_sample_torch(
            options,
            prepared.y_true,
            prepared.y_pred,
            prepared.keep,
            prepared.axis,
            scale,
            reduce,
            kernel=plan.kernel,
            record=record,
        )
    if stats is not None:
        stats.from_inputs(options, prepared)
    return values


def _check_unit_interval(options: Options, prepared: Prepared) -> None:
    """NumPy inputs given as probabilities: warn about kept values outside ``[0, 1]``
    (:func:`kldiv._validate.warn_outside_unit_interval`; ``validate=True`` has raised already).
    Framework tensors are not inspected: that would wait for their device."""
    if options.validate:
        return
    outside = []
    for argument, x, fmt in (
        ("y_true", prepared.y_true, options.y_true_format),
        ("y_pred", prepared.y_pred, options.y_pred_format),
    ):
        if fmt != "probs" or x.size == 0:
            continue
        if prepared.keep is not None:
            keep = np.expand_dims(prepared.keep, prepared.axis)
            x = np.where(np.broadcast_to(keep, np.broadcast_shapes(keep.shape, x.shape)), x, 0.5)
        with np.errstate(invalid="ignore"):
            if np.nanmin(x, initial=0.5) < 0 or np.nanmax(x, initial=0.5) > 1:
                outside.append(argument)
    if outside:
        _validate.warn_outside_unit_interval(outside, options.epsilon)


def _core(options: Options, prepared: Prepared, stats: Any = None) -> Array:
    xp, y_true, y_pred, keep = prepared.xp, prepared.y_true, prepared.y_pred, prepared.keep
    if keep is not None:
        # Masked rows of both inputs become a safe constant first: no NaN in the backward pass.
        y_true = masking.mask_input(xp, y_true, options.y_true_format, keep, prepared.axis)
        y_pred = masking.mask_input(xp, y_pred, options.y_pred_format, keep, prepared.axis)
    arguments = options.formula_arguments()
    kind = {name: arguments.pop(name) for name in ("direction", "beta")}
    maps = {"true_map": options.teacher_map, "pred_map": options.student_map}
    # core.divergences.divergence in its two steps, so that the statistics read the distributions
    p, q = distributions(xp, y_true, y_pred, axis=prepared.axis, **maps, **arguments)
    losses = divergence_of(xp, p, q, axis=prepared.axis, **kind)
    if stats is not None:
        # The statistics are exact-mode quantities: from the loss's own distributions in exact
        # mode, from the inputs where the loss applies the Keras clip.
        if options.epsilon == 0:
            stats.from_distributions(prepared, p, q)
        else:
            stats.from_inputs(options, prepared)
        stats.per_token(prepared, losses)
    if options.loss_scale != 1.0:
        losses = losses * options.loss_scale
    if keep is not None:
        losses = masking.mask_losses(xp, losses, keep)
    return losses
