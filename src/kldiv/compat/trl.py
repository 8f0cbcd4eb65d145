r"""TRL's ``generalized_jsd_loss`` with its signature, reductions and β, computed by kldiv.

``GKDTrainer.generalized_jsd_loss(student_logits, teacher_logits, labels=None, beta=0.5,
temperature=1.0, reduction="batchmean", num_items_in_batch=None)`` (trl/experimental/gkd, 1.16): the
per-element generalized JSD of ``log_softmax(logits / T)`` (β = 0: KL(teacher‖student), β = 1:
KL(student‖teacher)), the positions whose label is ``-100`` dropped, then

* ``num_items_in_batch`` given: sum / it (any reduction);
* ``"batchmean"``: sum / kept tokens (with labels; else sum / ``size(0)``, the batch for 3-D logits);
* ``"sum"``; ``"mean"``: sum / kept *elements* (tokens × vocabulary);
* ``"none"``: the element-wise terms, ``[kept tokens, V]`` with labels, else the logits' shape.

Sums are computed chunk by chunk by :func:`kldiv.fused.torch.chunked_kl_divergence` /
:func:`~kldiv.fused.torch.chunked_js_divergence` (no ``[BT, V]`` temporaries besides the
gradient); ``"none"`` returns the core's element-wise terms. One difference: a batch with no kept
token gives 0 for ``"batchmean"`` and ``"mean"`` where TRL's ``"mean"`` gives NaN.
"""

from __future__ import annotations

from typing import Any

from .._extras import require
from . import divergence_for_beta

torch = require("torch", "kldiv.compat.trl")

REDUCTIONS = ("batchmean", "sum", "mean", "none")


def generalized_jsd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    beta: float = 0.5,
    temperature: float = 1.0,
    reduction: str = "batchmean",
    num_items_in_batch: Any = None,
) -> torch.Tensor:
    """TRL's generalized JSD loss (see the module docstring), student first."""
    from ..fused.torch import chunked_js_divergence, chunked_kl_divergence

    if reduction not in REDUCTIONS:
        raise ValueError(f"Argument `reduction`: expected one of {REDUCTIONS}; received {reduction!r}.")
    if tuple(student_logits.shape) != tuple(teacher_logits.shape):
        raise ValueError(
            f"Arguments `student_logits` and `teacher_logits`: expected equal shapes; received "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}."
        )
    choice = divergence_for_beta(beta)
    divergence = choice.pop("divergence")
    keep = None if labels is None else labels != -100
    if reduction == "none" and num_items_in_batch is None:
        return _elementwise(student_logits, teacher_logits, keep, temperature, divergence, choice)
    chunked = chunked_js_divergence if divergence == "js" else chunked_kl_divergence
    total = chunked(
        teacher_logits, student_logits, reduction="sum", mask=keep, temperature=temperature, **choice
    )
    if num_items_in_batch is not None:
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(total.device)
        return total / num_items_in_batch
    if reduction == "sum":
        return total
    vocab = student_logits.shape[-1]
    if reduction == "batchmean":
        count = keep.sum().clamp_min(1) if keep is not None else max(student_logits.shape[0], 1)
    else:  # "mean": every kept element, the vocabulary included
        count = (keep.sum() * vocab).clamp_min(1) if keep is not None else max(student_logits.numel(), 1)
    return total / count


def _elementwise(student_logits, teacher_logits, keep, temperature, divergence, choice) -> torch.Tensor:
    """``reduction="none"``: the per-element terms of the core's formula (float32 or wider)."""
    import array_api_compat.torch as xp

    from ..core.divergences import divergence as core_divergence

    if keep is not None:
        student_logits, teacher_logits = student_logits[keep], teacher_logits[keep]
    wide = torch.promote_types(student_logits.dtype, torch.float32)
    return core_divergence(
        xp,
        teacher_logits.to(wide),
        student_logits.to(wide),
        true_format="logits",
        pred_format="logits",
        epsilon=0.0,
        temperature=temperature,
        elementwise=True,
        **choice,
    )
