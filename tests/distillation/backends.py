"""One test body, every array library: converters to each backend and a gradient helper."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch

BACKENDS = ("numpy", "torch", "jax")


def to_backend(backend: str, x: np.ndarray, dtype: str = "float64"):
    """``x`` as an array of ``backend`` (JAX runs in float32 unless x64 is enabled)."""
    if backend == "numpy":
        return np.asarray(x, dtype=dtype)
    if backend == "torch":
        return torch.tensor(np.asarray(x, dtype=np.float64), dtype=getattr(torch, dtype))
    if dtype == "float64" and not jax.config.jax_enable_x64:
        dtype = "float32"
    return jnp.asarray(np.asarray(x, dtype=np.float64), dtype=getattr(jnp, dtype))


def to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().numpy() if x.dtype == torch.bfloat16 else x.detach().numpy()
    return np.asarray(x, dtype=np.float64) if x.dtype == jnp.bfloat16 else np.asarray(x)


def gradient(backend: str, scalar_fn: Callable, x: np.ndarray) -> np.ndarray:
    """d scalar_fn / dx through the backend's autograd (torch and jax only)."""
    if backend == "torch":
        leaf = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        scalar_fn(leaf).backward()
        return leaf.grad.numpy()
    return np.asarray(jax.grad(scalar_fn)(to_backend("jax", x)))
