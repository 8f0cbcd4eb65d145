"""Keras' shape fix-ups, on static shapes (``tuple`` of ``int``), written against ``xp``.

* tf_keras ``remove_squeezable_dimensions`` for ``(y_true, y_pred)`` and
  ``squeeze_or_expand_dimensions`` for ``sample_weight`` (``tf_keras/src/utils/losses_utils.py``);
* Keras 3 ``squeeze_or_expand_to_same_rank`` (``keras/src/losses/loss.py``), used for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Array = Any
Namespace = Any


def broadcast_shape(a: Sequence[int | None], b: Sequence[int | None]) -> tuple[int | None, ...] | None:
    """NumPy broadcasting of two shapes, or ``None`` where they do not broadcast.

    A dimension may be ``None`` (unknown, as in TensorFlow graph mode): it is taken to be compatible
    with any size, and the broadcast dimension is unknown too.
    """
    a, b = tuple(a), tuple(b)
    a = (1,) * (len(b) - len(a)) + a
    b = (1,) * (len(a) - len(b)) + b
    result = []
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            result.append(None)
            continue
        if x != y and 1 not in (x, y):
            return None
        result.append(y if x == 1 else x)
    return tuple(result)


def remove_squeezable_dimensions(xp: Namespace, y_true: Array, y_pred: Array) -> tuple[Array, Array]:
    """tf_keras: squeeze a trailing size-1 axis of the input whose rank is larger by exactly one."""
    rank_diff = y_pred.ndim - y_true.ndim
    if rank_diff == 1 and y_pred.shape[-1] == 1:
        y_pred = xp.squeeze(y_pred, axis=-1)
    elif rank_diff == -1 and y_true.shape[-1] == 1:
        y_true = xp.squeeze(y_true, axis=-1)
    return y_true, y_pred


def squeeze_or_expand_weight(xp: Namespace, weight: Array, loss_shape: Sequence[int]) -> Array | None:
    """tf_keras: squeeze a weight one rank above the loss, expand one a rank below.

    Returns ``None`` where tf_keras' ``tf.squeeze`` would fail (the trailing axis is not 1).
    """
    if weight.ndim == 0:
        return weight
    if weight.ndim - len(loss_shape) == 1:
        if weight.shape[-1] != 1:
            return None
        return xp.squeeze(weight, axis=-1)
    if len(loss_shape) - weight.ndim == 1:
        return xp.expand_dims(weight, axis=-1)
    return weight


def squeeze_or_expand_to_same_rank(xp: Namespace, x1: Array, x2: Array) -> tuple[Array, Array]:
    """Keras 3: where ranks differ by one and the larger has a trailing 1, squeeze it — or, when
    the smaller is rank 1, expand the smaller instead."""
    if x1.ndim == x2.ndim + 1 and x1.shape[-1] == 1:
        if x2.ndim == 1:
            x2 = xp.expand_dims(x2, axis=-1)
        else:
            x1 = xp.squeeze(x1, axis=-1)
    if x2.ndim == x1.ndim + 1 and x2.shape[-1] == 1:
        if x1.ndim == 1:
            x1 = xp.expand_dims(x1, axis=-1)
        else:
            x2 = xp.squeeze(x2, axis=-1)
    return x1, x2
