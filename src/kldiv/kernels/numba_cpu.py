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
acts. A row is processed in at most three passes over cache-resident data: the log-sum-exp of each
side that needs one, the value with ``g`` (written into the gradient row), and — only for
log-softmax inputs — the final gradient, so the only array of the input's size that is written is
the gradient itself. Rows run in parallel (``prange``); each block of :data:`BLOCK` entries is
summed in the data's dtype (all vector lanes busy) and the block sums in float64.

Compilation: the options are run-time arguments, so there are only two compiled kernels per dtype
(with and without gradient), cached on disk by Numba (``cache=True``); the first call on a new
machine compiles them once. Forward KL of probabilities at ``T = 1`` — Keras' own loss and the most
common call — has its own short kernel: ``t·log(t/p)`` and ``∂/∂p = −t/p`` share one division.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..core import grads
from ._fastmath import FASTMATH, fast_exp, fast_log, fast_log_normal, like

PROBS, LOG_PROBS, LOGITS = 0, 1, 2
FORMAT_CODES = {"probs": PROBS, "log_probs": LOG_PROBS, "logits": LOGITS}
FORWARD, REVERSE, SYMMETRIC, JENSEN_SHANNON = 0, 1, 2, 3
DIRECTION_CODES = {"forward": FORWARD, "reverse": REVERSE, "symmetric": SYMMETRIC}
BLOCK = 512
SMALLEST_NORMAL_FLOAT32 = float(np.finfo(np.float32).tiny)

_inline = njit(inline="always", fastmath=FASTMATH, cache=True)
forward_term = _inline(grads.forward_term)
forward_grad = _inline(grads.forward_grad)
reverse_term = _inline(grads.reverse_term)
reverse_grad = _inline(grads.reverse_grad)
js_term = _inline(grads.js_term)
js_grad = _inline(grads.js_grad)


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _clip(x, low, high):
    return min(max(x, like(x, low)), like(x, high))


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _raw_log(x, fmt, epsilon):
    """``u``: what a log-softmax side normalises (the log of clipped probabilities)."""
    if fmt == PROBS:
        return fast_log(_clip(x, epsilon, 1.0) if epsilon > 0 else x)
    return x


@njit(fastmath=FASTMATH, cache=True)
def _log_sum_exp(row, fmt, epsilon, inv_t):
    top = -np.inf
    for i in range(row.shape[0]):
        top = max(top, _raw_log(row[i], fmt, epsilon) * inv_t)
    if not np.isfinite(top):
        top = 0.0
    total = 0.0
    for start in range(0, row.shape[0], BLOCK):
        block = like(row[0], 0.0)
        for i in range(start, min(start + BLOCK, row.shape[0])):
            block += fast_exp(like(row[i], _raw_log(row[i], fmt, epsilon) * inv_t - top))
        total += block
    return top + math.log(total)


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _side(x, fmt, use_lse, lse, epsilon, inv_t):
    """``(b, q, kept)``: log-probability, probability, whether Keras' clip let the entry through."""
    if use_lse:
        c = like(x, _raw_log(x, fmt, epsilon) * inv_t - lse)
        b = _clip(c, math.log(epsilon), 0.0) if epsilon > 0 else c
        return b, fast_exp(b), b == c
    if fmt == PROBS:
        q = _clip(x, epsilon, 1.0) if epsilon > 0 else x
        return fast_log(q), q, q == x
    b = _clip(x, math.log(epsilon), 0.0) if epsilon > 0 else x
    return b, fast_exp(b), b == x


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _element(a, t, b, q, kind, exact, beta):
    """``(term, ∂ℓ/∂b)`` of one entry; zero-probability entries give ``(0, 0)`` in exact mode."""
    zero = like(a, 0.0)
    if kind in (FORWARD, SYMMETRIC):
        term, g = zero, zero
        if not (exact and t == 0.0):
            term, g = forward_term(t, a, b), forward_grad(t)
        if kind == SYMMETRIC and not (exact and q == 0.0):
            term += reverse_term(q, a, b)
            g += reverse_grad(q, a, b)
        return term, g
    if kind == REVERSE:
        if exact and q == 0.0:
            return zero, zero
        return reverse_term(q, a, b), reverse_grad(q, a, b)
    wa = like(a, a + math.log(beta))
    wb = like(b, b + math.log1p(-beta))
    if exact and t == 0.0 and q == 0.0:
        return zero, zero
    if exact and t == 0.0:
        m = wb
    elif exact and q == 0.0:
        m = wa
    else:
        top = max(wa, wb)
        m = top + fast_log(like(a, 1.0) + fast_exp(min(wa, wb) - top))
    if exact and q == 0.0:
        return like(a, beta * t * (a - m)), zero
    if exact and t == 0.0:
        return like(a, (1.0 - beta) * q * (b - m)), js_grad(q, b, m, beta)
    return js_term(t, q, a, b, m, beta), js_grad(q, b, m, beta)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def general_kernel(
    t, p, coef, keep, values, grad, true_format, pred_format, kind, epsilon, inv_t, beta, want_grad
):
    """Every option: see the module docstring for the passes and the chain rule."""
    rows, n = p.shape
    exact = epsilon == 0.0
    true_lse = true_format == LOGITS or inv_t != 1.0
    pred_lse = pred_format == LOGITS or inv_t != 1.0
    for r in prange(rows):
        if keep[r] == 0:
            values[r] = 0.0
            if want_grad:
                grad[r, :] = 0.0
            continue
        t_row, p_row = t[r], p[r]
        t_lse = _log_sum_exp(t_row, true_format, epsilon, inv_t) if true_lse else 0.0
        p_lse = _log_sum_exp(p_row, pred_format, epsilon, inv_t) if pred_lse else 0.0
        total = 0.0
        g_sum = 0.0
        scale = coef[r]
        for start in range(0, n, BLOCK):
            block_total = like(p_row[0], 0.0)
            block_g_sum = like(p_row[0], 0.0)
            for i in range(start, min(start + BLOCK, n)):
                a, t_i, _ = _side(t_row[i], true_format, true_lse, t_lse, epsilon, inv_t)
                b, q, kept = _side(p_row[i], pred_format, pred_lse, p_lse, epsilon, inv_t)
                term, g = _element(a, t_i, b, q, kind, exact, beta)
                block_total += term
                if want_grad:
                    g = g if kept else like(g, 0.0)
                    if pred_lse:
                        block_g_sum += g
                        grad[r, i] = g
                    elif pred_format == PROBS:
                        grad[r, i] = (g / p_row[i] if g != 0.0 else g) * like(g, scale)
                    else:
                        grad[r, i] = g * like(g, scale)
            total += block_total
            g_sum += block_g_sum
        values[r] = total
        if want_grad and pred_lse:
            factor = like(p_row[0], inv_t * scale)
            sum_g = like(p_row[0], g_sum)
            for i in range(n):
                x = p_row[i]
                softmax = fast_exp(like(x, _raw_log(x, pred_format, epsilon) * inv_t - p_lse))
                value = (grad[r, i] - softmax * sum_g) * factor
                if pred_format == PROBS:  # u = log clip(p): one more factor 1/p, 0 where clipped
                    inside = x == _clip(x, epsilon, 1.0) if epsilon > 0 else x != 0.0
                    value = value / x if inside else like(x, 0.0)
                grad[r, i] = value


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _clipped_forward_block(t_row, p_row, start, stop, low, grad_row, scale, want_grad):
    """Keras mode with ``ε ≥`` the smallest normal float: ``t/p ∈ [ε, 1/ε]`` is positive, normal and
    finite, so the log needs no special-value handling (the loop is only arithmetic)."""
    block_total = like(low, 0.0)
    high = like(low, 1.0)
    if want_grad:
        for i in range(start, stop):
            t_i = _clip(t_row[i], low, high)
            p_raw = p_row[i]
            p_i = _clip(p_raw, low, high)
            ratio = t_i / p_i
            block_total += t_i * fast_log_normal(ratio)
            grad_row[i] = -ratio * scale if p_i == p_raw else like(ratio, 0.0)
    else:
        for i in range(start, stop):
            t_i = _clip(t_row[i], low, high)
            block_total += t_i * fast_log_normal(t_i / _clip(p_row[i], low, high))
    return block_total


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _any_forward_block(t_row, p_row, start, stop, epsilon, grad_row, scale, want_grad):
    """Exact mode (ε = 0: ``0·log 0 = 0``, ``log(t/0) = inf``) or a subnormal ε: the full log."""
    exact = epsilon == 0.0
    block_total = like(scale, 0.0)
    for i in range(start, stop):
        t_i, p_i = t_row[i], p_row[i]
        if not exact:
            t_i = _clip(t_i, epsilon, 1.0)
            p_i = _clip(p_i, epsilon, 1.0)
        ratio = t_i / p_i
        term = t_i * fast_log(ratio)
        if exact and t_i == 0.0:
            term = like(term, 0.0)
            ratio = like(ratio, 0.0)
        block_total += term
        if want_grad:
            grad_row[i] = -ratio * scale if p_i == p_row[i] else like(ratio, 0.0)
    return block_total


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def forward_probs_kernel(t, p, coef, keep, values, grad, epsilon, want_grad):
    """Forward KL of probabilities, ``T = 1``: Keras' program ``t·log(t/p)``, ``∂/∂p = −t/p``."""
    rows, n = p.shape
    normal_clip = epsilon >= SMALLEST_NORMAL_FLOAT32
    for r in prange(rows):
        if keep[r] == 0:
            values[r] = 0.0
            if want_grad:
                grad[r, :] = 0.0
            continue
        t_row, p_row = t[r], p[r]
        grad_row = grad[r] if want_grad else grad[0]
        scale = like(p_row[0], coef[r])
        low = like(p_row[0], epsilon)
        total = 0.0
        for start in range(0, n, BLOCK):
            stop = min(start + BLOCK, n)
            if normal_clip:
                total += _clipped_forward_block(t_row, p_row, start, stop, low, grad_row, scale, want_grad)
            else:
                total += _any_forward_block(t_row, p_row, start, stop, epsilon, grad_row, scale, want_grad)
        values[r] = total


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
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-row divergence ``[rows]`` (float64) and, if asked, ``coef[:, None] · ∂value/∂y_pred``;
    rows whose ``keep`` is 0 give 0 and a zero gradient.

    ``y_true`` and ``y_pred`` are C-contiguous ``[rows, n]`` arrays of one dtype (float32/float64).
    """
    kind = JENSEN_SHANNON if beta is not None else DIRECTION_CODES[direction]
    values = np.empty(y_pred.shape[0], dtype=np.float64)
    grad = np.empty_like(y_pred) if want_grad else np.empty((1, 1), dtype=y_pred.dtype)
    keep = np.ones(y_pred.shape[0], dtype=np.uint8) if keep is None else keep.astype(np.uint8, copy=False)
    coef = np.ascontiguousarray(coef, dtype=np.float64)
    if y_pred.shape[1] == 0:
        values[:] = 0.0
        return values, (grad if want_grad else None)
    if kind == FORWARD and true_format == pred_format == "probs" and temperature == 1.0:
        forward_probs_kernel(y_true, y_pred, coef, keep, values, grad, float(epsilon), bool(want_grad))
    else:
        general_kernel(
            y_true,
            y_pred,
            coef,
            keep,
            values,
            grad,
            FORMAT_CODES[true_format],
            FORMAT_CODES[pred_format],
            kind,
            float(epsilon),
            1.0 / float(temperature),
            0.5 if beta is None else float(beta),
            bool(want_grad),
        )
    return values, (grad if want_grad else None)
