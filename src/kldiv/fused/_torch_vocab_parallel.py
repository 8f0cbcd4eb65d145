r"""Fused linear × vocabulary parallel: the chunks of a fused-linear loss whose head is sharded over
the vocabulary across the ranks of a ``torch.distributed`` group.

Rank ``r`` holds the student's head shard ``W_r [V_r, H]`` (and ``b_r [V_r]``), the teacher's shard
(``W^t_r [V_r, H_t]`` with the teacher's hidden states, or its logits ``[BT, V_r]``) and the same
hidden states ``X [BT, H]`` as every other rank (Megatron's ``ColumnParallelLinear`` head without
``gather_output``; the full vocabulary is the shards concatenated in rank order, ``V = Σ_r V_r``,
uneven or empty shards allowed). The chunk engine (:mod:`kldiv.fused._torch_chunks`) walks the
tokens in chunks of ``c`` rows — the same chunks on every rank (their size comes from the largest
shard) — and for each chunk this module computes, on rank ``r``::

    u = φ_s(X[chunk] @ W_rᵀ + b_r)                  [c, V_r]   the local student logits (never [BT, V_r])
    z = φ_t(teacher logits of the chunk, shard r)   [c, V_r]
    values, ∂values/∂u (, ∂values/∂z) = kldiv.distributed._vocab.row_divergence(z, u, all-reduces)

:func:`kldiv.distributed._vocab.row_divergence` is the one vocabulary-parallel program (the global
row max and exp-sums by all-reduce MAX / SUM, the per-row terms and gradient row sums by one more
all-reduce SUM; the gradient w.r.t. the local logits uses the global statistics). ``φ`` are the logit
maps (soft cap, scale: element-wise, so each rank maps its shard). With ``g = coef · ∂values/∂u · φ'``
the engine accumulates::

    grad_X[chunk] = g @ W_r            (a partial sum: all-reduced SUM over the group after the last chunk)
    grad_W_r += gᵀ @ X[chunk]          grad_b_r += Σ_rows g          (local: each rank's block of the full)

and the same for the teacher's tensors when one requires a gradient. Every rank returns the same loss,
equal to the single-process fused loss on the concatenated heads; memory is one chunk per rank.
Collectives per chunk: three all-reduces of ``[≤ 5, c]`` values; per call: one of ``grad_X``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import _namespace
from .._extras import require
from ..distributed import _vocab
from ..distributed._torch_group import TorchCollectives
from ._torch_chunks import _safe_rows, _student_logits, _teacher_logits

torch = require("torch", "kldiv.fused.torch")
dist = require("torch.distributed", "kldiv.distributed.torch")

TEACHER_INPUTS = ("teacher_logits", "teacher_hidden", "teacher_weight", "teacher_bias")
HIDDEN_INPUTS = ("student_hidden", "teacher_hidden")


def _mapped(logit_map: Any, logits: Any) -> tuple[Any, Any]:
    """``(φ(z), φ'(z))`` (the derivative a number for a constant one)."""
    if logit_map.identity:
        return logits, 1.0
    mapped = logit_map.apply(torch, logits)
    return mapped, logit_map.derivative(torch, mapped)


def _scaled(grad: Any, coef: Any, factor: Any) -> Any:
    """``grad · coef · φ'`` in place (∂/∂ the raw logits of the weighted sum)."""
    grad = grad.mul_(coef)
    return grad if isinstance(factor, float) and factor == 1.0 else grad.mul_(factor)


@dataclass(frozen=True)
class Collective:
    """The vocabulary-parallel computation of the chunks, handed to :func:`kldiv.fused._torch_chunks.loss`.

    Args:
        group: the process group sharing the vocabulary (None: the default group).
        chunk_vocab: the largest shard ``max_r V_r``: the chunk size is planned for it, so that every
            rank walks the same chunks (and so makes the same collectives).
        reduce_hidden_grad: all-reduce (SUM) the hidden states' gradients over the group, so that
            each rank holds the full gradient of its replicated input (True); False leaves this rank's
            partial sum ``Σ_chunks g @ W_r`` for a caller whose own backward reduces it (Megatron's
            ``copy_to_tensor_model_parallel_region``, a sequence-parallel reduce-scatter).
    """

    group: Any
    chunk_vocab: int
    reduce_hidden_grad: bool = True

    def chunk(self, config: Any, inputs: Any, coef: Any, keep: Any, want: dict, chunk: slice, workspace: Any):
        """``(per-token values [c], {"student": ∂/∂u, "teacher": ∂/∂z})`` of one chunk: the gradients
        w.r.t. this rank's raw (pre-map) logits of ``Σ coef · values``; values 0 on masked rows."""
        kept = keep[chunk]
        teacher_grad = any(want.get(name) for name in TEACHER_INPUTS)
        dtype = coef.dtype  # float64 for float64 inputs, else float32 (kldiv's accumulation rule)
        with torch.no_grad():
            # Masked rows become the safe constant 0 first: a NaN / inf there reaches no gradient.
            student = _safe_rows(_student_logits(inputs, chunk).to(dtype), kept)
            teacher = _safe_rows(_teacher_logits(inputs, chunk).to(dtype), kept)
            student, student_factor = _mapped(config.student_map, student)
            teacher, teacher_factor = _mapped(config.teacher_map, teacher)
            xp = _namespace.namespace_of(student)
            comm = TorchCollectives(self.group)
            out = _vocab.row_divergence(xp, teacher, student, config.options, comm, teacher_grad=teacher_grad)
            values = torch.where(kept, out[0], torch.zeros((), dtype=dtype, device=kept.device))
            if not any(want.values()):
                return values, {}
            scale = coef[chunk].unsqueeze(-1)
            gradients = {"student": _scaled(out[1], scale, student_factor)}
            if teacher_grad:
                gradients["teacher"] = _scaled(out[2], scale, teacher_factor)
        return values, gradients

    def finish(self, grads: dict[str, Any]) -> None:
        """After the last chunk: the hidden states' gradients summed over the group (they are the same
        input on every rank; each rank's chunks added ``g @ W_r`` for its shard only)."""
        if not self.reduce_hidden_grad:
            return
        for name in HIDDEN_INPUTS:
            if name in grads:
                dist.all_reduce(grads[name], op=dist.ReduceOp.SUM, group=self.group)
