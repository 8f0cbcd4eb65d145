"""The framework-agnostic part of a vocabulary-parallel loss call: prepare the local shards, then weight
and reduce the per-row values exactly as :class:`kldiv.KLDivergence` does.

Preparation is kldiv's own (:func:`kldiv._prepare.prepare`: array namespace, compute dtype, the
keep-mask from ``mask`` / ``labels``; masked rows are then replaced by a safe constant, and each side's logit
map — soft cap, logit scale, element-wise — is applied to the local entries); the reduction is
:func:`kldiv.core.reductions.reduce_weighted` on the per-row values, which are identical on every
participant, so every participant returns the same loss.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .. import _prepare, _validate
from .._prepare import Prepared
from ..arguments import CallArguments, check
from ..core import masking
from ..core.reductions import KERAS3_REDUCTIONS, reduce_weighted

if TYPE_CHECKING:
    from typing_extensions import Unpack

Array = Any


@dataclasses.dataclass
class Shards:
    """The local shards, ready for :func:`kldiv.distributed._vocab.row_divergence`."""

    prepared: Prepared
    teacher: Array  # [..., V_r], vocabulary last, compute dtype, masked rows replaced
    student: Array
    num_items: Any

    @property
    def xp(self) -> Any:
        return self.prepared.xp

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.student.shape[:-1])


def prepare(loss: Any, teacher: Array, student: Array, **arguments: Unpack[CallArguments]) -> Shards:
    """Check and prepare one participant's shards (local checks only, no communication).

    Args:
        loss: the :class:`kldiv.KLDivergence` / :class:`kldiv.JSDivergence` holding the options.
        teacher, student: the local shards, the vocabulary along ``options.axis``.
        **arguments: ``mask``, ``labels``, ``num_items``, as :meth:`kldiv.KLDivergence.__call__`.

    Raises:
        ValueError: teacher and student shards of different shapes, a bad ``mask`` / ``labels`` /
            ``num_items``, or (``validate=True``) NaN or ``+inf`` in a shard.
        TypeError: a non-floating student, an unknown keyword.
    """
    check(arguments, CallArguments, f"{type(loss).__name__} (vocabulary-parallel)")
    options = loss.options
    if tuple(teacher.shape) != tuple(student.shape):
        raise ValueError(
            "Arguments `teacher_logits` and `student_logits`: expected shards of equal shapes "
            f"(the same rows and vocabulary entries); received shapes {tuple(teacher.shape)} and "
            f"{tuple(student.shape)}."
        )
    num_items = _validate.num_items(arguments.get("num_items"), loss.reduction)
    core_options = dataclasses.replace(options, backend="core", validate=False)
    keras3 = loss.reduction in KERAS3_REDUCTIONS
    prepared = _prepare.prepare(
        core_options,
        teacher,
        student,
        keras3_shapes=keras3,
        mask=arguments.get("mask"),
        labels=arguments.get("labels"),
        shard=True,
    )
    prepared.widen()
    xp, axis = prepared.xp, prepared.axis
    teacher, student = prepared.y_true, prepared.y_pred
    if prepared.keep is not None:  # masked rows become a safe constant: no NaN in the backward pass
        teacher = masking.mask_input(xp, teacher, options.y_true_format, prepared.keep, axis)
        student = masking.mask_input(xp, student, options.y_pred_format, prepared.keep, axis)
    if options.validate:
        for argument, x in (("teacher_logits", teacher), ("student_logits", student)):
            # A shard is not a distribution: only the entry-wise checks apply.
            _validate.input_values(xp, argument, x, "logits", axis, prepared.output_dtype)
    # The logit maps are element-wise: each participant maps its own entries (autodiff through them).
    if not options.teacher_map.identity:
        teacher = options.teacher_map.apply(xp, teacher)
    if not options.student_map.identity:
        student = options.student_map.apply(xp, student)
    last = len(student.shape) - 1
    if axis != last:
        teacher, student = xp.moveaxis(teacher, axis, -1), xp.moveaxis(student, axis, -1)
    return Shards(prepared, teacher, student, num_items)


def reduce(loss: Any, shards: Shards, values: Array, sample_weight: Any) -> Array:
    """``T²`` scaling, masking, ``sample_weight`` and the reduction of the per-row values."""
    options, prepared, xp = loss.options, shards.prepared, shards.xp
    if options.loss_scale != 1.0:
        values = values * options.loss_scale
    if prepared.keep is not None:
        values = masking.mask_losses(xp, values, prepared.keep)
    weight = None if sample_weight is None else prepared.cast(sample_weight)
    num_items = shards.num_items
    if num_items is not None and not isinstance(num_items, (int, float)):
        num_items = prepared.cast(num_items)
    value = reduce_weighted(xp, values, weight, loss.reduction, mask=prepared.keep, num_items=num_items)
    return prepared.output(value)
