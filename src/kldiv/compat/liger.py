r"""Liger-Kernel's fused-linear JSD losses with their signatures, computed by kldiv (CPU and CUDA).

* :class:`LigerFusedLinearJSD` — ``liger_kernel.transformers.LigerFusedLinearJSD(jsd_beta=0.5,
  ignore_index=-100, temperature=1.0, accum_dtype=None)``, called ``(student_input, student_weight,
  teacher_input, teacher_weight, shift_labels=None)``: Σ over the tokens whose label is not
  ``ignore_index`` of ``JSD_β(log_softmax(teacher/T), log_softmax(student/T))``, divided by their
  number (by ``BT`` without labels).
* :class:`LigerFusedLinearJSDLoss` — ``liger_kernel.chunked_loss.LigerFusedLinearJSDLoss(
  weight_hard_loss=0.5, weight_soft_loss=0.5, beta=0.5, ignore_index=-100, temperature=1.0,
  compiled=True, chunk_size=1024, return_soft_hard_loss=False)``, called ``(student_input,
  student_weight, teacher_input, teacher_weight, true_labels, student_bias=None, teacher_bias=None)``:
  ``weight_hard_loss · CE(student, labels) + weight_soft_loss · JSD_β`` (the cross-entropy at
  temperature 1, computed in the divergence's chunked pass), both sums divided by the kept tokens (at
  least 1).

β as Liger means it (:func:`kldiv.compat.divergence_for_beta`). Differences, on purpose: teacher and
student vocabularies must be equal (Liger pads a smaller student with logits 0, which gives the
padded slots real probability — Liger #634 — where kldiv raises naming both sizes); a batch with no
kept token gives 0, not NaN; ``accum_dtype`` may be None or float32 (kldiv accumulates the parameter
gradients in float32 — float64 for float64 — whatever it is); ``compiled`` is accepted and unused.
"""

from __future__ import annotations

from typing import Any

from .._extras import require
from . import divergence_for_beta

torch = require("torch", "kldiv.compat.liger")


def _fused(
    beta: float, temperature: float, ignore_index: int, chunk_size: int | None, **weights: Any
) -> torch.nn.Module:
    from ..fused.torch import FusedLinearJSDivergence, FusedLinearKLDivergence

    choice = divergence_for_beta(beta)
    loss_type = FusedLinearJSDivergence if choice.pop("divergence") == "js" else FusedLinearKLDivergence
    return loss_type(
        reduction="sum",
        temperature=temperature,
        ignore_index=ignore_index,
        chunk_size=chunk_size,
        **choice,
        **weights,
    )


def _check_vocab(student_weight: torch.Tensor, teacher_weight: torch.Tensor) -> None:
    if student_weight.shape[0] != teacher_weight.shape[0]:
        raise ValueError(
            f"Arguments `student_weight` and `teacher_weight`: expected equal vocabulary sizes; received "
            f"student {student_weight.shape[0]} and teacher {teacher_weight.shape[0]}."
        )


def _count(labels: torch.Tensor | None, rows: int, ignore_index: int) -> Any:
    return max(rows, 1) if labels is None else (labels != ignore_index).sum().clamp_min(1)


class LigerFusedLinearJSD(torch.nn.Module):
    """``liger_kernel.transformers.LigerFusedLinearJSD`` (see the module docstring)."""

    def __init__(
        self,
        jsd_beta: float = 0.5,
        ignore_index: int = -100,
        temperature: float = 1.0,
        accum_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if accum_dtype not in (None, torch.float32):
            raise ValueError(
                f"Argument `accum_dtype`: expected None or torch.float32; received {accum_dtype!r}."
            )
        self.jsd_beta, self.ignore_index, self.temperature, self.accum_dtype = (
            jsd_beta,
            ignore_index,
            temperature,
            accum_dtype,
        )
        self.loss = _fused(jsd_beta, temperature, ignore_index, None)

    def extra_repr(self) -> str:
        return f"jsd_beta={self.jsd_beta}, ignore_index={self.ignore_index}, temperature={self.temperature}"

    def forward(
        self,
        student_input: torch.Tensor,
        student_weight: torch.Tensor,
        teacher_input: torch.Tensor,
        teacher_weight: torch.Tensor,
        shift_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        _check_vocab(student_weight, teacher_weight)
        total = self.loss(
            student_input,
            student_weight,
            teacher_hidden=teacher_input,
            teacher_weight=teacher_weight,
            labels=shift_labels,
        )
        return total / _count(shift_labels, student_input.shape[0], self.ignore_index)


class LigerFusedLinearJSDLoss(torch.nn.Module):
    """``liger_kernel.chunked_loss.LigerFusedLinearJSDLoss`` (see the module docstring)."""

    def __init__(
        self,
        weight_hard_loss: float = 0.5,
        weight_soft_loss: float = 0.5,
        beta: float = 0.5,
        ignore_index: int = -100,
        temperature: float = 1.0,
        compiled: bool = True,
        chunk_size: int = 1024,
        return_soft_hard_loss: bool = False,
    ) -> None:
        super().__init__()
        self.weight_hard_loss, self.weight_soft_loss = float(weight_hard_loss), float(weight_soft_loss)
        self.beta, self.ignore_index, self.temperature = beta, ignore_index, temperature
        self.compiled, self.chunk_size, self.return_soft_hard_loss = (
            compiled,
            chunk_size,
            return_soft_hard_loss,
        )
        # Liger returns both terms even at weight 0: then the statistics of the pass give them.
        self.loss = _fused(
            beta,
            temperature,
            ignore_index,
            chunk_size,
            weight_hard_loss=self.weight_hard_loss,
            weight_soft_loss=self.weight_soft_loss,
            return_stats=return_soft_hard_loss,
        )

    def extra_repr(self) -> str:
        return (
            f"weight_hard_loss={self.weight_hard_loss}, weight_soft_loss={self.weight_soft_loss}, "
            f"beta={self.beta}, ignore_index={self.ignore_index}, temperature={self.temperature}"
        )

    def forward(
        self,
        student_input: torch.Tensor,
        student_weight: torch.Tensor,
        teacher_input: torch.Tensor,
        teacher_weight: torch.Tensor,
        true_labels: torch.Tensor,
        student_bias: torch.Tensor | None = None,
        teacher_bias: torch.Tensor | None = None,
    ) -> Any:
        _check_vocab(student_weight, teacher_weight)
        count = _count(true_labels, student_input.shape[0], self.ignore_index)
        loss = self.loss(
            student_input,
            student_weight,
            student_bias,
            teacher_hidden=teacher_input,
            teacher_weight=teacher_weight,
            teacher_bias=teacher_bias,
            labels=true_labels,
        )
        if not self.return_soft_hard_loss:
            return loss.float() / count
        loss, stats = loss
        soft, hard = stats.per_token.sum() / count, stats.cross_entropy.sum() / count
        return loss.float() / count, soft.float(), hard.float()
