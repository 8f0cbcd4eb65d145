"""Testing helpers: float64 reference oracles (:mod:`kldiv.testing.reference`) and a verbose
:func:`assert_close` that accepts any array type.

Nothing here imports a framework: arrays are converted through the methods they carry
(``.detach()`` for torch, ``__dlpack__`` / ``__array__`` for the others).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["assert_close", "to_numpy", "ulp"]


def to_numpy(x: Any) -> np.ndarray:
    """``x`` as a NumPy array: NumPy, Python values, torch (detached, bfloat16 widened to float32),
    JAX, array-API-strict and any other array exposing ``__array__`` or ``__dlpack__``."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (np.generic, list, tuple, int, float, bool)):
        return np.asarray(x)
    detach = getattr(x, "detach", None)
    if callable(detach):  # torch
        x = detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    module = type(x).__module__
    if module.startswith("array_api_strict"):
        # array-api-strict refuses __array__ on purpose; go through its own namespace to a host copy.
        namespace = x.__array_namespace__()
        x = namespace.asarray(x, copy=True)
        return np.from_dlpack(x)
    try:
        array = np.asarray(x)
    except (TypeError, ValueError):
        array = np.from_dlpack(x)
    if array.dtype.kind == "V" or str(array.dtype) == "bfloat16":  # ml_dtypes bfloat16 from JAX
        array = array.astype(np.float32)
    return array


def _describe(array: np.ndarray) -> str:
    return f"shape {array.shape}, dtype {array.dtype}"


def assert_close(actual: Any, expected: Any, *, rtol: float, atol: float, equal_nan: bool = True) -> None:
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` elementwise (NumPy broadcasting
    of ``expected`` to ``actual``'s shape is not allowed: shapes must match).

    Infinities must match exactly (same sign, same positions); NaNs must match positions
    (``equal_nan=True``). On failure the message reports the number of mismatches, the largest
    absolute and relative errors and the worst index with both values there.
    """
    actual_np = to_numpy(actual)
    expected_np = to_numpy(expected)
    if actual_np.shape != expected_np.shape:
        raise AssertionError(
            f"Shapes differ: actual has {_describe(actual_np)}, expected has {_describe(expected_np)}."
        )
    a = actual_np.astype(np.float64)
    e = expected_np.astype(np.float64)
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    bad_nan = nan_a != nan_e if equal_nan else nan_a | nan_e
    inf_a, inf_e = np.isinf(a), np.isinf(e)
    bad_inf = (inf_a | inf_e) & ~((a == e) & inf_a)
    finite = ~(nan_a | nan_e | inf_a | inf_e)
    with np.errstate(invalid="ignore", over="ignore"):
        abs_err = np.where(finite, np.abs(a - e), 0.0)
        allowed = atol + rtol * np.abs(np.where(finite, e, 0.0))
        rel_err = np.where(finite & (e != 0), abs_err / np.where(e != 0, np.abs(e), 1.0), 0.0)
    bad = (abs_err > allowed) | bad_nan | bad_inf
    if not np.any(bad):
        return
    score = np.where(bad_nan | bad_inf, np.inf, abs_err - allowed)
    worst = np.unravel_index(int(np.argmax(score)), a.shape) if a.ndim else ()
    lines = [
        f"Arrays are not close (rtol={rtol:g}, atol={atol:g}): {int(np.sum(bad))} of {max(a.size, 1)} "
        f"elements differ.",
        f"  actual:   {_describe(actual_np)} ({type(actual).__module__}.{type(actual).__name__})",
        f"  expected: {_describe(expected_np)}",
        f"  max abs error: {float(np.max(abs_err)) if a.size else 0.0:.6g}",
        f"  max rel error: {float(np.max(rel_err)) if a.size else 0.0:.6g}",
        f"  worst index {tuple(int(i) for i in worst)}: "
        f"actual {float(a[worst])!r}, expected {float(e[worst])!r}",
    ]
    if np.any(bad_nan):
        lines.append(f"  NaN mismatches: {int(np.sum(bad_nan))}")
    if np.any(bad_inf):
        lines.append(f"  infinity mismatches: {int(np.sum(bad_inf))}")
    if a.size <= 16:
        lines.append(f"  actual values:   {a.ravel().tolist()}")
        lines.append(f"  expected values: {e.ravel().tolist()}")
    raise AssertionError("\n".join(lines))


def ulp(x: Any, dtype: str) -> float:
    """The spacing of ``dtype`` (``"float16"``, ``"bfloat16"``, ``"float32"``, ``"float64"``) at ``|x|``."""
    mantissa = {"float16": 10, "bfloat16": 7, "float32": 23, "float64": 52}[dtype]
    value = abs(float(x))
    if value == 0 or not math.isfinite(value):
        return 0.0
    return 2.0 ** (math.floor(math.log2(value)) - mantissa)
