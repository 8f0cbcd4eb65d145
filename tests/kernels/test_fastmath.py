"""The kernels' vectorizable float32 ``log`` / ``exp`` against float64 NumPy, in ulps of the result."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from numba import njit, prange

from kldiv.kernels._fastmath import FASTMATH, expf, logf, logf_normal, logf_normal_or_nan


@njit(parallel=True, fastmath=FASTMATH)
def _apply(which, x, out):
    for i in prange(x.shape[0]):
        if which == 0:
            out[i] = logf(x[i])
        elif which == 1:
            out[i] = logf_normal(x[i])
        elif which == 3:
            out[i] = logf_normal_or_nan(x[i])
        else:
            out[i] = expf(x[i])


def _run(which: int, x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    _apply(which, x, out)
    return out


def _ulps(result: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """|result − truth| in units of the float32 spacing at the (float32-rounded) truth."""
    spacing = np.spacing(np.abs(truth).astype(np.float32)).astype(np.float64)
    return np.abs(result.astype(np.float64) - truth) / spacing


def _float32_grid(low_bits: int, high_bits: int, step: int) -> np.ndarray:
    return np.arange(low_bits, high_bits, step, dtype=np.int64).astype(np.int32).view(np.float32)


def test_log_of_normal_floats_within_numpys_error() -> None:
    x = _float32_grid(0x00800000, 0x7F800000, 97)  # every 97th positive normal float32
    truth = np.log(x.astype(np.float64))
    numpy_error = _ulps(np.log(x), truth).max()
    for which in (0, 1):
        error = _ulps(_run(which, x), truth)
        assert error.max() <= 3.5, (which, error.max(), x[error.argmax()])
        assert error.max() <= numpy_error + 0.5
        assert error.mean() < 0.5


def test_log_near_one_is_accurate() -> None:
    x = np.linspace(0.5, 2.0, 200_001, dtype=np.float32)
    error = _ulps(_run(0, x), np.log(x.astype(np.float64)))
    error = error[x != 1.0]
    assert error.max() <= 3.5
    assert _run(0, np.array([1.0], np.float32))[0] == 0.0


def test_log_of_subnormals_and_special_values() -> None:
    subnormal = _float32_grid(1, 0x00800000, 4099)
    error = _ulps(_run(0, subnormal), np.log(subnormal.astype(np.float64)))
    assert error.max() <= 3.5
    special = np.array([0.0, -0.0, -1.0, -np.inf, np.inf, np.nan], np.float32)
    result = _run(0, special)
    assert result[0] == -np.inf and result[1] == -np.inf
    assert np.isnan(result[2]) and np.isnan(result[3])
    assert result[4] == np.inf
    assert np.isnan(result[5])


def test_exp_accuracy_and_limits() -> None:
    x = np.linspace(-87.0, 88.72, 400_001, dtype=np.float32)
    error = _ulps(_run(2, x), np.exp(x.astype(np.float64)))
    assert error.max() <= 2.0
    special = np.array([-np.inf, -200.0, 0.0, 200.0, np.inf, np.nan], np.float32)
    result = _run(2, special)
    assert result[0] == 0.0 and result[1] == 0.0 and result[2] == 1.0
    assert result[3] == np.inf and result[4] == np.inf
    assert np.isnan(result[5])


def test_exp_underflows_gradually_like_numpy() -> None:
    """Results below the smallest normal float32 are subnormal (not flushed to 0), within one spacing."""
    x = np.linspace(-103.97, -87.34, 100_001, dtype=np.float32)
    result, truth = _run(2, x), np.exp(x.astype(np.float64))
    assert np.all(result > 0.0)
    assert _ulps(result, truth).max() <= 1.0
    assert _run(2, np.array([-104.0, -110.0], np.float32)).tolist() == [0.0, 0.0]


def test_log_of_clipped_probabilities_keeps_nan() -> None:
    """Keras' clip leaves a normal float or NaN: the NaN must not become a finite number."""
    x = np.array([1e-7, 0.5, 1.0, np.nan], np.float32)
    result = _run(3, x)
    np.testing.assert_allclose(result[:3], np.log(x[:3].astype(np.float64)), rtol=1e-6)
    assert np.isnan(result[3])
