"""The vocabulary-parallel fused-linear losses of :mod:`kldiv.distributed.torch` (public there):
:class:`kldiv.fused.torch.FusedLinearKLDivergence` / ``FusedLinearJSDivergence`` whose head is sharded
over the vocabulary of a process group. This module checks a rank's call and makes the ranks agree;
the chunks are computed by :mod:`kldiv.fused._torch_vocab_parallel`."""

from __future__ import annotations

import zlib
from typing import Any

from kldiv import _namespace
from kldiv._extras import require
from kldiv.arguments import FusedCallArguments, TeacherArguments, check, split, teacher_form
from kldiv.core.reductions import token_weights
from kldiv.fused._torch_chunks import Inputs
from kldiv.fused._torch_vocab_parallel import TEACHER_INPUTS, Collective
from kldiv.fused.torch import FusedLinearJSDivergence, FusedLinearKLDivergence

from ._torch_group import VOCAB, GroupModule, agree, descriptor, require_initialized

torch = require("torch", "kldiv.distributed.torch")

Tensor = torch.Tensor
__all__ = ["VocabParallelFusedLinearJSDivergence", "VocabParallelFusedLinearKLDivergence"]


_NOT_VOCAB_PARALLEL = {
    "backend": "the collective program is the only implementation",
    "teacher_topk_format": "a top-k teacher's indices span the whole vocabulary, not a shard",
    "vocab_alignment": "align the vocabularies before sharding them",
    "return_stats": "the per-token statistics are computed by the single-process losses only",
    "weight_hard_loss": "the hard-label term is computed by the single-process losses only",
    "weight_soft_loss": "the hard-label term is computed by the single-process losses only",
    "accumulation_dtype": "the collective program accumulates in kldiv's default dtypes",
    "support": "a top-k support is chosen by the single-process losses only",
    "topk": "a top-k support is chosen by the single-process losses only",
}


class _VocabParallelFused(GroupModule):
    """The vocabulary-parallel form of a fused-linear loss (mixed into its class): local checks, the
    ranks' agreement, then the chunk engine with a :class:`kldiv.fused._torch_vocab_parallel.Collective`."""

    def __init__(
        self, reduction: str = "auto", *, group: Any = None, reduce_hidden_grad: bool = True, **options: Any
    ) -> None:
        for name, reason in _NOT_VOCAB_PARALLEL.items():
            if name in options:
                raise TypeError(
                    f"Argument `{name}`: not taken by {type(self).__name__} ({reason}); received "
                    f"{options[name]!r}."
                )
        if not isinstance(reduce_hidden_grad, bool):
            raise TypeError(
                f"Argument `reduce_hidden_grad`: expected True or False; received {reduce_hidden_grad!r}."
            )
        super().__init__(reduction, **options)
        self.reduce_hidden_grad = reduce_hidden_grad
        self._hold(group)

    def get_config(self) -> dict[str, Any]:
        """``reduction``, every option, the chunking and logit-map settings and ``reduce_hidden_grad``
        (not ``group``, which is not serialisable)."""
        config = {k: v for k, v in super().get_config().items() if k not in _NOT_VOCAB_PARALLEL}
        return {**config, "reduce_hidden_grad": self.reduce_hidden_grad}

    def forward(
        self,
        student_hidden: Tensor,
        student_weight: Tensor,
        student_bias: Tensor | None = None,
        **arguments: Any,
    ) -> Tensor:
        """The loss of the full vocabulary, identical on every rank of ``group`` (see the class)."""
        require_initialized()
        try:
            inputs, tokens, fields = self._local(student_hidden, student_weight, student_bias, arguments)
            local_error = None
        except Exception as error:  # reported to every rank before anyone enters a collective
            inputs, tokens, fields, local_error = None, None, None, error
        rows = agree(self.group, fields, local_error, student_hidden)
        collective = Collective(self.group, max(row[VOCAB] for row in rows), self.reduce_hidden_grad)
        lead = tuple(student_hidden.shape[:-1])
        return self._loss(inputs, tokens, student_hidden.shape[0], lead, collective=collective)

    def _local(self, hidden: Any, weight: Any, bias: Any, arguments: dict) -> tuple[Any, Any, list[int]]:
        """This rank's checks (no communication): the inputs, the token arguments, its descriptor."""
        name = type(self).__name__
        check(arguments, FusedCallArguments, f"{name}.forward()")
        for argument, value, ndim in (("student_hidden", hidden, 2), ("student_weight", weight, 2)):
            if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.ndim < ndim:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise TypeError(f"Argument `{argument}`: expected a floating tensor; received {got}.")
        teacher, tokens = split(arguments, TeacherArguments)
        form = teacher_form(teacher)
        if form == "teacher_topk_indices":
            raise ValueError(
                f"Argument `teacher_topk_indices`: not taken by {name} (a top-k teacher's indices span the "
                "whole vocabulary); pass this rank's `teacher_logits` shard or `teacher_hidden` with its "
                "`teacher_weight` shard."
            )
        size = hidden.shape[-1]
        flat = hidden.reshape(-1, size)
        rows, vocab = flat.shape[0], weight.shape[0]
        if weight.ndim != 2 or weight.shape[1] != size:
            raise ValueError(
                f"Argument `student_weight`: expected this rank's head shard [V_r, {size}]; received "
                f"{tuple(weight.shape)}."
            )
        shards = [("student_bias", bias, (vocab,))]
        inputs = Inputs(student_hidden=flat, student_weight=weight, student_bias=bias)
        teacher_size = 0
        if form == "teacher_logits":
            logits = teacher["teacher_logits"]
            shards.append(("teacher_logits", logits, (*hidden.shape[:-1], vocab)))
            inputs.teacher_logits = logits.reshape(rows, vocab) if logits.numel() == rows * vocab else logits
        else:
            teacher_hidden, teacher_weight = teacher["teacher_hidden"], teacher["teacher_weight"]
            teacher_size = teacher_hidden.shape[-1]
            shards += [
                ("teacher_hidden", teacher_hidden, (*hidden.shape[:-1], teacher_size)),
                ("teacher_weight", teacher_weight, (vocab, teacher_size)),
                ("teacher_bias", teacher.get("teacher_bias"), (vocab,)),
            ]
            inputs.teacher_hidden = teacher_hidden.reshape(-1, teacher_size)
            inputs.teacher_weight, inputs.teacher_bias = teacher_weight, teacher.get("teacher_bias")
        for argument, value, shape in shards:
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(
                    f"Argument `{argument}`: expected shape {shape} (this rank's vocabulary shard of "
                    f"{vocab} entries, the student's); received {tuple(value.shape)}."
                )
        xp = _namespace.namespace_of(flat)
        keep, _ = token_weights(
            xp,
            self.options,
            self.reduction,
            tokens,
            rows=rows,
            batch_size=hidden.shape[0],
            dtype=torch.float64,
        )
        # What decides the collectives: the hidden states' all-reduce, the teacher gradient's sums.
        teachers = [getattr(inputs, n) for n in TEACHER_INPUTS]
        grads = (
            flat.requires_grad,
            inputs.teacher_hidden is not None and inputs.teacher_hidden.requires_grad,
            any(t is not None and t.requires_grad for t in teachers),
            torch.is_grad_enabled(),
        )
        call = zlib.crc32(repr((size, form, teacher_size, grads)).encode())
        options = zlib.crc32(repr(sorted(self.get_config().items())).encode())
        fields = descriptor(hidden.shape[:-1], hidden.dtype, options, int(keep.sum()), vocab, call)
        return inputs, tokens, fields


class VocabParallelFusedLinearKLDivergence(_VocabParallelFused, FusedLinearKLDivergence):
    r""":class:`kldiv.fused.torch.FusedLinearKLDivergence` with the head sharded over the vocabulary
    across the ranks of a ``torch.distributed`` group (a tensor-parallel output layer).

    ``VocabParallelFusedLinearKLDivergence(reduction="auto", *, group=None, reduce_hidden_grad=True,
    **options)``; ``forward(student_hidden, student_weight, student_bias=None, *, teacher_logits=... |
    teacher_hidden=..., teacher_weight=..., teacher_bias=..., labels=None, mask=None,
    sample_weight=None, num_items=None)`` on every rank, where

    * ``student_hidden`` ``[BT, H]`` or ``[B, T, H]`` is the same on every rank (replicated, as the
      input of Megatron's ``ColumnParallelLinear`` head or a torchtitan colwise-sharded ``output``);
    * ``student_weight`` ``[V_r, H]`` and ``student_bias`` ``[V_r]`` are this rank's rows of the head:
      the full head is the shards concatenated in rank order (``V = Σ_r V_r``; shards may be uneven,
      even empty — Megatron's ``vocab_range_from_per_partition_vocab_size`` shards are contiguous);
    * the teacher is this rank's shard too: ``teacher_logits`` ``[BT, V_r]`` (or ``[B, T, V_r]``), or
      the replicated ``teacher_hidden`` ``[BT, H_t]`` with ``teacher_weight`` ``[V_r, H_t]`` (and
      ``teacher_bias`` ``[V_r]``), covering the same vocabulary entries as the student's shard.

    Every rank returns what the single-process loss returns for the full head::

        FusedLinearKLDivergence(reduction, **options)(
            student_hidden, torch.cat(all_weight_shards), torch.cat(all_bias_shards),
            teacher_logits=torch.cat(all_teacher_shards, -1), ...)

    and the gradients are the single-process ones: each rank's weight / bias shard (and teacher
    shard, when it requires a gradient) gets its block of the full gradient, and the hidden states
    get the full gradient on every rank (all-reduced SUM once per call; with
    ``reduce_hidden_grad=False`` each rank keeps its partial sum, for a caller whose own backward
    reduces it — Megatron's ``copy_to_tensor_model_parallel_region``, a sequence-parallel
    reduce-scatter; do not combine such an op with the default, which would sum twice).

    Memory is one chunk of ``[c, V_r]`` logits and temporaries per rank, never ``[BT, V_r]``; the chunk
    size is planned for the largest shard so that the ranks walk the same chunks. Each chunk makes
    three all-reduces of ``[≤ 5, c]`` values (:mod:`kldiv.fused._torch_vocab_parallel`, the program of
    :mod:`kldiv.distributed._vocab`); ``reduction="none"`` computes the gradients in backward, so every
    rank must call backward. Before any of them one all-gather checks that the ranks agree on the rows,
    dtype, options, hidden sizes, teacher form, kept tokens and which inputs require a gradient (a rank
    that disagrees or fails its local checks makes every rank raise ``ValueError``). The hidden states
    themselves, ``labels`` / ``mask``, ``sample_weight`` and ``num_items`` must be the same on every
    rank (they are not compared element by element).

    Args:
        reduction: as :class:`kldiv.fused.torch.FusedLinearKLDivergence` (default ``"auto"`` =
            ``"token_mean"``).
        group: the process group sharing the vocabulary (default: the world) — the tensor-parallel
            group, e.g. ``megatron.core.parallel_state.get_tensor_model_parallel_group()``.
        reduce_hidden_grad: all-reduce the hidden states' gradients over ``group`` (default True).
        **options: those of :class:`kldiv.fused.torch.FusedLinearKLDivergence` — ``direction``,
            ``temperature``, ``scale_by_temperature_squared``, ``epsilon``, ``dtype``, ``ignore_index``,
            ``chunk_size``, ``memory_budget``, ``student_softcap``, ``teacher_softcap``,
            ``student_logit_scale``, ``teacher_logit_scale`` (element-wise, so each rank maps its
            shard) — except ``backend``, ``teacher_topk_format``, ``vocab_alignment``,
            ``return_stats``, ``weight_hard_loss`` / ``weight_soft_loss``, ``accumulation_dtype`` and
            ``support`` / ``topk`` (``TypeError``: single-process only for now).

    Raises:
        ValueError: on every rank, when the ranks disagree or one fails its local checks (shapes
            that are not this rank's shard, a top-k teacher, bad ``labels`` / ``mask``).
        RuntimeError: ``torch.distributed`` is not initialized.

    Example (each rank its contiguous slice ``lo:hi`` of a head of ``V`` rows)::

        loss_fn = VocabParallelFusedLinearKLDivergence(temperature=2.0, group=tp_group)
        loss = loss_fn(hidden, weight[lo:hi], teacher_logits=teacher_logits[..., lo:hi], labels=labels)
        loss.backward()       # weight[lo:hi]'s block of the full gradient; hidden's full gradient
    """


class VocabParallelFusedLinearJSDivergence(_VocabParallelFused, FusedLinearJSDivergence):
    """:class:`VocabParallelFusedLinearKLDivergence` for the generalized Jensen–Shannon divergence
    ``JS_β`` (``beta`` as :class:`kldiv.fused.torch.FusedLinearJSDivergence`, default 0.5)."""
