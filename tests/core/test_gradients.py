"""Gradients with respect to ``y_pred``: every format, Keras and exact mode, torch and JAX.

References: float64 central finite differences (``torch.autograd.gradcheck`` of kldiv itself, and
finite differences of the float64 oracle for ``jax.grad`` and torch autograd), and the closed forms
``-w·t/p/N`` (Keras mode, 0 where ``y_pred`` is clipped) and, in exact mode, ``-t/p`` (probs),
``-t`` (log-probs), ``softmax(z)·Σt - t`` (logits).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import kldiv
from kldiv.testing import assert_close, reference

FORMATS = ("probs", "log_probs", "logits")
MODES = {"keras": 1e-7, "exact": 0.0}


def inputs(seed: int, shape=(3, 5)) -> tuple[np.ndarray, np.ndarray]:
    """Float64 ``t`` (probabilities) and ``p`` (probabilities bounded away from the clip range)."""
    rng = np.random.default_rng(seed)
    t = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
    p = rng.dirichlet(np.full(shape[-1], 5.0), size=shape[:-1])
    return t, p


def encode(p: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "probs":
        return p
    logs = np.log(p)
    return logs if fmt == "log_probs" else logs + np.linspace(-2.0, 3.0, p.shape[0])[:, None]


def oracle_loss(t, weight, fmt, epsilon, reduction="auto"):
    def loss(y_pred):
        per_sample = reference.kl_divergence(t, y_pred, y_pred_format=fmt, epsilon=epsilon)
        return reference.reduce_weighted(per_sample, weight, reduction)

    return loss


@pytest.mark.parametrize(("mode", "fmt"), list(itertools.product(MODES, FORMATS)))
def test_torch_gradcheck(mode, fmt):
    t, p = inputs(0)
    y_true = torch.tensor(t)
    y_pred = torch.tensor(encode(p, fmt), requires_grad=True)
    options = {"y_pred_format": fmt, "epsilon": MODES[mode], "backend": "core"}

    def per_sample(x):
        return kldiv.kl_divergence(y_true, x, **options)

    assert torch.autograd.gradcheck(per_sample, (y_pred,), eps=1e-6, atol=1e-7, rtol=1e-5)
    weight = torch.tensor([0.5, 2.0, 1.0])
    loss = kldiv.KLDivergence(**options)
    assert torch.autograd.gradcheck(lambda x: loss(y_true, x, sample_weight=weight), (y_pred,), eps=1e-6)


@pytest.mark.parametrize(("mode", "fmt"), list(itertools.product(MODES, FORMATS)))
@pytest.mark.parametrize("reduction", ["auto", "sum"])
def test_torch_autograd_matches_oracle_finite_differences(mode, fmt, reduction):
    t, p = inputs(1)
    weight = np.array([0.25, 1.0, 3.0])
    y_pred = torch.tensor(encode(p, fmt), requires_grad=True)
    loss = kldiv.KLDivergence(reduction=reduction, y_pred_format=fmt, epsilon=MODES[mode])
    loss(torch.tensor(t), y_pred, sample_weight=torch.tensor(weight)).backward()
    expected = reference.central_difference(
        oracle_loss(t, weight, fmt, MODES[mode], reduction), encode(p, fmt)
    )
    assert_close(y_pred.grad, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(("mode", "fmt"), list(itertools.product(MODES, FORMATS)))
def test_jax_grad_matches_oracle_finite_differences(mode, fmt):
    t, p = inputs(2)
    weight = np.array([1.5, 0.5, 1.0])
    loss = kldiv.KLDivergence(y_pred_format=fmt, epsilon=MODES[mode])
    expected = reference.central_difference(oracle_loss(t, weight, fmt, MODES[mode]), encode(p, fmt))
    with jax.enable_x64(True):
        y_true, w = jnp.asarray(t), jnp.asarray(weight)

        def scalar(x):
            return loss(y_true, x, sample_weight=w)

        y_pred = jnp.asarray(encode(p, fmt))
        assert y_pred.dtype == jnp.float64
        grad = jax.grad(scalar)(y_pred)
        assert_close(grad, expected, rtol=1e-6, atol=1e-8)
        assert_close(jax.jit(jax.grad(scalar))(y_pred), grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("mode", "fmt"), list(itertools.product(MODES, FORMATS)))
def test_jax_jit_equals_eager(mode, fmt):
    true_format = "logits" if fmt == "log_probs" else "probs"
    t, p = inputs(3, (4, 3, 6))
    y_true = jnp.asarray(encode(t.reshape(12, 6), true_format).reshape(4, 3, 6), dtype=jnp.float32)
    y_pred = jnp.asarray(encode(p.reshape(12, 6), fmt).reshape(4, 3, 6), dtype=jnp.float32)
    weight = jnp.asarray(np.linspace(0.0, 2.0, 4)[:, None], dtype=jnp.float32)
    options = {"y_true_format": true_format, "y_pred_format": fmt, "epsilon": MODES[mode]}
    for reduction in ("auto", "none") if mode == "keras" else ("sum", "mean_with_sample_weight"):
        loss = kldiv.KLDivergence(reduction=reduction, **options)
        eager = loss(y_true, y_pred, sample_weight=weight)
        jitted = jax.jit(lambda a, b, w, loss=loss: loss(a, b, sample_weight=w))(y_true, y_pred, weight)
        assert jitted.dtype == eager.dtype and jitted.shape == eager.shape
        assert_close(jitted, eager, rtol=1e-6, atol=1e-7)
    eager = kldiv.kl_divergence(y_true, y_pred, **options)
    jitted = jax.jit(lambda a, b: kldiv.kl_divergence(a, b, **options))(y_true, y_pred)
    assert_close(jitted, eager, rtol=1e-6, atol=1e-7)
    expected = reference.kl_divergence(
        y_true, y_pred, y_true_format=true_format, y_pred_format=fmt, epsilon=MODES[mode]
    )
    assert_close(jitted, expected, rtol=1e-5, atol=1e-6)


# --- Keras mode: the closed form, and exactly zero where y_pred is clipped -----------------------------

KERAS_T = np.array([[0.0, 0.3, 0.7, 0.0], [0.2, 0.2, 0.2, 0.4], [1.0, 0.0, 0.0, 0.0]])
KERAS_P = np.array([[1e-9, 0.5, 0.3, 0.2], [0.0, 1.5, 0.3, 0.2], [0.25, 3e-8, 0.5, 0.25]])
CLIPPED = (KERAS_P < 1e-7) | (KERAS_P > 1.0)


@pytest.mark.parametrize("reduction", ["auto", "sum", "sum_over_batch_size"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_keras_gradient_closed_form_torch(reduction, dtype):
    weight = np.array([0.8, 0.2, 1.5])
    y_pred = torch.tensor(KERAS_P, dtype=dtype, requires_grad=True)
    loss = kldiv.KLDivergence(reduction=reduction)
    loss(
        torch.tensor(KERAS_T, dtype=dtype), y_pred, sample_weight=torch.tensor(weight, dtype=dtype)
    ).backward()
    count = 1 if reduction == "sum" else 3
    expected = reference.keras_gradient(KERAS_T, KERAS_P, weight, count=count)
    assert np.all(expected[CLIPPED] == 0) and np.all(expected[~CLIPPED] != 0)
    assert_close(y_pred.grad, expected, rtol=1e-6, atol=0)
    assert torch.all(y_pred.grad[torch.tensor(CLIPPED)] == 0)


def test_keras_gradient_closed_form_jax():
    weight = jnp.asarray([0.8, 0.2, 1.5])
    loss = kldiv.KLDivergence()
    grad = jax.grad(lambda x: loss(jnp.asarray(KERAS_T, dtype=jnp.float32), x, sample_weight=weight))(
        jnp.asarray(KERAS_P, dtype=jnp.float32)
    )
    assert_close(grad, reference.keras_gradient(KERAS_T, KERAS_P, np.asarray(weight)), rtol=1e-6, atol=0)
    assert np.all(np.asarray(grad)[CLIPPED] == 0)


def test_keras_gradient_closed_form_large_torch_input():
    """Large CPU inputs may be served by the fused kernel (``backend="auto"``): same closed form."""
    rng = np.random.default_rng(5)
    t = rng.dirichlet(np.ones(512), size=160)
    p = rng.dirichlet(np.ones(512), size=160)
    p[::7, ::5] = 1e-9
    p[3, 3] = 1.25
    weight = rng.random(160)
    y_pred = torch.tensor(p, requires_grad=True)
    kldiv.KLDivergence()(torch.tensor(t), y_pred, sample_weight=torch.tensor(weight)).backward()
    expected = reference.keras_gradient(t, p, weight)
    assert_close(y_pred.grad, expected, rtol=1e-9, atol=0)
    clipped = torch.tensor((p < 1e-7) | (p > 1))
    assert torch.all(y_pred.grad[clipped] == 0)


# --- Exact mode: finite, correct gradients wherever the value is finite --------------------------------


@st.composite
def distributions_with_zeros(draw, shape=None):
    """``(t, p)``: rows of ``t`` with exact zeros (some one-hot), ``p`` positive wherever ``t`` is."""
    rows, cols = shape or (draw(st.integers(1, 4)), draw(st.integers(2, 6)))
    positive = st.floats(1e-3, 1.0)
    t = draw(arrays(np.float64, (rows, cols), elements=st.one_of(st.just(0.0), positive)))
    one_hot = draw(arrays(np.bool_, (rows,)))
    hot = draw(arrays(np.int64, (rows,), elements=st.integers(0, cols - 1)))
    t[one_hot] = np.eye(cols)[hot[one_hot]]
    t[t.sum(-1) == 0, 0] = 1.0
    t = t / t.sum(-1, keepdims=True)
    p = draw(arrays(np.float64, (rows, cols), elements=positive))
    p_zero = draw(arrays(np.bool_, (rows, cols)))
    p = np.where(p_zero & (t == 0), 0.0, p)
    return t, p / p.sum(-1, keepdims=True)


def exact_gradient(t: np.ndarray, p: np.ndarray, fmt: str) -> np.ndarray:
    """d/dx sum_rows KL(t ‖ p(x)) for x = p, log p or logits (softmax(x) = p)."""
    if fmt == "probs":
        return np.where(t > 0, -t / np.where(p > 0, p, 1.0), 0.0)
    if fmt == "log_probs":
        return -t
    return p * t.sum(-1, keepdims=True) - t


def encode_exact(p: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "probs":
        return p
    with np.errstate(divide="ignore"):
        logs = np.log(p)
    return logs if fmt == "log_probs" else logs + 1.5


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("true_format", ["probs", "log_probs"])
@settings(deadline=None, max_examples=40)
@given(data=distributions_with_zeros())
def test_exact_mode_gradient_is_finite_and_correct_torch(fmt, true_format, data):
    t, p = data
    y_pred = torch.tensor(encode_exact(p, fmt), requires_grad=True)
    values = kldiv.kl_divergence(
        torch.tensor(encode_exact(t, true_format)),
        y_pred,
        y_true_format=true_format,
        y_pred_format=fmt,
        epsilon=0,
    )
    assert torch.all(torch.isfinite(values))
    assert_close(values.detach(), scipy.special.rel_entr(t, p).sum(-1), rtol=1e-9, atol=1e-12)
    values.sum().backward()
    assert torch.all(torch.isfinite(y_pred.grad)), y_pred.grad
    assert_close(y_pred.grad, exact_gradient(t, p, fmt), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("fmt", FORMATS)
@settings(deadline=None, max_examples=20)
@given(data=distributions_with_zeros(shape=(3, 5)))  # one shape: eager JAX compiles per shape
def test_exact_mode_gradient_is_finite_and_correct_jax(fmt, data):
    t, p = data
    y_true = jnp.asarray(t, dtype=jnp.float32)
    y_pred = jnp.asarray(encode_exact(p, fmt), dtype=jnp.float32)
    loss = kldiv.KLDivergence(reduction="sum", y_pred_format=fmt, epsilon=0)
    value, grad = jax.value_and_grad(lambda x: loss(y_true, x))(y_pred)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(np.asarray(grad))), grad
    assert_close(grad, exact_gradient(t, p, fmt), rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("fmt", FORMATS)
def test_exact_mode_gradient_of_loss_object_with_weights_torch(fmt):
    t = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.25, 0.25, 0.5]])
    p = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.2, 0.3, 0.5]])
    weight = np.array([2.0, 0.0, 1.0])
    y_pred = torch.tensor(encode_exact(p, fmt), requires_grad=True)
    kldiv.KLDivergence(y_pred_format=fmt, epsilon=0)(
        torch.tensor(t), y_pred, sample_weight=torch.tensor(weight)
    ).backward()
    assert_close(y_pred.grad, exact_gradient(t, p, fmt) * weight[:, None] / 3, rtol=1e-12, atol=1e-15)
