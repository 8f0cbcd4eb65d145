"""Masks over the per-sample loss: masked positions contribute 0 and receive exactly 0 gradient.

A position is masked out by ``mask == False`` or by ``labels == ignore_index``. Masking the loss
alone is not enough for a NaN-free backward pass (a masked row may hold ``p = 0 < t``, whose
gradient is infinite, and ``0 · inf`` is NaN), so the masked rows of *both inputs* are first replaced
by a constant, safe distribution (all ones in probability space, all zeros in log space), and the
per-sample loss is then set to exactly 0 there.
"""

from __future__ import annotations

from typing import Any

Array = Any
Namespace = Any

SAFE_VALUE = {"probs": 1.0, "log_probs": 0.0, "logits": 0.0}


def combine(xp: Namespace, mask: Array | None, labels: Array | None, ignore_index: int) -> Array | None:
    """The boolean keep-mask from ``mask`` and ``labels != ignore_index`` (None when neither)."""
    keep = None
    if labels is not None:
        keep = labels != ignore_index
    if mask is not None:
        mask = mask if mask.dtype == xp.bool else mask != 0
        keep = mask if keep is None else xp.logical_and(keep, mask)
    return keep


def mask_input(xp: Namespace, x: Array, fmt: str, keep: Array, axis: int) -> Array:
    """``x`` with the masked rows replaced by the safe constant of its format.

    ``keep`` has the per-sample loss shape; ``axis`` is the non-negative distribution axis of ``x``.
    """
    expanded = xp.expand_dims(keep, axis=axis)
    return xp.where(expanded, x, xp.full_like(x, SAFE_VALUE[fmt]))


def mask_losses(xp: Namespace, losses: Array, keep: Array) -> Array:
    """The per-sample loss, exactly 0 where masked."""
    return xp.where(keep, losses, xp.zeros_like(losses))
