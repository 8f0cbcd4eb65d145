"""The inputs of one size: two fp32 softmax rows and their copies in each framework, made once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def softmax_rows(rows: int, n: int, seed: int) -> np.ndarray:
    """``[rows, n]`` float32 rows of ``softmax(2·z)``, ``z`` standard normal (computed in place)."""
    x = np.random.default_rng(seed).standard_normal((rows, n), dtype=np.float32)
    x *= np.float32(2.0)
    x -= x.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x


class Inputs:
    """The two distributions of one size and their copies in each framework, made once and shared.

    ``t`` (y_true) and ``p`` (y_pred) are NumPy arrays; ``log_p`` is ``log p`` for the peers that
    take log-probabilities. Torch tensors share the NumPy memory; JAX and TensorFlow hold copies.
    """

    def __init__(self, rows: int, n: int, seed: int) -> None:
        self.shape = (rows, n)
        self.t = softmax_rows(rows, n, seed)
        self.p = softmax_rows(rows, n, seed + 1)
        self._cache: dict[tuple[str, str], Any] = {}

    def numpy(self, name: str) -> np.ndarray:
        if name == "log_p":
            return self._cached("numpy", name, lambda: np.log(self.p))
        return getattr(self, name)

    def torch(self, name: str) -> Any:
        import torch

        return self._cached("torch", name, lambda: torch.from_numpy(self.numpy(name)))

    def torch_leaf(self, name: str) -> Any:
        """A new tensor (sharing the NumPy memory) that requires a gradient."""
        import torch

        return torch.from_numpy(self.numpy(name)).requires_grad_()

    def jax(self, name: str) -> Any:
        import jax

        return self._cached("jax", name, lambda: jax.device_put(self.numpy(name)).block_until_ready())

    def tf(self, name: str) -> Any:
        import tensorflow as tf

        return self._cached("tf", name, lambda: tf.constant(self.numpy(name)))

    def _cached(self, framework: str, name: str, make: Callable[[], Any]) -> Any:
        key = (framework, name)
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]
