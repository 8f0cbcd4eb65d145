r"""Vocabulary-parallel divergence, written once against an array namespace ``xp`` and two collectives.

Each participant holds a shard ``[..., V_r]`` (vocabulary last) of the teacher ``x`` and the student
``u``; the shards of a row, concatenated in rank order, are the full row of ``V = Σ_r V_r`` entries
(shards may be uneven, even empty). Writing ``s = x / T`` (logits, or log-probabilities when
``T ≠ 1``), the global log-softmax needs two all-reduces per side::

    M   = all_max(max_j s_j)                    (0 where M is not finite)
    S   = all_sum(Σ_j exp(s_j − M))
    c_j = (s_j − M) − log S                     = log_softmax(s)_j over the whole row

(:func:`kldiv.core.divergences.log_softmax` with these two collectives). A side given as
log-probabilities with ``T = 1`` is used as is (``c = s``), with no collective.
Keras mode (``epsilon > 0``) clips the log-probabilities: ``a = clip(c_teacher, log ε, 0)``,
``b = clip(c_student, log ε, 0)``; exact mode (``epsilon = 0``) takes ``a = c_teacher``,
``b = c_student`` and masks zero probabilities (``log 0 = −inf``) before any product, as
:mod:`kldiv.core.divergences` does. Then, per entry, the term ``ℓ_j`` and ``g_j = ∂ℓ/∂b_j`` are those
of :mod:`kldiv.core.grads` (forward, reverse, their sum for symmetric, ``JS_β``), and one more
all-reduce gives the row's value and the row sum of the gradient::

    value = all_sum(Σ_j ℓ_j),      G = all_sum(Σ_j g'_j),      g'_j = g_j · [b_j not clipped]

The gradient w.r.t. the local student entries stays local (log-softmax chain rule)::

    ∂value/∂u_j = (g'_j − exp(c_j) · G) / T        (student through a log-softmax)
    ∂value/∂u_j = g'_j                             (log-probabilities, T = 1)

Symmetric KL takes the chain rule of each direction apart (``G_forward`` and ``G_reverse`` in the same
all-reduce): summed first, the reverse gradient's ``~|b − a|`` (logits of 1e30) would cancel the
forward one's O(1) part in ``g' − exp(c) · G``, which autograd through the core keeps.

``value`` and ``G`` are identical on every participant. The teacher is a constant (no gradient), as
in distillation, unless ``row_divergence(teacher_grad=True)`` asks for its gradient: the same chain
rule on the teacher's side, ``(h_j − exp(a_j) · H) / T``, where ``h_j = ∂ℓ/∂a_j`` is the student-side
gradient of the divergence with the sides exchanged (:func:`swapped`) and ``H = all_sum(Σ_j h_j)``
rides in the same all-reduce as ``G``. This module imports no framework:
:mod:`kldiv.distributed.torch` supplies ``torch.distributed`` all-reduces, :mod:`kldiv.distributed.jax`
``lax.pmax`` / ``lax.psum``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol

from ..core import grads
from ..core.divergences import clip, log_softmax
from ..options import Options

Array = Any
Namespace = Any

SUPPORTED_FORMATS = ("logits", "log_probs")


class Collectives(Protocol):
    """Element-wise all-reduces over the participants that share the vocabulary."""

    def all_max(self, x: Array) -> Array: ...

    def all_sum(self, x: Array) -> Array: ...


def needs_lse(options: Options, fmt: str) -> bool:
    """Whether a side in format ``fmt`` goes through a (global) log-softmax."""
    return fmt == "logits" or options.temperature != 1.0


def check_formats(y_true_format: str, y_pred_format: str) -> None:
    """Vocabulary shards are given as logits or log-probabilities (probabilities are not supported)."""
    for argument, fmt in (("y_true_format", y_true_format), ("y_pred_format", y_pred_format)):
        if fmt not in SUPPORTED_FORMATS:
            raise ValueError(
                f"Argument `{argument}`: expected one of {SUPPORTED_FORMATS!r} for a "
                f"vocabulary-parallel divergence; received {fmt!r}."
            )


def _kl_terms(xp: Namespace, a: Array, b: Array, options: Options) -> tuple[Array, Array]:
    """Forward / reverse / symmetric KL: ``(ℓ_j, ∂ℓ/∂b_j)`` from :func:`kldiv.core.grads.forward_element`
    and ``reverse_element`` (exact mode masks the entries where the distribution in front of the log
    is 0, ``log 0 = -inf``)."""
    formulas = grads.array_formulas(xp, a, b)
    exact = options.epsilon == 0
    term = g = xp.zeros_like(b)
    if options.direction in ("forward", "symmetric"):
        zero = a == -math.inf if exact else None
        forward, forward_g = formulas.forward_element(xp.exp(a), a, b, zero)
        term, g = term + forward, g + forward_g
    if options.direction in ("reverse", "symmetric"):
        zero = b == -math.inf if exact else None
        reverse, reverse_g = formulas.reverse_element(xp.exp(b), a, b, zero)
        term, g = term + reverse, g + reverse_g
    return term, g


def _js_terms(xp: Namespace, a: Array, b: Array, options: Options) -> tuple[Array, Array]:
    """``JS_β``: ``(ℓ_j, ∂ℓ/∂b_j)`` from :func:`kldiv.core.grads.js_element` (``m`` a ``logaddexp``,
    exact mode's zeros masked). ``β ∈ {0, 1}`` gives exactly 0."""
    beta = options.beta
    if beta in (0.0, 1.0):
        zero = xp.zeros_like(b)
        return zero, zero
    exact = options.epsilon == 0
    t_zero = a == -math.inf if exact else None
    q_zero = b == -math.inf if exact else None
    formulas = grads.array_formulas(xp, a, b)
    return formulas.js_element(
        xp.exp(a), xp.exp(b), a, b, t_zero, q_zero, beta, math.log(beta), math.log1p(-beta)
    )


def log_probs(
    xp: Namespace, teacher: Array, student: Array, options: Options, comm: Collectives
) -> tuple[Array, Array]:
    """``(c_teacher, c_student)``: the local entries of each side's log-probabilities over the full rows.

    ``x / T``, then a global log-softmax for the sides that need one (both share the all-reduces).
    """
    temperature = options.temperature
    sides = [x if temperature == 1.0 else x / temperature for x in (teacher, student)]
    lse_sides = [
        i for i, fmt in enumerate((options.y_true_format, options.y_pred_format)) if needs_lse(options, fmt)
    ]
    if lse_sides:
        stacked = xp.stack([sides[i] for i in lse_sides])  # one all_max and one all_sum for both
        normalised = log_softmax(xp, stacked, -1, all_max=comm.all_max, all_sum=comm.all_sum)
        for k, i in enumerate(lse_sides):
            sides[i] = normalised[k]
    return sides[0], sides[1]


def local_terms(xp: Namespace, c_teacher: Array, c_student: Array, options: Options) -> tuple[Array, Array]:
    """``(Σ_j ℓ_j, g')`` over the local entries: the row's partial divergence and ``g'_j = ∂ℓ/∂c_j``.

    Keras mode clips both sides to ``[log ε, 0]`` first and passes no gradient where the clip acts
    (``g'_j = g_j · [b_j = c_j]``); exact mode masks zero probabilities. No communication.
    """
    a, b = c_teacher, c_student
    if options.epsilon > 0:
        low = math.log(options.epsilon)
        a, b = clip(xp, a, low, 0.0), clip(xp, b, low, 0.0)
    terms = _js_terms if options.beta is not None else _kl_terms
    term, g = terms(xp, a, b, options)
    if options.epsilon > 0:
        g = xp.where(b == c_student, g, xp.zeros_like(g))  # Keras' clip passes no gradient
    return xp.sum(term, axis=-1), g


def chained_apart(options: Options) -> list[Options]:
    """The divergences whose gradients take the log-softmax chain rule one at a time: forward and
    reverse for the symmetric KL, else ``options`` alone.

    Summed first, a reverse gradient of ~|b − a| (logits of 1e30, or 1e3 in float32) would cancel
    the forward one's O(1) part in ``g − softmax · G`` (:mod:`kldiv.core.grads`: the kernels chain
    each direction apart too, and autograd through the core does in effect).
    """
    if options.beta is None and options.direction == "symmetric":
        return [dataclasses.replace(options, direction=d) for d in ("forward", "reverse")]
    return [options]


def swapped(options: Options) -> Options:
    """The same divergence with the two sides exchanged: ``KL(P‖Q)`` is the reverse KL of ``(Q, P)``,
    the symmetric KL is symmetric, ``JS_β(P, Q) = JS_{1−β}(Q, P)``. The teacher's per-entry gradient
    ``∂ℓ/∂a_j`` is therefore the student-side gradient of the swapped divergence at ``(b, a)`` — exact
    mode's zero masks and Keras' clip follow the sides, so no second set of formulas is needed."""
    if options.beta is not None:
        return dataclasses.replace(options, beta=1.0 - options.beta)
    flipped = {"forward": "reverse", "reverse": "forward"}.get(options.direction, options.direction)
    return dataclasses.replace(options, direction=flipped)


def _chain(xp: Namespace, c: Array, fmt: str, parts: list[Array], sums: Array, options: Options) -> Array:
    """``∂ value / ∂`` one side's local entries from its per-part ``g'`` and their all-reduced row sums."""
    if not needs_lse(options, fmt):
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]
    softmax, grad = xp.exp(c), None
    for k, g in enumerate(parts):
        formulas = grads.array_formulas(xp, g)
        g_sum = xp.expand_dims(sums[k], axis=-1)
        factor = formulas.softmax_chain_factor(g_sum, 1.0 / options.temperature)
        chained = formulas.softmax_chain(g, softmax, g_sum, factor)
        grad = chained if grad is None else grad + chained
    return grad


def row_divergence(
    xp: Namespace,
    teacher: Array,
    student: Array,
    options: Options,
    comm: Collectives,
    *,
    teacher_grad: bool = False,
) -> tuple[Array, ...]:
    """Per-row divergence (identical on every participant) and its gradient w.r.t. the local student.

    Args:
        xp: the array namespace of the inputs.
        teacher: local teacher shard ``[..., V_r]`` (``options.y_true_format``), vocabulary last.
        student: local student shard of the same shape (``options.y_pred_format``).
        options: the options.
        comm: the all-reduces over the participants.
        teacher_grad: also return ``∂ values / ∂ teacher`` (from :func:`swapped`: ``h_j``, chained
            through the teacher's log-softmax as the student's ``g'_j`` is; its row sums ride in the
            same all-reduce as ``G``).

    Returns:
        ``(values [...], grad [..., V_r])`` — with ``teacher_grad``, ``(values, grad, teacher_grad)``:
        ``values`` is the divergence of each full row, ``grad`` is ``∂ values / ∂ student`` for the
        local entries (one row's value depends only on its row), by the log-softmax chain rule
        ``(g'_j − exp(c_j) · G) / T`` with ``G`` all-reduced.
    """
    c_teacher, c_student = log_probs(xp, teacher, student, options, comm)
    parts = chained_apart(options)
    terms = [local_terms(xp, c_teacher, c_student, part) for part in parts]
    partial = terms[0][0] if len(terms) == 1 else terms[0][0] + terms[1][0]
    sides = [(c_student, options.y_pred_format, [g for _, g in terms])]
    if teacher_grad:
        swaps = [local_terms(xp, c_student, c_teacher, swapped(part))[1] for part in parts]
        sides.append((c_teacher, options.y_true_format, swaps))
    totals = comm.all_sum(xp.stack([partial, *(xp.sum(g, axis=-1) for _, _, gs in sides for g in gs)]))
    out, start = [totals[0]], 1
    for c, fmt, gs in sides:
        out.append(_chain(xp, c, fmt, gs, totals[start : start + len(gs)], options))
        start += len(gs)
    return tuple(out)
