"""Every check of user input lives here; each raises with a message built by :mod:`kldiv.errors`."""

from __future__ import annotations

import math
import numbers
from typing import Any

from . import errors
from .core.divergences import FORMATS
from .core.reductions import ALL_REDUCTIONS

DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64")


def reduction(value: object) -> str | None:
    """A Keras reduction name (``Reduction`` constants are plain strings)."""
    if value is not None and not isinstance(value, str):
        raise errors.one_of("reduction", ALL_REDUCTIONS, value)
    if value not in ALL_REDUCTIONS:
        raise errors.one_of("reduction", ALL_REDUCTIONS, value)
    return value


def name(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(errors.message("name", "a non-empty string", value))
    return value


def input_format(argument: str, value: object) -> str:
    if value not in FORMATS:
        raise errors.one_of(argument, FORMATS, value)
    return str(value)


def formats(y_true_format: object, y_pred_format: object, from_logits: object) -> tuple[str, str]:
    """Resolve ``from_logits`` (Keras shorthand for ``y_pred_format="logits"``)."""
    if not isinstance(from_logits, bool):
        raise TypeError(errors.message("from_logits", "True or False", from_logits))
    true_format = input_format("y_true_format", y_true_format)
    pred_format = input_format("y_pred_format", y_pred_format)
    if from_logits:
        if pred_format not in ("probs", "logits"):
            raise ValueError(
                errors.message(
                    "from_logits",
                    f"False when y_pred_format={pred_format!r} is given (from_logits=True means "
                    "y_pred_format='logits')",
                    from_logits,
                )
            )
        pred_format = "logits"
    return true_format, pred_format


def epsilon(value: object) -> float:
    """``0`` (exact mode) or a small positive float (Keras mode clip)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(errors.message("epsilon", "a float in [0, 1)", value))
    value = float(value)
    if not (0.0 <= value < 1.0) or math.isnan(value):
        raise ValueError(errors.message("epsilon", "a float in [0, 1)", value))
    return value


def axis(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(errors.message("axis", "an integer", value))
    return int(value)


def dtype(value: object) -> str | None:
    """``None`` (follow ``y_pred``) or a floating dtype name; dtype objects are turned into names."""
    if value is None:
        return None
    text = value if isinstance(value, str) else getattr(value, "name", None) or str(value)
    text = text.rsplit(".", 1)[-1].replace("<class '", "").replace("'>", "")
    if text not in DTYPE_NAMES:
        raise errors.one_of("dtype", (None, *DTYPE_NAMES), value)
    return text


def axis_in_range(axis_value: int, ndim: int, shape: Any) -> int:
    """The non-negative form of ``axis`` for an array of rank ``ndim``."""
    if not -ndim <= axis_value < ndim:
        raise ValueError(
            f"Argument `axis`: expected an integer in [{-ndim}, {ndim - 1}] for inputs of shape "
            f"{tuple(shape)}; received {axis_value}."
        )
    return axis_value % ndim


def broadcastable(true_shape: Any, pred_shape: Any, result: Any) -> None:
    if result is None:
        raise ValueError(
            f"Arguments `y_true` and `y_pred`: expected shapes that broadcast together; received "
            f"shapes {tuple(true_shape)} and {tuple(pred_shape)}."
        )
