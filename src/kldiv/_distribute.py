"""The ``tf.distribute`` rule of Keras losses, checked only when TensorFlow is already imported."""

from __future__ import annotations

import sys

DISTRIBUTE_MESSAGE = (
    "Please use `tf.keras.losses.Reduction.SUM` or `tf.keras.losses.Reduction.NONE` for loss "
    "reduction when losses are used with `tf.distribute.Strategy`, except for specifying losses in "
    "`Model.compile()` for use by the built-in training loop `Model.fit()`. Received "
    "reduction={reduction!r}. Please see https://www.tensorflow.org/tutorials/distribute/custom_training "
    "for more details."
)


def strategy_active() -> bool:
    """True inside a ``tf.distribute`` strategy's ``scope()`` or ``run`` (TensorFlow imported)."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not hasattr(tf, "distribute"):
        return False
    return bool(tf.distribute.has_strategy())


def _tensorflow_world(y_pred: object) -> bool:
    """The rule is TensorFlow's: it concerns TensorFlow tensors, NumPy arrays and Python values, never
    PyTorch or JAX arrays (whose callers may have TensorFlow imported for other reasons; asking
    TensorFlow about strategies there would also break ``torch.compile`` graphs)."""
    return type(y_pred).__module__.split(".", 1)[0] not in ("torch", "jax", "jaxlib", "cupy", "dask")


def check_reduction(reduction: str | None, y_pred: object = None) -> None:
    """Raise ``ValueError`` for ``auto`` / ``sum_over_batch_size`` under an active strategy."""
    if reduction in ("auto", "sum_over_batch_size") and _tensorflow_world(y_pred) and strategy_active():
        raise ValueError(DISTRIBUTE_MESSAGE.format(reduction=reduction))
