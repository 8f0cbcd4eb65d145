r"""Keras' own loss as a Numba kernel: forward KL of probabilities at ``T = 1``.

``t·log(t/p)`` and ``∂/∂p = −t/p`` share one division (:func:`kldiv.core.divergences.kl`'s Keras
program, to float32 rounding); exact mode (``ε = 0``) runs the same one-log loop where every entry
of a block is ordinary and the core's full program ``t (log t − log p)`` on any other block; the
[0, 1] check of both sides is counted in the same loops. :func:`kldiv.kernels.numba_cpu.fused_rows`
launches it; ``tests/kernels`` compares it with the core.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._fastmath import FASTMATH, fast_log, fast_log_normal, like
from ._numba_rows import (
    BLOCK,
    LARGEST_FLOAT32,
    OUTSIDE_PRED,
    OUTSIDE_TRUE,
    SMALLEST_NORMAL_FLOAT32,
    clip,
    count,
    leaves_unit,
    masked_row,
    off_unit,
    outside_count,
    row_function,
    span,
    staging,
    unstage,
)


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _clipped_forward_block(t_row, p_row, start, stop, low, grad_row, grad_block, scale, want_grad):
    """Keras mode with ``ε ≥`` the smallest normal float: ``t/p ∈ [ε, 1/ε]`` is positive, normal and
    finite, so the log needs no special-value handling (the loop is only arithmetic). Returns
    ``(Σ term, entries of t outside [0, 1], entries of p outside)``; the loop sums :func:`off_unit`
    of both sides and the block is counted only where that sum is not 0, so ``p_row`` must still be
    as it was: where the gradient overwrites ``y_pred`` it is staged in ``grad_block`` first (see
    :func:`_exact_forward_block`)."""
    zero = like(low, 0.0)
    block_total = distance = zero
    high = like(low, 1.0)
    staged, target, offset = staging(grad_row, grad_block, start)
    for i in span(start, stop):
        t_raw, p_raw = t_row[i], p_row[i]
        distance += off_unit(t_raw) + off_unit(p_raw)
        t_i = clip(t_raw, low, high)
        p_i = clip(p_raw, low, high)
        ratio = t_i / p_i
        block_total += t_i * fast_log_normal(ratio)
        if want_grad:
            target[i - offset] = -ratio * scale if p_i == p_raw else like(ratio, 0.0)
    outside_t, outside_p = _outside_counts(t_row, p_row, start, stop, distance)
    if want_grad and staged:
        unstage(grad_row, grad_block, start, stop, offset)
    return block_total, outside_t, outside_p


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _outside_counts(t_row, p_row, start, stop, distance):
    """Each side's entries outside ``[0, 1]`` in the block, counted only where ``distance`` (the
    block's sum of :func:`off_unit` over both sides) is not 0."""
    if distance == like(distance, 0.0):
        return np.int32(0), np.int32(0)
    return outside_count(t_row, start, stop), outside_count(p_row, start, stop)


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _any_forward_block(t_row, p_row, start, stop, epsilon, grad_row, scale, want_grad):
    """Exact mode (ε = 0: ``0·log 0 = 0``, ``log(t/0) = inf``) or a subnormal ε: the full log.
    Returns what :func:`_clipped_forward_block` does."""
    exact = epsilon == 0.0
    block_total = like(scale, 0.0)
    outside_t = outside_p = np.int32(0)
    for i in span(start, stop):
        t_i, p_i = t_row[i], p_row[i]
        outside_t += count(leaves_unit(t_i))
        outside_p += count(leaves_unit(p_i))
        if exact:
            # The core's exact program t (log t − log p): a ratio of subnormals would overflow.
            term = t_i * (fast_log(t_i) - fast_log(p_i))
            kept = True
        else:
            t_i = clip(t_i, epsilon, 1.0)
            p_i = clip(p_i, epsilon, 1.0)
            term = t_i * fast_log(t_i / p_i)
            kept = p_i == p_row[i]
        ratio = t_i / p_i
        if exact and t_i == 0.0:
            term = like(term, 0.0)
            ratio = like(ratio, 0.0)
        block_total += term
        if want_grad:
            grad_row[i] = -ratio * scale if kept else like(ratio, 0.0)
    return block_total, outside_t, outside_p


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _off_ordinary(x):
    """``|x − clip(x, smallest normal, largest float32)|``: exactly 0 where ``x`` is a normal, finite,
    positive float32 value (its log needs no special case), positive or NaN elsewhere (a float sum,
    like :func:`off_unit`: int32 counts of the comparisons slowed exact mode's loop 2× on AVX2)."""
    return abs(x - clip(x, like(x, SMALLEST_NORMAL_FLOAT32), like(x, LARGEST_FLOAT32)))


@row_function
def _exact_block_again(t_row, p_row, start, stop, grad_row, scale, want_grad):
    """:func:`_any_forward_block` in exact mode, called, not inlined (inlined into
    :func:`_exact_forward_block`, it slowed that function's ordinary loop by 1.4×)."""
    return _any_forward_block(t_row, p_row, start, stop, 0.0, grad_row, scale, want_grad)


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _exact_forward_block(t_row, p_row, start, stop, grad_row, grad_block, scale, want_grad):
    """Exact mode, one block. Where ``t/p`` is ordinary (normal, finite, positive) and ``t, p ∈ [0, 1]``,
    ``t (log t − log p) = t · log(t/p)`` up to rounding: one log without special values, Keras mode's
    cost; where ``t = 0``, both give the term 0 and the gradient −0. Any other block (a NaN, an entry
    outside ``[0, 1]``, a ratio that is 0, subnormal or infinite; found by one float sum that is 0
    exactly when there is none) is computed again by :func:`_exact_block_again`'s full program, which
    also counts the entries outside ``[0, 1]`` and must read ``p_row`` as it was: where the gradient
    overwrites ``y_pred`` (``grad_block`` has a block's length then), it goes to ``grad_block`` first
    (indexed from 0, cache-resident) and is copied into ``grad_row`` when every entry was ordinary;
    else it goes to ``grad_row`` directly."""
    zero, one = like(scale, 0.0), like(scale, 1.0)
    block_total = unusual = zero
    staged, target, offset = staging(grad_row, grad_block, start)
    for i in span(start, stop):
        t_i, p_i = t_row[i], p_row[i]
        t_zero = t_i == zero
        ratio = zero if t_zero else t_i / p_i
        unusual += off_unit(t_i) + off_unit(p_i) + _off_ordinary(one if t_zero else ratio)
        block_total += zero if t_zero else t_i * fast_log_normal(ratio)
        if want_grad:
            target[i - offset] = -ratio * scale
    if unusual != zero:
        return _exact_block_again(t_row, p_row, start, stop, grad_row, scale, want_grad)
    if want_grad and staged:
        unstage(grad_row, grad_block, start, stop, offset)
    return block_total, np.int32(0), np.int32(0)


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _forward_block(t_row, p_row, start, stop, epsilon, grad_row, grad_block, scale, want_grad):
    """One block of :func:`forward_probs_kernel`, by the clip: Keras mode with a normal ε, exact mode,
    or a subnormal ε. ``want_grad`` is a literal at the call site (with a runtime one, LLVM left the
    value-only loops scalar)."""
    if epsilon >= SMALLEST_NORMAL_FLOAT32:
        low = like(scale, epsilon)
        return _clipped_forward_block(t_row, p_row, start, stop, low, grad_row, grad_block, scale, want_grad)
    if epsilon == 0.0:
        return _exact_forward_block(t_row, p_row, start, stop, grad_row, grad_block, scale, want_grad)
    return _any_forward_block(t_row, p_row, start, stop, epsilon, grad_row, scale, want_grad)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def forward_probs_kernel(t, p, coef, keep, values, grad, outside, epsilon, want_grad, in_place):
    """Forward KL of probabilities, ``T = 1``: Keras' program ``t·log(t/p)``, ``∂/∂p = −t/p``; the
    [0, 1] check of both sides in the same loops (a sum of :func:`off_unit`; a block is counted only
    where it is not 0). ``in_place``: ``grad`` may share memory with ``t`` or ``p`` (each block's
    gradient is then staged before it is written, so the block can still be read). (The rows'
    work stays inlined here: as a function of its own, LLVM left its loops scalar, 4× slower.)"""
    rows, n = p.shape
    for r in prange(rows):
        if masked_row(r, keep, values, grad, want_grad):
            outside[r] = 0
            continue
        t_row, p_row = t[r], p[r]
        grad_row = grad[r] if want_grad else grad[0]
        grad_block = np.empty(BLOCK if want_grad and in_place else 1, dtype=p.dtype)
        scale = like(p_row[0], coef[r])
        total = 0.0
        outside_t = outside_p = 0
        for start in range(0, n, BLOCK):
            stop = min(start + BLOCK, n)
            if want_grad:
                sums = _forward_block(t_row, p_row, start, stop, epsilon, grad_row, grad_block, scale, True)
            else:
                sums = _forward_block(t_row, p_row, start, stop, epsilon, grad_row, grad_block, scale, False)
            total += sums[0]
            outside_t += sums[1]
            outside_p += sums[2]
        values[r] = total
        outside[r] = (OUTSIDE_TRUE if outside_t else 0) | (OUTSIDE_PRED if outside_p else 0)
