r"""Keras reductions of a per-sample loss ``L`` weighted by ``sample_weight`` ``w``.

Two families, chosen by the spelling of the reduction (the names are in :class:`kldiv.Reduction`):

* **tf_keras** (``"auto"``, ``"none"``, ``"sum"``, ``"sum_over_batch_size"``), the default, as in
  ``tf_keras.src.utils.losses_utils.compute_weighted_loss``: a weight of rank ``rank(L) + 1`` has its
  trailing axis squeezed (it must be 1), a weight of rank ``rank(L) - 1`` gets a trailing axis, then
  ``w`` broadcasts against ``L``.

  ========================  =====================================================
  ``none``                  ``w * L`` (the broadcast product, unreduced)
  ``sum``                   ``sum(w * L)``
  ``sum_over_batch_size``   ``sum(w * L) / size(w * L)``; 0 when ``w * L`` is empty
  ``auto``                  ``sum_over_batch_size``
  ========================  =====================================================

* **Keras 3** (``"mean"``, ``"mean_with_sample_weight"``, ``None``), as in
  ``keras.src.losses.loss.reduce_weighted_values``: ``squeeze_or_expand_to_same_rank(L, w)`` (which
  may also expand ``L``), then ``w * L``; ``"mean"`` divides by ``size(w * L)``,
  ``"mean_with_sample_weight"`` by ``sum(w)`` (``w`` after the rank fix-up, before broadcasting),
  both with ``divide_no_nan``; ``None`` is ``"none"``. Keras 3 returns an empty loss unreduced;
  kldiv returns 0 for every reduction but ``none`` (a scalar, as the contract promises).

Shapes are static Python integers, so every rule here is decided without touching the data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .shapes import broadcast_shape, squeeze_or_expand_to_same_rank, squeeze_or_expand_weight

Array = Any
Namespace = Any

TF_KERAS_REDUCTIONS = ("auto", "none", "sum", "sum_over_batch_size")
KERAS3_REDUCTIONS = ("mean", "mean_with_sample_weight", None)
ALL_REDUCTIONS = (*TF_KERAS_REDUCTIONS, *KERAS3_REDUCTIONS)


def _invalid_weight(weight_shape: Sequence[int], loss_shape: Sequence[int]) -> ValueError:
    return ValueError(
        "Argument `sample_weight`: expected a scalar, a shape of the per-sample loss "
        f"{tuple(loss_shape)} with one trailing axis of size 1 added or removed, or a shape that "
        f"broadcasts to {tuple(loss_shape)}; received shape {tuple(weight_shape)}."
    )


def _divide_no_nan(xp: Namespace, numerator: Array, denominator: Array) -> Array:
    """``numerator / denominator``, 0 where the denominator is 0 (``tf.math.divide_no_nan``)."""
    zero = denominator == 0
    safe = xp.where(zero, xp.ones_like(denominator), denominator)
    return xp.where(zero, xp.zeros_like(numerator), numerator / safe)


def reduce_weighted(
    xp: Namespace, losses: Array, sample_weight: Array | None, reduction: str | None
) -> Array:
    """Weight and reduce a per-sample loss by a Keras reduction (see the module docstring).

    Args:
        xp: the array namespace of ``losses``.
        losses: per-sample loss ``L``, any shape.
        sample_weight: ``None`` or an array of ``losses``' namespace and dtype.
        reduction: one of :data:`ALL_REDUCTIONS`.

    Raises:
        ValueError: ``sample_weight`` cannot be aligned with ``losses``; the message names both shapes.
    """
    keras3 = reduction in KERAS3_REDUCTIONS
    weighted = losses
    if sample_weight is not None:
        loss_shape, weight_shape = tuple(losses.shape), tuple(sample_weight.shape)
        if keras3:
            losses, sample_weight = squeeze_or_expand_to_same_rank(xp, losses, sample_weight)
        else:
            sample_weight = squeeze_or_expand_weight(xp, sample_weight, loss_shape)
        if sample_weight is None or broadcast_shape(losses.shape, sample_weight.shape) is None:
            raise _invalid_weight(weight_shape, loss_shape)
        weighted = losses * sample_weight
    if reduction in ("none", None):
        return weighted
    total = xp.sum(weighted)
    if reduction == "sum":
        return total
    if reduction == "mean_with_sample_weight" and sample_weight is not None:
        return _divide_no_nan(xp, total, xp.sum(sample_weight))
    size = math.prod(weighted.shape)
    return total if size == 0 else total / size
