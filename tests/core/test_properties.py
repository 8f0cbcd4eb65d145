"""Invariants, by Hypothesis: non-negativity, ``KL(p, p) = 0``, ``axis``, backends, input formats.

Every property is also checked against the float64 oracle, so that none can pass by kldiv agreeing
with itself alone.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import kldiv
from kldiv.testing import assert_close, reference

from .helpers import BACKENDS, is_backend_array, to_backend

FORMATS = ("probs", "log_probs", "logits")
SETTINGS = settings(deadline=None, max_examples=40)


@st.composite
def distribution(draw, shape, zeros=True):
    """A float64 array of ``shape`` whose last-axis rows are probability distributions."""
    element = st.one_of(st.just(0.0), st.floats(1e-4, 1.0)) if zeros else st.floats(1e-3, 1.0)
    weights = draw(arrays(np.float64, shape, elements=element))
    weights[..., 0] = np.where(weights.sum(-1) == 0, 1.0, weights[..., 0])
    return weights / weights.sum(-1, keepdims=True)


@st.composite
def pair(draw, max_rows=5, max_cols=8, zeros=True):
    shape = (draw(st.integers(1, max_rows)), draw(st.integers(1, max_cols)))
    return draw(distribution(shape, zeros)), draw(distribution(shape, zeros))


def encode(p: np.ndarray, fmt: str, shift: float = 0.0, axis: int = -1) -> np.ndarray:
    if fmt == "probs":
        return p
    with np.errstate(divide="ignore"):
        logs = np.log(p)
    return logs if fmt == "log_probs" else logs + shift


@SETTINGS
@given(data=pair(), fmt=st.sampled_from(FORMATS))
def test_non_negative_in_exact_mode(data, fmt):
    t, p = data
    result = kldiv.kl_divergence(t, encode(p, fmt, 2.0), y_pred_format=fmt, epsilon=0)
    assert np.all(result >= -1e-12), result
    assert_close(result, reference.exact_kl(t, p), rtol=1e-9, atol=1e-12)


@SETTINGS
@given(data=pair(zeros=False), backend=st.sampled_from(BACKENDS))
def test_non_negative_in_float32(data, backend):
    t, p = (x.astype(np.float32) for x in data)
    result = kldiv.kl_divergence(to_backend(backend, t), to_backend(backend, p), epsilon=0)
    expected = reference.exact_kl(t, p)
    assert np.all(np.asarray(reference.as_float64(result)) >= -1e-6)
    assert_close(result, expected, rtol=1e-5, atol=1e-6)


@SETTINGS
@given(data=pair(), fmt=st.sampled_from(FORMATS), shift=st.floats(-50, 50))
def test_divergence_of_a_distribution_from_itself_is_zero(data, fmt, shift):
    p = data[0]
    x = encode(p, fmt, shift)
    result = kldiv.kl_divergence(x, x, y_true_format=fmt, y_pred_format=fmt, epsilon=0)
    assert np.all(result == 0.0), result
    assert_close(result, reference.exact_kl(x, x, y_true_format=fmt, y_pred_format=fmt), rtol=0, atol=1e-15)


@SETTINGS
@given(data=pair(), fmt=st.sampled_from(FORMATS), backend=st.sampled_from(BACKENDS))
def test_divergence_of_a_distribution_from_itself_is_zero_on_every_backend(data, fmt, backend):
    x = to_backend(backend, encode(data[0], fmt, 1.0))
    result = kldiv.kl_divergence(x, x, y_true_format=fmt, y_pred_format=fmt, epsilon=0)
    assert_close(result, np.zeros(data[0].shape[:-1]), rtol=0, atol=0)


@SETTINGS
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5)),
    axis=st.sampled_from([0, 1, 2, -1, -2, -3]),
    fmt=st.sampled_from(FORMATS),
    epsilon=st.sampled_from([0.0, 1e-7]),
    data=st.data(),
)
def test_axis_equals_moveaxis_to_last(shape, axis, fmt, epsilon, data):
    moved_shape = tuple(np.moveaxis(np.empty(shape), axis, -1).shape)
    t = np.moveaxis(data.draw(distribution(moved_shape)), -1, axis)
    p = np.moveaxis(data.draw(distribution(moved_shape, zeros=False)), -1, axis)
    x_true, x_pred = encode(t, fmt, 0.5), encode(p, fmt, -0.5)
    options = {"y_true_format": fmt, "y_pred_format": fmt, "epsilon": epsilon}
    result = kldiv.kl_divergence(x_true, x_pred, axis=axis, **options)
    moved = kldiv.kl_divergence(np.moveaxis(x_true, axis, -1), np.moveaxis(x_pred, axis, -1), **options)
    assert result.shape == moved.shape == moved_shape[:-1]
    assert_close(result, moved, rtol=1e-12, atol=1e-15)
    expected = reference.kl_divergence(
        np.moveaxis(x_true, axis, -1), np.moveaxis(x_pred, axis, -1), **options
    )
    assert_close(result, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", ["torch", "jax", "array_api_strict"])
@pytest.mark.parametrize("axis", [0, 1, -2])
def test_axis_on_every_backend(backend, axis):
    rng = np.random.default_rng(axis + 7)
    t = np.moveaxis(rng.dirichlet(np.ones(5), size=(3, 4)), -1, axis).astype(np.float32)
    logits = rng.normal(size=t.shape).astype(np.float32)
    loss = kldiv.KLDivergence(reduction="none", axis=axis, from_logits=True, epsilon=0)
    result = loss(to_backend(backend, t), to_backend(backend, logits))
    assert is_backend_array(backend, result)
    expected = reference.exact_kl(
        np.moveaxis(t, axis, -1), np.moveaxis(logits, axis, -1), y_pred_format="logits"
    )
    assert_close(result, expected, rtol=1e-5, atol=1e-6)


@settings(deadline=None, max_examples=25)
@given(
    data=pair(max_rows=4, max_cols=6),
    true_format=st.sampled_from(FORMATS),
    pred_format=st.sampled_from(FORMATS),
    epsilon=st.sampled_from([0.0, 1e-7]),
    reduction=st.sampled_from(["none", "sum", "auto", "mean_with_sample_weight"]),
    weight_seed=st.integers(0, 2**16),
)
def test_same_result_on_every_backend(data, true_format, pred_format, epsilon, reduction, weight_seed):
    t, p = data
    if epsilon == 0:
        p = (p + 1e-3) / (1 + 1e-3 * p.shape[-1])  # finite values, so that they can be compared
    y_true = encode(t, true_format, 1.0).astype(np.float32)
    y_pred = encode(p, pred_format, -2.0).astype(np.float32)
    weight = np.random.default_rng(weight_seed).random(t.shape[0]).astype(np.float32)
    options = {"y_true_format": true_format, "y_pred_format": pred_format, "epsilon": epsilon}
    loss = kldiv.KLDivergence(reduction=reduction, **options)
    per_sample = reference.kl_divergence(y_true, y_pred, **options)
    expected = reference.reduce_weighted(per_sample, weight, reduction)
    scale = float(np.sum(np.abs(per_sample)) + 1.0)
    results = {}
    for backend in BACKENDS:
        result = loss(
            to_backend(backend, y_true),
            to_backend(backend, y_pred),
            sample_weight=to_backend(backend, weight),
        )
        assert is_backend_array(backend, result), (backend, type(result))
        assert str(result.dtype).endswith("float32"), (backend, result.dtype)
        results[backend] = reference.as_float64(result)
        assert_close(result, expected, rtol=2e-5, atol=2e-6 * scale)
    for backend in BACKENDS[1:]:
        assert_close(results[backend], results["numpy"], rtol=1e-5, atol=1e-6 * scale)


@SETTINGS
@given(data=pair(), true_format=st.sampled_from(FORMATS), shift=st.floats(-30, 30))
def test_formats_agree_in_exact_mode(data, true_format, shift):
    t, p = data
    p = np.where(t > 0, p + 0.1, p)
    p = p / p.sum(-1, keepdims=True)
    y_true = encode(t, true_format, 3.0)
    results = {
        fmt: kldiv.kl_divergence(
            y_true, encode(p, fmt, shift), y_true_format=true_format, y_pred_format=fmt, epsilon=0
        )
        for fmt in FORMATS
    }
    expected = reference.rel_entr(t, p).sum(-1)
    for fmt, result in results.items():
        assert_close(result, expected, rtol=1e-9, atol=1e-12)
        assert_close(result, results["probs"], rtol=1e-9, atol=1e-12), fmt
