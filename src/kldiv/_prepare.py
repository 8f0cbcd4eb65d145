"""Preparation of one call's inputs: one namespace, aligned dtypes and shapes, the keep-mask.

:func:`prepare` is the first step of every loss call (see ``ARCHITECTURE.md``): it finds the array
namespace ``xp``, converts Python values and NumPy targets into it, applies the ``dtype`` option and
Keras' rank fix-ups, checks shapes and (``validate=True``) values, and builds the boolean keep-mask
from ``mask`` / ``labels``. It decides nothing about the implementation: that is
:func:`kldiv.kernels.dispatch.plan`'s job, which reads the prepared arrays; :meth:`Prepared.widen`
then follows the plan's dtype decision.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from . import _namespace, _validate, errors
from .core import masking
from .core.shapes import broadcast_shape, remove_squeezable_dimensions, squeeze_or_expand_to_same_rank
from .options import Options

Array = Any


@dataclasses.dataclass
class Prepared:
    """Both inputs in one namespace, the distribution axis, the keep-mask and the dtypes.

    Attributes:
        xp: the array namespace.
        y_true, y_pred: the inputs, of one dtype: ``y_pred``'s (float16 / bfloat16 stay narrow
            until :meth:`widen`, so that a kernel that reads them as they are can).
        axis: the non-negative distribution axis.
        keep: boolean keep-mask of the per-sample loss shape, or None.
        loss_shape: the per-sample loss shape (the broadcast shape without ``axis``).
        compute_dtype: the dtype of the arithmetic (float32 for float16 / bfloat16).
        output_dtype: the dtype of the result.
    """

    xp: Any
    y_true: Array
    y_pred: Array
    axis: int
    keep: Array | None
    loss_shape: tuple
    compute_dtype: Any
    output_dtype: Any

    def widen(self) -> None:
        """Both inputs in the compute dtype (no copy where they already are)."""
        self.y_true, self.y_pred = _cast(self.xp, self.compute_dtype, self.y_true, self.y_pred)

    def cast(self, x: Array) -> Array:
        """``x`` (a weight, a count, a Python value) as an array in the compute dtype."""
        (x,) = _cast(self.xp, self.compute_dtype, _namespace.as_array(self.xp, x, like=self.y_pred))
        return x

    def count_kept(self) -> int | None:
        """The number of unmasked positions, or None where counting would wait for a device."""
        if self.keep is None:
            return math.prod(self.loss_shape)
        if getattr(self.y_pred, "device", None) is not None and str(self.y_pred.device) != "cpu":
            return None
        return int(self.xp.sum(self.xp.astype(self.keep, self.xp.int32)))

    def output(self, value: Array) -> Array:
        """``value`` in the output dtype."""
        return value if value.dtype == self.output_dtype else self.xp.astype(value, self.output_dtype)


def _cast(xp: Any, dtype: Any, *arrays: Array) -> tuple[Array, ...]:
    return tuple(x if x.dtype == dtype else xp.astype(x, dtype) for x in arrays)


def prepare(
    options: Options,
    y_true: Array,
    y_pred: Array,
    *,
    keras3_shapes: bool | None,
    mask: Array | None = None,
    labels: Array | None = None,
    shard: bool = False,
) -> Prepared:
    """Check and align the inputs of one call (see the module docstring).

    ``keras3_shapes``: True for Keras 3's rank fix-up, False for tf_keras', None for none.
    ``shard``: the inputs are vocabulary shards (:mod:`kldiv.distributed`), not whole distributions:
    a shard of one entry is no size-1 distribution axis to warn about.

    Raises:
        TypeError: a non-floating ``y_pred`` without a ``dtype`` option (as tf_keras).
        ValueError: shapes that do not broadcast, an ``axis`` out of range, a ``mask`` / ``labels``
            that does not broadcast to the per-sample loss, or invalid values (``validate=True``).
    """
    inputs = {}
    for argument, x in (("y_pred", y_pred), ("y_true", y_true)):
        _validate.input_object(argument, x)
        inputs[argument] = _validate.python_value(argument, x) if _namespace.is_python_value(x) else x
    xp = _namespace.common_namespace(inputs["y_pred"], inputs["y_true"])
    y_pred = _namespace.as_array(xp, inputs["y_pred"])
    y_true = _namespace.as_array(xp, inputs["y_true"], like=y_pred)
    for argument, x in (("y_pred", y_pred), ("y_true", y_true)):
        _validate.input_dtype(argument, x)
    if options.dtype is not None:
        output_dtype = _namespace.dtype_named(xp, options.dtype)
        y_true, y_pred = _cast(xp, output_dtype, y_true, y_pred)  # Keras 3's loss ``dtype``
    elif _namespace.is_floating(xp, y_pred.dtype):
        output_dtype = y_pred.dtype
    else:
        raise TypeError(errors.message("y_pred", "a floating-point array (or pass dtype='float32')", y_pred))
    low = _namespace.is_low_precision(xp, output_dtype)
    compute_dtype = _namespace.dtype_named(xp, "float32") if low else output_dtype
    if options.validate:
        _validate.same_shape(y_true.shape, y_pred.shape)
    if y_true.dtype != y_pred.dtype or options.validate:
        # y_true takes y_pred's dtype (Keras); a low-precision y_pred next to a wider y_true, or
        # validation, widens both now (only equal narrow dtypes may reach a kernel as they are).
        y_true, y_pred = _cast(xp, compute_dtype, y_true, y_pred)
    if keras3_shapes is True:
        y_true, y_pred = squeeze_or_expand_to_same_rank(xp, y_true, y_pred)
    elif keras3_shapes is False:
        y_true, y_pred = remove_squeezable_dimensions(xp, y_true, y_pred)
    shape = broadcast_shape(y_true.shape, y_pred.shape)
    _validate.broadcastable(y_true.shape, y_pred.shape, shape)
    argument = "y_pred" if y_pred.ndim >= y_true.ndim else "y_true"
    _validate.distribution_axis(argument, shape, options.axis, warn_single=not shard)
    axis = _validate.axis_in_range(options.axis, len(shape), shape)
    if options.validate:
        for argument, x, fmt in (
            ("y_true", y_true, options.y_true_format),
            ("y_pred", y_pred, options.y_pred_format),
        ):
            _validate.input_values(xp, argument, x, fmt, axis, output_dtype)
    loss_shape = tuple(shape[:axis] + shape[axis + 1 :])
    keep = _keep_mask(xp, options, mask, labels, like=y_pred, loss_shape=loss_shape)
    return Prepared(xp, y_true, y_pred, axis, keep, loss_shape, compute_dtype, output_dtype)


def _keep_mask(
    xp: Any, options: Options, mask: Array | None, labels: Array | None, like: Array, loss_shape: tuple
) -> Array | None:
    """The boolean keep-mask broadcast to the per-sample loss shape (None without mask/labels)."""
    given = {}
    for argument, value in (("mask", mask), ("labels", labels)):
        if value is None:
            continue
        value = _namespace.as_array(xp, value, like=like)
        if broadcast_shape(tuple(value.shape), loss_shape) != loss_shape:
            raise ValueError(
                f"Argument `{argument}`: expected a shape that broadcasts to the per-sample loss "
                f"shape {loss_shape}; received shape {tuple(value.shape)}."
            )
        given[argument] = value
    keep = masking.combine(xp, given.get("mask"), given.get("labels"), options.ignore_index)
    if keep is None or tuple(keep.shape) == loss_shape:
        return keep
    return xp.broadcast_to(keep, loss_shape)
