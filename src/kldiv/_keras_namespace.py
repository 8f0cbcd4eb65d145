"""The array namespace ``xp`` that kldiv's core uses for Keras 3 symbolic tensors (``keras.KerasTensor``).

Each primitive the core calls is one ``keras.ops`` function, so the same core program builds a
symbolic graph on every Keras backend (shape inference for functional models and
``compute_output_spec``). Concrete tensors never come here: :mod:`kldiv._namespace` serves them
with their own library's namespace. Keras names dtypes by strings (``"float32"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras import backend as _backend
from keras import ops

from .core.shapes import broadcast_shape

bool = "bool"
int32 = "int32"
float16, bfloat16, float32, float64 = "float16", "bfloat16", "float32", "float64"

abs = ops.abs
any = ops.any
clip = ops.clip
exp = ops.exp
log = ops.log
tanh = ops.tanh
isfinite = ops.isfinite
isnan = ops.isnan
logaddexp = ops.logaddexp
logical_and = ops.logical_and
zeros_like = ops.zeros_like
ones_like = ops.ones_like
full_like = ops.full_like
where = ops.where
expand_dims = ops.expand_dims
squeeze = ops.squeeze
sum = ops.sum
max = ops.max

Tensor = Any


def asarray(x: Any, dtype: Any = None, device: Any = None) -> Tensor:
    return ops.convert_to_tensor(x, dtype=dtype)


def astype(x: Tensor, dtype: Any) -> Tensor:
    return ops.cast(x, dtype)


def isdtype(dtype: Any, kind: str) -> bool:
    if kind != "real floating":
        raise ValueError(f"kldiv._keras_namespace.isdtype: unsupported kind {kind!r}")
    return _backend.is_float_dtype(dtype)


def broadcast_to(x: Tensor, shape: Sequence[int | None]) -> Tensor:
    return x if tuple(x.shape) == tuple(shape) else ops.broadcast_to(x, shape)


def broadcast_arrays(x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
    shape = broadcast_shape(x1.shape, x2.shape)
    return broadcast_to(x1, shape), broadcast_to(x2, shape)
