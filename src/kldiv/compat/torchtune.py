r"""torchtune's knowledge-distillation losses with their signatures, computed by kldiv.

torchtune's "forward KL" (``torchtune.modules.loss.ForwardKLLoss``, 0.6) is the *cross-entropy*
:math:`H(T, S) = -\sum_i t_i \log s_i = \mathrm{KL}(T\|S) + H(T)` of the teacher's and student's
softmax, per token, summed over the tokens whose label is not ``ignore_index`` and divided by their
number; its reverse KL (``ReverseKLLoss``) is :math:`\mathrm{KL}(S\|T)`. The drop-ins compute the KL
with kldiv's chunked divergence and add the teacher's entropy (:func:`kldiv.core.divergences.entropy`)
for the forward loss, so values and gradients equal torchtune's, in float32 whatever the logits' dtype:

* :class:`ForwardKLLoss`, :class:`ReverseKLLoss` — ``(student_logits [BT, V], teacher_logits [BT, V],
  labels [BT], normalize=True)``;
* :class:`ForwardKLWithChunkedOutputLoss`, :class:`ReverseKLWithChunkedOutputLoss` —
  ``(student_logits: list of [B, T/n, V], teacher_logits: list, labels [B, T])``, the drop-ins for
  torchtune's KD recipe (``loss: _component_: kldiv.compat.torchtune.ForwardKLWithChunkedOutputLoss``).

One difference, on purpose: torchtune drops the entries where the student's logit is ``±inf`` (and,
for the reverse loss, the teacher's) from its sums, so a token whose teacher puts mass on a
``-inf`` student entry gets a finite loss; kldiv returns the divergence, ``+inf``. Entries where
the teacher's probability is 0 (padded vocabulary slots with ``-inf`` on both sides) contribute 0 in both,
and there torchtune's reverse loss back-propagates ``0·(−inf) = NaN`` over the whole row, where
kldiv's gradient is finite (exact mode).
"""

from __future__ import annotations

from collections.abc import Sequence

from .._extras import require

torch = require("torch", "kldiv.compat.torchtune")


def _teacher_entropy_sum(teacher_logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``Σ H(softmax(teacher))`` over the kept rows, a memory budget's chunk of rows at a time."""
    import array_api_compat.torch as xp

    from ..core import chunking
    from ..core.divergences import Distribution, entropy

    rows, vocab = teacher_logits.shape
    wide = torch.promote_types(teacher_logits.dtype, torch.float32)
    total = teacher_logits.new_zeros((), dtype=wide)
    for start, stop in chunking.chunks(rows, chunking.rows_per_chunk(rows, vocab)):
        chunk = teacher_logits[start:stop].to(wide)
        per_token = entropy(xp, Distribution(xp, chunk, "logits", axis=-1, epsilon=0.0, temperature=1.0), -1)
        total = total + torch.where(keep[start:stop], per_token, torch.zeros_like(per_token)).sum()
    return total


class _KDLoss(torch.nn.Module):
    _DIRECTION = "forward"

    def __init__(self, ignore_index: int = -100) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}"

    def _sum(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        from ..fused.torch import chunked_kl_divergence

        student = student_logits.reshape(-1, student_logits.shape[-1])
        teacher = teacher_logits.reshape(-1, teacher_logits.shape[-1])
        keep = labels.reshape(-1) != self.ignore_index
        low = student.element_size() < 4  # float16 / bfloat16 logits: the sum comes back in float32
        total = chunked_kl_divergence(
            teacher,
            student,
            reduction="sum",
            mask=keep,
            direction=self._DIRECTION,
            dtype="float32" if low else None,
        )
        if self._DIRECTION == "forward":
            total = total + _teacher_entropy_sum(teacher, keep)
        return total

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor,
        normalize: bool = True,
    ) -> torch.Tensor:
        total = self._sum(student_logits, teacher_logits, labels)
        if not normalize:
            return total
        count = (labels.reshape(-1) != self.ignore_index).sum()
        return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))


class ForwardKLLoss(_KDLoss):
    """``torchtune.modules.loss.ForwardKLLoss``: the cross-entropy ``H(teacher, student)`` per kept token."""


class ReverseKLLoss(_KDLoss):
    """``torchtune.modules.loss.ReverseKLLoss``: ``KL(student‖teacher)`` per kept token."""

    _DIRECTION = "reverse"


class _ChunkedOutput(torch.nn.Module):
    _LOSS: type[_KDLoss] = ForwardKLLoss

    def __init__(self, num_output_chunks: int = 8, ignore_index: int = -100) -> None:
        super().__init__()
        self.num_output_chunks = num_output_chunks
        self.ignore_index = ignore_index
        self.loss = self._LOSS(ignore_index)

    def extra_repr(self) -> str:
        return f"num_output_chunks={self.num_output_chunks}, ignore_index={self.ignore_index}"

    def forward(
        self,
        student_logits: Sequence[torch.Tensor],
        teacher_logits: Sequence[torch.Tensor],
        labels: torch.Tensor,
    ) -> torch.Tensor:
        if isinstance(student_logits, torch.Tensor):  # unchunked logits: one chunk
            student_logits, teacher_logits = [student_logits], [teacher_logits]
        label_chunks = labels.chunk(len(student_logits), dim=1)
        if not len(student_logits) == len(teacher_logits) == len(label_chunks):
            raise ValueError(
                "Arguments `student_logits`, `teacher_logits`, `labels`: expected the same number of "
                f"chunks along the sequence; received {len(student_logits)}, {len(teacher_logits)}, "
                f"{len(label_chunks)}."
            )
        total = sum(
            self.loss(s, t, y, normalize=False)
            for s, t, y in zip(student_logits, teacher_logits, label_chunks, strict=True)
        )
        count = (labels != self.ignore_index).sum()
        return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))


class ForwardKLWithChunkedOutputLoss(_ChunkedOutput):
    """``torchtune.modules.loss.ForwardKLWithChunkedOutputLoss`` (the KD recipe's default loss)."""


class ReverseKLWithChunkedOutputLoss(_ChunkedOutput):
    """``torchtune.modules.loss.ReverseKLWithChunkedOutputLoss``."""

    _LOSS = ReverseKLLoss
