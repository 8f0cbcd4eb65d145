"""The array namespace ``xp`` that kldiv's core uses for TensorFlow tensors (eager and graph mode).

TensorFlow has no array-API namespace, so this module exposes exactly the primitives the core
calls, each one TensorFlow op (or the op Keras' TensorFlow backend uses for it). It is imported by
:mod:`kldiv._namespace` only for a tensor of an already imported TensorFlow. Shapes may hold
``None`` (unknown dimensions inside ``tf.function``): :func:`broadcast_to` then fills an unknown
target dimension from the input's own static size, and raises where that cannot be known.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

bool = tf.bool
int32 = tf.int32
float16, bfloat16, float32, float64 = tf.float16, tf.bfloat16, tf.float32, tf.float64

abs = tf.math.abs
exp = tf.math.exp
log = tf.math.log
tanh = tf.math.tanh
isfinite = tf.math.is_finite
isnan = tf.math.is_nan
logical_and = tf.math.logical_and
zeros_like = tf.zeros_like
ones_like = tf.ones_like
where = tf.where
expand_dims = tf.expand_dims

Tensor = Any


def asarray(x: Any, dtype: Any = None, device: str | None = None) -> Tensor:
    if device:
        with tf.device(device):
            return tf.convert_to_tensor(x, dtype=dtype)
    return tf.convert_to_tensor(x, dtype=dtype)


def standardize(x: Any) -> Tensor:
    """A ``tf.Tensor`` for a tensor or a ``tf.Variable`` (read inside the caller's tape)."""
    return x if isinstance(x, tf.Tensor) else tf.convert_to_tensor(x)


def astype(x: Tensor, dtype: Any) -> Tensor:
    return tf.cast(x, dtype)


def isdtype(dtype: Any, kind: str) -> bool:
    if kind != "real floating":
        raise ValueError(f"kldiv._tf_namespace.isdtype: unsupported kind {kind!r}")
    return tf.as_dtype(dtype).is_floating


def clip(x: Tensor, min: float, max: float) -> Tensor:
    return tf.clip_by_value(x, tf.cast(min, x.dtype), tf.cast(max, x.dtype))


def sum(x: Tensor, axis: int | None = None, keepdims: bool = False) -> Tensor:
    return tf.math.reduce_sum(x, axis=axis, keepdims=keepdims)


def max(x: Tensor, axis: int | None = None, keepdims: bool = False) -> Tensor:
    return tf.math.reduce_max(x, axis=axis, keepdims=keepdims)


def any(x: Tensor) -> Tensor:
    return tf.math.reduce_any(x)


def squeeze(x: Tensor, axis: int) -> Tensor:
    return tf.squeeze(x, axis=axis)


def full_like(x: Tensor, value: float) -> Tensor:
    return tf.fill(tf.shape(x), tf.cast(value, x.dtype))


def logaddexp(x1: Tensor, x2: Tensor) -> Tensor:
    """``log(exp(x1) + exp(x2))``, stable, ``-inf`` where both are ``-inf`` (as Keras' TF backend)."""
    delta = x1 - x2
    stable = tf.math.maximum(x1, x2) + tf.math.log1p(tf.math.exp(-tf.math.abs(delta)))
    return tf.where(tf.math.is_nan(delta), x1 + x2, stable)


def broadcast_to(x: Tensor, shape: Sequence[int | None]) -> Tensor:
    """``tf.broadcast_to``; an unknown target dimension takes ``x``'s own size when that is known
    and not 1 (the only size it can have), else this raises ``ValueError``."""
    if tuple(x.shape) == tuple(shape):
        return x
    own = (1,) * (len(shape) - x.shape.rank) + tuple(x.shape)
    if builtins.any(d is None and o in (None, 1) for d, o in zip(shape, own, strict=True)):
        raise ValueError(
            f"kldiv cannot broadcast a tensor of shape {tuple(x.shape)} to the partly unknown shape "
            f"{tuple(shape)} inside tf.function; give it the full shape (or a known batch size)."
        )
    return tf.broadcast_to(x, [o if d is None else d for d, o in zip(shape, own, strict=True)])


def broadcast_arrays(x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
    shape = tf.broadcast_dynamic_shape(tf.shape(x1), tf.shape(x2))
    return tf.broadcast_to(x1, shape), tf.broadcast_to(x2, shape)
