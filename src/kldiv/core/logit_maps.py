r"""What a model does to its logits after the output projection: a scale and a soft cap.

.. math::

    \phi(z) = c \tanh\!\left(\frac{s\,z}{c}\right) \quad (\text{with a cap } c), \qquad
    \phi(z) = s\,z \quad (\text{without}), \qquad
    \phi'(z) = s\left(1 - \left(\frac{\phi(z)}{c}\right)^2\right) \ \text{or}\ s.

``s`` is Cohere's ``logit_scale``, ``c`` Gemma's ``final_logit_softcapping`` (Gemma applies the cap
to ``lm_head``'s output, Cohere multiplies it by the scale; a model with both would scale first).
The derivative is written in terms of the output, so a pass that overwrites its logits with the
output can still form the chain rule's factor. A logit of ``−∞`` (a masked or padded vocabulary slot:
no probability) stays ``−∞`` through the cap, with derivative 0 — the cap would otherwise give the slot
the logit ``−c`` and real probability. Functions of ``xp`` (any array namespace).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

Array = Any


def _check(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"Argument `{name}`: expected a positive finite number or None; received {value!r}.")
    return float(value)


@dataclass(frozen=True)
class LogitMap:
    """``z → cap·tanh(scale·z / cap)`` (``softcap`` given) or ``z → scale·z``; the identity by default.

    Args:
        scale: the logit scale ``s`` (None: 1).
        softcap: the cap ``c`` (None: no cap).
        name: the argument prefix named in errors (``"student"`` → ``student_logit_scale``).
    """

    scale: float | None = None
    softcap: float | None = None
    name: str = ""

    def __post_init__(self) -> None:
        prefix = f"{self.name}_" if self.name else ""
        object.__setattr__(self, "scale", _check(f"{prefix}logit_scale", self.scale))
        object.__setattr__(self, "softcap", _check(f"{prefix}softcap", self.softcap))

    @property
    def identity(self) -> bool:
        return self.scale in (None, 1.0) and self.softcap is None

    def apply(self, xp: Any, z: Array) -> Array:
        """:math:`\\phi(z)`."""
        if self.scale not in (None, 1.0):
            z = z * self.scale
        if self.softcap is not None:
            z = xp.where(z == -math.inf, xp.full_like(z, -math.inf), xp.tanh(z / self.softcap) * self.softcap)
        return z

    def derivative(self, xp: Any, mapped: Array) -> Array | float:
        """:math:`\\phi'(z)` from the output :math:`\\phi(z)` (a number when it is constant)."""
        scale = 1.0 if self.scale is None else self.scale
        if self.softcap is None:
            return scale
        ratio = mapped / self.softcap
        return xp.where(mapped == -math.inf, 0.0, (1.0 - ratio * ratio) * scale)


IDENTITY = LogitMap()
"""The map of a model that leaves its logits as they are."""
