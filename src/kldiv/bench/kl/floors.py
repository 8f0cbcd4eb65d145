"""Memory floors: what reading the inputs (and writing one array) costs on this machine.

Plain Numba loops over all cores, compiled on first use (the warm-up absorbs it). Sums are float32
and ``fastmath`` lets LLVM reassociate them, so that the loops vectorize like the kernels they are
compared with; a memory floor computes nothing that could be NaN-sensitive:

* read: ``Σ (t + p)`` over both inputs, each element read once;
* read + write: ``out = t − p`` into a preallocated array (the floor of a forward+backward pass,
  which reads both inputs and writes a gradient), or into a new array each call (its page faults
  included, as any implementation that returns a new gradient pays them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..timing import Case
from .inputs import Inputs

_KERNELS: dict[str, Callable[..., Any]] = {}


def kernels() -> dict[str, Callable[..., Any]]:
    """``{"read": read_both(t, p), "read_write": read_both_write_one(t, p, out)}``, compiled once."""
    if _KERNELS:
        return _KERNELS
    from numba import njit, prange

    @njit(parallel=True, fastmath=True)
    def read_both(t, p):  # pragma: no cover - compiled
        rows, n = t.shape
        sums = np.empty(rows, dtype=np.float32)
        for r in prange(rows):
            total = np.float32(0.0)
            for i in range(n):
                total += t[r, i] + p[r, i]
            sums[r] = total
        return sums.sum()

    @njit(parallel=True, fastmath=True)
    def read_both_write_one(t, p, out):  # pragma: no cover - compiled
        rows, n = t.shape
        for r in prange(rows):
            for i in range(n):
                out[r, i] = t[r, i] - p[r, i]

    _KERNELS.update(read=read_both, read_write=read_both_write_one)
    return _KERNELS


def read(inputs: Inputs) -> Case:
    """Read both inputs once."""
    kernel = kernels()["read"]
    return Case(lambda: kernel(inputs.t, inputs.p))


def read_write(fresh: bool) -> Callable[[Inputs], Case]:
    """Read both inputs and write one array: a preallocated one, or (``fresh``) a new one per call."""

    def build(inputs: Inputs) -> Case:
        kernel = kernels()["read_write"]
        if fresh:

            def run() -> Any:
                out = np.empty_like(inputs.p)
                kernel(inputs.t, inputs.p, out)
                return out

            return Case(run)
        out = np.empty_like(inputs.p)
        out.fill(0.0)  # touch the pages once, outside the timing
        return Case(lambda: kernel(inputs.t, inputs.p, out))

    return build
