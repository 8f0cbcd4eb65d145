"""``KLDivergence`` and the functional forms, framework-agnostic.

The result has the caller's array type: NumPy in, NumPy out; PyTorch in, PyTorch out with autograd
intact; JAX in, JAX out under ``jit`` and ``grad``; any array-API array likewise. Python lists and
scalars are converted as Keras converts them (Python floats become float32).
"""

from __future__ import annotations

from typing import Any

from . import _distribute, _namespace, _validate, errors
from .core.divergences import forward_kl
from .core.reductions import reduce_weighted
from .core.shapes import broadcast_shape, remove_squeezable_dimensions, squeeze_or_expand_to_same_rank
from .options import Options

Array = Any


class _Prepared:
    """Inputs converted to one namespace and the compute dtype, plus the dtype to return."""

    __slots__ = ("compute_dtype", "output_dtype", "xp", "y_pred", "y_true")

    def __init__(self, options: Options, y_true: Array, y_pred: Array, keras3_shapes: bool | None) -> None:
        xp = _namespace.common_namespace(y_pred, y_true)
        y_pred = _namespace.as_array(xp, y_pred)
        y_true = _namespace.as_array(xp, y_true, like=y_pred)
        if options.dtype is not None:
            output_dtype = _namespace.dtype_named(xp, options.dtype)
        elif _namespace.is_floating(xp, y_pred.dtype):
            output_dtype = y_pred.dtype
        else:
            raise TypeError(
                errors.message("y_pred", "a floating-point array (or pass dtype='float32')", y_pred)
            )
        compute_dtype = (
            _namespace.dtype_named(xp, "float32")
            if _namespace.is_low_precision(xp, output_dtype)
            else output_dtype
        )
        if y_pred.dtype != compute_dtype:
            y_pred = xp.astype(y_pred, compute_dtype)
        if y_true.dtype != compute_dtype:
            y_true = xp.astype(y_true, compute_dtype)
        if keras3_shapes is True:
            y_true, y_pred = squeeze_or_expand_to_same_rank(xp, y_true, y_pred)
        elif keras3_shapes is False:
            y_true, y_pred = remove_squeezable_dimensions(xp, y_true, y_pred)
        shape = broadcast_shape(y_true.shape, y_pred.shape)
        _validate.broadcastable(y_true.shape, y_pred.shape, shape)
        _validate.axis_in_range(options.axis, len(shape), shape)
        self.xp, self.y_true, self.y_pred = xp, y_true, y_pred
        self.compute_dtype, self.output_dtype = compute_dtype, output_dtype

    def per_sample(self, options: Options) -> Array:
        return forward_kl(
            self.xp,
            self.y_true,
            self.y_pred,
            true_format=options.y_true_format,
            pred_format=options.y_pred_format,
            epsilon=options.epsilon,
            axis=options.axis,
        )

    def weight(self, sample_weight: Array, like: Array) -> Array:
        weight = _namespace.as_array(self.xp, sample_weight, like=like)
        return self.xp.astype(weight, self.compute_dtype) if weight.dtype != self.compute_dtype else weight

    def output(self, value: Array) -> Array:
        return value if value.dtype == self.output_dtype else self.xp.astype(value, self.output_dtype)


def kl_divergence(
    y_true: Array,
    y_pred: Array,
    *,
    y_true_format: str = "probs",
    y_pred_format: str = "probs",
    from_logits: bool = False,
    epsilon: float = 1e-7,
    axis: int = -1,
    dtype: Any = None,
) -> Array:
    r"""Per-sample Kullback–Leibler divergence :math:`\sum_i t_i \log(t_i / p_i)` along ``axis``.

    With the defaults this is ``tf.keras.losses.kl_divergence`` (aliases ``kld``, ``KLD``,
    ``kullback_leibler_divergence``): ``y_true`` is cast to ``y_pred``'s dtype, both are clipped to
    ``[1e-7, 1]``, and the naive program is ``sum(y_true * log(y_true / y_pred), axis=-1)``.

    Args:
        y_true: target distribution P, shape ``[batch, d0, .., dN]`` (or broadcastable to ``y_pred``).
        y_pred: predicted distribution Q, same shape.
        y_true_format: ``"probs"``, ``"log_probs"`` or ``"logits"``.
        y_pred_format: the same for ``y_pred``.
        from_logits: Keras-style shorthand for ``y_pred_format="logits"``.
        epsilon: ``1e-7`` (Keras clip) or ``0`` (exact: ``0·log 0 = 0``, ``+inf`` where ``p = 0 < t``).
        axis: the distribution axis.
        dtype: ``None`` (``y_pred``'s float dtype) or a float dtype name both inputs are cast to.
            float16 and bfloat16 are accumulated in float32 and returned in their own dtype.

    Returns:
        The per-sample loss, shape ``[batch, d0, .., dN-1]``, in the caller's array type.

    Raises:
        TypeError: ``y_pred`` is not floating point (as tf_keras), or an option has the wrong type.
        ValueError: an option is out of range, or the shapes do not broadcast.

    Example:
        >>> import kldiv
        >>> print(kldiv.kl_divergence([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]]))
        [ 9.1629e-01 -3.0826e-06]
    """
    options = Options.create(
        y_true_format=y_true_format,
        y_pred_format=y_pred_format,
        from_logits=from_logits,
        epsilon=epsilon,
        axis=axis,
        dtype=dtype,
    )
    prepared = _Prepared(options, y_true, y_pred, keras3_shapes=None)
    return prepared.output(prepared.per_sample(options))


kld = KLD = kullback_leibler_divergence = kl_divergence


class KLDivergence:
    """Computes the Kullback–Leibler divergence loss between ``y_true`` and ``y_pred``.

    ``loss = y_true * log(y_true / y_pred)``, summed over the last axis, then weighted and reduced
    exactly as ``tf.keras.losses.KLDivergence`` (tf_keras 2.x; Keras 3 with the Keras 3 reduction
    spellings ``"mean"``, ``"mean_with_sample_weight"`` and ``None``).

    Args:
        reduction: a :class:`kldiv.Reduction` value; default ``"auto"`` (= ``"sum_over_batch_size"``).
        name: the loss name (Keras: ``"kl_divergence"``).
        y_true_format, y_pred_format, from_logits, epsilon, axis, dtype: see :func:`kl_divergence`.

    Raises:
        ValueError: unknown ``reduction`` or another bad option, at construction.

    Example:
        >>> import kldiv
        >>> kl = kldiv.KLDivergence()
        >>> print(f"{kl([.4, .9, .2], [.5, .8, .12]):.8f}")
        0.11891246
        >>> y_true, y_pred = [[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]]
        >>> print(f"{kl(y_true, y_pred):.3f}")
        0.458
        >>> print(f"{kl(y_true, y_pred, sample_weight=[0.8, 0.2]):.3f}")
        0.366
        >>> print(f"{kldiv.KLDivergence(reduction=kldiv.Reduction.SUM)(y_true, y_pred):.3f}")
        0.916
    """

    def __init__(
        self,
        reduction: str | None = "auto",
        name: str = "kl_divergence",
        *,
        y_true_format: str = "probs",
        y_pred_format: str = "probs",
        from_logits: bool = False,
        epsilon: float = 1e-7,
        axis: int = -1,
        dtype: Any = None,
    ) -> None:
        self.reduction = _validate.reduction(reduction)
        self.name = _validate.name(name)
        self.options = Options.create(
            y_true_format=y_true_format,
            y_pred_format=y_pred_format,
            from_logits=from_logits,
            epsilon=epsilon,
            axis=axis,
            dtype=dtype,
        )

    def __call__(self, y_true: Array, y_pred: Array, sample_weight: Array | None = None) -> Array:
        """Weighted, reduced loss: a scalar for every reduction but ``"none"`` / ``None``.

        Raises:
            ValueError: ``sample_weight`` has a shape that cannot be aligned with the per-sample
                loss (the message names both shapes), or ``reduction`` is ``"auto"`` /
                ``"sum_over_batch_size"`` under an active ``tf.distribute`` strategy.
        """
        _distribute.check_reduction(self.reduction)
        keras3 = self.reduction in ("mean", "mean_with_sample_weight", None)
        prepared = _Prepared(self.options, y_true, y_pred, keras3_shapes=keras3)
        losses = prepared.per_sample(self.options)
        weight = None if sample_weight is None else prepared.weight(sample_weight, like=losses)
        return prepared.output(reduce_weighted(prepared.xp, losses, weight, self.reduction))

    def get_config(self) -> dict[str, Any]:
        """Every option: ``KLDivergence.from_config(loss.get_config())`` is an equal loss."""
        return {"reduction": self.reduction, "name": self.name, **self.options.as_dict()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> KLDivergence:
        """The loss described by ``config`` (the output of :meth:`get_config`)."""
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.get_config().items(), key=lambda kv: kv[0])))

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({options})"
