"""kldiv losses as real ``tf_keras.losses.Loss`` subclasses (the Keras 2 line, ``tf.keras`` of TF ≤ 2.15).

``kldiv.tf_keras.KLDivergence`` is a drop-in replacement for ``tf_keras.losses.KLDivergence`` that also
takes every option of :class:`kldiv.KLDivergence`::

    import kldiv.tf_keras

    model.compile(optimizer="sgd", loss=kldiv.tf_keras.KLDivergence(from_logits=True))

``call`` returns the per-sample divergence computed by kldiv's core (after tf_keras'
``y_true`` / ``y_pred`` rank fix-up, which squeezes a trailing size-1 axis); ``tf_keras.losses.Loss``
does the rest exactly as for its own losses: Keras masks, ``sample_weight``, the reduction
(``"auto"``, ``"none"``, ``"sum"``, ``"sum_over_batch_size"``) and the ``tf.distribute`` rule — under a
strategy, ``AUTO`` and ``SUM_OVER_BATCH_SIZE`` raise ``ValueError`` outside ``Model.compile`` /
``Model.fit`` (use ``SUM`` and divide by the global batch size, or ``NONE``), while ``compile`` /
``fit`` allow them and scale the loss by ``1 / num_replicas_in_sync``.

The result has ``y_pred``'s float dtype (as tf_keras), or the ``dtype`` option's. Works eagerly,
inside ``tf.function`` and with ``jit_compile=True``.

Serialization: registered as ``"kldiv>KLDivergence"`` / ``"kldiv>JSDivergence"`` when this module is
imported, so ``tf_keras.models.load_model`` (SavedModel, ``.h5`` and ``.keras``) needs no
``custom_objects`` once ``import kldiv.tf_keras`` has run.
"""

from __future__ import annotations

from typing import Any, ClassVar

from kldiv._extras import require

from . import losses as _losses

tf = require("tensorflow", "kldiv.tf_keras")
tf_keras = require("tf_keras", "kldiv.tf_keras")

__all__ = ["JSDivergence", "KLDivergence"]

Array = Any


class _TfKerasDivergence(tf_keras.losses.Loss):
    """A tf_keras loss whose ``call`` is a kldiv per-sample divergence."""

    _agnostic: ClassVar[type[_losses._DivergenceLoss]]

    def __init__(self, reduction: str = "auto", name: str | None = None, **options: Any) -> None:
        super().__init__(reduction=reduction, name=name or self._agnostic._DEFAULT_NAME)
        # The framework-agnostic loss validates the options and owns them (and their config keys).
        self._kldiv = self._agnostic(reduction="none", name=self.name, **options)

    @property
    def options(self) -> Any:
        """The validated :class:`kldiv.Options` of this loss."""
        return self._kldiv.options

    def call(self, y_true: Array, y_pred: Array) -> Array:
        """The per-sample divergence, shape ``y_pred.shape[:-1]`` (for ``axis=-1``)."""
        both_tensors = tf.is_tensor(y_true) and tf.is_tensor(y_pred)
        y_pred = tf.convert_to_tensor(y_pred)
        y_true = tf.convert_to_tensor(y_true)
        # tf_keras' LossFunctionWrapper fixes ranks for tensor inputs only.
        return _losses.per_sample(self.options, y_true, y_pred, keras3_shapes=False if both_tensors else None)

    def get_config(self) -> dict[str, Any]:
        """``reduction``, ``name`` and every kldiv option (new options included)."""
        options = {
            key: value for key, value in self._kldiv.get_config().items() if key not in ("name", "reduction")
        }
        return {**super().get_config(), **options}


@tf_keras.saving.register_keras_serializable(package="kldiv")
class KLDivergence(_TfKerasDivergence):
    """Kullback–Leibler divergence ``sum(y_true * log(y_true / y_pred), axis=-1)`` as a tf_keras loss.

    With the default options this is ``tf_keras.losses.KLDivergence`` (same values, same reductions,
    same ``tf.distribute`` rule); every keyword option of :class:`kldiv.KLDivergence` is accepted.

    Args:
        reduction: ``"auto"`` (default), ``"none"``, ``"sum"`` or ``"sum_over_batch_size"``.
        name: the loss name (default ``"kl_divergence"``).
        **options: ``y_true_format``, ``y_pred_format``, ``from_logits``, ``epsilon``, ``axis``,
            ``dtype``, ``direction``, ``temperature``, ... (see :class:`kldiv.KLDivergence`).

    Raises:
        ValueError: an unknown reduction or a bad option, at construction; ``AUTO`` /
            ``SUM_OVER_BATCH_SIZE`` under a ``tf.distribute`` strategy outside ``compile``/``fit``.

    With ``reduction="sum"`` the seed example gives the sum over the batch, ``0.9163 + 0`` (the
    default takes the mean, ``0.4581``).

    Example:
        >>> import kldiv.tf_keras
        >>> summed = kldiv.tf_keras.KLDivergence(reduction="sum")
        >>> round(float(summed([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]])), 5)
        0.91629
    """

    _agnostic = _losses.KLDivergence


@tf_keras.saving.register_keras_serializable(package="kldiv")
class JSDivergence(_TfKerasDivergence):
    """Generalized Jensen–Shannon divergence ``JS_β(y_true, y_pred)`` as a tf_keras loss.

    Options as :class:`kldiv.JSDivergence` (``beta=0.5`` by default); arguments as :class:`KLDivergence`.
    """

    _agnostic = _losses.JSDivergence
