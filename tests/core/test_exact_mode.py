"""Exact mode (``epsilon=0``): ``0·log 0 = 0``, ``+inf`` where ``p = 0 < t``, no clip bias.

The references are ``scipy.special.rel_entr(t, p).sum(-1)`` and the float64 oracle of
:mod:`kldiv.testing.reference`; log-probabilities and logits are built with ``scipy.special.log_softmax``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.special

import kldiv
from kldiv.testing import assert_close, reference

from .helpers import BACKENDS, to_backend

FORMATS = ("probs", "log_probs", "logits")
F64 = {"rtol": 1e-10, "atol": 1e-12}
F32 = {"rtol": 2e-5, "atol": 2e-6}


def random_probs(rng: np.random.Generator, shape: tuple[int, ...], zero_fraction: float = 0.3) -> np.ndarray:
    """Rows of probabilities with exact zeros (at least one nonzero entry per row)."""
    weights = rng.gamma(0.7, size=shape)
    weights[rng.random(shape) < zero_fraction] = 0.0
    first = (..., 0)
    weights[first] = np.where(weights.sum(-1) == 0, 1.0, weights[first])
    return weights / weights.sum(-1, keepdims=True)


def encode(probs: np.ndarray, fmt: str, rng: np.random.Generator) -> np.ndarray:
    """``probs`` in format ``fmt``: log-probabilities via scipy's log_softmax, logits shifted per row."""
    with np.errstate(divide="ignore"):
        logs = np.log(probs)
    if fmt == "probs":
        return probs
    shift = rng.normal(scale=3.0, size=(*probs.shape[:-1], 1))
    if fmt == "logits":
        return logs + shift
    return scipy.special.log_softmax(logs + shift, axis=-1)


def support_covering(rng, t: np.ndarray) -> np.ndarray:
    """A ``p`` that is positive wherever ``t`` is (finite KL), with zeros elsewhere."""
    p = random_probs(rng, t.shape, zero_fraction=0.5)
    p = np.where(t > 0, p + 0.05, p)
    return p / p.sum(-1, keepdims=True)


@pytest.mark.parametrize(("true_format", "pred_format"), list(itertools.product(FORMATS, FORMATS)))
def test_matches_scipy_rel_entr_in_every_format(true_format, pred_format):
    rng = np.random.default_rng(0)
    t = random_probs(rng, (6, 4, 9))
    p = support_covering(rng, t)
    p[0, 0] = 0.0
    p[0, 0, 3] = 1.0  # a row where p = 0 < t somewhere (+inf) unless t is one-hot at 3
    t[1, 1] = np.eye(9)[2]  # one-hot target
    y_true, y_pred = encode(t, true_format, rng), encode(p, pred_format, rng)
    result = kldiv.kl_divergence(
        y_true, y_pred, y_true_format=true_format, y_pred_format=pred_format, epsilon=0
    )
    assert result.dtype == np.float64 and result.shape == (6, 4)
    expected = scipy.special.rel_entr(t, p).sum(-1)
    assert np.isinf(expected[0, 0]) or t[0, 0, 3] == 1
    assert_close(result, expected, **F64)
    oracle = reference.exact_kl(y_true, y_pred, y_true_format=true_format, y_pred_format=pred_format)
    assert_close(result, oracle, **F64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("true_format", "pred_format"), [("probs", "probs"), ("log_probs", "logits")])
def test_float32_backends_match_float64_oracle(backend, true_format, pred_format):
    rng = np.random.default_rng(1)
    t = random_probs(rng, (5, 7))
    p = support_covering(rng, t)
    y_true = encode(t, true_format, rng).astype(np.float32)
    y_pred = encode(p, pred_format, rng).astype(np.float32)
    result = kldiv.kl_divergence(
        to_backend(backend, y_true),
        to_backend(backend, y_pred),
        y_true_format=true_format,
        y_pred_format=pred_format,
        epsilon=0,
    )
    expected = reference.exact_kl(y_true, y_pred, y_true_format=true_format, y_pred_format=pred_format)
    assert_close(result, expected, **F32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_hot_target_is_negative_log_probability(backend):
    p = np.array([[0.1, 0.2, 0.7], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    t = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    result = kldiv.kl_divergence(to_backend(backend, t), to_backend(backend, p), epsilon=0)
    assert_close(result, -np.log([0.7, 0.5, 1.0]), rtol=1e-6, atol=1e-7)
    assert_close(result, scipy.special.rel_entr(t, p).sum(-1), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_target_contributes_nothing(backend, fmt):
    """A zero of ``t`` adds exactly nothing, whatever ``p`` is there (0 included): ``0·log 0 = 0``."""
    rng = np.random.default_rng(2)
    t = np.array([[0.0, 0.25, 0.75, 0.0], [0.0, 0.25, 0.75, 0.0]])
    p = np.array([[0.0, 0.5, 0.5, 0.0], [0.3, 0.35, 0.35, 0.0]])
    y_true = encode(t, fmt, rng)
    y_pred = encode(p, fmt, rng)
    result = kldiv.kl_divergence(
        to_backend(backend, y_true),
        to_backend(backend, y_pred),
        y_true_format=fmt,
        y_pred_format=fmt,
        epsilon=0,
    )
    expected = scipy.special.rel_entr(t, p).sum(-1)
    assert np.all(np.isfinite(expected))
    assert_close(result, expected, rtol=1e-5, atol=1e-6)
    # by hand: only the two positive entries of t contribute
    kept = 0.25 * np.log(0.25 / 0.5) + 0.75 * np.log(0.75 / 0.5)
    assert_close(result[0:1], np.array([kept]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_prediction_under_positive_target_is_inf(backend, fmt):
    rng = np.random.default_rng(3)
    t = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    p = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.3, 0.5]])
    result = kldiv.kl_divergence(
        to_backend(backend, t), to_backend(backend, encode(p, fmt, rng)), y_pred_format=fmt, epsilon=0
    )
    expected = scipy.special.rel_entr(t, p).sum(-1)
    assert list(np.isinf(expected)) == [True, True, False]
    assert_close(result, expected, rtol=1e-6, atol=1e-6)  # +inf exactly where scipy has it, no NaN


def test_exact_mode_has_no_clip_bias():
    """Keras mode clips to 1e-7 (a bias of order 1e-6 here); exact mode equals rel_entr."""
    t = np.array([[0.0, 1.0], [0.0, 0.0]])
    p = np.array([[0.6, 0.4], [0.4, 0.6]])
    exact = kldiv.kl_divergence(t, p, epsilon=0)
    assert_close(exact, scipy.special.rel_entr(t, p).sum(-1), rtol=1e-15, atol=0)
    assert exact[1] == 0.0
    keras = kldiv.kl_divergence(t, p)
    assert_close(keras, reference.keras_kl(t, p), **F64)
    assert keras[1] < 0  # the documented Keras value -3.08e-06


@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_object_in_exact_mode(backend):
    rng = np.random.default_rng(4)
    t = random_probs(rng, (8, 5))
    p = support_covering(rng, t)
    weight = rng.random(8)
    loss = kldiv.KLDivergence(epsilon=0, reduction="sum")
    result = loss(to_backend(backend, t), to_backend(backend, p), sample_weight=to_backend(backend, weight))
    expected = reference.reduce_weighted(scipy.special.rel_entr(t, p).sum(-1), weight, "sum")
    assert_close(result, expected, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("fmt", FORMATS)
def test_all_zero_rows_in_log_space(fmt):
    """``t`` given as log-probabilities with ``-inf`` entries (log 0) and matching ``p``."""
    log_t = np.array([[-np.inf, 0.0, -np.inf], [np.log(0.5), np.log(0.5), -np.inf]])
    p = np.array([[0.2, 0.8, 0.0], [0.25, 0.25, 0.5]])
    rng = np.random.default_rng(5)
    result = kldiv.kl_divergence(
        log_t, encode(p, fmt, rng), y_true_format="log_probs", y_pred_format=fmt, epsilon=0
    )
    assert_close(result, scipy.special.rel_entr(np.exp(log_t), p).sum(-1), **F64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("epsilon", [0.0, 1e-7])
def test_large_logits_are_stable(dtype, epsilon):
    """Logits of magnitude 1e4 go through a stable log-softmax: no overflow, no NaN."""
    z_true = np.array([[1000.0, -1000.0, 0.0], [-3e4, 3e4, 3e4], [5e3, 5e3 - 2.0, -5e3]], dtype=dtype)
    z_pred = np.array([[999.0, -1000.0, 0.0], [-3e4, 3e4, 2.9999e4], [5e3 - 1.0, 5e3, 0.0]], dtype=dtype)
    options = {"y_true_format": "logits", "y_pred_format": "logits", "epsilon": epsilon}
    result = kldiv.kl_divergence(z_true, z_pred, **options)
    assert np.all(np.isfinite(result))
    expected = reference.kl_divergence(z_true, z_pred, **options)
    assert_close(result, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_target_broadcasts_against_prediction(backend):
    t = np.array([[0.5, 0.5, 0.0]])
    p = np.array([[0.3, 0.7, 0.0], [0.3, 0.2, 0.5], [1.0, 0.0, 0.0]])
    forward = kldiv.kl_divergence(to_backend(backend, t), to_backend(backend, p), epsilon=0)
    assert_close(forward, scipy.special.rel_entr(t, p).sum(-1), rtol=1e-6, atol=1e-7)
    reverse = kldiv.kl_divergence(to_backend(backend, p), to_backend(backend, t), epsilon=0)
    assert_close(reverse, scipy.special.rel_entr(p, t).sum(-1), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("epsilon", [0.0, 1e-7])
def test_nan_propagates(epsilon):
    t = np.array([[np.nan, 0.5], [0.5, 0.5], [0.5, 0.5]])
    p = np.array([[0.5, 0.5], [np.nan, 0.5], [0.5, 0.5]])
    result = kldiv.kl_divergence(t, p, epsilon=epsilon)
    assert_close(result, [np.nan, np.nan, 0.0], rtol=0, atol=1e-12)
