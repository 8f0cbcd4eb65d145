"""Read ``Y_TRUE``, ``Y_PRED`` and ``--sample-weight``: an inline value or a ``.npy``/``.csv``/``.json`` file.

Inline values are parsed as data only (an :mod:`ast` walk that accepts numbers, lists, ``nan`` and
``inf``), never evaluated. They stay Python values, so that the library converts them exactly as it
converts any Python list (Python floats become float32, as ``tf.convert_to_tensor`` does).
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import warnings
from typing import Any

import numpy as np

from .. import errors

Value = Any  # a Python number, a nested list of numbers, or a NumPy array

FILE_TYPES = (".npy", ".csv", ".json")
_NAMED_NUMBERS = {"nan": math.nan, "NaN": math.nan, "inf": math.inf, "Infinity": math.inf}
_INT_LIMIT = 2**63
_EXPECTED_VALUE = (
    "a number or a nested list of numbers such as '[[0, 1], [0, 0]]', or a .npy, .csv or .json file"
)


class InputError(ValueError):
    """A value or file that cannot be read; the message names the argument."""


def _error(argument: str, expected: str, received: object, detail: str = "") -> InputError:
    text = errors.message(argument, expected, received)
    return InputError(f"{text[:-1]} ({detail})." if detail else text)


def read_value(text: str, argument: str, *, float_integers: bool = False) -> Value:
    """The value named by a command-line argument: a file when it looks like one, else inline.

    ``float_integers``: convert integer and boolean data to floating point (float32 for a file,
    Python floats for an inline value), for ``y_pred`` which the library requires to be floating.
    """
    if os.path.exists(text) or os.path.splitext(text)[1].lower() in FILE_TYPES:
        value = load_file(text, argument)
    else:
        try:
            value = parse_inline(text, argument)
        except InputError:
            if _looks_like_path(text):
                load_file(text, argument)  # raises the more useful "no such file" error
            raise
    return to_floating(value) if float_integers else value


def _looks_like_path(text: str) -> bool:
    separators = [sep for sep in (os.sep, os.altsep) if sep]
    return any(sep in text for sep in separators) or re.search(r"\.[A-Za-z_]\w*$", text) is not None


def to_floating(value: Value) -> Value:
    """Integer/boolean data as floating point; floating data unchanged."""
    if isinstance(value, np.ndarray):
        return value.astype(np.float32) if value.dtype.kind in "biu" else value
    if isinstance(value, list):
        return [to_floating(item) for item in value]
    return float(value)


def parse_inline(text: str, argument: str) -> Value:
    """A number or a rectangular nested list of numbers, JSON or Python spelling (``[.4, .9]``)."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise _error(argument, _EXPECTED_VALUE, text, exc.msg) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise _error(argument, _EXPECTED_VALUE, text, str(exc) or type(exc).__name__) from None
    try:
        return checked_numbers(_literal(tree.body))
    except InputError as exc:
        raise _error(argument, _EXPECTED_VALUE, text, str(exc)) from None
    except RecursionError:
        raise _error(argument, _EXPECTED_VALUE, text, "nested too deeply") from None


def _literal(node: ast.AST) -> Value:
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(item) for item in node.elts]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        number = _number(node.operand)
        return -number if isinstance(node.op, ast.USub) else number
    return _number(node)


def _number(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMED_NUMBERS:
        return _NAMED_NUMBERS[node.id]
    raise InputError(f"{ast.unparse(node)[:40]} is not a number")


def checked_numbers(value: Value) -> Value:
    """``value`` if it is a number or a rectangular nested list of numbers, else ``InputError``."""
    _shape(value)
    return value


def _shape(value: Value) -> tuple[int, ...]:
    if isinstance(value, list):
        shapes = {_shape(item) for item in value}
        if len(shapes) > 1:
            raise InputError(f"ragged: items of shapes {sorted(shapes)} in one list")
        return (len(value), *(shapes.pop() if shapes else ()))
    if type(value) is float or (type(value) is int and abs(value) < _INT_LIMIT):
        return ()
    if type(value) is int:
        raise InputError(f"integer {errors.describe(value)} does not fit in 64 bits")
    raise InputError(f"{errors.describe(value)} is not a number")


def load_file(path: str, argument: str) -> Value:
    """The array or nested list stored in a ``.npy``, ``.csv`` or ``.json`` file."""
    suffix = os.path.splitext(path)[1].lower()
    if not os.path.isfile(path):
        detail = "no such file" if not os.path.exists(path) else "not a file"
        raise _error(argument, "an existing file or an inline value", path, detail)
    if suffix not in FILE_TYPES:
        detail = f"unknown file type {suffix!r}" if suffix else "a file without a file type"
        raise _error(argument, "a .npy, .csv or .json file, or an inline value", path, detail)
    loader = {".npy": _load_npy, ".csv": _load_csv, ".json": _load_json}[suffix]
    try:
        return loader(path, argument)
    except EOFError:  # NumPy's error for a 0-byte .npy file
        raise _error(argument, f"a {suffix} file of numbers", path, "the file is empty") from None
    except (ValueError, OSError, RecursionError, MemoryError) as exc:  # malformed, truncated, unreadable
        raise _error(argument, f"a {suffix} file of numbers", path, _one_line(exc)) from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _load_npy(path: str, argument: str) -> np.ndarray:
    array = np.load(path, allow_pickle=False)
    if not isinstance(array, np.ndarray):  # an .npz archive saved under a .npy name
        raise InputError("an .npz archive, not one array")
    if array.dtype.kind not in "biuf":
        raise InputError(f"dtype {array.dtype} is not a real number type")
    return array


def _load_csv(path: str, argument: str) -> np.ndarray:
    """Rows of numbers, one sample per row; a file of one column (what ``np.savetxt(v)`` writes for
    a vector ``v``, a histogram) is one distribution, read as a vector."""
    ndmin = 1 if argument == "sample_weight" else 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "input contained no data": an empty batch
        array = np.loadtxt(path, delimiter=",", ndmin=ndmin)
    return array[:, 0] if array.ndim == 2 and array.shape[0] > 0 and array.shape[1] == 1 else array


def _load_json(path: str, argument: str) -> Value:
    with open(path, encoding="utf-8") as handle:
        return checked_numbers(json.load(handle))


def normalize(value: Value, argument: str, axis: int) -> Value:
    """Each distribution (slice along ``axis``) divided by its sum: histograms of counts become
    probabilities. ``InputError`` for an entry that is negative or not finite, or a sum of 0.

    Computed in float64; an array comes back in its own floating dtype (float32 for integer data),
    a Python value as Python floats (which the library converts as any Python list).
    """
    array = np.asarray(value, dtype=np.float64)
    expected = "non-negative, finite counts or weights with a positive sum per distribution (--normalize)"
    if array.ndim == 0:
        raise _error(argument, expected, value, "a single number is no distribution")
    if not np.isfinite(array).all():
        raise _error(argument, expected, value, "an entry is not finite")
    if (array < 0).any():
        raise _error(
            argument, expected, value, f"{int((array < 0).sum())} of {array.size} entries are negative"
        )
    try:
        sums = array.sum(axis=axis, keepdims=True)
    except np.exceptions.AxisError:
        raise _error(argument, expected, value, f"it has no axis {axis}") from None
    if (sums == 0).any():
        raise _error(
            argument, expected, value, f"{int((sums == 0).sum())} of {sums.size} distributions sum to 0"
        )
    result = array / sums
    if isinstance(value, np.ndarray):
        return result.astype(value.dtype if value.dtype.kind == "f" else np.float32)
    return result.tolist()
