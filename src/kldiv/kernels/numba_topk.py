r"""The student's side of a sparse top-k teacher on the CPU (Numba): its ``k + 1`` buckets, and the
chain rule from the buckets back to its ``V`` logits — the two passes over a row of ``V`` entries.

A teacher stored as its top ``k`` log-probabilities is compared with the student coarsened to the same
``k`` entries plus a *tail bucket* (the rest of its mass): :func:`kldiv.core.topk.sparse_log_probs`
is the reference. With ``v = u / T`` the student's logits over the temperature, ``L = logsumexp(v)``
and ``L_t = logsumexp`` over the entries outside the top ``k`` (``mask`` marks the top entries)::

    s_b    = v[idx_b] − L          (b < k)          s_tail = L_t − L

The divergence of the ``k + 1`` buckets and its gradient ``g_b = coef · ∂ℓ/∂s_b`` come from the general
kernel (:func:`kldiv.kernels.numba_cpu.fused_rows`, both sides log-probabilities, ``T = 1``). Back to
the logits (``G = Σ_b g_b``, ``p_j = e^{v_j − L}``)::

    ∂ℓ/∂u_j = ( Σ_{b: idx_b = j} g_b  +  [j ∉ top] · g_tail · e^{v_j − L_t}  −  G · p_j ) / T

:func:`support_chain` writes the last two terms for every ``j`` — as ``e^{v_j − L} · (g_tail ·
e^{L − L_t} − G)``, one exponential, when the tail holds more than ``e^{−80}`` of the mass, else with
the two exponentials (``e^{L − L_t}`` would overflow) — and the caller overwrites the top entries
with ``(Σ g_b − G · e^{s_b}) / T`` (a scatter of ``k`` entries; repeated indices add). As the core
(:func:`kldiv.core.topk.sparse_log_probs`): a tail without mass (every entry ``-inf``) is the
constant ``-inf`` (the caller zeros ``g_tail``; its entries get 0), and a row whose ``L`` or ``G``
is not finite (a NaN or ``+inf`` logit, no finite logit, an infinite bucket gradient) gets a NaN
gradient throughout (the dense kernels' rule, :func:`kldiv.core.grads.softmax_chain_factor`).

:func:`support_lse` finds ``L`` and ``L_t`` with a max pass and an exponential-sum pass: the tail's sum
is taken in units of the row's largest term (the same exponentials), unless it is below ``e^{-80}``
there (its terms would lose precision as float32 subnormals: a tail that small holds terms of
``e^{-87}`` and less, whose rounding then stays below float32's relative precision of the sum) or the
row's maximum is not finite; then two more passes find the tail's own maximum and sum with it, as the
core's log-sum-exp of the tail does. Special values follow the core's ``log_softmax``: a NaN anywhere
makes the row NaN (``maxnum`` skips it, the sums carry it), a non-finite maximum shifts by 0. Masked
rows (``keep == 0``) give 0 and a zero gradient (their logits are never read). The kernels never index
by ``idx``: the caller gathers the top entries and builds ``mask`` with torch (which checks the
indices).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._fastmath import FASTMATH, fast_exp, like, maxnum
from ._numba_rows import BLOCK, span

TAIL_APART = 80.0
"""Below ``e^{-80}`` of the row's mass (in units of its largest term) the tail is summed apart."""
TAIL_SMALLEST = math.exp(-TAIL_APART)


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _shift(top):
    """The core's shift: the maximum, or 0 where it is not finite."""
    return top if np.isfinite(top) else like(top, 0.0)


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _log_sum(shift, total):
    """``shift + log(total)`` of a sum of exponentials: ``-inf`` for an empty sum, NaN for a NaN one."""
    if total > 0:
        return shift + math.log(total)
    return math.nan if total != total else -math.inf


@njit(fastmath=FASTMATH, cache=True, parallel=True, error_model="numpy")
def _lse_kernel(u, mask, keep, inv_t, lse, lse_tail):
    rows, n = u.shape
    for r in prange(rows):
        if keep[r] == 0:
            lse[r] = 0.0
            lse_tail[r] = 0.0
            continue
        row, marks = u[r], mask[r]
        factor = like(row[0], inv_t)
        minus_inf = like(row[0], -math.inf)
        top = minus_inf
        for j in span(0, n):
            top = maxnum(top, row[j] * factor)
        shift = _shift(top)
        total = 0.0
        tail = 0.0
        for start in range(0, n, BLOCK):
            block = like(row[0], 0.0)
            block_tail = like(row[0], 0.0)
            for j in span(start, min(start + BLOCK, n)):
                e = fast_exp(row[j] * factor - shift)
                block += e
                block_tail += like(e, 0.0) if marks[j] != 0 else e
            total += block
            tail += block_tail
        log_total = _log_sum(shift, total)
        if not (tail >= TAIL_SMALLEST and np.isfinite(top)):
            # The tail's own maximum and sum (as the core's log-sum-exp of the tail).
            tail_top = minus_inf
            for j in span(0, n):
                tail_top = maxnum(tail_top, minus_inf if marks[j] != 0 else row[j] * factor)
            shift = _shift(tail_top)
            tail = 0.0
            for start in range(0, n, BLOCK):
                block_tail = like(row[0], 0.0)
                for j in span(start, min(start + BLOCK, n)):
                    e = fast_exp(row[j] * factor - shift)
                    block_tail += like(e, 0.0) if marks[j] != 0 else e
                tail += block_tail
        log_tail = _log_sum(shift, tail)
        lse[r] = log_total
        lse_tail[r] = log_tail


@njit(fastmath=FASTMATH, cache=True, parallel=True, error_model="numpy")
def _chain_kernel(u, g, keep, lse, lse_tail, inv_t, has_tail, grad):
    rows, n = u.shape
    buckets = g.shape[1]
    for r in prange(rows):
        if keep[r] == 0:
            grad[r, :] = 0.0
            continue
        row, out = u[r], grad[r]
        factor = like(row[0], inv_t)
        total = 0.0
        for b in range(buckets):
            total += g[r, b]
        g_tail = g[r, buckets - 1] if has_tail else 0.0
        log_total, log_tail = lse[r], lse_tail[r]
        tail_term = has_tail and log_tail != -math.inf  # no tail, or a tail without mass: no tail term
        if not (np.isfinite(log_total) and np.isfinite(total)):  # NaN / +inf logits, an infinite Σ g
            for j in span(0, n):
                out[j] = like(row[0], math.nan)
        elif tail_term and log_total - log_tail > TAIL_APART:  # e^{L − L_t} would overflow
            shift, shift_tail = like(row[0], log_total), like(row[0], log_tail)
            scale, scale_tail = like(row[0], -total * inv_t), like(row[0], g_tail * inv_t)
            for j in span(0, n):
                v = row[j] * factor
                out[j] = fast_exp(v - shift_tail) * scale_tail + fast_exp(v - shift) * scale
        else:
            tail_factor = g_tail * math.exp(log_total - log_tail) if tail_term else 0.0
            shift = like(row[0], log_total)
            scale = like(row[0], (tail_factor - total) * inv_t)
            for j in span(0, n):
                out[j] = fast_exp(row[j] * factor - shift) * scale


def support_lse(
    u: np.ndarray, mask: np.ndarray, keep: np.ndarray, temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(L, L_t)``: ``[rows]`` float64 log-sum-exps of ``u / T`` over each row and over its entries
    outside the top ``k`` (0 on masked rows).

    Args:
        u: ``[rows, V]`` C-contiguous float32 / float64 logits.
        mask: ``[rows, V]`` uint8, nonzero at each row's top entries.
        keep: ``[rows]`` uint8 keep-mask.
        temperature: ``T``.
    """
    rows = u.shape[0]
    lse, lse_tail = np.empty(rows), np.empty(rows)
    if rows:
        _lse_kernel(u, mask, keep, 1.0 / temperature, lse, lse_tail)
    return lse, lse_tail


def support_chain(
    u: np.ndarray,
    g: np.ndarray,
    keep: np.ndarray,
    lse: np.ndarray,
    lse_tail: np.ndarray,
    temperature: float,
    has_tail: bool,
    out: np.ndarray,
) -> np.ndarray:
    """Writes ``(g_tail · e^{v_j − L_t} − G · e^{v_j − L}) / T`` for every entry into ``out`` (which may
    be ``u`` itself: each entry is read before it is written); the top entries are the caller's to
    finish. ``g``: ``[rows, k (+1)]`` bucket gradients (coefficients applied), float64 or ``u``'s dtype."""
    if u.shape[0]:
        _chain_kernel(u, g, keep, lse, lse_tail, 1.0 / temperature, has_tail, out)
    return out


__all__ = ["TAIL_APART", "support_chain", "support_lse"]
