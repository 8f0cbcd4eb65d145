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
        dtype: ``None`` (return ``y_pred``'s float dtype, as tf_keras) or a dtype name that both
            inputs are cast to first (as the Keras 3 loss ``dtype``). float16 and bfloat16 are
            always computed in float32 and rounded once at the end.
        direction: ``"forward"`` KL(y_true‖y_pred), ``"reverse"`` KL(y_pred‖y_true) or
            ``"symmetric"`` (their sum). Ignored by nothing: Jensen–Shannon losses fix it.
        beta: ``None`` for a KL divergence; a float in ``[0, 1]`` selects the generalized
            Jensen–Shannon divergence with mixture ``beta·P + (1−beta)·Q``.
        temperature: ``T > 0`` dividing the log-probabilities / logits of both inputs.
        scale_by_temperature_squared: multiply the per-sample loss by ``T²`` (Hinton et al., 2015).
        ignore_index: positions whose ``labels`` equal it are masked out (PyTorch's ``-100``).
        validate: check the input values (eager only): no NaN, probabilities in ``[0, 1]`` summing
            to 1, log-probabilities whose ``logsumexp`` is 0, equal shapes.
    """

    y_true_format: str = "probs"
    y_pred_format: str = "probs"
    epsilon: float = 1e-7
    axis: int = -1
    dtype: str | None = None
    direction: str = "forward"
    beta: float | None = None
    temperature: float = 1.0
    scale_by_temperature_squared: bool = False
    ignore_index: int = -100
    validate: bool = False
    backend: str = "auto"

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
        direction: str = "forward",
        beta: float | None = None,
        temperature: float = 1.0,
        scale_by_temperature_squared: bool = False,
        ignore_index: int = -100,
        validate: bool = False,
        backend: str = "auto",
    ) -> Options:
        """Validate and build; raises ``ValueError`` / ``TypeError`` naming the bad argument."""
        true_format, pred_format = _validate.formats(y_true_format, y_pred_format, from_logits)
        return cls(
            y_true_format=true_format,
            y_pred_format=pred_format,
            epsilon=_validate.epsilon(epsilon),
            axis=_validate.integer("axis", axis),
            dtype=_validate.dtype(dtype),
            direction=_validate.direction(direction),
            beta=None if beta is None else _validate.beta(beta),
            temperature=_validate.temperature(temperature),
            scale_by_temperature_squared=_validate.flag(
                "scale_by_temperature_squared", scale_by_temperature_squared
            ),
            ignore_index=_validate.integer("ignore_index", ignore_index),
            validate=_validate.flag("validate", validate),
            backend=_validate.backend(backend),
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
