"""array-api-strict in, array-api-strict out: no hidden NumPy coupling anywhere on the path.

array-api-strict implements only the standard (no ``__array__``, no implicit conversions, no mixing
with NumPy), so any NumPy call on the way raises instead of silently working.
"""

from __future__ import annotations

import array_api_strict as xps
import numpy as np
import pytest

import kldiv
from kldiv.testing import assert_close, reference

REDUCTIONS = ["auto", "none", "sum", "sum_over_batch_size", "mean", "mean_with_sample_weight", None]


def is_strict(x: object) -> bool:
    return type(x).__module__.startswith("array_api_strict")


def data(dtype=np.float32):
    rng = np.random.default_rng(11)
    t = rng.dirichlet(np.ones(6), size=5)
    t[0] = [0, 0, 1, 0, 0, 0]
    p = rng.dirichlet(np.full(6, 2.0), size=5)
    return t.astype(dtype), p.astype(dtype), rng.random(5).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("epsilon", [1e-7, 0.0])
def test_function_returns_strict_arrays(dtype, epsilon):
    t, p, _ = data(dtype)
    result = kldiv.kl_divergence(xps.asarray(t), xps.asarray(p), epsilon=epsilon)
    assert is_strict(result)
    assert result.dtype == xps.asarray(p).dtype and result.shape == (5,)
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-14}
    assert_close(result, reference.kl_divergence(t, p, epsilon=epsilon), **tolerance)


@pytest.mark.parametrize("pred_format", ["probs", "log_probs", "logits"])
@pytest.mark.parametrize("true_format", ["probs", "log_probs", "logits"])
@pytest.mark.parametrize("epsilon", [1e-7, 0.0])
def test_every_format_on_strict_arrays(true_format, pred_format, epsilon):
    t, p, _ = data()
    with np.errstate(divide="ignore"):
        encoded = {"probs": lambda x: x, "log_probs": np.log, "logits": lambda x: np.log(x) + 2.0}
    y_true, y_pred = encoded[true_format](t), encoded[pred_format](p)
    options = {"y_true_format": true_format, "y_pred_format": pred_format, "epsilon": epsilon}
    result = kldiv.kl_divergence(xps.asarray(y_true), xps.asarray(y_pred), **options)
    assert is_strict(result) and result.dtype == xps.float32
    assert_close(result, reference.kl_divergence(y_true, y_pred, **options), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("epsilon", [1e-7, 0.0])
def test_loss_object_with_sample_weight(reduction, epsilon):
    t, p, w = data()
    loss = kldiv.KLDivergence(reduction=reduction, epsilon=epsilon)
    result = loss(xps.asarray(t), xps.asarray(p), sample_weight=xps.asarray(w))
    assert is_strict(result) and result.dtype == xps.float32
    assert result.ndim == (1 if reduction in ("none", None) else 0)
    expected = reference.reduce_weighted(reference.kl_divergence(t, p, epsilon=epsilon), w, reduction)
    assert_close(result, expected, rtol=1e-5, atol=1e-6)


def test_loss_object_with_scalar_and_per_element_weights():
    rng = np.random.default_rng(12)
    t = rng.dirichlet(np.ones(4), size=(3, 2)).astype(np.float32)
    p = rng.dirichlet(np.ones(4), size=(3, 2)).astype(np.float32)
    per_element = rng.random((3, 2)).astype(np.float32)
    per_sample = reference.keras_kl(t, p)
    loss = kldiv.KLDivergence()
    for weight in (xps.asarray(np.float32(0.5)), xps.asarray(per_element), xps.asarray(per_element[:, :1])):
        result = loss(xps.asarray(t), xps.asarray(p), sample_weight=weight)
        assert is_strict(result)
        expected = reference.reduce_weighted(per_sample, reference.as_float64(weight), "auto")
        assert_close(result, expected, rtol=1e-5, atol=1e-7)


def test_strict_targets_mix_with_python_lists():
    result = kldiv.KLDivergence()([[0, 1], [0, 0]], xps.asarray([[0.6, 0.4], [0.4, 0.6]], dtype=xps.float32))
    assert is_strict(result) and result.dtype == xps.float32
    assert_close(result, 0.45814306, rtol=2e-6, atol=0)


def test_empty_batch_gives_zero():
    empty = xps.zeros((0, 3), dtype=xps.float32)
    result = kldiv.KLDivergence()(empty, empty)
    assert is_strict(result) and result.ndim == 0
    assert_close(result, np.float32(0.0), rtol=0, atol=0)
