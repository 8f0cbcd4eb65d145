r"""Closed-form per-element terms and gradients of the divergences, in log space: the formulas once.

Shared by every backend so that each formula lives here only: the core (:mod:`.divergences`, on an
array namespace ``xp``), the vocabulary-parallel path (:mod:`kldiv.distributed._vocab`), and the
fused kernels, which compile these very functions (Numba ``njit``, ``triton.jit``; see
:func:`compile_formulas`). Besides ``+ − ×`` the formulas call only three *primitives*, which each
backend supplies: ``where(condition, x, y)`` (``x`` may be a Python number; a ``None`` condition
selects nothing), ``exp`` and ``log1p`` (only inside :func:`logaddexp`, which an array namespace
replaces by its own ``xp.logaddexp``). The definitions below are the plain-Python ones.

The caller supplies ``a = log t`` (first argument, ``y_true``), ``b = log q`` (second argument,
``y_pred``), the probabilities ``t = e^a``, ``q = e^b`` and, in exact mode, the masks ``t_zero`` /
``q_zero`` of zero probabilities (``None`` or ``False`` in Keras mode, where nothing is 0).

For a row, ``ℓ(b) = Σ_i term_i`` and the gradient returned is ``∂ℓ/∂b_i`` with ``b`` treated as free
log-probabilities:

==============  =================================  ==========================================
divergence      term                               ∂ℓ/∂b
==============  =================================  ==========================================
forward KL      ``t (a − b)``                      ``−t``
reverse KL      ``q (b − a)``                      ``q (b − a + 1)``
JS_β            ``β t (a − m) + (1−β) q (b − m)``  ``(1−β) q (b − m)``   (the ∂m/∂b terms cancel)
==============  =================================  ==========================================

with ``m = log(β t + (1−β) q)`` (:func:`js_log_mixture`). Exact mode: an entry whose probability in
front of the log is 0 contributes 0 to the value and 0 to the gradient, its logs masked to 0 *before*
any product (``0 · log 0`` never appears); JS_β takes ``m`` from the other side there.

The kernels then chain ``∂ℓ/∂b`` to the input format: through ``b = log_softmax(u / T)`` it is
:func:`softmax_chain`; through ``b = log p`` it is ``g / p``; through ``b = u`` it is ``g``; Keras'
clip makes it 0 where the input was clipped. The symmetric KL (forward + reverse) is chained one
direction at a time, as autograd through the core does: summed first, the reverse gradient
``q (b − a + 1)`` (of size ``|a|`` where the logits are huge) would absorb the forward one's ``−t``
before :func:`softmax_chain` cancels it again, and the O(1) result ``q − t`` would be lost.
"""

from __future__ import annotations

import builtins
import math
import types
from collections.abc import Callable
from typing import Any

# The functions compiled for every backend, in an order where each one's callees come first.
FORMULAS = (
    "masked",
    "forward_term",
    "forward_grad",
    "reverse_term",
    "reverse_grad",
    "js_term",
    "js_grad",
    "forward_element",
    "reverse_element",
    "logaddexp",
    "js_log_mixture",
    "js_element",
    "softmax_chain",
    "softmax_chain_factor",
)


def where(condition: Any, x: Any, y: Any) -> Any:
    """Primitive: ``x`` where ``condition``, else ``y``."""
    return y if condition is None or not condition else x


def exp(x: float) -> float:
    """Primitive: ``e^x``."""
    return math.exp(x) if x < 709.0 else math.inf


def log1p(x: float) -> float:
    """Primitive: ``log(1 + x)`` (only for ``x ∈ [0, 1]`` or NaN here)."""
    return math.log1p(x)


def masked(zero: Any, x: Any) -> Any:
    """``x`` with 0 where ``zero`` (the exact-mode mask of a zero probability)."""
    return where(zero, 0.0, x)


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


def forward_element(t: float, a: float, b: float, t_zero: Any) -> tuple[float, float]:
    """``(term, ∂ℓ/∂b)`` of KL(P‖Q); where ``t_zero`` both logs and ``t`` are masked: ``(0, 0)``."""
    t, a, b = masked(t_zero, t), masked(t_zero, a), masked(t_zero, b)
    return forward_term(t, a, b), forward_grad(t)


def reverse_element(q: float, a: float, b: float, q_zero: Any) -> tuple[float, float]:
    """``(term, ∂ℓ/∂b)`` of KL(Q‖P); where ``q_zero`` both logs and ``q`` are masked: ``(0, 0)``."""
    q, a, b = masked(q_zero, q), masked(q_zero, a), masked(q_zero, b)
    return reverse_term(q, a, b), reverse_grad(q, a, b)


def logaddexp(x: float, y: float) -> float:
    r"""``log(e^x + e^y) = top + log(1 + e^{bottom − top})``, ``top = max(x, y)``, stable.

    A NaN in either argument gives NaN (it reaches ``bottom − top`` whichever way the comparison
    goes); ``±inf`` against a finite value gives ``±inf`` / the finite value. (``x = y = ±inf`` gives
    NaN where ``xp.logaddexp`` gives ``±inf``; the divergences never evaluate it there: zeros are
    masked first, and an infinite log-probability makes the term NaN either way.)
    """
    larger = x > y
    top = where(larger, x, y)
    return top + log1p(exp(where(larger, y, x) - top))


def js_log_mixture(a: float, b: float, t_zero: Any, q_zero: Any, log_beta: float, log1m_beta: float) -> float:
    """``m = log(β t + (1−β) q) = logaddexp(a + log β, b + log(1−β))`` from masked logs.

    Exact mode: ``b + log(1−β)`` where ``t = 0`` and ``a + log β`` where ``q = 0`` (the mixture is
    the other side there); both 0 leaves ``b + log(1−β)`` with ``b`` masked to 0, times ``t = q = 0``.
    """
    weighted_a, weighted_b = a + log_beta, b + log1m_beta
    return where(t_zero, weighted_b, where(q_zero, weighted_a, logaddexp(weighted_a, weighted_b)))


def js_element(
    t: float,
    q: float,
    a: float,
    b: float,
    t_zero: Any,
    q_zero: Any,
    beta: float,
    log_beta: float,
    log1m_beta: float,
) -> tuple[float, float]:
    """``(term, ∂ℓ/∂b)`` of JS_β: each side's zeros masked, then :func:`js_term` and :func:`js_grad`.

    An infinite ``t`` makes the gradient NaN (``+ t · 0``): the ``∂m/∂b`` terms that cancel in
    :func:`js_grad` are ``∞ · 0`` there, and autograd through the core says NaN.
    """
    t, a = masked(t_zero, t), masked(t_zero, a)
    q, b = masked(q_zero, q), masked(q_zero, b)
    m = js_log_mixture(a, b, t_zero, q_zero, log_beta, log1m_beta)
    return js_term(t, q, a, b, m, beta), js_grad(q, b, m, beta) + t * 0.0


def softmax_chain(g: float, softmax: float, g_sum: float, factor: float) -> float:
    r"""``(g_k − softmax_k Σ_j g_j) · factor``: the chain rule through ``b = log_softmax(u / T)``.

    ``∂ℓ/∂u_k = Σ_j g_j ∂b_j/∂u_k = (g_k − softmax_k Σ_j g_j) / T``; ``factor`` is ``1 / T`` times
    any per-row coefficient, from :func:`softmax_chain_factor`.
    """
    return (g - softmax * g_sum) * factor


def softmax_chain_factor(g_sum: float, factor: float) -> float:
    """``factor`` of :func:`softmax_chain` for a row, NaN where ``Σ_j g_j`` is not finite.

    Autograd through the core's :func:`~kldiv.core.divergences.log_softmax` gives such a row NaN in
    every entry (its max shift passes ``∞ − ∞`` on to each); the kernels follow it. (``Σg · 0`` is 0
    or NaN; no fast-math flag in use may fold it, whereas ``Σg − Σg`` folds under reassociation.)
    """
    zero_or_nan = g_sum * 0.0
    return where(zero_or_nan == 0.0, factor, zero_or_nan)


def compile_formulas(
    decorate: Callable[[Callable[..., Any]], Any], **primitives: Any
) -> types.SimpleNamespace:
    """Every function of :data:`FORMULAS`, compiled for one backend from this module's source.

    Each is re-bound to a namespace that holds ``primitives`` (``where``, ``exp``, ``log1p``, or a
    formula's replacement, e.g. ``logaddexp``; Triton's interpreter also wants ``tl``) and the other
    compiled formulas, then passed to ``decorate`` (``njit(...)``, ``triton.jit``, or the identity for
    an array namespace). The same code objects serve every backend: no formula is re-typed.
    """
    namespace: dict[str, Any] = {"__name__": __name__, "__builtins__": builtins, **primitives}
    for name in FORMULAS:
        if name not in primitives:
            source = globals()[name]
            rebound = types.FunctionType(source.__code__, namespace, name, source.__defaults__)
            rebound.__doc__ = source.__doc__
            namespace[name] = decorate(rebound)
    return types.SimpleNamespace(**{name: namespace[name] for name in FORMULAS})


_ARRAY_NAMESPACES: dict[type, Any] = {}
"""The array namespace of each array type the array formulas have been handed (see below)."""


def _namespace_of(x: Any) -> Any:
    for klass in type(x).__mro__:
        xp = _ARRAY_NAMESPACES.get(klass)
        if xp is not None:
            return xp
    raise TypeError(f"kldiv.core.grads: no array namespace registered for {type(x).__name__}")


def _array_where(condition: Any, x: Any, y: Any) -> Any:
    if condition is None:
        return y
    xp = _namespace_of(y)
    return xp.where(condition, xp.full_like(y, x) if isinstance(x, (int, float)) else x, y)


def _array_logaddexp(a: Any, b: Any) -> Any:
    return _namespace_of(a).logaddexp(a, b)


_ARRAY_FORMULAS = compile_formulas(lambda formula: formula, where=_array_where, logaddexp=_array_logaddexp)


def array_formulas(xp: Any, *arrays: Any) -> types.SimpleNamespace:
    """The formulas on arrays of namespace ``xp`` (``xp.where``, ``xp.logaddexp``), for ``arrays``.

    The array formulas are compiled once, at import: their ``where`` / ``logaddexp`` find the
    namespace from the operand's type, registered here. (Building them per namespace at run time
    would create functions, which ``torch.compile`` cannot trace; a dict lookup it can.)
    """
    for x in arrays:
        if type(x) not in _ARRAY_NAMESPACES:
            _ARRAY_NAMESPACES[type(x)] = xp
    return _ARRAY_FORMULAS
