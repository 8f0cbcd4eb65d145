r"""kldiv on ``torch.distributed``: vocabulary-parallel divergences and data-parallel global normalisation.

**Vocabulary parallel** (tensor-parallel output layers, e.g. Megatron's ``VocabParallelEmbedding``
head): every rank of ``group`` holds the same rows and a shard ``[..., V_r]`` of the vocabulary of the
teacher and the student logits; shards may be uneven (even empty), the full vocabulary is their
concatenation in rank order. :class:`VocabParallelKLDivergence` / :class:`VocabParallelJSDivergence`
return, on every rank, the loss that :class:`kldiv.KLDivergence` / :class:`kldiv.JSDivergence` with the
same options would return for the full rows, and the gradient w.r.t. each rank's student shard is
the corresponding slice of the full gradient. The full ``[..., V]`` logits are never gathered; one
call makes four collectives on ``[2, rows]``-sized tensors::

    all_gather   shapes, dtype, options, kept rows     (a rank that disagrees → ValueError everywhere)
    all_reduce   MAX of the row maxima                 (teacher and student stacked)
    all_reduce   SUM of the shifted exp-sums           → global log-sum-exp, c = log_softmax(u / T)
    all_reduce   SUM of Σ_j ℓ_j and Σ_j g'_j           → the row values and the gradient's row sum

(log-probability shards at ``T = 1`` skip the two log-sum-exp reductions). The backward pass needs no
communication: ``∂/∂u_j = upstream · (g'_j − softmax_j · G) / T``. The per-element terms ``ℓ_j`` and
gradients ``g_j`` are those of :mod:`kldiv.core.grads`; see :mod:`kldiv.distributed._vocab` for the
derivation. Every rank must pass the same rows, ``mask`` / ``labels``, ``sample_weight`` and
``num_items`` (they describe rows, not vocabulary entries). The teacher is a constant (no gradient).

**Data parallel**: each rank holds different rows. With a mean reduction, pass the *global* number of
items as ``num_items`` (:func:`global_num_items`: an all-reduce of the local count); the sum over ranks
of the local gradients is then the gradient of one big batch, whatever the split. DDP *averages*
gradients, so under DDP pass ``global_num_items(count) / world_size`` (or multiply the loss by
``world_size``)::

    count = mask.sum()                                   # this rank's unmasked tokens
    loss = kldiv.torch.KLDivergence(reduction="token_mean", from_logits=True, y_true_format="logits")(
        teacher_logits, student_logits, mask=mask,
        num_items=kldiv.distributed.torch.global_num_items(count) / dist.get_world_size())
    loss.backward()                                      # DDP's average = the one-big-batch gradient
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any, ClassVar

from kldiv import losses as _losses
from kldiv._extras import require
from kldiv.arguments import CallArguments

from . import _loss, _vocab
from ._torch_fused import VocabParallelFusedLinearJSDivergence, VocabParallelFusedLinearKLDivergence
from ._torch_group import GroupModule as _GroupModule
from ._torch_group import (
    TorchCollectives,
    agree,
    default_device,
    descriptor,
    require_initialized,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

torch = require("torch", "kldiv.distributed.torch")
dist = require("torch.distributed", "kldiv.distributed.torch")

__all__ = [
    "VocabParallelFusedLinearJSDivergence",
    "VocabParallelFusedLinearKLDivergence",
    "VocabParallelJSDivergence",
    "VocabParallelKLDivergence",
    "global_num_items",
]

Tensor = torch.Tensor


def global_num_items(local_count: Any, group: Any = None, *, device: Any = None) -> Tensor:
    """The sum over the ranks of ``group`` of ``local_count`` (an all-reduce SUM), as a 0-d tensor.

    Pass it as ``num_items`` to a mean reduction on every rank: the per-rank losses
    ``Σ_local w·L / N_global`` then add up to the one-big-batch loss, and so do their gradients.

    Args:
        local_count: this rank's number of items: an ``int``, a ``float`` or a 0-d tensor (e.g.
            ``mask.sum()`` for unmasked tokens, ``x.shape[0]`` for sequences with ``"batchmean"``).
        group: the process group (default: the world).
        device: where a Python number is placed (default: the current CUDA device for NCCL, else CPU);
            a tensor stays on its device.

    Returns:
        A 0-d tensor: int64 for integer and boolean counts, else the count's floating dtype
        (float64 for a Python float). Detached: a count carries no gradient.

    Raises:
        TypeError: ``local_count`` is not a number or a tensor.
        ValueError: ``local_count`` is a tensor with more than one element.

    Example (2 ranks holding 3 and 5 unmasked tokens): ``global_num_items(mask.sum())`` is
    ``tensor(8)`` on both.
    """
    require_initialized()
    if isinstance(local_count, torch.Tensor):
        if local_count.numel() != 1:
            raise ValueError(
                "Argument `local_count`: expected a number or a one-element tensor; received a tensor "
                f"of shape {tuple(local_count.shape)}."
            )
        count = local_count.detach().reshape(())
        if count.dtype == torch.bool or not count.is_floating_point():
            count = count.to(torch.int64)
        count = count.clone()
    elif isinstance(local_count, (int, float)) and not isinstance(local_count, bool):
        dtype = torch.int64 if isinstance(local_count, int) else torch.float64
        count = torch.tensor(local_count, dtype=dtype, device=device or default_device(group))
    else:
        raise TypeError(
            f"Argument `local_count`: expected an int, a float or a 0-d tensor; received {local_count!r}."
        )
    dist.all_reduce(count, op=dist.ReduceOp.SUM, group=group)
    return count


class _VocabParallelRows(torch.autograd.Function):
    """Per-row divergence of vocabulary shards; the gradient w.r.t. the student shard is computed in
    the forward pass (:func:`kldiv.distributed._vocab.row_divergence`) and scaled by the upstream
    gradient in the backward pass, which communicates nothing."""

    @staticmethod
    def forward(ctx: Any, teacher: Tensor, student: Tensor, xp: Any, options: Any, group: Any) -> Tensor:
        values, grad = _vocab.row_divergence(
            xp, teacher.detach(), student.detach(), options, TorchCollectives(group)
        )
        ctx.save_for_backward(grad if ctx.needs_input_grad[1] else None)
        return values

    @staticmethod
    def backward(ctx: Any, upstream: Tensor) -> tuple[Any, ...]:
        (grad,) = ctx.saved_tensors
        return None, upstream.unsqueeze(-1) * grad, None, None, None


def _options_code(loss: Any) -> int:
    config = {key: value for key, value in loss.get_config().items() if key != "name"}
    return zlib.crc32(repr(sorted(config.items())).encode())


class _VocabParallelLoss(_GroupModule, _losses.Wrapper):
    """A vocabulary-parallel ``nn.Module`` loss over a framework-agnostic kldiv loss's options."""

    _agnostic: ClassVar[type[_losses._DivergenceLoss]]

    def __init__(
        self, reduction: str | None = "auto", name: str | None = None, *, group: Any = None, **options: Any
    ) -> None:
        super().__init__()
        if "backend" in options:  # the collective program is the only implementation
            raise TypeError(f"{type(self).__name__} got an unexpected keyword argument 'backend'.")
        options = {"y_true_format": "logits", "y_pred_format": "logits", **options, "backend": "core"}
        self.loss = self._agnostic(reduction=reduction, name=name, **options)
        _vocab.check_formats(self.loss.options.y_true_format, self.loss.options.y_pred_format)
        self._hold(group)
        self._options_code = _options_code(self.loss)

    def forward(
        self,
        teacher_logits: Tensor,
        student_logits: Tensor,
        sample_weight: Tensor | None = None,
        **arguments: Unpack[CallArguments],
    ) -> Tensor:
        """The loss of the full rows, identical on every rank of ``group``.

        Args:
            teacher_logits: this rank's teacher shard ``[..., V_r]`` (vocabulary along ``axis``),
                logits or log-probabilities (``y_true_format``). Receives no gradient.
            student_logits: this rank's student shard, same shape (``y_pred_format``).
            sample_weight, **arguments: ``sample_weight``, ``mask``, ``labels``, ``num_items`` as
                :meth:`kldiv.KLDivergence.__call__`, the same on every rank.

        Raises:
            ValueError: on *every* rank, when the ranks disagree on the rows (batch shape), the
                dtype, the options or the number of masked rows, or when any rank's local checks
                fail (that rank raises its own error, the others a ``ValueError`` naming it); a
                ``sample_weight`` that does not align with the rows.
            RuntimeError: ``torch.distributed`` is not initialized.
        """
        require_initialized()
        try:
            if not isinstance(student_logits, torch.Tensor):
                raise TypeError(
                    f"Argument `student_logits`: expected a torch.Tensor; received {type(student_logits)}."
                )
            shards = _loss.prepare(self.loss, teacher_logits, student_logits, **arguments)
            local_error = None
        except Exception as error:  # reported to every rank before anyone enters a collective
            shards, local_error = None, error
        self._agree(shards, local_error, student_logits)
        assert shards is not None  # _agree raised otherwise
        values = _VocabParallelRows.apply(shards.teacher, shards.student, shards.xp, self.options, self.group)
        return _loss.reduce(self.loss, shards, values, sample_weight)

    def _agree(self, shards: _loss.Shards | None, local_error: Exception | None, like: Any) -> None:
        """All-gather a small descriptor of each rank's call; raise on every rank unless all agree."""
        fields = None
        if shards is not None:
            keep = shards.prepared.keep
            kept = -1 if keep is None else int(keep.sum())
            fields = descriptor(
                shards.batch_shape, shards.student.dtype, self._options_code, kept, shards.student.shape[-1]
            )
        agree(self.group, fields, local_error, like)

    def get_config(self) -> dict[str, Any]:
        """``reduction``, ``name`` and every option (not ``group``, which is not serialisable)."""
        config = self.loss.get_config()
        del config["backend"]
        return config


class VocabParallelKLDivergence(_VocabParallelLoss):
    r"""KL divergence of vocabulary-sharded teacher and student logits on ``torch.distributed``.

    ``VocabParallelKLDivergence(reduction="auto", name="kl_divergence", *, group=None, **options)``;
    ``forward(teacher_logits, student_logits, sample_weight=None, *, mask=None, labels=None,
    num_items=None)``
    returns, on every rank of ``group``, what :class:`kldiv.KLDivergence` with the
    same options returns for the concatenated shards::

        kldiv.KLDivergence(reduction, y_true_format="logits", y_pred_format="logits", **options)(
            torch.cat(all_teacher_shards, -1), torch.cat(all_student_shards, -1), ...)

    ``direction="forward"`` is KL(teacher ‖ student), ``"reverse"`` KL(student ‖ teacher),
    ``"symmetric"`` their sum; ``temperature`` divides both logits (``scale_by_temperature_squared``
    multiplies by ``T²``); ``epsilon=1e-7`` clips log-probabilities to ``[log ε, 0]`` (Keras mode),
    ``epsilon=0`` is exact. All reductions of :class:`kldiv.KLDivergence` (``"batchmean"``,
    ``"token_mean"``, ``num_items``, masks) apply to the per-row values.

    Args:
        reduction: a :class:`kldiv.Reduction` value (default ``"auto"``).
        name: the loss name.
        group: the ``torch.distributed`` process group sharing the vocabulary (default: the world).
        **options: the options of :class:`kldiv.KLDivergence`, with the same names and defaults
            except the formats: ``y_true_format`` / ``y_pred_format`` are ``"logits"`` (default) or
            ``"log_probs"`` (a shard of probabilities is not supported), and there is no ``backend``.
            ``validate=True`` checks each shard for NaN and ``+inf`` (a shard is not a
            distribution, so the sum-to-one check of ``"log_probs"`` is not made).

    Raises:
        ValueError: a bad option (at construction), a format other than logits / log-probabilities.

    Example (2 ranks, vocabulary 0..4 on rank 0 and 5..10 on rank 1)::

        loss_fn = VocabParallelKLDivergence(reduction="token_mean", temperature=2.0)
        loss = loss_fn(teacher_logits[..., lo:hi], student_logits[..., lo:hi], mask=mask)
        loss.backward()       # each rank's student shard gets its block of the full gradient
    """

    _agnostic = _losses.KLDivergence


class VocabParallelJSDivergence(_VocabParallelLoss):
    r"""Generalized Jensen–Shannon divergence ``JS_β(teacher, student)`` of vocabulary-sharded logits.

    .. math:: \mathrm{JS}_\beta(P, Q) = \beta\,\mathrm{KL}(P\|M) + (1-\beta)\,\mathrm{KL}(Q\|M),
              \qquad M = \beta P + (1-\beta) Q

    ``P`` is the teacher, ``Q`` the student; exactly 0 at ``β ∈ {0, 1}`` (see
    :func:`kldiv.js_divergence`). Equals :class:`kldiv.JSDivergence` with the same options
    (``beta=0.5`` by default) on the concatenated shards; the call, the other arguments and the
    errors are those of :class:`VocabParallelKLDivergence`.
    """

    _agnostic = _losses.JSDivergence
