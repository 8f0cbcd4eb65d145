r"""Closed-form per-element terms and gradients of the divergences, in log space.

Shared by every fused kernel (Numba on CPU, Triton on GPU) so that the formulas live once. Each
function takes plain numbers (or arrays: only ``+ - *`` are used) and no ``log``/``exp``: the caller
supplies ``a = log t`` (first argument, ``y_true``), ``b = log q`` (second argument, ``y_pred``),
their probabilities ``t = e^a``, ``q = e^b`` and, for Jensen–Shannon, ``m = log(β t + (1−β) q)``.

For a row, ``ℓ(b) = Σ_i term_i`` and the gradient returned is ``∂ℓ/∂b_i`` with ``b`` treated as free
log-probabilities:

==============  =================================  ==========================================
divergence      term                               ∂ℓ/∂b
==============  =================================  ==========================================
forward KL      ``t (a − b)``                      ``−t``
reverse KL      ``q (b − a)``                      ``q (b − a + 1)``
JS_β            ``β t (a − m) + (1−β) q (b − m)``  ``(1−β) q (b − m)``   (the ∂m/∂b terms cancel)
==============  =================================  ==========================================

The kernels then chain ``∂ℓ/∂b`` to the input format: through ``b = log_softmax(u / T)`` it is
``(g_j − q_j Σ_i g_i) / T``; through ``b = log p`` it is ``g / p``; through ``b = u`` it is ``g``;
Keras' clip makes it 0 where the input was clipped. Entries with a zero probability in front of the
log contribute 0 to the value and 0 to the gradient (exact mode).
"""

from __future__ import annotations


def forward_term(t: float, a: float, b: float) -> float:
    """``t (a − b)``: one entry of KL(P‖Q)."""
    return t * (a - b)


def forward_grad(t: float) -> float:
    """``∂/∂b [t (a − b)] = −t``."""
    return -t


def reverse_term(q: float, a: float, b: float) -> float:
    """``q (b − a)``: one entry of KL(Q‖P)."""
    return q * (b - a)


def reverse_grad(q: float, a: float, b: float) -> float:
    """``∂/∂b [e^b (b − a)] = q (b − a + 1)``."""
    return q * (b - a + 1.0)


def js_term(t: float, q: float, a: float, b: float, m: float, beta: float) -> float:
    """``β t (a − m) + (1−β) q (b − m)``: one entry of JS_β(P, Q)."""
    return beta * t * (a - m) + (1.0 - beta) * q * (b - m)


def js_grad(q: float, b: float, m: float, beta: float) -> float:
    """``∂/∂b`` of :func:`js_term`: ``(1−β) q (b − m)``."""
    return (1.0 - beta) * q * (b - m)
