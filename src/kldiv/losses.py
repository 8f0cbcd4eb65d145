"""``KLDivergence``, ``JSDivergence`` and their functional forms, framework-agnostic.

The result has the caller's array type: NumPy in, NumPy out; PyTorch in, PyTorch out with autograd
intact; JAX in, JAX out under ``jit`` and ``grad``; any array-API array likewise. Python lists and
scalars are converted as Keras converts them (Python floats become float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from . import _distribute, _namespace, _validate, errors
from .core import masking
from .core.divergences import divergence
from .core.reductions import KERAS3_REDUCTIONS, reduce_weighted
from .core.shapes import broadcast_shape, remove_squeezable_dimensions, squeeze_or_expand_to_same_rank
from .kernels import dispatch
from .options import Options

Array = Any


def _as_dtype(xp: Any, y_true: Any, y_pred: Any, dtype: Any) -> tuple[Any, Any]:
    """Both inputs in ``dtype`` (cast only where they differ)."""
    if y_pred.dtype != dtype:
        y_pred = xp.astype(y_pred, dtype)
    if y_true.dtype != dtype:
        y_true = xp.astype(y_true, dtype)
    return y_true, y_pred


class _Prepared:
    """Inputs in one namespace and the compute dtype, the keep-mask, and the dtype to return."""

    __slots__ = ("axis", "compute_dtype", "keep", "output_dtype", "use_kernel", "xp", "y_pred", "y_true")

    def __init__(
        self,
        options: Options,
        y_true: Array,
        y_pred: Array,
        keras3_shapes: bool | None,
        mask: Array | None = None,
        labels: Array | None = None,
    ) -> None:
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
        if options.validate:
            _validate.same_shape(y_true.shape, y_pred.shape)
        if options.dtype is not None:
            # The option casts both inputs first (Keras 3's loss ``dtype``), then low precision is
            # widened to float32 for the arithmetic.
            y_true, y_pred = _as_dtype(xp, y_true, y_pred, output_dtype)
        # The Triton kernel reads float16 / bfloat16 as they are (float32 accumulation): inputs it may
        # serve stay narrow until the kernel decision; everything else is widened now.
        narrow = not options.validate and dispatch.reads_low_precision(options, xp, y_true, y_pred)
        if not narrow:
            y_true, y_pred = _as_dtype(xp, y_true, y_pred, compute_dtype)
        if keras3_shapes is True:
            y_true, y_pred = squeeze_or_expand_to_same_rank(xp, y_true, y_pred)
        elif keras3_shapes is False:
            y_true, y_pred = remove_squeezable_dimensions(xp, y_true, y_pred)
        shape = broadcast_shape(y_true.shape, y_pred.shape)
        _validate.broadcastable(y_true.shape, y_pred.shape, shape)
        axis = _validate.axis_in_range(options.axis, len(shape), shape)
        if options.validate:
            for argument, x, fmt in (
                ("y_true", y_true, options.y_true_format),
                ("y_pred", y_pred, options.y_pred_format),
            ):
                _validate.input_values(xp, argument, x, fmt, axis, output_dtype)
        self.keep = self._keep_mask(
            xp, options, mask, labels, like=y_pred, loss_shape=shape[:axis] + shape[axis + 1 :]
        )
        self.axis = axis
        self.use_kernel = dispatch.use_kernel(options, xp, y_true, y_pred)
        if narrow and not self.use_kernel:
            y_true, y_pred = _as_dtype(xp, y_true, y_pred, compute_dtype)
        if self.keep is not None and not self.use_kernel:
            y_true = masking.mask_input(xp, y_true, options.y_true_format, self.keep, axis)
            y_pred = masking.mask_input(xp, y_pred, options.y_pred_format, self.keep, axis)
        self.xp, self.y_true, self.y_pred = xp, y_true, y_pred
        self.compute_dtype, self.output_dtype = compute_dtype, output_dtype

    @staticmethod
    def _keep_mask(
        xp: Any, options: Options, mask: Array | None, labels: Array | None, like: Array, loss_shape: tuple
    ) -> Array | None:
        """The boolean keep-mask broadcast to the per-sample loss shape (None without mask/labels)."""
        for argument, value in (("mask", mask), ("labels", labels)):
            if value is None:
                continue
            value_shape = tuple(_namespace.as_array(xp, value, like=like).shape)
            if broadcast_shape(value_shape, loss_shape) != tuple(loss_shape):
                raise ValueError(
                    f"Argument `{argument}`: expected a shape that broadcasts to the per-sample loss "
                    f"shape {tuple(loss_shape)}; received shape {value_shape}."
                )
        keep = masking.combine(
            xp,
            None if mask is None else _namespace.as_array(xp, mask, like=like),
            None if labels is None else _namespace.as_array(xp, labels, like=like),
            options.ignore_index,
        )
        if keep is None or tuple(keep.shape) == tuple(loss_shape):
            return keep
        return xp.broadcast_to(keep, loss_shape)

    def per_sample(self, options: Options, grad_scale_hint: float = 1.0) -> Array:
        """The per-sample divergence (0 at masked positions, ``T²``-scaled when asked).

        ``grad_scale_hint``: the gradient each per-sample value is expected to receive from the
        reduction; the fused kernel pre-scales its gradient by it (see :mod:`kldiv.kernels`).
        """
        if self.use_kernel:
            return self._per_sample_kernel(options, grad_scale_hint)
        if self.xp is np:
            # Exact mode's documented +inf (p = 0 < t) and all -inf logit rows are results, not
            # accidents: keep NumPy from warning about the log(0) behind them.
            with np.errstate(divide="ignore", invalid="ignore"):
                return self._per_sample_core(options)
        return self._per_sample_core(options)

    def reduced(
        self,
        options: Options,
        reduce: Callable[[Array], Array],
        reduction: str | None,
        losses_shape: tuple,
        has_weight: bool,
        num_items: Any,
    ) -> Array:
        """``reduce(per-sample divergence)``.

        Torch tensors that a fused kernel serves, with a reduction whose gradient is one number known
        on the host (:meth:`reduction_gradient`), get one autograd node for the divergence and its
        reduction together: the kernel's gradient, pre-scaled by that number, is handed to autograd
        as it is.
        """
        gradient = None
        if self.use_kernel and self.xp is not np:
            gradient = self.reduction_gradient(losses_shape, reduction, has_weight, num_items)
        if gradient is None:
            return reduce(self.per_sample(options))
        from .kernels import fused

        return fused.per_sample_torch(
            options, self.y_true, self.y_pred, self.keep, self.axis, gradient, reduce=reduce
        )

    def _per_sample_core(self, options: Options) -> Array:
        losses = divergence(
            self.xp,
            self.y_true,
            self.y_pred,
            true_format=options.y_true_format,
            pred_format=options.y_pred_format,
            epsilon=options.epsilon,
            axis=options.axis,
            direction=options.direction,
            beta=options.beta,
            temperature=options.temperature,
        )
        if options.scale_by_temperature_squared:
            losses = losses * (options.temperature**2)
        if self.keep is not None:
            losses = masking.mask_losses(self.xp, losses, self.keep)
        return losses

    def _per_sample_kernel(self, options: Options, grad_scale_hint: float) -> Array:
        from .kernels import fused

        if self.xp is np:
            return fused.per_sample_numpy(options, self.y_true, self.y_pred, self.keep, self.axis)
        return fused.per_sample_torch(
            options, self.y_true, self.y_pred, self.keep, self.axis, grad_scale_hint
        )

    def reduction_gradient(
        self, losses_shape: tuple, reduction: str | None, has_weight: bool, num_items: Any
    ) -> float | None:
        """``∂ reduction / ∂ L_i`` of an unweighted reduction, the same for every unmasked position.

        None where it is not one number known on the host: a ``sample_weight``, no reduction, a
        ``num_items`` array, or a mask on a device (counting it would synchronise with the device).
        """
        if has_weight or reduction in ("none", None):
            return None
        if reduction == "sum":
            return 1.0
        if num_items is not None:
            return 1.0 / num_items if isinstance(num_items, (int, float)) else None
        if reduction == "batchmean":
            return 1.0 / losses_shape[0] if losses_shape and losses_shape[0] else 1.0
        if self.keep is None:
            count = math.prod(losses_shape)
        elif self.xp is np or self.y_pred.device.type == "cpu":
            count = int(self.xp.sum(self.xp.astype(self.keep, self.xp.int32)))
        else:
            return None
        return 1.0 / count if count else 1.0

    def weight(self, sample_weight: Array, like: Array) -> Array:
        weight = _namespace.as_array(self.xp, sample_weight, like=like)
        return self.xp.astype(weight, self.compute_dtype) if weight.dtype != self.compute_dtype else weight

    def output(self, value: Array) -> Array:
        return value if value.dtype == self.output_dtype else self.xp.astype(value, self.output_dtype)


def _per_sample(
    options: Options, y_true: Array, y_pred: Array, mask: Array | None, labels: Array | None
) -> Array:
    prepared = _Prepared(options, y_true, y_pred, keras3_shapes=None, mask=mask, labels=labels)
    return prepared.output(prepared.per_sample(options))


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
    direction: str = "forward",
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = False,
    mask: Array | None = None,
    labels: Array | None = None,
    ignore_index: int = -100,
    validate: bool = False,
    backend: str = "auto",
) -> Array:
    r"""Per-sample Kullback–Leibler divergence :math:`\sum_i t_i \log(t_i / p_i)` along ``axis``.

    With the defaults this is ``tf.keras.losses.kl_divergence`` (aliases ``kld``, ``KLD``,
    ``kullback_leibler_divergence``): ``y_true`` is cast to ``y_pred``'s dtype, both are clipped to
    ``[1e-7, 1]``, and the naive program is ``sum(y_true * log(y_true / y_pred), axis=-1)``.

    Args:
        y_true: target (teacher) distribution P, shape ``[batch, d0, .., dN]``.
        y_pred: predicted (student) distribution Q, same shape (or broadcastable).
        y_true_format: ``"probs"``, ``"log_probs"`` or ``"logits"``.
        y_pred_format: the same for ``y_pred``.
        from_logits: Keras-style shorthand for ``y_pred_format="logits"``.
        epsilon: ``1e-7`` (Keras clip) or ``0`` (exact: ``0·log 0 = 0``, ``+inf`` where ``p = 0 < t``).
        axis: the distribution axis.
        dtype: ``None`` (``y_pred``'s float dtype) or a float dtype name both inputs are cast to.
            float16 and bfloat16 are accumulated in float32 and returned in their own dtype.
        direction: ``"forward"`` KL(P‖Q), ``"reverse"`` KL(Q‖P), ``"symmetric"`` (their sum). The
            gradient reaches ``y_pred`` in every direction.
        temperature: ``T > 0``; both inputs become ``log_softmax(log x / T)``.
        scale_by_temperature_squared: multiply by ``T²`` (Hinton et al.).
        mask: boolean, broadcastable to the per-sample loss; ``False`` positions give exactly 0
            and receive exactly 0 gradient.
        labels: integer labels of the per-sample loss shape; positions equal to ``ignore_index``
            are masked out (token-level distillation).
        ignore_index: the label value to mask (``-100``, as PyTorch and Hugging Face).
        validate: check the input values (NaN, range, rows summing to 1, equal shapes).
        backend: ``"auto"`` (a fused kernel for large inputs: Numba for NumPy / CPU torch, Triton
            for CUDA torch, when installed; else the core), ``"numba"``, ``"triton"`` or
            ``"core"``; see :mod:`kldiv.kernels.dispatch`. Results agree to float32 rounding.

    Returns:
        The per-sample loss, shape ``[batch, d0, .., dN-1]``, in the caller's array type.

    Raises:
        TypeError: ``y_pred`` is not floating point (as tf_keras), or an option has the wrong type.
        ValueError: an option is out of range, the shapes do not broadcast, or (``validate=True``)
            an input is not a valid distribution.

    Example:
        >>> import kldiv
        >>> print(kldiv.kl_divergence([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]]))
        [ 9.1628921e-01 -3.0809074e-06]
        >>> print(kldiv.kl_divergence([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]], epsilon=0))
        [0.9162907 0.       ]
    """
    options = Options.create(
        y_true_format=y_true_format,
        y_pred_format=y_pred_format,
        from_logits=from_logits,
        epsilon=epsilon,
        axis=axis,
        dtype=dtype,
        direction=direction,
        temperature=temperature,
        scale_by_temperature_squared=scale_by_temperature_squared,
        ignore_index=ignore_index,
        validate=validate,
        backend=backend,
    )
    return _per_sample(options, y_true, y_pred, mask, labels)


kld = KLD = kullback_leibler_divergence = kl_divergence


def js_divergence(
    y_true: Array,
    y_pred: Array,
    *,
    beta: float = 0.5,
    y_true_format: str = "probs",
    y_pred_format: str = "probs",
    from_logits: bool = False,
    epsilon: float = 1e-7,
    axis: int = -1,
    dtype: Any = None,
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = False,
    mask: Array | None = None,
    labels: Array | None = None,
    ignore_index: int = -100,
    validate: bool = False,
    backend: str = "auto",
) -> Array:
    r"""Per-sample generalized Jensen–Shannon divergence along ``axis``.

    .. math:: \mathrm{JS}_\beta(P, Q) = \beta\,\mathrm{KL}(P\|M) + (1-\beta)\,\mathrm{KL}(Q\|M),
              \qquad M = \beta P + (1-\beta) Q

    ``P`` is ``y_true`` (teacher), ``Q`` is ``y_pred`` (student). ``JS_β`` is 0 at ``β ∈ {0, 1}``;
    ``JS_β / β → KL(P‖Q)`` as ``β → 0`` and ``JS_β / (1−β) → KL(Q‖P)`` as ``β → 1``. For
    ``0 < β < 1`` it equals TRL's ``generalized_jsd_loss`` and Liger-Kernel's JSD with the same
    ``beta`` (both return the unscaled KL at the endpoints instead). ``β = 1/2`` is the symmetric
    Jensen–Shannon divergence, bounded by ``log 2``. Other arguments as :func:`kl_divergence`.

    Example:
        >>> import kldiv
        >>> print(kldiv.js_divergence([[1.0, 0.0]], [[0.0, 1.0]], epsilon=0))
        [0.6931472]
    """
    options = Options.create(
        y_true_format=y_true_format,
        y_pred_format=y_pred_format,
        from_logits=from_logits,
        epsilon=epsilon,
        axis=axis,
        dtype=dtype,
        beta=beta,
        temperature=temperature,
        scale_by_temperature_squared=scale_by_temperature_squared,
        ignore_index=ignore_index,
        validate=validate,
        backend=backend,
    )
    return _per_sample(options, y_true, y_pred, mask, labels)


class _DivergenceLoss:
    """A Keras-style loss object: options at construction, ``__call__`` weights and reduces."""

    _CONFIG_KEYS: ClassVar[tuple[str, ...]]

    def __init__(self, reduction: str | None, name: str, options: Options) -> None:
        self.reduction = _validate.reduction(reduction)
        self.name = _validate.name(name)
        self.options = options

    def __call__(
        self,
        y_true: Array,
        y_pred: Array,
        sample_weight: Array | None = None,
        *,
        mask: Array | None = None,
        labels: Array | None = None,
        num_items: Any = None,
    ) -> Array:
        """Weighted, reduced loss: a scalar for every reduction but ``"none"`` / ``None``.

        Args:
            y_true, y_pred: the two distributions (see :func:`kl_divergence`).
            sample_weight: Keras ``sample_weight``: a scalar, ``[batch]``, the per-sample loss
                shape, or anything broadcastable to it (a trailing size-1 axis is squeezed and a
                missing trailing axis added, as Keras does).
            mask: boolean keep-mask broadcastable to the per-sample loss.
            labels: with the ``ignore_index`` option, masks positions whose label equals it.
            num_items: global denominator for the mean reductions (gradient accumulation, data
                parallel); a positive number or a scalar array.

        Raises:
            ValueError: ``sample_weight`` has a shape that cannot be aligned with the per-sample
                loss (the message names both shapes), ``num_items`` with a reduction that does
                not divide, or ``reduction`` is ``"auto"`` / ``"sum_over_batch_size"`` under an
                active ``tf.distribute`` strategy (outside ``compile``/``fit``).
        """
        _distribute.check_reduction(self.reduction, y_pred)
        num_items = _validate.num_items(num_items, self.reduction)
        keras3 = self.reduction in KERAS3_REDUCTIONS
        prepared = _Prepared(self.options, y_true, y_pred, keras3_shapes=keras3, mask=mask, labels=labels)
        loss_shape = broadcast_shape(prepared.y_true.shape, prepared.y_pred.shape)
        loss_shape = loss_shape[: prepared.axis] + loss_shape[prepared.axis + 1 :]
        xp = prepared.xp
        weight = None if sample_weight is None else prepared.weight(sample_weight, like=prepared.y_pred)
        if num_items is not None and not isinstance(num_items, (int, float)):
            num_items = prepared.weight(num_items, like=prepared.y_pred)

        def reduce(losses: Array) -> Array:
            return reduce_weighted(
                xp, losses, weight, self.reduction, mask=prepared.keep, num_items=num_items
            )

        value = prepared.reduced(
            self.options, reduce, self.reduction, loss_shape, weight is not None, num_items
        )
        return prepared.output(value)

    def get_config(self) -> dict[str, Any]:
        """Every option: ``type(loss).from_config(loss.get_config())`` is an equal loss."""
        options = self.options.as_dict()
        return {
            "reduction": self.reduction,
            "name": self.name,
            **{key: options[key] for key in self._CONFIG_KEYS},
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        """The loss described by ``config`` (the output of :meth:`get_config`)."""
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self) -> int:
        # Equal losses have equal configs, hence equal (type, name, reduction); reading attributes
        # with defaults keeps hashing a half-built object (TorchDynamo does that) from raising.
        return hash((type(self).__name__, getattr(self, "name", None), getattr(self, "reduction", None)))

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({options})"


_COMMON_KEYS = (
    "y_true_format",
    "y_pred_format",
    "epsilon",
    "axis",
    "dtype",
    "temperature",
    "scale_by_temperature_squared",
    "ignore_index",
    "validate",
    "backend",
)


class KLDivergence(_DivergenceLoss):
    """Computes the Kullback–Leibler divergence loss between ``y_true`` and ``y_pred``.

    ``loss = y_true * log(y_true / y_pred)``, summed over the last axis, then weighted and reduced
    exactly as ``tf.keras.losses.KLDivergence`` (tf_keras 2.x; Keras 3 with the Keras 3 reduction
    spellings ``"mean"``, ``"mean_with_sample_weight"`` and ``None``). Every option of
    :func:`kl_divergence` is an option here too, with the same name and default.

    Args:
        reduction: a :class:`kldiv.Reduction` value; default ``"auto"`` (= ``"sum_over_batch_size"``).
            ``"batchmean"`` divides the sum by the leading axis (PyTorch), ``"token_mean"`` by
            the number of unmasked positions.
        name: the loss name (Keras: ``"kl_divergence"``).

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
        >>> print(f"{kl(y_true, y_pred, sample_weight=[0.8, 0.2]):.5f}")
        0.36652
        >>> print(f"{kldiv.KLDivergence(reduction=kldiv.Reduction.SUM)(y_true, y_pred):.3f}")
        0.916
    """

    _CONFIG_KEYS = (*_COMMON_KEYS[:5], "direction", *_COMMON_KEYS[5:])

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
        direction: str = "forward",
        temperature: float = 1.0,
        scale_by_temperature_squared: bool = False,
        ignore_index: int = -100,
        validate: bool = False,
        backend: str = "auto",
    ) -> None:
        options = Options.create(
            y_true_format=y_true_format,
            y_pred_format=y_pred_format,
            from_logits=from_logits,
            epsilon=epsilon,
            axis=axis,
            dtype=dtype,
            direction=direction,
            temperature=temperature,
            scale_by_temperature_squared=scale_by_temperature_squared,
            ignore_index=ignore_index,
            validate=validate,
            backend=backend,
        )
        super().__init__(reduction, name, options)


class JSDivergence(_DivergenceLoss):
    """The generalized Jensen–Shannon divergence loss ``JS_β(y_true, y_pred)`` (see
    :func:`js_divergence`), weighted and reduced like :class:`KLDivergence`.

    Example:
        >>> import kldiv
        >>> jsd = kldiv.JSDivergence(beta=0.5, epsilon=0)
        >>> print(f"{jsd([[1.0, 0.0]], [[0.0, 1.0]]):.6f}")
        0.693147
    """

    _CONFIG_KEYS = (*_COMMON_KEYS[:5], "beta", *_COMMON_KEYS[5:])

    def __init__(
        self,
        reduction: str | None = "auto",
        name: str = "js_divergence",
        *,
        beta: float = 0.5,
        y_true_format: str = "probs",
        y_pred_format: str = "probs",
        from_logits: bool = False,
        epsilon: float = 1e-7,
        axis: int = -1,
        dtype: Any = None,
        temperature: float = 1.0,
        scale_by_temperature_squared: bool = False,
        ignore_index: int = -100,
        validate: bool = False,
        backend: str = "auto",
    ) -> None:
        options = Options.create(
            y_true_format=y_true_format,
            y_pred_format=y_pred_format,
            from_logits=from_logits,
            epsilon=epsilon,
            axis=axis,
            dtype=dtype,
            beta=beta,
            temperature=temperature,
            scale_by_temperature_squared=scale_by_temperature_squared,
            ignore_index=ignore_index,
            validate=validate,
            backend=backend,
        )
        super().__init__(reduction, name, options)
