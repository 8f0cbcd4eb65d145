"""The options of every kldiv loss: one frozen dataclass, validated at construction."""

from __future__ import annotations

import dataclasses
from typing import Any

from . import _validate


@dataclasses.dataclass(frozen=True)
class Options:
    """Options shared by the loss objects and the functional forms (same names and defaults).

    Attributes:
        y_true_format: ``"probs"`` | ``"log_probs"`` | ``"logits"``: how ``y_true`` is given.
        y_pred_format: the same for ``y_pred``; ``from_logits=True`` is shorthand for ``"logits"``.
        epsilon: ``1e-7`` (Keras mode: clip probabilities to ``[epsilon, 1]``) or ``0`` (exact mode).
        axis: the axis that holds the distribution (Keras: ``-1``).
        dtype: ``None`` (compute in ``y_pred``'s float dtype, as tf_keras) or a dtype name that both
            inputs are cast to first (as the Keras 3 loss ``dtype``).
    """

    y_true_format: str = "probs"
    y_pred_format: str = "probs"
    epsilon: float = 1e-7
    axis: int = -1
    dtype: str | None = None

    @classmethod
    def create(
        cls,
        *,
        y_true_format: str = "probs",
        y_pred_format: str = "probs",
        from_logits: bool = False,
        epsilon: float = 1e-7,
        axis: int = -1,
        dtype: Any = None,
    ) -> Options:
        """Validate and build; raises ``ValueError`` / ``TypeError`` naming the bad argument."""
        true_format, pred_format = _validate.formats(y_true_format, y_pred_format, from_logits)
        return cls(
            y_true_format=true_format,
            y_pred_format=pred_format,
            epsilon=_validate.epsilon(epsilon),
            axis=_validate.axis(axis),
            dtype=_validate.dtype(dtype),
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
