"""One test body, every array library: converters and type checks shared by ``tests/core``."""

from __future__ import annotations

import array_api_strict
import jax
import jax.numpy as jnp
import numpy as np
import torch

BACKENDS = ("numpy", "torch", "jax", "array_api_strict")


def to_backend(backend: str, x: object, dtype: str = "float32"):
    """``x`` as an array of ``backend`` in ``dtype`` (rounded once from float64)."""
    values = np.asarray(x, dtype=np.float64)
    if backend == "numpy":
        if dtype == "bfloat16":
            import ml_dtypes

            return values.astype(ml_dtypes.bfloat16)
        return values.astype(dtype)
    if backend == "torch":
        return torch.tensor(values, dtype=getattr(torch, dtype))
    if backend == "jax":
        return jnp.asarray(values, dtype=getattr(jnp, dtype))
    if backend == "array_api_strict":
        return array_api_strict.asarray(values.astype(dtype))
    raise ValueError(backend)


def is_backend_array(backend: str, x: object) -> bool:
    """Whether ``x`` is an array (or NumPy scalar) of ``backend``."""
    if backend == "numpy":
        return isinstance(x, (np.ndarray, np.generic))
    if backend == "torch":
        return isinstance(x, torch.Tensor)
    if backend == "jax":
        return isinstance(x, jax.Array)
    return type(x).__module__.startswith("array_api_strict")


def dtype_name(x: object) -> str:
    """``"float32"`` etc. for an array of any backend."""
    return str(x.dtype).rsplit(".", 1)[-1]


def assert_same_pattern(got, want, rtol: float) -> None:
    """``got`` equals ``want``: the same NaN, +inf and −inf entries, the finite ones to ``rtol``."""
    got, want = np.asarray(got), np.asarray(want)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=rtol, atol=1e-30)
