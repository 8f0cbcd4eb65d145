"""Every check of user input lives here; each raises with a message built by :mod:`kldiv.errors`."""

from __future__ import annotations

import math
import numbers
import os
import sys
import warnings
from typing import Any

from . import errors
from .core.divergences import DIRECTIONS, FORMATS
from .core.logit_maps import LogitMap
from .core.reductions import ALL_REDUCTIONS, MEAN_REDUCTIONS
from .kernels.dispatch import BACKENDS

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
    flag("from_logits", from_logits)
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
    value = _real("epsilon", value, "a float in [0, 1)")
    if not (0.0 <= value < 1.0) or math.isnan(value):
        raise ValueError(errors.message("epsilon", "a float in [0, 1)", value))
    return value


def integer(argument: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(errors.message(argument, "an integer", value))
    return int(value)


def flag(argument: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(errors.message(argument, "True or False", value))
    return value


def _real(argument: str, value: object, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(errors.message(argument, expected, value))
    return float(value)


def backend(value: object) -> str:
    if value not in BACKENDS:
        raise errors.one_of("backend", BACKENDS, value)
    return str(value)


def direction(value: object) -> str:
    if value not in DIRECTIONS:
        raise errors.one_of("direction", DIRECTIONS, value)
    return str(value)


def beta(value: object) -> float:
    """The Jensen–Shannon mixture weight, in ``[0, 1]``."""
    number = _real("beta", value, "a float in [0, 1]")
    if not 0.0 <= number <= 1.0:
        raise ValueError(errors.message("beta", "a float in [0, 1]", value))
    return number


def logit_map(side: str, format_argument: str, fmt: str, scale: object, softcap: object) -> LogitMap:
    """One side's logit map from its ``{side}_logit_scale`` / ``{side}_softcap`` options: positive
    finite numbers or None (:class:`kldiv.core.logit_maps.LogitMap`'s rule), given only for a side in
    ``"logits"`` (a map acts on logits, not on probabilities or log-probabilities)."""
    for name, value in ((f"{side}_softcap", softcap), (f"{side}_logit_scale", scale)):
        if value is not None and fmt != "logits":
            raise ValueError(
                errors.message(name, f"None unless {format_argument}='logits' (received {fmt!r})", value)
            )
    return LogitMap(scale, softcap, name=side)  # type: ignore[arg-type]  (it checks the values)


def temperature(value: object) -> float:
    number = _real("temperature", value, "a finite float > 0")
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(errors.message("temperature", "a finite float > 0", value))
    return number


def num_items(value: object, reduction_name: str | None) -> object:
    """A global count for the mean reductions: a positive number or a scalar array."""
    if value is None:
        return None
    if reduction_name not in MEAN_REDUCTIONS:
        raise ValueError(
            errors.message(
                "num_items", f"None with reduction={reduction_name!r} (it has no denominator)", value
            )
        )
    if isinstance(value, bool):
        raise TypeError(errors.message("num_items", "a positive number or a scalar array", value))
    if isinstance(value, numbers.Real):
        if not value > 0:
            raise ValueError(errors.message("num_items", "a positive number", value))
        return value
    if getattr(value, "ndim", None) != 0:
        raise ValueError(errors.message("num_items", "a positive number or a scalar array", value))
    return value


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


def _tolerance(xp: Any, dtype: Any) -> float:
    """How far from 1 a row may sum: a few hundred ulps of the input dtype, at least 1e-6."""
    from ._namespace import dtype_name

    bits = dtype_name(dtype)
    return {"float16": 1e-2, "bfloat16": 3e-2, "float32": 1e-4}.get(bits, 1e-6)


def _any(xp: Any, condition: Any) -> bool:
    try:
        return bool(xp.any(condition))
    except Exception as error:  # a traced value (jax.jit, tf.function) has no concrete truth
        raise ValueError(
            "Option `validate=True` checks input values and needs concrete arrays; it cannot run "
            f"inside a traced function ({type(error).__name__}). Use validate=False there."
        ) from None


def input_values(xp: Any, argument: str, x: Any, fmt: str, axis_value: int, original_dtype: Any) -> None:
    """``validate=True``: the values of ``x`` describe distributions in format ``fmt``."""
    if _any(xp, xp.isnan(x)):
        raise ValueError(errors.message(argument, "no NaN values", x))
    if _any(xp, x == math.inf):
        raise ValueError(errors.message(argument, "no +inf values", x))
    tolerance = _tolerance(xp, original_dtype)
    if fmt == "probs":
        if _any(xp, x < 0) or _any(xp, x > 1):
            raise ValueError(errors.message(argument, "probabilities in [0, 1]", x))
        total = xp.sum(x, axis=axis_value)
    elif fmt == "log_probs":
        if _any(xp, x > 0):
            raise ValueError(errors.message(argument, "log-probabilities <= 0", x))
        total = xp.sum(xp.exp(x), axis=axis_value)
    else:
        return
    if _any(xp, xp.abs(total - 1) > tolerance):
        worst = float(xp.max(xp.abs(total - 1)))
        raise ValueError(
            f"Argument `{argument}`: expected {fmt} whose rows sum to 1 along axis {axis_value} "
            f"(within {tolerance:g}); received rows that are off by up to {worst:.3g}."
        )


def same_shape(true_shape: Any, pred_shape: Any) -> None:
    """``validate=True``: ``y_true`` and ``y_pred`` have the same shape."""
    if tuple(true_shape) != tuple(pred_shape):
        raise ValueError(
            f"Arguments `y_true` and `y_pred`: expected equal shapes (validate=True); received "
            f"shapes {tuple(true_shape)} and {tuple(pred_shape)}."
        )


_NOT_ARRAYS = (str, bytes, dict, set, frozenset)


def input_object(argument: str, x: object) -> None:
    """``x`` can be an input array: not None, a string, a mapping or a set (those would become NaN or
    a NumPy message that names no argument)."""
    if x is None or isinstance(x, _NOT_ARRAYS):
        raise TypeError(errors.message(argument, "an array or a (nested) list of numbers", x))


def python_value(argument: str, x: object) -> Any:
    """The NumPy array of a Python list / tuple / scalar (Python floats become float32, as Keras):
    ragged lists and lists of non-numbers get a message that names the argument."""
    from ._namespace import as_numpy_input

    try:
        array = as_numpy_input(x)
    except (ValueError, TypeError):
        raise ValueError(
            errors.message(argument, "a rectangular (nested) list of numbers (every row of one length)", x)
        ) from None
    if array.dtype.kind not in "biuf":
        raise TypeError(errors.message(argument, "a (nested) list of numbers", x))
    return array


def input_dtype(argument: str, x: Any) -> None:
    """Real numbers only: complex, object, string and date arrays are refused (not silently cast)."""
    from ._namespace import dtype_name

    name = dtype_name(x.dtype)
    if name in DTYPE_NAMES:
        return
    kind = getattr(x.dtype, "kind", None)  # NumPy and JAX dtypes; torch and TensorFlow have names only
    real = (
        kind in ("b", "i", "u", "f") if kind is not None else not name.startswith(("complex", "str", "obj"))
    )
    if not real:
        raise TypeError(errors.message(argument, "an array of real numbers", x))


def distribution_axis(argument: str, shape: Any, axis_value: int, *, warn_single: bool = True) -> None:
    """An input with a distribution axis (at least 1-D); a size-1 axis gets a warning (unless not
    ``warn_single``)."""
    if len(shape) == 0:
        raise ValueError(
            errors.message(argument, "an array with a distribution axis (at least 1-D), not a scalar", shape)
        )
    if warn_single and -len(shape) <= axis_value < len(shape) and shape[axis_value] == 1:
        warnings.warn(
            f"Argument `{argument}`: the distribution axis (axis={axis_value}) has size 1, so each "
            "'distribution' has a single outcome. If the values along another axis form the "
            "distribution (e.g. a column of a histogram), pass that axis as `axis` or transpose.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )


OUTSIDE_UNIT_INTERVAL = "probabilities outside [0, 1]"
"""The start of the message of :func:`warn_outside_unit_interval` (for filters)."""


def warn_outside_unit_interval(arguments: list[str], epsilon: float) -> None:
    """Warn that ``arguments`` (given as probabilities) hold values outside ``[0, 1]``.

    Keras' rule is kept (the values are clipped to ``[epsilon, 1]``, or used as they are in exact
    mode), but the result is rarely what was meant: counts of a histogram give a divergence near 0.
    """
    names = " and ".join(f"`{argument}`" for argument in arguments)
    what = (
        f"Keras' rule clips them to [{epsilon:g}, 1] (counts of a histogram then give a meaningless value)"
        if epsilon > 0
        else "exact mode uses them as they are (negative ones give NaN)"
    )
    warnings.warn(
        f"Argument{'s' if len(arguments) > 1 else ''} {names}: {OUTSIDE_UNIT_INTERVAL}; {what}. "
        "Normalise them first (x / x.sum(axis=-1, keepdims=True); the CLI's --normalize), pass "
        "y_true_format/y_pred_format if they are log-probabilities or logits, or validate=True to raise.",
        UserWarning,
        stacklevel=user_stacklevel(),
    )


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first frame outside the kldiv package (the
    user's call), for ``warnings.warn`` called by the function that calls this one: one rule for
    every kldiv warning, however deep the entry point."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep + "kldiv" + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def support(value: object, topk: object) -> tuple[str, int | None]:
    """The ``support`` and ``topk`` settings of a chunked / fused-linear loss
    (:func:`kldiv.core.topk.support_log_probs`), checked at construction.

    Raises:
        ValueError: an unknown support, a ``topk`` that is not a positive integer, or a student / union
            support without ``topk`` (the support's size).
    """
    from .core.topk import SUPPORTS

    if value not in SUPPORTS:
        raise ValueError(f"Argument `support`: expected one of {SUPPORTS}; received {value!r}.")
    if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int) or topk < 1):
        raise ValueError(f"Argument `topk`: expected a positive integer or None; received {topk!r}.")
    if value != "teacher" and topk is None:
        raise ValueError(
            f"Argument `support`: {value!r} compares the two models on the {value} top-k entries and needs "
            "`topk=k` (the size of each top-k set) with a dense teacher; received topk=None."
        )
    return value, topk


def support_teacher(value: str, topk: int | None, sparse: bool, vocab: int) -> None:
    """A call's teacher against the ``support`` / ``topk`` settings (see :func:`support`).

    Raises:
        ValueError: a stored top-k teacher with ``support`` other than ``"teacher"`` (its values at the
            student's entries are unknown) or with ``topk`` (its k is its indices' width), or a ``topk``
            above the vocabulary size.
    """
    if sparse and value != "teacher":
        raise ValueError(
            f"Argument `support`: expected 'teacher' with a stored top-k teacher (teacher_topk_indices); "
            f"received {value!r}. The {value} support needs the teacher's probabilities at entries it did "
            "not store: pass a dense teacher (teacher_logits, or teacher_hidden with teacher_weight) and "
            "`topk=k`."
        )
    if sparse and topk is not None:
        raise ValueError(
            f"Argument `topk`: expected None with a stored top-k teacher (its k is the width of "
            f"teacher_topk_indices); received {topk!r}. `topk` reduces a dense teacher to a top-k support."
        )
    if topk is not None and topk > vocab:
        raise ValueError(f"Argument `topk`: expected at most the vocabulary size {vocab}; received {topk}.")
