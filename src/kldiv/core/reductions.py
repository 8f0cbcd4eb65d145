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
  both with ``divide_no_nan``; ``None`` is ``"none"``. A rank-0 ``w * L`` is returned as is (so
  ``"mean_with_sample_weight"`` does not divide it by ``w``, as in Keras 3). Keras 3 returns an
  empty loss unreduced;
  kldiv returns 0 for every reduction but ``none`` (a scalar, as the contract promises).

* **Distillation** (``"batchmean"``, ``"token_mean"``), with the tf_keras weight rules:
  ``"batchmean"`` is ``sum(w * L) / L.shape[0]`` (PyTorch ``F.kl_div(reduction="batchmean")``: per
  sample of the leading axis, i.e. per *sequence* for ``[batch, tokens, vocab]`` inputs);
  ``"token_mean"`` is ``sum(w * L) / (number of unmasked positions of L)`` (per *token*: Liger's and
  TRL's "batchmean" on flattened tokens), 0 when every position is masked.

A ``mask`` turns the mean reductions into means over the unmasked positions (Keras' masked mean);
``num_items`` replaces the denominator of every mean reduction by a caller-provided global count.
Shapes are static Python integers, so every rule here is decided without touching the data; an
unknown dimension (``None``, TensorFlow graph mode) makes the element count a device value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .shapes import broadcast_shape, squeeze_or_expand_to_same_rank, squeeze_or_expand_weight

if TYPE_CHECKING:
    from ..options import Options

Array = Any
Namespace = Any

TF_KERAS_REDUCTIONS = ("auto", "none", "sum", "sum_over_batch_size")
KERAS3_REDUCTIONS = ("mean", "mean_with_sample_weight", None)
DISTILLATION_REDUCTIONS = ("batchmean", "token_mean")
ALL_REDUCTIONS = (*TF_KERAS_REDUCTIONS, *KERAS3_REDUCTIONS, *DISTILLATION_REDUCTIONS)
MEAN_REDUCTIONS = ("auto", "sum_over_batch_size", "mean", "mean_with_sample_weight", *DISTILLATION_REDUCTIONS)


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


def _count(
    xp: Namespace, mask: Array | None, weighted: Array, shape: tuple[int | None, ...], dtype: Any
) -> Array | int:
    """Number of unmasked positions of ``weighted`` (its size when there is no mask).

    A static Python integer when the shape is known; counted on the device (``sum(ones)``) when a
    dimension is unknown (``None``, TensorFlow graph mode).
    """
    if mask is None:
        if None in shape:
            return xp.sum(xp.astype(xp.ones_like(weighted), dtype))
        return math.prod(shape)
    return xp.sum(xp.astype(xp.broadcast_to(mask, shape), dtype))


def reduce_weighted(
    xp: Namespace,
    losses: Array,
    sample_weight: Array | None,
    reduction: str | None,
    *,
    mask: Array | None = None,
    num_items: Any = None,
) -> Array:
    """Weight and reduce a per-sample loss (see the module docstring and the table in the README).

    Args:
        xp: the array namespace of ``losses``.
        losses: per-sample loss ``L``, any shape, already 0 at masked positions.
        sample_weight: ``None`` or an array of ``losses``' namespace and dtype.
        reduction: one of :data:`ALL_REDUCTIONS`.
        mask: ``None`` or a boolean array broadcastable to ``L`` (True = counted). With a mask the
            mean reductions divide by the number of unmasked positions, as Keras does with masks.
        num_items: a global count (number or scalar array) that replaces the denominator of every
            mean reduction, so that accumulated or data-parallel micro-batches give the gradient
            of one big batch.

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
    if num_items is not None:
        return total / num_items
    shape = tuple(weighted.shape)
    if reduction == "batchmean":
        return total / (shape[0] if shape else 1)
    if reduction == "mean_with_sample_weight" and sample_weight is not None and shape == ():
        # Keras 3's reduce_values returns a rank-0 loss unreduced: w·L, not divided by w.
        return total
    if reduction == "mean_with_sample_weight" and sample_weight is not None:
        if mask is not None:
            sample_weight = xp.where(
                xp.broadcast_to(mask, shape), sample_weight, xp.zeros_like(sample_weight)
            )
        return _divide_no_nan(xp, total, xp.sum(sample_weight))
    count = _count(xp, mask, weighted, shape, total.dtype)
    if isinstance(count, int):
        return total if count == 0 else total / count
    return _divide_no_nan(xp, total, count)


def host_gradient(
    reduction: str | None,
    loss_shape: Sequence[int],
    *,
    has_weight: bool,
    num_items: Any,
    count: Callable[[], int | None],
) -> float | None:
    """``∂ reduction / ∂ L_i`` of an unweighted reduction when it is one number known on the host.

    The gradient of :func:`reduce_weighted` w.r.t. every unmasked per-sample value: 1 for ``"sum"``,
    ``1 / denominator`` for the means (``num_items``, the leading axis for ``"batchmean"``, else the
    number of unmasked positions, which ``count()`` gives or refuses with None, e.g. for a mask on
    a device). None where it is not one host number: a ``sample_weight``, no reduction, or a
    ``num_items`` array.
    """
    if has_weight or reduction in ("none", None):
        return None
    if reduction == "sum":
        return 1.0
    if num_items is not None:
        return 1.0 / num_items if isinstance(num_items, (int, float)) else None
    if reduction == "batchmean":
        return 1.0 / loss_shape[0] if loss_shape and loss_shape[0] else 1.0
    positions = count()
    if positions is None:
        return None
    return 1.0 / positions if positions else 1.0


def token_coefficients(
    xp: Namespace,
    reduction: str,
    keep: Array,
    *,
    sample_weight: Array | None,
    num_items: Any,
    batch_size: int,
    scale: float,
    dtype: Any,
) -> Array:
    """``∂ loss / ∂ L_t`` for every token ``t`` of a flat ``[tokens]`` per-token loss: the reduction's
    gradient, as the chunked and fused-linear paths apply it (``"none"`` gives the per-token factor).

    ``keep · w · scale`` divided as :func:`reduce_weighted` divides: by nothing for ``"none"`` and
    ``"sum"``, by ``num_items`` when given, by ``batch_size`` for ``"batchmean"``, else by the number
    of kept tokens (0 everywhere when none is kept). ``scale`` is :attr:`kldiv.Options.loss_scale`.
    """
    coef = xp.astype(keep, dtype) * scale
    if sample_weight is not None:
        coef = coef * sample_weight
    if reduction in ("none", "sum"):
        return coef
    if num_items is not None:
        return coef / num_items
    if reduction == "batchmean":
        return coef / batch_size
    return _divide_no_nan(xp, coef, xp.sum(xp.astype(keep, dtype)))


def token_weights(
    xp: Namespace,
    options: Options,
    reduction: str,
    tokens: Mapping[str, Any],
    *,
    rows: int,
    batch_size: int,
    dtype: Any,
    device: Any = None,
) -> tuple[Array, Array]:
    """``(keep, coef)`` of a flat ``[tokens]`` loss (the chunked and fused-linear paths): the keep-mask
    from ``labels != options.ignore_index`` and ``mask``, and :func:`token_coefficients` (scaled by
    ``options.loss_scale``) with the weight and ``num_items`` as arrays of ``dtype`` on ``device``.
    ``tokens`` holds the call's ``labels``, ``mask``, ``sample_weight`` and ``num_items``
    (:class:`kldiv.arguments.TokenArguments`).

    Raises:
        ValueError: ``labels`` / ``mask`` / ``sample_weight`` with another number of tokens.
    """
    labels, mask, sample_weight = tokens.get("labels"), tokens.get("mask"), tokens.get("sample_weight")
    num_items = tokens.get("num_items")
    keep = xp.ones(rows, dtype=xp.bool, device=device)
    for argument, value in (("labels", labels), ("mask", mask), ("sample_weight", sample_weight)):
        shape = tuple(getattr(value, "shape", ()))
        if shape and math.prod(shape) not in (1, rows):
            raise ValueError(
                f"Argument `{argument}`: expected {rows} tokens (or one value); received shape {shape}."
            )
    if labels is not None:
        keep = xp.logical_and(keep, xp.reshape(labels, (-1,)) != options.ignore_index)
    if mask is not None:
        keep = xp.logical_and(keep, xp.astype(xp.reshape(mask, (-1,)), xp.bool))
    weight = None
    if sample_weight is not None:
        weight = xp.reshape(xp.asarray(sample_weight, dtype=dtype, device=device), (-1,))
        weight = xp.broadcast_to(weight, (rows,))
    if num_items is not None and not isinstance(num_items, (int, float)):
        num_items = xp.asarray(num_items, dtype=dtype, device=device)
    coef = token_coefficients(
        xp,
        reduction,
        keep,
        sample_weight=weight,
        num_items=num_items,
        batch_size=batch_size,
        scale=options.loss_scale,
        dtype=dtype,
    )
    return keep, coef
