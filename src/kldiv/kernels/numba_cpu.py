r"""Fused CPU kernels (Numba): per-row divergence and its gradient w.r.t. ``y_pred`` in one pass.

Each kernel must equal :func:`kldiv.core.divergences.divergence` (the reference) to float32
rounding; ``tests/kernels`` compares them option by option. The per-element formulas are those of
:mod:`kldiv.core.grads`, jitted here, not re-typed.

Derivation (``a = log t``, ``b = log q``; ``g_i = ∂ℓ/∂b_i`` from :mod:`kldiv.core.grads`)::

    y_pred given as probabilities p, T = 1:    b = log clip(p)          ∂ℓ/∂p_i = g_i / p_i
    y_pred given as log-probabilities, T = 1:  b = clip(u)              ∂ℓ/∂u_i = g_i
    y_pred as logits (or any format, T ≠ 1):   c = log_softmax(u / T),  b = clip(c)
                                               ∂ℓ/∂u_k = (g'_k − softmax_k · Σ_j g'_j) / T,
                                               g'_j = g_j · [c_j not clipped]

(``u`` is the raw input, ``log p`` for probabilities). Keras' clip gives a zero gradient where it
acts. Per row, :func:`_log_probs_of` describes each side's unclipped log-probabilities as
``c_i = (src_i / T − top) − log_total``: log-probabilities and logits are read in place, probabilities
have their log written to a cache-resident scratch row first, and a log-softmax side takes a max
pass and an exponential-sum pass whose exponentials are kept in scratch where the divergence reads the
probabilities (``t`` and ``q = e_i / Σ e``, and the softmax of the chain rule: no second ``exp``; a
side without a log-softmax gets a pass of ``e = exp(c)`` instead). Which sides keep them is a
compile-time constant of the kernel. One pass then computes the value and ``g``, and — only for
log-softmax students — a last pass finishes the gradient (the symmetric KL keeps its reverse part
``g2`` apart and chains each direction on its own, as autograd through the core does); the only
array of the input's size that is written is the gradient itself. Runs of rows go to the threads
(``prange``; each run allocates its scratch once); each block of :data:`BLOCK` entries is summed in
the data's dtype (all vector lanes busy) and the block sums in float64.

Every hot loop is branch-free so that LLVM vectorizes it: the divergence and the gradient's chain
rule are compile-time constants of :func:`general_kernel` (one kernel per pair, compiled on first use
and cached on disk by Numba), the row maximum uses ``llvm.maxnum`` (a plain ``max`` reduction does
not vectorize), ``log``/``exp`` are the polynomial versions of :mod:`._fastmath`. The true side's
probabilities are ``exp(a)`` (within 3 ulp of the input for probabilities). Forward KL of
probabilities at ``T = 1`` — Keras' own loss and the most common call — has its own short kernel
(:mod:`.numba_forward`). The loop helpers both share (unsigned indices, counts) are in
:mod:`._numba_rows`. The general kernel's parallel function only hands rows to threads; a row's
work is a function of its own (inlined, Numba's parallel passes took most of the compile time).
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading

import numba
import numpy as np
from numba import njit, prange

from ..core import grads
from ._fastmath import FASTMATH, fast_exp, fast_log, fast_log_normal, like, maxnum
from ._numba_rows import (
    BLOCK,
    OUTSIDE_PRED,
    OUTSIDE_TRUE,
    SMALLEST_NORMAL_FLOAT32,
    clip,
    inline,
    masked_row,
    outside_count,
    row_function,
    span,
)
from .numba_forward import forward_probs_kernel

PROBS, LOG_PROBS, LOGITS = 0, 1, 2
FORMAT_CODES = {"probs": PROBS, "log_probs": LOG_PROBS, "logits": LOGITS}
FORWARD, REVERSE, SYMMETRIC, JENSEN_SHANNON = 0, 1, 2, 3
SHIFT_APART = 256.0
"""Rows whose largest logit (over ``T``) exceeds this in magnitude form their log-softmax with the
shift stored apart (:func:`_log_probs_of`): below it the fused form's error, ``|top| · 2⁻²⁴`` at
most, stays under 1.6e-5 (float32 tolerance for log-probabilities), above it the error would grow
with ``|top|``. The stored form is slower (measured 2.6× on rows of logits ~100 at [4096, 32000]),
so real logits (|top| in the tens) keep the fast one."""
DIRECTION_CODES = {"forward": FORWARD, "reverse": REVERSE, "symmetric": SYMMETRIC}
# How the gradient w.r.t. y_pred is finished: through log_softmax (logits, or T ≠ 1), ``g / p``
# (probabilities, T = 1; written directly) or ``g`` (log-probabilities, T = 1; written directly).
GRAD_SOFTMAX, GRAD_PROBS, GRAD_LOG_PROBS = 0, 1, 2
# Runs of rows per thread in the general kernel; each allocates its scratch rows once (a few runs
# per thread balance uneven rows, e.g. masked ones).
ROW_RUNS_PER_THREAD = 4


@inline
def _where(condition, x, y):
    """:func:`kldiv.core.grads.where` in ``y``'s float type (a literal ``x`` would widen to float64)."""
    return like(y, x) if condition else y


@inline
def _log1p(x):
    """``log(1 + x)`` with the vectorizable log (``x ∈ [0, 1]`` in :func:`kldiv.core.grads.logaddexp`)."""
    return fast_log(like(x, 1.0) + x)


# The formulas of kldiv.core.grads, compiled from their source there (none is re-typed here).
_formulas = grads.compile_formulas(inline, where=_where, exp=fast_exp, log1p=_log1p)
forward_element, reverse_element = _formulas.forward_element, _formulas.reverse_element
js_element, softmax_chain = _formulas.js_element, _formulas.softmax_chain
softmax_chain_factor = _formulas.softmax_chain_factor


@row_function
def _row_max(row):
    """Largest entry, vectorized (``maxnum`` skips NaNs here; a NaN still reaches the log-sum-exp
    through the exponential sum that follows, so the row's result is NaN)."""
    top = row[0]
    for i in span(1, row.shape[0]):
        top = maxnum(top, row[i])
    return top


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _log_probs_of(x, fmt, use_lse, keep_e, epsilon, inv_t, log_scratch, exp_scratch):
    """One side's log-probabilities before Keras' clip, ``c_i = (src_i · factor − top) − log_total``,
    and, with ``keep_e``, its probabilities ``e_i · inv_total``; returns the side
    ``(src, factor, top, log_total, e, inv_total)``.

    ``u`` is ``log clip(x)`` for probabilities (written to ``log_scratch``, which becomes ``src``)
    and ``x`` itself otherwise (read in place, never copied). Where ``use_lse``,
    ``c = log_softmax(u / T) = (u/T − top) − log Σ exp(u/T − top)``, ``top = max u/T`` (for
    ``|top| >`` :data:`SHIFT_APART` the shifted ``u/T − top`` is written to ``log_scratch``, the side's
    ``src`` then, with factor 1 and top 0), and the exponentials of the sum are kept in
    ``exp_scratch`` (no second ``exp`` for the probabilities); else ``c = u / T`` and ``e = exp(c)``
    takes a pass of its own. ``keep_e`` must be a compile-time constant (the caller knows which
    sides' probabilities its divergence reads).
    """
    n = x.shape[0]
    one = like(x[0], 1.0)
    zero = like(x[0], 0.0)
    factor = like(x[0], inv_t)
    src = x
    if fmt == PROBS:
        low = like(x[0], epsilon)
        if epsilon >= SMALLEST_NORMAL_FLOAT32:
            for i in span(0, n):
                log_scratch[i] = fast_log_normal(clip(x[i], low, one)) * factor
        elif epsilon > 0:
            for i in span(0, n):
                log_scratch[i] = fast_log(clip(x[i], low, one)) * factor
        else:
            for i in span(0, n):
                log_scratch[i] = fast_log(x[i]) * factor
        src = log_scratch
        factor = one
    if not use_lse:
        if keep_e:
            for i in span(0, n):
                exp_scratch[i] = fast_exp(src[i] * factor)
        return src, factor, zero, zero, exp_scratch, one
    top = _row_max(src) * factor  # = max(u / T): T > 0 and rounding are monotonic
    if not np.isfinite(top):
        top = zero
    total = 0.0
    # Under ``reassoc`` LLVM folds c = (u/T − top) − log Σ into u/T − (top + log Σ), whose sum rounds
    # away log Σ at large |top| (logits [1e10, 1e10] gave c = 0, not −log 2; at |top| = 2^k it errs
    # by ~2^(k−24)). Rows with such a top store u/T − top (one more write a row, cache-resident), so
    # that c is formed in the core's order; the others keep the fused form (the common case).
    shift_apart = abs(top) > SHIFT_APART
    for start in range(0, n, BLOCK):
        block = zero
        if shift_apart:
            for i in span(start, min(start + BLOCK, n)):
                shifted = src[i] * factor - top
                log_scratch[i] = shifted
                e = fast_exp(shifted)
                if keep_e:
                    exp_scratch[i] = e
                block += e
        else:
            for i in span(start, min(start + BLOCK, n)):
                e = fast_exp(src[i] * factor - top)
                if keep_e:
                    exp_scratch[i] = e
                block += e
        total += block
    log_total = like(top, math.log(total))
    # 1 / Σ e without dividing (Numba raises on 0): an all-(-inf) row has Σ e = 0, and its
    # probabilities 0 · inf = NaN, as the core's exp(-inf - (-inf)).
    inv_total = like(top, math.exp(-math.log(total)))
    if shift_apart:
        return log_scratch, one, zero, log_total, exp_scratch, inv_total
    return src, factor, top, log_total, exp_scratch, inv_total


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _c(side, i):
    """Entry ``i`` of a side's log-probabilities ``c`` (see :func:`_log_probs_of`)."""
    src, factor, top, log_total, _, _ = side
    return (src[i] * factor - top) - log_total


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _outside_unit(row):
    """1 if an entry of ``row`` lies outside ``[0, 1]``, else 0 (NaN is not outside: it has its own
    rule). A pass over a row the kernel is about to read from the cache anyway."""
    return 1 if outside_count(row, 0, row.shape[0]) else 0


@njit(inline="always", cache=True)
def _check_rows(t_row, p_row, true_probs, pred_probs):
    """The :data:`OUTSIDE_TRUE` / :data:`OUTSIDE_PRED` bits of a row whose sides are probabilities."""
    bits = 0
    if true_probs:
        bits |= OUTSIDE_TRUE * _outside_unit(t_row)
    if pred_probs:
        bits |= OUTSIDE_PRED * _outside_unit(p_row)
    return bits


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _prob(side, i, exact, low, one):
    """Entry ``i`` of a side's probabilities, ``e_i · inv_total``, clipped to ``[ε, 1]`` as its log
    is (only for a side whose exponentials were kept)."""
    _, _, _, _, e, inv_total = side
    q = e[i] * inv_total
    return q if exact else clip(q, low, one)


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _element(a, t, b, q, kind, exact, beta, log_beta, log1m_beta):
    """``(term, ∂ℓ/∂b, reverse part of ∂ℓ/∂b)`` of one entry (:func:`kldiv.core.grads.forward_element`,
    ``reverse_element``, ``js_element``). The symmetric KL returns its forward and reverse gradients
    apart (:func:`kldiv.core.grads.softmax_chain`'s rule for it); every other kind returns 0 as the
    third. A zero probability is a log of ``-inf``, as in the core's ``Distribution.zeros``; it occurs
    only in exact mode (Keras mode clips the logs to ``[log ε, 0]``); the mode test lets LLVM drop the
    masks from Keras-mode loops (``exact`` is loop-invariant). ``kind`` is a compile-time constant at
    every call site: each loop keeps one divergence."""
    t_zero, q_zero = exact and a == -math.inf, exact and b == -math.inf
    zero = like(a, 0.0)
    # Not ``kind in (FORWARD, SYMMETRIC)``: Numba does not fold a tuple membership test, and the
    # runtime branch left behind stops LLVM vectorizing the caller's loop (2× slower).
    if kind == FORWARD or kind == SYMMETRIC:  # noqa: SIM109
        term, g = forward_element(t, a, b, t_zero)
        if kind == SYMMETRIC:
            reverse, reverse_g = reverse_element(q, a, b, q_zero)
            return term + reverse, g, reverse_g
        return term, g, zero
    if kind == REVERSE:
        term, g = reverse_element(q, a, b, q_zero)
        return term, g, zero
    term, g = js_element(t, q, a, b, t_zero, q_zero, beta, log_beta, log1m_beta)
    return term, g, zero


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _row_block(a_side, b_side, p_raw, g_row, g2_row, start, stop, kind, mode, constants, want_grad):
    """The ``(Σ term, Σ g, Σ g2)`` of entries ``start:stop`` of a row (see :func:`_row_values`)."""
    epsilon, log_epsilon, scale, beta, log_beta, log1m_beta = constants
    zero = like(a_side[2], 0.0)
    exact = epsilon == 0.0
    one = like(zero, 1.0)
    low = like(zero, epsilon)
    log_low = like(zero, log_epsilon)
    scale = like(zero, scale)
    # In the data's type, so that the JS mixture's log and exp stay the vectorized float32 ones.
    beta, log_beta, log1m_beta = like(zero, beta), like(zero, log_beta), like(zero, log1m_beta)
    block_total = zero
    block_g = zero
    block_g2 = zero
    for i in span(start, stop):
        ca = _c(a_side, i)
        a = ca if exact else clip(ca, log_low, zero)
        # The reverse KL never reads t; not even loading it keeps this loop vectorized.
        t_i = zero if kind == REVERSE else _prob(a_side, i, exact, low, one)
        if mode == GRAD_PROBS:
            b = _c(b_side, i)
            q = p_raw[i] if exact else clip(p_raw[i], low, one)
            kept = exact or q == p_raw[i]  # (a NaN is kept in exact mode: no clip acts)
        else:
            c = _c(b_side, i)
            b = c if exact else clip(c, log_low, zero)
            kept = exact or b == c
            q = _prob(b_side, i, exact, low, one)
        term, g, g2 = _element(a, t_i, b, q, kind, exact, beta, log_beta, log1m_beta)
        block_total += term
        if want_grad:
            g = g if kept else zero
            g2 = g2 if kept else zero
            if mode == GRAD_SOFTMAX:
                block_g += g
                g_row[i] = g
                if kind == SYMMETRIC:
                    block_g2 += g2
                    g2_row[i] = g2
                continue
            g = g + g2  # no chain rule follows: the directions' gradients w.r.t. b simply add
            if mode == GRAD_PROBS:
                g_row[i] = (g / p_raw[i] if g != 0.0 else g) * scale
            else:
                g_row[i] = g * scale
    return block_total, block_g, block_g2


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _row_values(a_side, b_side, p_raw, g_row, g2_row, kind, mode, constants, want_grad):
    """One row's ``(Σ term, Σ g, Σ g2)``; writes ``g`` (:data:`GRAD_SOFTMAX`; the symmetric KL's
    reverse part ``g2`` apart, into ``g2_row``) or the finished gradient (see :data:`GRAD_PROBS`)
    into ``g_row``. ``a_side`` / ``b_side`` give ``c`` of each side
    (:func:`_log_probs_of`); ``kind`` and ``mode`` are compile-time constants at every call site,
    and the block loop is inlined once with and once without the gradient (a runtime ``want_grad``
    test inside the loop left LLVM's value-only version scalar: 880 against 100 ms at [4096, 32000]):
    each loop is branch-free and vectorizes."""
    total = 0.0
    g_total = 0.0
    g2_total = 0.0
    n = p_raw.shape[0]
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        if want_grad:
            sums = _row_block(a_side, b_side, p_raw, g_row, g2_row, start, stop, kind, mode, constants, True)
        else:
            sums = _row_block(a_side, b_side, p_raw, g_row, g2_row, start, stop, kind, mode, constants, False)
        total += sums[0]
        g_total += sums[1]
        g2_total += sums[2]
    return total, g_total, g2_total


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _softmax_chain(b_side, g_row, g2_row, p_raw, grad_row, kind, pred_format, epsilon, factor, sums):
    """``grad ← (g − softmax · Σg) · factor`` (:func:`kldiv.core.grads.softmax_chain`) with
    ``softmax = exp(c)``; for the symmetric KL the same of ``g2`` added, each direction chained
    apart; one more ``1/p`` (0 where clipped) when ``u = log clip(p)``. Entry ``i`` of ``p_raw`` is
    read before ``grad_row[i]`` is written (the gradient may overwrite ``y_pred``)."""
    zero = like(b_side[2], 0.0)
    g_sum, g2_sum = sums
    factor2 = like(zero, softmax_chain_factor(g2_sum, factor))
    factor = like(zero, softmax_chain_factor(g_sum, factor))
    g_sum, g2_sum = like(zero, g_sum), like(zero, g2_sum)
    one = like(zero, 1.0)
    low = like(zero, epsilon)
    for i in span(0, p_raw.shape[0]):
        softmax = b_side[4][i] * b_side[5]  # e_i / Σ e
        value = softmax_chain(g_row[i], softmax, g_sum, factor)
        if kind == SYMMETRIC:
            value += softmax_chain(g2_row[i], softmax, g2_sum, factor2)
        if pred_format == PROBS:  # ∂ log p / ∂p = 1 / p (±inf or NaN at p = 0, as autograd's)
            x = p_raw[i]
            inside = x == clip(x, low, one) if epsilon > 0 else True
            value = value / x if inside else like(x, 0.0)
        grad_row[i] = value


@functools.cache
def general_kernel(kind: int, mode: int):
    """The kernel for one divergence ``kind`` and gradient ``mode``: both are compile-time constants
    (closure variables), so its loops hold one formula each and vectorize. Each pair is compiled on
    first use and cached on disk (Numba keys the cache by the closure's values). The parallel
    function only hands rows to threads; a row's work is a function of its own (compiled once, not
    inlined into the parallel one: Numba's parallel passes on the inlined rows took most of the
    compile time)."""

    @row_function
    def row(t_row, p_row, grad_row, scratch, options, coef_r, want_grad):
        """One kept row: its value and its [0, 1] bits; the gradient into ``grad_row``."""
        true_format, pred_format, epsilon, inv_t, beta = options
        log_scratch, exp_scratch, g_scratch = scratch
        true_lse = true_format == LOGITS or inv_t != 1.0
        pred_lse = mode == GRAD_SOFTMAX
        log_epsilon = math.log(epsilon) if epsilon > 0 else -np.inf
        # Which sides' probabilities are read (compile-time constants: kind and mode are): t except
        # in the reverse KL; q except in the forward KL (and where it is p itself), and the
        # student's softmax of the chain rule.
        keep_true = kind != REVERSE
        keep_pred = (kind != FORWARD and mode != GRAD_PROBS) or mode == GRAD_SOFTMAX
        bits = _check_rows(t_row, p_row, true_format == PROBS, pred_format == PROBS)
        a_side = _log_probs_of(
            t_row, true_format, true_lse, keep_true, epsilon, inv_t, log_scratch[0], exp_scratch[0]
        )
        b_side = _log_probs_of(
            p_row, pred_format, pred_lse, keep_pred, epsilon, inv_t, log_scratch[1], exp_scratch[1]
        )
        constants = (epsilon, log_epsilon, coef_r, beta, math.log(beta), math.log1p(-beta))
        g_row = g_scratch[0] if pred_lse else grad_row
        g2_row = g_scratch[1] if pred_lse else grad_row
        sums = _row_values(a_side, b_side, p_row, g_row, g2_row, kind, mode, constants, want_grad)
        if want_grad and pred_lse:
            factor, g_sums = inv_t * coef_r, sums[1:]
            _softmax_chain(b_side, g_row, g2_row, p_row, grad_row, kind, pred_format, epsilon, factor, g_sums)
        return sums[0], bits

    @njit(parallel=True, fastmath=FASTMATH, cache=True)
    def kernel(t, p, coef, keep, values, grad, outside, options, want_grad, parts):
        rows, n = p.shape
        for part in prange(parts):
            # Cache-resident rows, allocated once per run of rows, each group in its own block (LLVM
            # then vectorizes the loops that read one and write another): each side's log clip(p)
            # for probabilities, each side's exponentials of the log-sum-exp, g before the chain rule.
            scratch = (np.empty((2, n), p.dtype), np.empty((2, n), p.dtype), np.empty((2, n), p.dtype))
            for r in range(part * rows // parts, (part + 1) * rows // parts):
                if masked_row(r, keep, values, grad, want_grad):
                    outside[r] = 0
                    continue
                grad_row = grad[r] if want_grad else grad[0]
                values[r], outside[r] = row(t[r], p[r], grad_row, scratch, options, coef[r], want_grad)

    return kernel


def fused_rows(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    coef: np.ndarray,
    keep: np.ndarray | None = None,
    *,
    true_format: str,
    pred_format: str,
    direction: str,
    beta: float | None,
    epsilon: float,
    temperature: float,
    want_grad: bool,
    out: np.ndarray | None = None,
    outside: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-row divergence ``[rows]`` (float64) and, if asked, ``coef[:, None] · ∂value/∂y_pred``;
    rows whose ``keep`` is 0 give 0 and a zero gradient.

    ``y_true`` and ``y_pred`` are C-contiguous ``[rows, n]`` arrays of one dtype (float32/float64).
    ``out`` (optional, like ``y_pred``) receives the gradient; it may be ``y_pred`` itself: every
    kernel reads an entry of ``y_pred`` before it writes that entry of the gradient. ``outside``
    (optional, ``[rows]`` uint8) receives each kept row's :data:`OUTSIDE_TRUE` / :data:`OUTSIDE_PRED`
    bits (a side given as probabilities with an entry outside ``[0, 1]``), found by a loop over each
    row just before the kernel reads it (from the cache, not from memory).
    """
    kind = JENSEN_SHANNON if beta is not None else DIRECTION_CODES[direction]
    values = np.empty(y_pred.shape[0], dtype=np.float64)
    if not want_grad:
        grad = np.empty((1, 1), dtype=y_pred.dtype)
    elif out is None:
        grad = np.empty_like(y_pred)
    else:
        if out.shape != y_pred.shape or out.dtype != y_pred.dtype or not out.flags.c_contiguous:
            raise ValueError(
                f"Argument `out`: expected a C-contiguous {y_pred.dtype} array of shape {y_pred.shape}; "
                f"received {out.dtype} {out.shape}."
            )
        grad = out
    keep = np.ones(y_pred.shape[0], dtype=np.uint8) if keep is None else keep.astype(np.uint8, copy=False)
    coef = np.ascontiguousarray(coef, dtype=np.float64)
    if outside is None:
        outside = np.empty(y_pred.shape[0], dtype=np.uint8)
    if y_pred.shape[1] == 0:
        values[:] = 0.0
        outside[:] = 0
        return values, (grad if want_grad else None)
    arrays = (y_true, y_pred, coef, keep, values, grad, outside)
    with _launch_guard():
        if kind == FORWARD and true_format == pred_format == "probs" and temperature == 1.0:
            in_place = bool(
                want_grad and (np.may_share_memory(grad, y_pred) or np.may_share_memory(grad, y_true))
            )
            forward_probs_kernel(*arrays, float(epsilon), bool(want_grad), in_place)
        else:
            inv_t = 1.0 / float(temperature)
            js_beta = float(0.5 if beta is None else beta)
            pred_code = FORMAT_CODES[pred_format]
            if pred_code == LOGITS or inv_t != 1.0:
                mode = GRAD_SOFTMAX
            else:
                mode = GRAD_PROBS if pred_code == PROBS else GRAD_LOG_PROBS
            options = (FORMAT_CODES[true_format], pred_code, float(epsilon), inv_t, js_beta)
            parts = max(1, min(y_pred.shape[0], ROW_RUNS_PER_THREAD * numba.get_num_threads()))
            general_kernel(kind, mode)(*arrays, options, bool(want_grad), parts)

    return values, (grad if want_grad else None)


_LAUNCH_LOCK = threading.Lock()


def _launch_guard() -> contextlib.AbstractContextManager:
    """One launch at a time under Numba's ``workqueue`` threading layer (the fallback when neither
    OpenMP nor TBB is installed), which aborts the process when two Python threads launch parallel
    kernels at once; and before the first launch, which picks the layer. The ``omp`` and ``tbb``
    layers are thread-safe: concurrent calls run concurrently."""
    try:
        serial = numba.threading_layer() == "workqueue"
    except ValueError:  # no parallel kernel has run yet: the layer is not chosen
        serial = True
    return _LAUNCH_LOCK if serial else contextlib.nullcontext()
