"""Error messages: what was expected, then what was received, naming the argument.

Every error kldiv raises about user input is built here, so that messages share one shape::

    Argument `reduction`: expected one of ('auto', 'none', ...); received 'avg'.
"""

from __future__ import annotations

from collections.abc import Sequence


def describe(value: object) -> str:
    """A short, readable description of ``value`` for an error message."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"{type(value).__name__} of shape {tuple(shape)} and dtype {dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def message(argument: str, expected: str, received: object) -> str:
    """``Argument `name`: expected <expected>; received <received>.``"""
    return f"Argument `{argument}`: expected {expected}; received {describe(received)}."


def one_of(argument: str, allowed: Sequence[object], received: object) -> ValueError:
    """A ``ValueError`` for a value outside a fixed set of choices."""
    return ValueError(message(argument, f"one of {tuple(allowed)!r}", received))


def shape_mismatch(
    argument: str, shape: Sequence[int], other: str, other_shape: Sequence[int], rule: str
) -> ValueError:
    """A ``ValueError`` naming both shapes that could not be reconciled."""
    return ValueError(
        f"Argument `{argument}`: expected a shape {rule} the shape {tuple(other_shape)} of "
        f"`{other}`; received shape {tuple(shape)}."
    )
