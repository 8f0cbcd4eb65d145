r"""Vocabulary-parallel divergence, written once against an array namespace ``xp`` and two collectives.

Each participant holds a shard ``[..., V_r]`` (vocabulary last) of the teacher ``x`` and the student
``u``; the shards of a row, concatenated in rank order, are the full row of ``V = Σ_r V_r`` entries
(shards may be uneven, even empty). Writing ``s = x / T`` (logits, or log-probabilities when
``T ≠ 1``), the global log-softmax needs two all-reduces per side::

    M   = all_max(max_j s_j)                    (0 where M is not finite, as core.log_softmax)
    S   = all_sum(Σ_j exp(s_j − M))
    c_j = (s_j − M) − log S                     = log_softmax(s)_j over the whole row

A side given as log-probabilities with ``T = 1`` is used as is (``c = s``), with no collective.
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

``value`` and ``G`` are identical on every participant. The teacher is a constant (no gradient), as
in distillation. This module imports no framework: :mod:`kldiv.distributed.torch` supplies
``torch.distributed`` all-reduces, :mod:`kldiv.distributed.jax` ``lax.pmax`` / ``lax.psum``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol

from ..core import grads

Array = Any
Namespace = Any

SUPPORTED_FORMATS = ("logits", "log_probs")


class Collectives(Protocol):
    """Element-wise all-reduces over the participants that share the vocabulary."""

    def all_max(self, x: Array) -> Array: ...

    def all_sum(self, x: Array) -> Array: ...


@dataclasses.dataclass(frozen=True)
class Spec:
    """The options the per-row program needs (from :class:`kldiv.Options`)."""

    true_format: str
    pred_format: str
    epsilon: float
    temperature: float
    direction: str
    beta: float | None

    @classmethod
    def from_options(cls, options: Any) -> Spec:
        return cls(
            true_format=options.y_true_format,
            pred_format=options.y_pred_format,
            epsilon=options.epsilon,
            temperature=options.temperature,
            direction=options.direction,
            beta=options.beta,
        )

    def needs_lse(self, fmt: str) -> bool:
        """Whether a side in format ``fmt`` goes through a (global) log-softmax."""
        return fmt == "logits" or self.temperature != 1.0


def check_formats(y_true_format: str, y_pred_format: str) -> None:
    """Vocabulary shards are given as logits or log-probabilities (probabilities are not supported)."""
    for argument, fmt in (("y_true_format", y_true_format), ("y_pred_format", y_pred_format)):
        if fmt not in SUPPORTED_FORMATS:
            raise ValueError(
                f"Argument `{argument}`: expected one of {SUPPORTED_FORMATS!r} for a "
                f"vocabulary-parallel divergence; received {fmt!r}."
            )


def _row_max(xp: Namespace, s: Array) -> Array:
    """``max(s, axis=-1)``; ``-inf`` for an empty shard."""
    if s.shape[-1] == 0:
        return xp.full_like(xp.sum(s, axis=-1), -math.inf)
    return xp.max(s, axis=-1)


def global_log_softmax(xp: Namespace, sides: list[Array], comm: Collectives) -> list[Array]:
    """``log_softmax`` of each array in ``sides`` over the whole (sharded) last axis.

    The sides share the two all-reduces (one ``all_max``, one ``all_sum`` of the stacked rows).
    """
    top = comm.all_max(xp.stack([_row_max(xp, s) for s in sides]))
    top = xp.where(xp.isfinite(top), top, xp.zeros_like(top))
    shifted = [s - xp.expand_dims(top[i], axis=-1) for i, s in enumerate(sides)]
    total = comm.all_sum(xp.stack([xp.sum(xp.exp(z), axis=-1) for z in shifted]))
    return [z - xp.expand_dims(xp.log(total[i]), axis=-1) for i, z in enumerate(shifted)]


def _masked(xp: Namespace, zero: Array | None, x: Array) -> Array:
    """``x`` with 0 where ``zero`` (``x`` itself without a mask)."""
    return x if zero is None else xp.where(zero, xp.zeros_like(x), x)


def _kl_terms(xp: Namespace, a: Array, b: Array, spec: Spec) -> tuple[Array, Array]:
    """Forward / reverse / symmetric KL: ``(ℓ_j, ∂ℓ/∂b_j)`` from :mod:`kldiv.core.grads`.

    Exact mode masks the entries where the distribution in front of the log is 0 (``0·log 0 = 0``),
    in both logs, as :func:`kldiv.core.divergences.kl` does.
    """
    exact = spec.epsilon == 0
    term = g = xp.zeros_like(b)
    if spec.direction in ("forward", "symmetric"):
        zero = a == -math.inf if exact else None
        a_f, b_f = _masked(xp, zero, a), _masked(xp, zero, b)
        t = _masked(xp, zero, xp.exp(a_f))
        term, g = term + grads.forward_term(t, a_f, b_f), g + grads.forward_grad(t)
    if spec.direction in ("reverse", "symmetric"):
        zero = b == -math.inf if exact else None
        a_r, b_r = _masked(xp, zero, a), _masked(xp, zero, b)
        q = _masked(xp, zero, xp.exp(b_r))
        term, g = term + grads.reverse_term(q, a_r, b_r), g + grads.reverse_grad(q, a_r, b_r)
    return term, g


def _js_terms(xp: Namespace, a: Array, b: Array, spec: Spec) -> tuple[Array, Array]:
    """``JS_β``: ``(ℓ_j, ∂ℓ/∂b_j)`` from :mod:`kldiv.core.grads`, ``m = log(β t + (1−β) q)``.

    ``m`` is a ``logaddexp``; exact mode masks each side's zeros and takes ``m`` from the other side
    there, as :func:`kldiv.core.divergences.js` does. ``β ∈ {0, 1}`` gives exactly 0.
    """
    beta = spec.beta
    if beta in (0.0, 1.0):
        zero = xp.zeros_like(b)
        return zero, zero
    exact = spec.epsilon == 0
    t_zero = a == -math.inf if exact else None
    q_zero = b == -math.inf if exact else None
    a, b = _masked(xp, t_zero, a), _masked(xp, q_zero, b)
    t, q = _masked(xp, t_zero, xp.exp(a)), _masked(xp, q_zero, xp.exp(b))
    weighted_a, weighted_b = a + math.log(beta), b + math.log1p(-beta)
    m = xp.logaddexp(weighted_a, weighted_b)
    if exact:
        m = xp.where(t_zero, weighted_b, xp.where(q_zero, weighted_a, m))
    return grads.js_term(t, q, a, b, m, beta), grads.js_grad(q, b, m, beta)


def log_probs(
    xp: Namespace, teacher: Array, student: Array, spec: Spec, comm: Collectives
) -> tuple[Array, Array]:
    """``(c_teacher, c_student)``: the local entries of each side's log-probabilities over the full rows.

    ``x / T``, then a global log-softmax for the sides that need one (both share the all-reduces).
    """
    temperature = spec.temperature
    sides = [x if temperature == 1.0 else x / temperature for x in (teacher, student)]
    lse_sides = [i for i, fmt in enumerate((spec.true_format, spec.pred_format)) if spec.needs_lse(fmt)]
    if lse_sides:
        normalised = global_log_softmax(xp, [sides[i] for i in lse_sides], comm)
        for i, c in zip(lse_sides, normalised, strict=True):
            sides[i] = c
    return sides[0], sides[1]


def local_terms(xp: Namespace, c_teacher: Array, c_student: Array, spec: Spec) -> tuple[Array, Array]:
    """``(Σ_j ℓ_j, g')`` over the local entries: the row's partial divergence and ``g'_j = ∂ℓ/∂c_j``.

    Keras mode clips both sides to ``[log ε, 0]`` first and passes no gradient where the clip acts
    (``g'_j = g_j · [b_j = c_j]``); exact mode masks zero probabilities. No communication.
    """
    a, b = c_teacher, c_student
    if spec.epsilon > 0:
        low = math.log(spec.epsilon)
        a, b = xp.clip(a, low, 0.0), xp.clip(b, low, 0.0)
    terms = _js_terms if spec.beta is not None else _kl_terms
    term, g = terms(xp, a, b, spec)
    if spec.epsilon > 0:
        g = xp.where(b == c_student, g, xp.zeros_like(g))  # Keras' clip passes no gradient
    return xp.sum(term, axis=-1), g


def row_divergence(
    xp: Namespace, teacher: Array, student: Array, spec: Spec, comm: Collectives
) -> tuple[Array, Array]:
    """Per-row divergence (identical on every participant) and its gradient w.r.t. the local student.

    Args:
        xp: the array namespace of the inputs.
        teacher: local teacher shard ``[..., V_r]`` (``spec.true_format``), vocabulary last.
        student: local student shard of the same shape (``spec.pred_format``).
        spec: the options.
        comm: the all-reduces over the participants.

    Returns:
        ``(values [...], grad [..., V_r])``: ``values`` is the divergence of each full row, ``grad``
        is ``∂ values / ∂ student`` for the local entries (one row's value depends only on its row),
        by the log-softmax chain rule ``(g'_j − exp(c_j) · G) / T`` with ``G`` all-reduced.
    """
    c_teacher, c_student = log_probs(xp, teacher, student, spec, comm)
    partial, g = local_terms(xp, c_teacher, c_student, spec)
    totals = comm.all_sum(xp.stack([partial, xp.sum(g, axis=-1)]))
    values, g_sum = totals[0], totals[1]
    if not spec.needs_lse(spec.pred_format):
        return values, g
    grad = g - xp.exp(c_student) * xp.expand_dims(g_sum, axis=-1)
    return values, (grad if spec.temperature == 1.0 else grad / spec.temperature)
