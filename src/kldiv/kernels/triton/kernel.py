r"""The Triton kernel: per-row divergence and its gradient w.r.t. ``y_pred``, one program per row.

It must equal :func:`kldiv.core.divergences.divergence` (the reference) to float32 rounding, as the
Numba kernel (:mod:`kldiv.kernels.numba_cpu`) does; ``tests/kernels/test_triton.py`` compares the
two option by option. The per-element formulas are the functions of :mod:`kldiv.core.grads`
themselves, compiled by ``triton.jit`` (:func:`kldiv.core.grads.compile_formulas`), so no formula is
re-typed here.

Derivation (``a = log t``, ``b = log q``, ``g_i = ∂ℓ/∂b_i`` from :mod:`kldiv.core.grads`)::

    y_pred given as probabilities p, T = 1:    b = log clip(p)          ∂ℓ/∂p_i = g_i / p_i
    y_pred given as log-probabilities, T = 1:  b = clip(u)              ∂ℓ/∂u_i = g_i
    y_pred as logits (or any format, T ≠ 1):   c = log_softmax(u / T),  b = clip(c)
                                               ∂ℓ/∂u_k = (g'_k − softmax_k · Σ_j g'_j) / T,
                                               g'_j = g_j · [c_j not clipped]

(``u`` is the raw input, ``log clip(p)`` for probabilities). Keras' clip (``epsilon > 0``) gives a
zero gradient where it acts. Exact mode (``epsilon = 0``) masks zero probabilities the way the core
does, in the grads functions themselves (``forward_element``, ``reverse_element``, ``js_element``:
``0 · log 0`` never appears, JS_β takes ``log M`` from the other side where one is 0).

Passes over a row, in tiles of ``BLOCK`` entries (registers only, nothing but the gradient is
written): (1) an online log-sum-exp of each side that needs one (logits, or any ``T ≠ 1``), a
running maximum and a sum rescaled when the maximum grows; (2) the value, with the gradient written
directly when ``y_pred`` needs no softmax, else ``Σ g'``; (3) only for a log-softmax ``y_pred``:
``g'`` recomputed from the inputs (cheaper than storing and re-reading it) and the final gradient.
The symmetric KL keeps its reverse part ``g2'`` and ``Σ g2'`` apart and chains each direction on
its own; for probabilities without a softmax, the parts of ``∂ℓ/∂p`` proportional to ``q`` are
evaluated with ``q / p`` in place of ``q`` (no overflow before the division). Forward KL in exact
mode with a softmax on both sides (distillation from logits) skips pass (3):
there ``g' = −t`` and ``Σ_j g'_j = −Σ_j t_j = −1``, so pass (2) writes the gradient
``(softmax_k − t_k) / T`` itself (``SUM_G_IS_MINUS_ONE``; it differs from the summed form by
rounding only; ``Σ t = 1`` holds when the teacher's log-sum-exp is finite, otherwise ``Σ g'`` is
taken as NaN, as the core's). Special values follow the core as in :mod:`kldiv.kernels.numba_cpu`:
clips keep a NaN (:func:`_clamp`), exact mode passes every entry's gradient, ``1/p`` is not
special-cased at ``p = 0`` and a row whose ``Σ g'`` is not finite gets a NaN gradient
(:func:`kldiv.core.grads.softmax_chain_factor`); ``tests/reliability/test_kernels_vs_core.py``.
Accumulation is float32 for float16 / bfloat16 / float32 inputs and float64 for float64; row
offsets are int64 (``rows × vocab`` may exceed 2³¹).
"""

from __future__ import annotations

import triton
import triton.language as tl

from ...core import grads


@triton.jit
def _where(condition, x, y):
    """:func:`kldiv.core.grads.where`."""
    return tl.where(condition, x, y)


@triton.jit
def _exp(x):
    return tl.exp(x)


@triton.jit
def _log1p(x):
    """``log(1 + x)`` (``x ∈ [0, 1]`` in :func:`kldiv.core.grads.logaddexp`)."""
    return tl.log(1.0 + x)


# The formulas of kldiv.core.grads, one Triton function each, compiled from their source there (none
# is re-typed here). Triton's interpreter wants ``triton.language`` among a function's globals.
_formulas = grads.compile_formulas(triton.jit, tl=tl, where=_where, exp=_exp, log1p=_log1p)
forward_element, reverse_element = _formulas.forward_element, _formulas.reverse_element
js_element, softmax_chain = _formulas.js_element, _formulas.softmax_chain
softmax_chain_factor = _formulas.softmax_chain_factor


@triton.jit
def _clamp(x, low, high):
    """Keras' clip, NaN kept (``tl.clamp``'s default would drop it on the GPU, as ``fminf``)."""
    return tl.clamp(x, low, high, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _raw_log(x, FORMAT: tl.constexpr, CLIP: tl.constexpr, epsilon):
    """``u``: what a log-softmax side normalises (the log of clipped probabilities, else ``x``)."""
    u = x
    if FORMAT == "probs":
        u = tl.log(_clamp(x, epsilon, 1.0)) if CLIP else tl.log(x)
    return u


@triton.jit
def _log_sum_exp(
    row_ptr,
    n,
    FORMAT: tl.constexpr,
    CLIP: tl.constexpr,
    epsilon,
    inv_t,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """``(shift, log Σ_i exp(u_i / T − shift))`` of one row, online; ``shift`` is the maximum, 0 when it
    is not finite. Kept apart, so that ``c = (u/T − shift) − log Σ`` loses nothing where
    ``|shift| ≥ 2²⁴`` (their sum would round ``log Σ`` away: logits [1e10, 1e10] gave c = 0)."""
    top = tl.full((), float("-inf"), ACC)
    total = tl.zeros((), ACC)
    for start in range(0, n, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        inside = offsets < n
        x = tl.load(row_ptr + offsets, mask=inside, other=1.0).to(ACC)
        s = tl.where(inside, _raw_log(x, FORMAT, CLIP, epsilon) * inv_t, float("-inf"))
        new_top = tl.maximum(top, tl.max(s, axis=0))
        old_shift = tl.where(tl.abs(top) < float("inf"), top, 0.0)  # 0 unless finite, as the core
        shift = tl.where(tl.abs(new_top) < float("inf"), new_top, 0.0)
        rescaled = tl.where(total == 0.0, 0.0, total * tl.exp(old_shift - shift))
        total = rescaled + tl.sum(tl.exp(s - shift), axis=0)
        top = new_top
    return tl.where(tl.abs(top) < float("inf"), top, 0.0), tl.log(total)


@triton.jit
def _side(
    x,
    FORMAT: tl.constexpr,
    USE_LSE: tl.constexpr,
    CLIP: tl.constexpr,
    shift,
    log_total,
    epsilon,
    log_epsilon,
    inv_t,
):
    """``(b, q, kept)``: log-probability, probability, whether Keras' clip let the entry through."""
    if USE_LSE:
        c = (_raw_log(x, FORMAT, CLIP, epsilon) * inv_t - shift) - log_total
        b = c
        if CLIP:
            b = _clamp(c, log_epsilon, 0.0)
        q = tl.exp(b)
        kept = b == c
    elif FORMAT == "probs":
        q = x
        if CLIP:
            q = _clamp(x, epsilon, 1.0)
        b = tl.log(q)
        kept = q == x
    else:
        b = x
        if CLIP:
            b = _clamp(x, log_epsilon, 0.0)
        q = tl.exp(b)
        kept = b == x
    return b, q, kept


@triton.jit
def _element(a, t, b, q, KIND: tl.constexpr, beta, log_beta, log1m_beta):
    """``(term, ∂ℓ/∂b, reverse part)`` per entry: :func:`kldiv.core.grads.forward_element`,
    ``reverse_element``, ``js_element``; the symmetric KL keeps its reverse gradient apart (each
    direction is chained through the softmax on its own, :func:`kldiv.core.grads.softmax_chain`),
    every other kind returns 0 there. A zero probability is a log of ``-inf`` (the core's
    ``Distribution.zeros``); it occurs only in exact mode, Keras mode clips the logs to ``[log ε, 0]``."""
    t_zero = a == float("-inf")
    q_zero = b == float("-inf")
    g2 = tl.zeros_like(a)
    if KIND == "js":
        term, g = js_element(t, q, a, b, t_zero, q_zero, beta, log_beta, log1m_beta)
    elif KIND == "forward":
        term, g = forward_element(t, a, b, t_zero)
    elif KIND == "reverse":
        term, g = reverse_element(q, a, b, q_zero)
    else:
        term, g = forward_element(t, a, b, t_zero)
        reverse, g2 = reverse_element(q, a, b, q_zero)
        term += reverse
    return term, g, g2


@triton.jit
def _tile(
    t_row,
    p_row,
    offsets,
    inside,
    t_shift,
    t_log_total,
    p_shift,
    p_log_total,
    epsilon,
    log_epsilon,
    inv_t,
    beta,
    log_beta,
    log1m_beta,
    TRUE_FORMAT: tl.constexpr,
    PRED_FORMAT: tl.constexpr,
    KIND: tl.constexpr,
    CLIP: tl.constexpr,
    TRUE_LSE: tl.constexpr,
    PRED_LSE: tl.constexpr,
    ACC: tl.constexpr,
):
    """One tile: ``(term, g', g2', x)`` with ``g'`` (and the symmetric KL's reverse part ``g2'``) zero
    where the clip acted, ``x`` the raw ``y_pred``. For probabilities without a softmax, ``g2'`` is
    the part of ``∂ℓ/∂p`` that is proportional to ``q``, already divided by ``p``."""
    xt = tl.load(t_row + offsets, mask=inside, other=1.0).to(ACC)
    xp = tl.load(p_row + offsets, mask=inside, other=1.0).to(ACC)
    a, t, _ = _side(xt, TRUE_FORMAT, TRUE_LSE, CLIP, t_shift, t_log_total, epsilon, log_epsilon, inv_t)
    b, q, kept = _side(xp, PRED_FORMAT, PRED_LSE, CLIP, p_shift, p_log_total, epsilon, log_epsilon, inv_t)
    term, g, g2 = _element(a, t, b, q, KIND, beta, log_beta, log1m_beta)
    if PRED_FORMAT == "probs" and not PRED_LSE and KIND != "forward":
        # ∂ℓ/∂p = g / p, and every part of g but the forward KL's −t is proportional to q: those
        # parts are evaluated with q / p in place of q (then need no division), so that q (b − a + 1)
        # cannot overflow before the division (p of 3e38). They are returned as g2'.
        _, g_unit, g2_unit = _element(a, t, b, q / xp, KIND, beta, log_beta, log1m_beta)
        if KIND == "symmetric":
            g2 = g2_unit
        else:
            g, g2 = tl.zeros_like(g), g_unit
    term = tl.where(inside, term, 0.0)
    # Exact mode has no clip: every entry passes (a NaN included).
    passed = (inside & kept) if CLIP else inside
    return term, tl.where(passed, g, 0.0), tl.where(passed, g2, 0.0), xp


@triton.jit
def _softmax_grad(
    g,
    g2,
    xp,
    sum_g,
    sum_g2,
    p_shift,
    p_log_total,
    factor,
    PRED_FORMAT: tl.constexpr,
    CLIP: tl.constexpr,
    epsilon,
    inv_t,
    KIND: tl.constexpr,
):
    """Through ``c = log_softmax(u / T)``: :func:`kldiv.core.grads.softmax_chain`,
    ``(g'_k − softmax_k · Σ_j g'_j) · factor`` (``factor`` is ``coef / T``; the symmetric KL adds the
    same of its reverse part ``g2'``), and ``/ p`` more where ``u = log clip(p)`` (0 where the clip
    acted or ``p = 0``)."""
    softmax = tl.exp((_raw_log(xp, PRED_FORMAT, CLIP, epsilon) * inv_t - p_shift) - p_log_total)
    out = softmax_chain(g, softmax, sum_g, softmax_chain_factor(sum_g, factor))
    if KIND == "symmetric":
        out += softmax_chain(g2, softmax, sum_g2, softmax_chain_factor(sum_g2, factor))
    if PRED_FORMAT == "probs":  # ∂ log p / ∂p = 1 / p: ±inf or NaN at p = 0 in exact mode, as autograd's
        out = tl.where(xp == _clamp(xp, epsilon, 1.0), out / xp, 0.0) if CLIP else out / xp
    return out


@triton.jit
def fused_rows_kernel(
    t_ptr,
    p_ptr,
    coef_ptr,
    keep_ptr,
    values_ptr,
    grad_ptr,
    n,
    t_stride,
    p_stride,
    grad_stride,
    epsilon: tl.float64,
    log_epsilon: tl.float64,
    inv_t: tl.float64,
    beta: tl.float64,
    log_beta: tl.float64,
    log1m_beta: tl.float64,
    TRUE_FORMAT: tl.constexpr,
    PRED_FORMAT: tl.constexpr,
    KIND: tl.constexpr,
    CLIP: tl.constexpr,
    TRUE_LSE: tl.constexpr,
    PRED_LSE: tl.constexpr,
    SUM_G_IS_MINUS_ONE: tl.constexpr,
    HAS_KEEP: tl.constexpr,
    WANT_GRAD: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Row ``program_id(0)``: ``values[r] = ℓ_r`` and ``grad[r] = coef[r] · ∂ℓ_r/∂y_pred[r]``."""
    row = tl.program_id(0).to(tl.int64)
    t_row = t_ptr + row * t_stride
    p_row = p_ptr + row * p_stride
    g_row = grad_ptr + row * grad_stride
    epsilon = tl.cast(epsilon, ACC)
    log_epsilon = tl.cast(log_epsilon, ACC)
    inv_t = tl.cast(inv_t, ACC)
    beta = tl.cast(beta, ACC)
    log_beta = tl.cast(log_beta, ACC)
    log1m_beta = tl.cast(log1m_beta, ACC)
    keep = True
    if HAS_KEEP:
        keep = tl.load(keep_ptr + row) != 0
    if keep:
        t_shift = tl.zeros((), ACC)
        t_log_total = tl.zeros((), ACC)
        p_shift = tl.zeros((), ACC)
        p_log_total = tl.zeros((), ACC)
        if TRUE_LSE:
            t_shift, t_log_total = _log_sum_exp(t_row, n, TRUE_FORMAT, CLIP, epsilon, inv_t, ACC, BLOCK)
        if PRED_LSE:
            p_shift, p_log_total = _log_sum_exp(p_row, n, PRED_FORMAT, CLIP, epsilon, inv_t, ACC, BLOCK)
        scale = tl.load(coef_ptr + row).to(ACC)
        total = tl.zeros((BLOCK,), ACC)
        g_sum = tl.zeros((BLOCK,), ACC)
        g2_sum = tl.zeros((BLOCK,), ACC)
        for start in range(0, n, BLOCK):
            offsets = start + tl.arange(0, BLOCK)
            inside = offsets < n
            # fmt: off
            term, g, g2, xp = _tile(t_row, p_row, offsets, inside, t_shift, t_log_total, p_shift, p_log_total,
                epsilon, log_epsilon, inv_t, beta, log_beta, log1m_beta, TRUE_FORMAT, PRED_FORMAT, KIND, CLIP,
                TRUE_LSE, PRED_LSE, ACC)
            # fmt: on
            total += term
            if WANT_GRAD:
                if PRED_LSE and SUM_G_IS_MINUS_ONE:
                    # Σ t = 1 unless the teacher's log-sum-exp is not finite (NaN or +inf logits):
                    # then Σ g' is NaN, as the core's.
                    minus_one = (t_shift + t_log_total) * 0.0 - 1.0
                    # fmt: off
                    out = _softmax_grad(g, g2, xp, minus_one, 0.0, p_shift, p_log_total, inv_t * scale,
                                        PRED_FORMAT, CLIP, epsilon, inv_t, KIND)
                    # fmt: on
                    tl.store(g_row + offsets, out.to(grad_ptr.dtype.element_ty), mask=inside)
                elif PRED_LSE:
                    g_sum += g
                    g2_sum += g2
                elif PRED_FORMAT == "probs":  # b = log p: ∂ℓ/∂p = g / p (0 where g is 0); g2 is / p already
                    out = (tl.where(g != 0.0, g / xp, g) + g2) * scale
                    tl.store(g_row + offsets, out.to(grad_ptr.dtype.element_ty), mask=inside)
                else:  # b = u: ∂ℓ/∂u = g, the directions' gradients w.r.t. b add (no chain rule follows)
                    out = (g + g2) * scale
                    tl.store(g_row + offsets, out.to(grad_ptr.dtype.element_ty), mask=inside)
        tl.store(values_ptr + row, tl.sum(total, axis=0).to(values_ptr.dtype.element_ty))
        if WANT_GRAD and PRED_LSE and not SUM_G_IS_MINUS_ONE:
            sum_g = tl.sum(g_sum, axis=0)
            sum_g2 = tl.sum(g2_sum, axis=0)
            for start in range(0, n, BLOCK):
                offsets = start + tl.arange(0, BLOCK)
                inside = offsets < n
                # fmt: off
                _, g, g2, xp = _tile(t_row, p_row, offsets, inside, t_shift, t_log_total, p_shift,
                    p_log_total, epsilon, log_epsilon, inv_t, beta, log_beta, log1m_beta, TRUE_FORMAT,
                    PRED_FORMAT, KIND, CLIP, TRUE_LSE, PRED_LSE, ACC)
                out = _softmax_grad(g, g2, xp, sum_g, sum_g2, p_shift, p_log_total, inv_t * scale,
                                    PRED_FORMAT, CLIP, epsilon, inv_t, KIND)
                # fmt: on
                tl.store(g_row + offsets, out.to(grad_ptr.dtype.element_ty), mask=inside)
    else:
        tl.store(values_ptr + row, tl.zeros((), values_ptr.dtype.element_ty))
        if WANT_GRAD:
            for start in range(0, n, BLOCK):
                offsets = start + tl.arange(0, BLOCK)
                tl.store(g_row + offsets, tl.zeros((BLOCK,), grad_ptr.dtype.element_ty), mask=offsets < n)
