"""Loop helpers shared by the Numba kernels (:mod:`.numba_cpu`, :mod:`.numba_forward`).

Each answers one question of how a loop over a row's entries stays vectorized on every x86 ISA
(AVX2 and AVX-512 alike): unsigned indices, counts instead of flags, Keras' clip as a min/max pair.
Numba's disk cache keys each kernel on its own module's file only: after editing this module,
clear ``src/kldiv/kernels/__pycache__/numba_*.nb*``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._fastmath import FASTMATH, like

BLOCK = 512
"""Entries summed in the data's dtype before a float64 sum (all vector lanes busy)."""
SMALLEST_NORMAL_FLOAT32 = float(np.finfo(np.float32).tiny)
LARGEST_FLOAT32 = float(np.finfo(np.float32).max)
OUTSIDE_TRUE, OUTSIDE_PRED = 1, 2
"""Bits of a kernel's ``outside`` row flags: that side, given as probabilities, leaves ``[0, 1]``."""

inline = njit(inline="always", fastmath=FASTMATH, cache=True)
"""Decorator of the loop helpers: inlined into the kernel that calls them."""
row_function = njit(fastmath=FASTMATH, cache=True, error_model="numpy")
"""Decorator of a kernel's functions that are called, not inlined: NumPy's error model, as a parallel
kernel's body has (a float division by zero gives ±inf or NaN, as in the core, not Python's
``ZeroDivisionError``; the Python model's checks would also keep the loops scalar)."""


@inline
def span(start, stop):
    """``range(start, stop)`` over unsigned indices, for every loop over a row's entries. Numba reads
    ``x[i]`` for a signed ``i < 0`` as ``x[n + i]``; where LLVM cannot prove ``i ≥ 0`` (a loop from a
    block's start) that select stays in the loop, and the AVX-512 code gathers each vector of ``x``
    element by element (measured at [4096, 32000] on an AVX-512 AMD EPYC: 117 ms against 30 ms with
    unsigned indices, where AVX2 code versions the loop instead). An unsigned index has no wraparound."""
    return range(np.uint64(start), np.uint64(stop))


@inline
def clip(x, low, high):
    """Keras' clip to ``[low, high]`` in ``x``'s float type (a NaN stays NaN: ``min``/``max`` of
    Numba compare and select)."""
    return min(max(x, like(x, low)), like(x, high))


@inline
def count(condition):
    """``condition`` as an int32 1 or 0, for counting in a loop: an ``|=`` or ``&=`` of bools (or a
    ``maxnum``) carried through a loop stops LLVM vectorizing it (measured: 10× slower), an int32 sum
    of selects does not."""
    return np.int32(1) if condition else np.int32(0)


@inline
def leaves_unit(x):
    """``x`` lies outside ``[0, 1]`` (NaN does not: it has its own rule)."""
    return (x < like(x, 0.0)) | (x > like(x, 1.0))


@inline
def off_unit(x):
    """``|x − clip(x, 0, 1)|``: exactly 0 where ``x ∈ [0, 1]``, positive outside it (at least one ulp
    of 1 above 1, ``|x|`` below 0), NaN at NaN. So a block's sum of it is 0 exactly when no entry
    leaves ``[0, 1]`` and none is NaN (non-negative terms cannot cancel); only then is the block's
    :func:`outside_count` skipped. The float sum vectorizes inside a kernel's loop where int32
    counts of :func:`leaves_unit` did not on AVX2 (Zen 3, Keras mode's forward at [4096, 32000]:
    106 ms with the counts in the loop, 50 ms with this sum, 45 ms with no check;
    ``benchmarks/RESULTS.md``, session 13)."""
    return abs(x - clip(x, like(x, 0.0), like(x, 1.0)))


@inline
def outside_count(row, start, stop):
    """The number of entries of ``row[start:stop]`` outside ``[0, 1]`` (NaN is not counted)."""
    found = np.int32(0)
    for i in span(start, stop):
        found += count(leaves_unit(row[i]))
    return found


@inline
def staging(grad_row, grad_block, start):
    """``(staged, target, offset)`` for a block's gradient from ``start``: ``target[i − offset]`` is
    ``grad_block`` (staged: it has a block's length where the gradient overwrites an input, so the
    block can still be read) or else ``grad_row`` itself (offset 0; ``i − start`` would be signed,
    and wrap around)."""
    staged = grad_block.shape[0] == BLOCK
    return staged, (grad_block if staged else grad_row), np.uint64(start if staged else 0)


@inline
def unstage(grad_row, grad_block, start, stop, offset):
    """Copy a block's gradient from ``grad_block`` (indexed from ``start − offset``) to ``grad_row``."""
    for i in span(start, stop):
        grad_row[i] = grad_block[i - offset]


@njit(inline="always", cache=True)
def masked_row(r, keep, values, grad, want_grad):
    """Row ``r`` masked out (``keep[r] == 0``): value 0 and, if asked, a zero gradient row; True."""
    if keep[r] != 0:
        return False
    values[r] = 0.0
    if want_grad:
        grad[r, :] = 0.0
    return True
