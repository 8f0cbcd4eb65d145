r"""Distillation of a causal LM by another, through kldiv's fused-linear losses.

The program :func:`distillation_loss` equals, written naively (``[B, T, V]`` logits of both models)::

    labels = shift(batch["labels"])                         # as ForCausalLMLoss: position t predicts t + 1
    keep = labels != -100
    s = student(**batch).logits;  t = teacher(**batch).logits   # t under torch.no_grad()
    kd = kldiv.kl_divergence(t, s, y_true_format="logits", from_logits=True, **options)[keep].sum()
    ce = F.cross_entropy(s[keep], labels[keep], reduction="sum")
    n = num_items_in_batch if given else keep.sum()
    loss = ((1 - alpha) * kd + alpha * ce) / n

but forms neither model's logits: both run to their last hidden states, and the divergence and, when
``alpha > 0``, the cross-entropy are computed chunk by chunk from the hidden states and the heads in one
pass (:class:`kldiv.fused.torch.FusedLinearKLDivergence` with ``weight_soft_loss = 1 − α`` and
``weight_hard_loss = α``, the models' soft cap and logit scale inside). With ``alpha = 1`` the teacher
is not run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._extras import require
from ..fused.torch import FusedLinearJSDivergence, FusedLinearKLDivergence, topk_teacher
from . import _models
from ._models import IGNORE_INDEX

torch = require("torch", "kldiv.transformers")

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..options import OptionArguments

DIVERGENCES = {"kl": FusedLinearKLDivergence, "js": FusedLinearJSDivergence}
TOPK_KEYS = ("teacher_topk_indices", "teacher_topk_values")
"""Batch keys of a teacher stored as its top-k log-probabilities (``[B, T, k]``, one row per
position of ``input_ids``, as the teacher's logits would be: see :func:`kldiv.fused.torch.topk_teacher`)."""


def _number(name: str, value: Any, low: float, high: float | None = None) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low
    if not ok or (high is not None and value > high):
        expected = f"a number in [{low}, {high}]" if high is not None else f"a number ≥ {low}"
        raise ValueError(f"Argument `{name}`: expected {expected}; received {value!r}.")
    return float(value)


def distillation_loss(
    student: Any,
    teacher: Any,
    batch: Mapping[str, Any],
    *,
    divergence: str = "kl",
    temperature: float = 1.0,
    top_k: int | None = None,
    alpha: float = 0.0,
    num_items_in_batch: Any = None,
    chunk_size: int | None = None,
    verify: bool = True,
    return_stats: bool = False,
    **options: Unpack[OptionArguments],
) -> Any:
    r"""The distillation loss of a ``transformers`` causal LM ``student`` by ``teacher`` on ``batch``
    (the program in the module docstring), without either model's ``[B, T, V]`` logits.

    Args:
        student: a causal LM (``LlamaForCausalLM``, ``Qwen2ForCausalLM``, ``Gemma2ForCausalLM``, ...):
            its base model gives the last hidden states, ``get_output_embeddings()`` the head (tied
            embeddings and a bias included), its config the soft cap / logit scale.
        teacher: a causal LM with the same vocabulary size (a larger one with the option
            ``vocab_alignment=``, as :class:`kldiv.fused.torch.FusedLinearKLDivergence`), run under
            ``torch.no_grad()``; or None
            when ``batch`` holds the teacher's stored top-k (``teacher_topk_indices``,
            ``teacher_topk_values``: log-probabilities at ``temperature``, ``[B, T, k]``).
        batch: ``input_ids``, optionally ``attention_mask``, ``position_ids``, ``labels`` (``-100``
            ignored; without them, ``input_ids`` with padding ignored) or ``shift_labels``.
        divergence: ``"kl"`` (``direction=`` ``"forward"`` KL(teacher‖student), ``"reverse"``,
            ``"symmetric"``) or ``"js"`` (``beta=``), as :class:`kldiv.KLDivergence` /
            :class:`kldiv.JSDivergence`.
        temperature: both models' logits are divided by it (``scale_by_temperature_squared=True``
            multiplies the divergence by ``T²``).
        top_k: compare on the teacher's top ``k`` entries plus a tail bucket
            (:func:`kldiv.fused.torch.topk_teacher`; the tail keeps it a divergence, equal to the
            dense one at ``k = V``).
        alpha: weight of the student's cross-entropy with the labels: ``(1 − α)·KD + α·CE``.
        num_items_in_batch: the number of kept tokens over the whole step (``Trainer`` passes it):
            both terms are sums divided by it, so gradient accumulation is exact; default: this
            batch's kept tokens. A batch with no kept token gives 0.
        chunk_size: tokens per chunk (default from kldiv's memory budget).
        verify: check once per model that its own logits equal ``φ(hidden @ W.T + b)`` on two tokens.
        return_stats: also return the divergence's per-token statistics (:mod:`kldiv.fused._torch_stats`;
            ``[B, T]`` tensors, one per position of ``input_ids``, 0 where the label is ignored).
        **options: kldiv's options (``direction``, ``beta``, ``epsilon``, ``scale_by_temperature_squared``,
            ``backend``, ...); both inputs are logits.

    Returns:
        A float32 scalar with the student's gradients (``(loss, stats)`` with ``return_stats=True``).
    """
    if divergence not in DIVERGENCES:
        raise ValueError(
            f"Argument `divergence`: expected one of {tuple(DIVERGENCES)}; received {divergence!r}."
        )
    alpha = _number("alpha", alpha, 0.0, 1.0)
    temperature = _number("temperature", temperature, 0.0)
    if temperature == 0:
        raise ValueError("Argument `temperature`: expected a positive number; received 0.")
    if not isinstance(batch, Mapping) or ("input_ids" not in batch and "inputs_embeds" not in batch):
        received = f"keys {sorted(batch)}" if isinstance(batch, Mapping) else type(batch).__name__
        raise TypeError(
            f"Argument `batch`: expected a mapping with `input_ids` (a tokenized batch); received {received}."
        )
    student_head = _models.output_head(student, "student")
    shifted = _models.shifted_labels(batch)
    labels = shifted.reshape(-1)
    keep = labels != IGNORE_INDEX
    if verify:
        _models.verify_head(student, student_head, batch, "student")
    hidden = _models.last_hidden_states(student, batch, "student")
    hidden = hidden.reshape(-1, hidden.shape[-1])
    if hidden.element_size() < 4:  # a float16 / bfloat16 student: the sum is returned in float32
        options.setdefault("dtype", "float32")
    if return_stats and alpha == 1.0:
        raise ValueError("Argument `return_stats`: the statistics are the divergence's; received alpha=1.")
    stats = None
    settings = (divergence, temperature, top_k, chunk_size, verify, alpha)
    total = _fused_sum(
        student, teacher, batch, student_head, hidden, labels, keep, settings, options, return_stats
    )
    if return_stats:
        total, stats = total
        stats = type(stats)((name, value.reshape(shifted.shape)) for name, value in stats.items())
    total = total.float()
    count = keep.sum() if num_items_in_batch is None else num_items_in_batch
    if torch.is_tensor(count):
        count = count.to(total.device)
        loss = torch.where(count > 0, total / torch.clamp(count, min=1), torch.zeros_like(total))
    else:
        loss = total / count if count > 0 else total * 0.0
    return loss if stats is None else (loss, stats)


def _fused_sum(
    student, teacher, batch, student_head, hidden, labels, keep, settings, options, return_stats
) -> Any:
    """``Σ`` over the kept tokens of ``(1 − α)·KD + α·CE`` in one fused pass (and, with
    ``return_stats``, its per-token statistics); with ``α = 1`` the teacher is not run."""
    divergence, temperature, top_k, chunk_size, verify, alpha = settings
    teacher_arguments = {"maps": {}}
    if alpha < 1.0:
        alignment = options.get("vocab_alignment")
        teacher_arguments = _teacher(
            teacher, batch, student_head, temperature, top_k, chunk_size, verify, alignment
        )
    loss = DIVERGENCES[divergence](
        reduction="sum",
        chunk_size=chunk_size,
        temperature=temperature,
        student_softcap=student_head.logit_map.softcap,
        student_logit_scale=student_head.logit_map.scale,
        **teacher_arguments.pop("maps"),
        return_stats=return_stats,
        weight_hard_loss=alpha,
        weight_soft_loss=1.0 - alpha,
        **options,
    )
    head = (student_head.weight, student_head.bias)
    return loss(hidden, *head, labels=labels if alpha else None, mask=keep, **teacher_arguments)


def _teacher(
    teacher, batch, student_head, temperature, top_k, chunk_size, verify, alignment
) -> dict[str, Any]:
    """The fused loss's teacher keywords (and ``"maps"``: the teacher's logit-map options)."""
    stored = [batch.get(key) for key in TOPK_KEYS]
    if teacher is None:
        if any(value is None for value in stored):
            raise ValueError(
                "Argument `teacher`: None needs the batch to hold the teacher's stored top-k "
                f"({', '.join(TOPK_KEYS)}); received keys {sorted(batch)}."
            )
        indices, values = stored
        return {"teacher_topk_indices": indices, "teacher_topk_values": values, "maps": {}}
    head = _models.output_head(teacher, "teacher")
    vocab = student_head.vocab_size
    larger = head.vocab_size > vocab
    if head.vocab_size != vocab and not (larger and alignment in ("truncate_teacher", "pad_student")):
        raise ValueError(
            f"Arguments `teacher` and `student`: expected equal vocabulary sizes (output heads); received "
            f"teacher {head.vocab_size} and student {vocab} (a larger teacher vocabulary is aligned by "
            "vocab_alignment='truncate_teacher' or 'pad_student')."
        )
    if larger and top_k is not None and alignment == "pad_student":
        raise ValueError(
            "Argument `vocab_alignment`: expected 'truncate_teacher' with `top_k` (the teacher's top entries "
            "may lie outside the student's vocabulary); received 'pad_student'."
        )
    if verify:
        _models.verify_head(teacher, head, batch, "teacher")
    with torch.no_grad():
        hidden = _models.last_hidden_states(teacher, batch, "teacher")
    hidden = hidden.reshape(-1, hidden.shape[-1])
    weight, bias = head.weight.detach(), None if head.bias is None else head.bias.detach()
    if top_k is not None and larger:  # truncate_teacher: the top entries among the student's ids
        weight, bias = weight[:vocab], None if bias is None else bias[:vocab]
    if top_k is not None:
        indices, values = topk_teacher(
            k=top_k,
            teacher_hidden=hidden,
            teacher_weight=weight,
            teacher_bias=bias,
            temperature=temperature,
            teacher_softcap=head.logit_map.softcap,
            teacher_logit_scale=head.logit_map.scale,
            chunk_size=chunk_size,
        )
        return {"teacher_topk_indices": indices, "teacher_topk_values": values, "maps": {}}
    maps = {"teacher_softcap": head.logit_map.softcap, "teacher_logit_scale": head.logit_map.scale}
    return {"teacher_hidden": hidden, "teacher_weight": weight, "teacher_bias": bias, "maps": maps}
