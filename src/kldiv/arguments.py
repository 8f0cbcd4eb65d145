"""The keyword sets of a loss call besides its options, typed for ``**keywords: Unpack[...]``.

:class:`kldiv.options.OptionArguments` are what a loss *is* (fixed at construction); the sets here are
the data a *call* brings beside the two distributions: which positions count and how much
(:class:`CallArguments`, :class:`TokenArguments`) and, for the fused-linear losses, which teacher
(:class:`TeacherArguments`). Every entry point declares its keywords with one of these sets — IDEs
list the names — and hands them on as one mapping, so no layer forwards them by hand; :func:`split`
is the one place that separates a mixed ``**keywords`` (a functional form takes options and call
arguments together).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from .options import LogitMapArguments as LogitMapArguments  # re-exported: the fused losses name it
from .options import OptionArguments

Array = Any


class SampleArguments(TypedDict, total=False):
    """Which positions count: the data keywords of a per-sample loss.

    Keys:
        mask: boolean keep-mask broadcastable to the per-sample loss.
        labels: with the ``ignore_index`` option, masks the positions whose label equals it.
    """

    mask: Array | None
    labels: Array | None


class CallArguments(SampleArguments, total=False):
    """The keywords of every loss ``__call__`` / ``forward`` (:meth:`kldiv.KLDivergence.__call__`):
    :class:`SampleArguments` plus ``num_items``, the global denominator of the mean reductions
    (gradient accumulation, data parallel): a positive number or a scalar array."""

    num_items: Any


class PerSampleArguments(OptionArguments, SampleArguments, total=False):
    """:func:`kldiv.kl_divergence` / :func:`kldiv.js_divergence`: the options plus ``mask`` and
    ``labels`` (a per-sample loss has no ``num_items``: there is no mean to divide)."""


class FunctionalArguments(OptionArguments, CallArguments, total=False):
    """The framework functional forms (``kldiv.torch.kl_divergence``, ``kldiv.jax.kl_divergence``):
    a ``reduction`` (default ``"none"``: per sample), the call arguments and the options."""

    reduction: str | None


class TokenArguments(CallArguments, total=False):
    """The per-token weighting of a flat ``[tokens]`` loss (chunked and fused-linear paths):
    :class:`CallArguments` plus a ``sample_weight`` of one value per token (or one value)."""

    sample_weight: Any


class TeacherArguments(TypedDict, total=False):
    """The teacher of a fused-linear loss, exactly one of three forms.

    Keys:
        teacher_logits: ``[BT, V]`` (or ``[B, T, V]``) logits.
        teacher_hidden, teacher_weight, teacher_bias: hidden states ``[BT, H_t]`` with the teacher's
            head ``[V, H_t]`` (and ``[V]`` bias): the teacher's logits are formed chunk by chunk too.
        teacher_topk_indices, teacher_topk_values: a sparse ``[BT, k]`` teacher (the losses'
            ``teacher_topk_format`` says whether the values are log-probabilities or logits).
    """

    teacher_logits: Array | None
    teacher_hidden: Array | None
    teacher_weight: Array | None
    teacher_bias: Array | None
    teacher_topk_indices: Array | None
    teacher_topk_values: Array | None


class FusedCallArguments(TeacherArguments, TokenArguments, total=False):
    """``FusedLinearKLDivergence.forward``: the teacher and the per-token weighting."""


class ChunkingArguments(TypedDict, total=False):
    """How a chunked loss walks the tokens (:mod:`kldiv.core.chunking`).

    Keys:
        chunk_size: tokens per chunk (default from ``memory_budget``).
        memory_budget: bytes of chunk temporaries (default :data:`kldiv.core.chunking.DEFAULT_MEMORY_BUDGET`).
        teacher_topk_format: ``"log_probs"`` (default) or ``"logits"`` for a sparse teacher.
    """

    chunk_size: int | None
    memory_budget: int
    teacher_topk_format: str


class SupportArguments(TypedDict, total=False):
    """On which entries a chunked / fused-linear loss compares a dense teacher with the student
    (:func:`kldiv.core.topk.support_log_probs`).

    Keys:
        support: ``"teacher"`` (default: the teacher's top-k with ``topk``, else the whole vocabulary;
            a stored top-k teacher's own k), ``"student"`` (the student's top-k) or ``"union"`` (both
            sets, deduplicated); both sides are coarsened to the support plus a tail bucket.
        topk: the size ``k`` of each top-k set (needed by ``"student"`` / ``"union"``; dense teachers only).
    """

    support: str
    topk: int | None


class TorchFusedArguments(TypedDict, total=False):
    """Settings of the PyTorch chunked and fused-linear losses only.

    Keys:
        vocab_alignment: ``None``, ``"truncate_teacher"`` or ``"pad_student"`` for a dense teacher with
            more vocabulary entries than the student.
        return_stats: return ``(loss, stats)``, the per-token statistics of :mod:`kldiv.fused._torch_stats`.
        weight_hard_loss, weight_soft_loss: ``loss = w_h · CE(student, labels) + w_s · divergence``, the
            cross-entropy from the same chunks (:mod:`kldiv.fused._torch_hard`); defaults 0 and 1.
        accumulation_dtype: the gradients' accumulation dtype: None, ``"float32"``, ``"float64"``,
            ``"weight"``.
    """

    vocab_alignment: str | None
    return_stats: bool
    weight_hard_loss: float
    weight_soft_loss: float
    accumulation_dtype: str | None


class ChunkedArguments(
    OptionArguments, TokenArguments, ChunkingArguments, SupportArguments, TorchFusedArguments, total=False
):
    """``kldiv.fused.torch.chunked_kl_divergence``: options, chunking, per-token weighting and a
    ``reduction``."""

    reduction: str


class FusedArguments(OptionArguments, FusedCallArguments, ChunkingArguments, SupportArguments, total=False):
    """``kldiv.fused.jax.fused_linear_kl_divergence``: everything of the module form in one call."""

    reduction: str


def names(kind: type) -> frozenset[str]:
    """The keys of the keyword set ``kind`` (one of the ``TypedDict`` classes above)."""
    return kind.__required_keys__ | kind.__optional_keys__


def split(keywords: Mapping[str, Any], kind: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(the entries of keywords named by kind, the others)``."""
    taken = names(kind)
    return (
        {key: value for key, value in keywords.items() if key in taken},
        {key: value for key, value in keywords.items() if key not in taken},
    )


def check(keywords: Mapping[str, Any], kind: type, where: str, also: tuple[str, ...] = ()) -> None:
    """Raise for a keyword of ``keywords`` that ``kind`` does not name; ``also``: the other keywords
    ``where`` takes (named in the message too).

    Raises:
        TypeError: ``where`` got an unexpected keyword argument (the message lists the expected ones).
    """
    unknown = sorted(set(keywords) - names(kind))
    if unknown:
        raise TypeError(
            f"{where} got an unexpected keyword argument {unknown[0]!r}; expected "
            f"{', '.join((*also, *sorted(names(kind))))}."
        )


TEACHER_FORMS = {
    "teacher_logits": None,
    "teacher_hidden": ("teacher_weight", "a [V, H_teacher] tensor"),
    "teacher_topk_indices": ("teacher_topk_values", "a [BT, k] tensor"),
}
"""The three teacher forms of :class:`TeacherArguments` and the companion each one needs."""


def teacher_form(teacher: Mapping[str, Any]) -> str:
    """The one teacher form given in ``teacher`` (a key of :data:`TEACHER_FORMS`).

    Raises:
        ValueError: no form or several, or a form without its companion (``teacher_hidden`` needs
            ``teacher_weight``; ``teacher_topk_indices`` needs ``teacher_topk_values``).
    """
    given = [form for form in TEACHER_FORMS if teacher.get(form) is not None]
    if len(given) != 1:
        raise ValueError(
            "Arguments `teacher_logits` / `teacher_hidden` / `teacher_topk_indices`: expected exactly "
            f"one teacher form; received {len(given)}."
        )
    companion = TEACHER_FORMS[given[0]]
    if companion is not None and teacher.get(companion[0]) is None:
        name, expected = companion
        raise ValueError(f"Argument `{name}`: expected {expected} with `{given[0]}`; received None.")
    return given[0]
