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

A *dense* teacher can be compared on another support (:func:`support_log_probs`, the ``support=`` /
``topk=`` options of the chunked and fused-linear losses): the teacher's top ``k``, the student's or
their union, both sides coarsened to that support plus a tail bucket computed the same way for each.
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


SUPPORTS = ("teacher", "student", "union")
"""The supports of a top-k comparison: the teacher's top ``k``, the student's, or their union."""


def support_log_probs(
    xp: Namespace,
    teacher_logits: Array,
    student_logits: Array,
    support: str,
    k: int,
    *,
    exclude: Callable[[Array, Array], Array],
    top: Callable[[Array, int], Array],
    temperature: float = 1.0,
) -> tuple[Array, Array, Array]:
    r"""Both sides (dense logits) coarsened to a top-k support :math:`S` plus a tail bucket, last axis.

    With :math:`p = \mathrm{softmax}(z / T)` (teacher) and :math:`q = \mathrm{softmax}(u / T)` (student),
    :math:`S` is the teacher's top ``k`` (``"teacher"``), the student's (``"student"``: reverse KL on the
    student's top-k, verl #7425) or their union (``"union"``, at most ``2k`` entries, deduplicated per
    row), and each side becomes the distribution over :math:`|S| + 1` outcomes

    .. math::  \tilde p = \bigl(p_i\bigr)_{i \in S} \cup \bigl(\textstyle\sum_{j \notin S} p_j\bigr),
               \qquad \tilde q \text{ likewise},

    in log space: the full log-softmax gathered at :math:`S`, and the tail :math:`\log \sum_{j \notin S}
    e^{\log p_j}` as a log-sum-exp over the excluded entries (the student's tail of
    :func:`sparse_log_probs`, for both sides: no ``log1mexp`` of a mass near 1). Any divergence of
    :math:`\tilde p, \tilde q` is a divergence of two distributions: ``≥ 0``, exactly 0 when the sides
    are equal, at most the dense one (coarsening never increases an f-divergence), and equal to it for
    ``k = V`` (then both full log-softmaxes are returned and there is no tail). Nothing is clamped.

    The gradient reaches both sides' logits through the values at :math:`S` and the tails; the choice
    of :math:`S` (an arg-top-k, piecewise constant in the logits) passes none.

    Args:
        xp: the array namespace of the inputs.
        teacher_logits, student_logits: ``[rows, V]`` logits (after any logit map).
        support: one of :data:`SUPPORTS`.
        k: the size of each top-k set, ``1 ≤ k ≤ V``.
        exclude: ``exclude(x, indices)`` is ``x`` with ``-inf`` at ``indices`` (a scatter).
        top: ``top(x, k)`` gives the ``[rows, k]`` integer positions of the ``k`` largest entries of each
            row (ties in any order).
        temperature: ``T``, dividing both sides' logits.

    Returns:
        ``(teacher, student, overlap)``: two ``[rows, m + 1]`` log-probability arrays (``m = k``, or
        ``2k`` for ``"union"``, whose entries already in the teacher's top-k are ``-inf`` on both sides:
        probability 0, contributing 0 in exact mode), the last entry the tail bucket — ``[rows, V]``
        arrays without a tail for ``k = V`` — and ``overlap`` ``[rows]``: :math:`|\mathrm{top}_k(p) \cap
        \mathrm{top}_k(q)| / k`.
    """
    if temperature != 1.0:
        teacher_logits, student_logits = teacher_logits / temperature, student_logits / temperature
    teacher = log_softmax(xp, teacher_logits, -1)
    student = log_softmax(xp, student_logits, -1)
    teacher_top, student_top = top(teacher_logits, k), top(student_logits, k)
    # The student's top entries that the teacher's top-k holds: -inf in a marker row of zeros (the
    # teacher's own -inf log-probabilities cannot be mistaken for it).
    marker = exclude(xp.zeros_like(teacher), teacher_top)
    shared = xp.take_along_axis(marker, student_top, axis=-1) == -math.inf
    overlap = xp.sum(xp.astype(shared, teacher.dtype), axis=-1) / k
    if k == teacher.shape[-1]:
        return teacher, student, overlap
    indices = {"teacher": teacher_top, "student": student_top}.get(support)
    if indices is None:
        indices = xp.concat([teacher_top, student_top], axis=-1)
    teacher_at = xp.take_along_axis(teacher, indices, axis=-1)
    student_at = xp.take_along_axis(student, indices, axis=-1)
    if support == "union":  # a student entry the teacher's top-k already holds: probability 0 here
        repeated = xp.concat([xp.zeros_like(shared), shared], axis=-1)
        teacher_at = xp.where(repeated, xp.full_like(teacher_at, -math.inf), teacher_at)
        student_at = xp.where(repeated, xp.full_like(student_at, -math.inf), student_at)
    teacher_tail = _tail_logsumexp(xp, exclude(teacher, indices))
    student_tail = _tail_logsumexp(xp, exclude(student, indices))
    return (
        xp.concat([teacher_at, teacher_tail], axis=-1),
        xp.concat([student_at, student_tail], axis=-1),
        overlap,
    )
