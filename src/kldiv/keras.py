"""kldiv losses as real Keras 3 losses (``keras.losses.Loss`` subclasses), on every Keras backend.

``kldiv.keras.KLDivergence`` is a drop-in replacement for ``keras.losses.KLDivergence`` that also takes
every option of :class:`kldiv.KLDivergence` (``from_logits``, ``temperature``, ``epsilon=0``,
``direction``, ...)::

    import kldiv.keras

    model.compile(optimizer="sgd", loss=kldiv.keras.KLDivergence(from_logits=True, temperature=2.0))

What Keras does and kldiv does not redo: ``call`` returns the per-sample divergence (computed by
kldiv's core after Keras' ``y_true`` / ``y_pred`` rank fix-up); ``keras.losses.Loss.__call__`` then
converts the inputs to the loss ``dtype``, applies Keras masks (``_keras_mask``), ``sample_weight``,
the reduction (Keras 3 names: ``"sum_over_batch_size"``, ``"sum"``, ``"mean"``,
``"mean_with_sample_weight"``, ``"none"`` / ``None``; ``"auto"`` is read as ``"sum_over_batch_size"``)
and, on the TensorFlow backend, the ``tf.distribute`` per-replica scaling.

The Keras call signature is ``loss(y_true, y_pred, sample_weight=None)``: positions are masked with
Keras masks (or a zero ``sample_weight``), not with kldiv's ``mask=`` / ``labels=`` call arguments, and
kldiv's ``"batchmean"`` / ``"token_mean"`` reductions are not Keras reductions (use the agnostic
:class:`kldiv.KLDivergence` in a custom training step for them).

``dtype`` is Keras' loss dtype (a dtype name or a ``keras.DTypePolicy`` such as ``"mixed_bfloat16"``,
whose compute dtype is used); float16 and bfloat16 inputs are accumulated in float32 by kldiv and
the per-sample loss is returned in that dtype. Default: ``keras.backend.floatx()``.

Serialization: the classes are registered as ``"kldiv>KLDivergence"`` and ``"kldiv>JSDivergence"``
when this module is imported, so ``keras.models.load_model("m.keras")`` needs no ``custom_objects``
once ``import kldiv.keras`` has run (Keras has no entry-point discovery for custom objects).
"""

from __future__ import annotations

from typing import Any, ClassVar

from kldiv._extras import require

from . import losses as _losses

keras = require("keras", "kldiv.keras")

__all__ = ["JSDivergence", "KLDivergence"]

Array = Any


class _KerasDivergence(keras.losses.Loss):
    """A Keras 3 loss whose ``call`` is a kldiv per-sample divergence."""

    _agnostic: ClassVar[type[_losses._DivergenceLoss]]

    def __init__(
        self,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = None,
        dtype: Any = None,
        **options: Any,
    ) -> None:
        if reduction == "auto":
            reduction = "sum_over_batch_size"
        super().__init__(name=name or self._agnostic._DEFAULT_NAME, reduction=reduction, dtype=dtype)
        self._dtype_argument = dtype
        # The framework-agnostic loss validates the options and owns them (and their config keys).
        self._kldiv = self._agnostic(reduction="none", name=self.name, **options)

    @property
    def options(self) -> Any:
        """The validated :class:`kldiv.Options` of this loss."""
        return self._kldiv.options

    def call(self, y_true: Array, y_pred: Array) -> Array:
        """The per-sample divergence, shape ``y_pred.shape[:-1]`` (for ``axis=-1``), in the loss dtype."""
        return _losses.per_sample(self.options, y_true, y_pred, keras3_shapes=True)

    def get_config(self) -> dict[str, Any]:
        """``name``, ``reduction``, ``dtype`` and every kldiv option (new options included)."""
        options = {
            key: value
            for key, value in self._kldiv.get_config().items()
            if key not in ("name", "reduction", "dtype")
        }
        dtype = None if self._dtype_argument is None else self._dtype_policy.name
        return {**super().get_config(), "dtype": dtype, **options}


@keras.saving.register_keras_serializable(package="kldiv")
class KLDivergence(_KerasDivergence):
    """Kullback–Leibler divergence ``sum(y_true * log(y_true / y_pred), axis=-1)`` as a Keras 3 loss.

    With the default options the per-step loss equals ``keras.losses.KLDivergence`` to float32
    rounding; every keyword option of :class:`kldiv.KLDivergence` is accepted (and saved).

    Args:
        reduction: a Keras 3 reduction name (default ``"sum_over_batch_size"``).
        name: the loss name (default ``"kl_divergence"``).
        dtype: the Keras loss dtype or dtype policy (default ``keras.backend.floatx()``).
        **options: ``y_true_format``, ``y_pred_format``, ``from_logits``, ``epsilon``, ``axis``,
            ``direction``, ``temperature``, ``scale_by_temperature_squared``, ... (see
            :class:`kldiv.KLDivergence`).

    Raises:
        ValueError: an unknown reduction or a bad option, at construction.

    Example:
        >>> import kldiv.keras
        >>> loss = kldiv.keras.KLDivergence()
        >>> print(f"{float(loss([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]])):.5f}")
        0.45814
    """

    _agnostic = _losses.KLDivergence


@keras.saving.register_keras_serializable(package="kldiv")
class JSDivergence(_KerasDivergence):
    """Generalized Jensen–Shannon divergence ``JS_β(y_true, y_pred)`` as a Keras 3 loss.

    Options as :class:`kldiv.JSDivergence` (``beta=0.5`` by default); Keras arguments as
    :class:`KLDivergence`.
    """

    _agnostic = _losses.JSDivergence
