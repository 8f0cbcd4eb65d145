"""Every divergence option against the independent float64 reference, on every backend,
value and gradient (finite differences in float64; torch gradcheck)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.special
import torch
from numpy.testing import assert_allclose as assert_close

import kldiv

from . import reference
from .backends import BACKENDS, gradient, to_backend, to_numpy

RNG = np.random.default_rng(1234)
SHAPE = (3, 4, 6)
LOGITS_T = RNG.normal(size=SHAPE) * 2
LOGITS_P = RNG.normal(size=SHAPE) * 2


def inputs(fmt: str, logits: np.ndarray) -> np.ndarray:
    if fmt == "logits":
        return logits
    log_probs = scipy.special.log_softmax(logits, axis=-1)
    return log_probs if fmt == "log_probs" else np.exp(log_probs)


KINDS = [
    {"direction": "forward"},
    {"direction": "reverse"},
    {"direction": "symmetric"},
    {"beta": 0.5},
    {"beta": 0.1},
    {"beta": 0.9},
]
FORMATS = ["probs", "log_probs", "logits"]


def call(kind: dict, t, p, **options):
    if "beta" in kind:
        return kldiv.js_divergence(t, p, beta=kind["beta"], **options)
    return kldiv.kl_divergence(t, p, direction=kind["direction"], **options)


def tolerance(backend: str) -> dict:
    # JAX runs in float32 here (x64 disabled): float32 rounding of sums of ~6 terms of size ~1.
    return {"rtol": 2e-5, "atol": 2e-6} if backend == "jax" else {"rtol": 1e-12, "atol": 1e-12}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()))
@pytest.mark.parametrize(("true_format", "pred_format"), list(itertools.product(FORMATS, FORMATS)))
@pytest.mark.parametrize("epsilon", [0.0, 1e-7])
def test_value_matches_reference(backend, kind, true_format, pred_format, epsilon):
    t, p = inputs(true_format, LOGITS_T), inputs(pred_format, LOGITS_P)
    result = call(
        kind,
        to_backend(backend, t),
        to_backend(backend, p),
        y_true_format=true_format,
        y_pred_format=pred_format,
        epsilon=epsilon,
    )
    expected = reference.divergence(
        t, p, true_format=true_format, pred_format=pred_format, epsilon=epsilon, **kind
    )
    assert_close(to_numpy(result), expected, **tolerance(backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()))
@pytest.mark.parametrize("temperature", [0.5, 2.0, 4.0])
@pytest.mark.parametrize("scaled", [False, True])
def test_temperature_matches_reference(backend, kind, temperature, scaled):
    result = call(
        kind,
        to_backend(backend, LOGITS_T),
        to_backend(backend, LOGITS_P),
        y_true_format="logits",
        from_logits=True,
        epsilon=0,
        temperature=temperature,
        scale_by_temperature_squared=scaled,
    )
    expected = reference.divergence(
        LOGITS_T, LOGITS_P, true_format="logits", pred_format="logits", temperature=temperature, **kind
    )
    expected = expected * temperature**2 if scaled else expected
    assert_close(to_numpy(result), expected, **tolerance(backend))


def test_temperature_on_probabilities_renormalises_the_powered_distribution():
    t, p = inputs("probs", LOGITS_T), inputs("probs", LOGITS_P)
    powered_t = t**0.5 / np.sum(t**0.5, axis=-1, keepdims=True)
    powered_p = p**0.5 / np.sum(p**0.5, axis=-1, keepdims=True)
    result = kldiv.kl_divergence(t, p, temperature=2.0, epsilon=0)
    assert_close(result, scipy.special.rel_entr(powered_t, powered_p).sum(-1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()))
@pytest.mark.parametrize("pred_format", FORMATS)
@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_gradient_matches_finite_differences(backend, kind, pred_format, temperature):
    t = inputs("log_probs", LOGITS_T)
    p = inputs(pred_format, LOGITS_P)
    weights = np.linspace(0.5, 1.5, SHAPE[0] * SHAPE[1]).reshape(SHAPE[:-1])

    def loss(q):
        per_sample = call(
            kind,
            to_backend(backend, t) if backend == "jax" else torch.tensor(t),
            q,
            y_true_format="log_probs",
            y_pred_format=pred_format,
            epsilon=0,
            temperature=temperature,
        )
        return (per_sample * to_backend(backend, weights)).sum()

    def reference_loss(q):
        per_sample = reference.divergence(
            t, q, true_format="log_probs", pred_format=pred_format, temperature=temperature, **kind
        )
        return float((per_sample * weights).sum())

    expected = reference.finite_difference_gradient(reference_loss, p)
    tol = {"rtol": 1e-3, "atol": 2e-4} if backend == "jax" else {"rtol": 1e-6, "atol": 1e-7}
    assert_close(gradient(backend, loss, p), expected, **tol)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()))
@pytest.mark.parametrize("true_format", FORMATS)
def test_torch_gradcheck_both_arguments(kind, true_format):
    t = torch.tensor(inputs(true_format, LOGITS_T[:2, :2]), requires_grad=True)
    p = torch.tensor(LOGITS_P[:2, :2], requires_grad=True)

    def fn(a, b):
        return call(kind, a, b, y_true_format=true_format, from_logits=True, epsilon=0, temperature=1.5)

    assert torch.autograd.gradcheck(fn, (t, p), eps=1e-6, atol=1e-6)
