"""``kldiv.Reduction``: the Keras reduction names (both the tf_keras and the Keras 3 spellings)."""

from __future__ import annotations

from .core.reductions import ALL_REDUCTIONS


class Reduction:
    """Types of loss reduction, as ``tf.keras.losses.Reduction`` (``ReductionV2``) and Keras 3.

    The constants are plain strings, so ``Reduction.SUM == "sum"``.

    * ``AUTO``: ``SUM_OVER_BATCH_SIZE`` (tf_keras: an error under a ``tf.distribute`` strategy outside
      ``compile``/``fit``).
    * ``NONE``: the weighted per-sample loss, unreduced.
    * ``SUM``: the sum of the weighted loss.
    * ``SUM_OVER_BATCH_SIZE``: the sum divided by the number of elements of the weighted loss.
    * ``MEAN`` (Keras 3 ``"mean"``): ``SUM_OVER_BATCH_SIZE`` with Keras 3's shape rules.
    * ``MEAN_WITH_SAMPLE_WEIGHT`` (Keras 3): the sum divided by the sum of the sample weights.
    * ``None`` is Keras 3's spelling of ``NONE``.
    """

    AUTO = "auto"
    NONE = "none"
    SUM = "sum"
    SUM_OVER_BATCH_SIZE = "sum_over_batch_size"
    MEAN = "mean"
    MEAN_WITH_SAMPLE_WEIGHT = "mean_with_sample_weight"

    @classmethod
    def all(cls) -> tuple[str | None, ...]:
        """Every accepted value, ``None`` included."""
        return ALL_REDUCTIONS

    @classmethod
    def validate(cls, key: object) -> None:
        """Raise ``ValueError`` unless ``key`` is an accepted reduction."""
        from ._validate import reduction

        reduction(key)
