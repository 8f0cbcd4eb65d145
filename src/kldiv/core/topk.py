r"""Top-k distillation: teacher and student as distributions over the teacher's top ``k`` entries.

A teacher stored as its top ``k`` entries (``indices``, ``values`` of shape ``[rows, k]``) is compared
with the student (logits ``u`` of shape ``[rows, V]``) over those entries, written once against an
array namespace ``xp`` (:mod:`kldiv.fused.torch` and :mod:`kldiv.fused.jax` call it):

* ``"logits"`` values: both sides renormalised over the ``k`` entries,
  ``log_softmax(values)`` against ``log_softmax(u[indices])``.
* ``"log_probs"`` values: ``k + 1`` entries, the ``k`` log-probabilities and a *tail bucket* holding
  the rest of the mass, :math:`\log(1 - \min(1, \sum_i e^{v_i}))` for the teacher and
  :math:`\log \sum_{j \notin \mathrm{top}} e^{s_j}`, ``s = log_softmax(u)``, for the student. With
  ``k = V`` there is no tail (its rounding residue is not a bucket).

The student's tail is a log-sum-exp over the entries outside the top ``k``, which ``exclude`` (the
one primitive a backend supplies: ``s`` with ``-inf`` at ``indices``, a scatter) leaves. Measured
against it (a float64 log-sum-exp of the tail) on rows of 1000 logits whose largest entry is raised
by ``d``, ``k = 8``, the scatter-free form ``log1mexp(−logsumexp(s[indices]))`` errs by 4e-5 (d = 5),
3e-3 (d = 10) and ``inf`` (d = 20, the tail's mass below float32's resolution of 1) in float32, and
by ``inf`` at d = 40 in float64; a mask built by comparing column numbers with each index is exact
but 12× slower than the scatter at k = 64, so the scatter stays.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .divergences import log_softmax, logsumexp

Array = Any
Namespace = Any


def sparse_log_probs(
    xp: Namespace,
    student_logits: Array,
    indices: Array,
    values: Array,
    topk_format: str,
    *,
    exclude: Callable[[Array, Array], Array],
    temperature: float = 1.0,
) -> tuple[Array, Array]:
    """``(teacher, student)`` log-probabilities over the top-k entries (+ the tail bucket), last axis.

    Args:
        xp: the array namespace of the inputs.
        student_logits: ``[rows, V]`` student logits.
        indices: ``[rows, k]`` integer positions of the teacher's top entries.
        values: ``[rows, k]`` the teacher's values there, ``"logits"`` or ``"log_probs"``.
        topk_format: the format of ``values``.
        exclude: ``exclude(s, indices)`` is ``s`` with ``-inf`` at ``indices`` (a scatter).
        temperature: ``T``: the student's logits (and ``"logits"`` values) are divided by it;
            ``"log_probs"`` values are the teacher's log-probabilities *at* ``T`` (they cannot be
            re-tempered without the teacher's other entries: store them at the loss's temperature,
            as :func:`kldiv.fused.torch.topk_teacher` does).

    Returns:
        Two ``[rows, k]`` arrays (``"logits"``, or ``k = V``), else two ``[rows, k + 1]`` arrays whose
        last entry is the tail bucket.
    """
    if temperature != 1.0:
        student_logits = student_logits / temperature
        if topk_format == "logits":
            values = values / temperature
    if topk_format == "logits":
        restricted = xp.take_along_axis(student_logits, indices, axis=-1)
        return log_softmax(xp, values, -1), log_softmax(xp, restricted, -1)
    student = log_softmax(xp, student_logits, -1)
    student_top = xp.take_along_axis(student, indices, axis=-1)
    if indices.shape[-1] == student_logits.shape[-1]:
        return values, student_top
    mass = xp.clip(xp.sum(xp.exp(values), axis=-1, keepdims=True), None, 1.0)
    teacher_tail = xp.log1p(-mass)
    student_tail = _tail_logsumexp(xp, exclude(student, indices))
    return xp.concat([values, teacher_tail], axis=-1), xp.concat([student_top, student_tail], axis=-1)


def _tail_logsumexp(xp: Namespace, tail: Array) -> Array:
    """:func:`kldiv.core.divergences.logsumexp` of the student's tail (the top entries already
    ``-inf``), ``-inf`` with a zero gradient where the tail holds no mass (every entry ``-inf``: a
    student whose other logits are masked). The plain form's backward there is ``e^{-inf} / 0 =
    0 · inf = NaN``, which the log-softmax's chain rule spreads over the row; the tail's entries are
    ``-inf``, which receive no gradient anywhere else in kldiv (``pad_student``), and the top entries
    keep theirs through the row's log-sum-exp."""
    empty = xp.max(tail, axis=-1, keepdims=True) == -math.inf  # (a NaN row is not empty)
    safe = xp.where(empty, xp.zeros_like(tail), tail)  # the tail's entries get 0 from these rows
    lse = logsumexp(xp, safe, -1)
    return xp.where(empty, xp.full_like(lse, -math.inf), lse)
