"""Hypothesis invariants of the distillation divergences (exact mode unless stated)."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import kldiv

from . import reference

SETTINGS = settings(max_examples=150, deadline=None)


@st.composite
def distributions(draw):
    """Pairs of probability rows with exact zeros, one-hot rows and tiny entries."""
    n_rows, n = draw(st.integers(1, 4)), draw(st.integers(1, 8))
    elements = st.one_of(st.just(0.0), st.floats(1e-30, 1.0), st.just(1.0))

    def one():
        raw = draw(arrays(np.float64, (n_rows, n), elements=elements))
        raw[raw.sum(-1) == 0, 0] = 1.0  # every row needs some mass
        return raw / raw.sum(-1, keepdims=True)

    return one(), one()


KINDS = st.sampled_from(
    [{"direction": "forward"}, {"direction": "reverse"}, {"direction": "symmetric"}]
    + [{"beta": b} for b in (0.0, 0.1, 0.5, 0.9, 1.0)]
)


def compute(kind, t, p, **options):
    if "beta" in kind:
        return kldiv.js_divergence(t, p, beta=kind["beta"], epsilon=0, **options)
    return kldiv.kl_divergence(t, p, direction=kind["direction"], epsilon=0, **options)


@SETTINGS
@given(distributions(), KINDS)
def test_nonnegative_and_matches_reference(pair, kind):
    t, p = pair
    result = compute(kind, t, p)
    expected = reference.divergence(t, p, **kind)
    assert np.all(result >= -1e-12)
    finite = np.isfinite(expected)
    assert np.array_equal(np.isfinite(result), finite)
    np.testing.assert_allclose(result[finite], expected[finite], rtol=1e-9, atol=1e-12)


@SETTINGS
@given(distributions(), KINDS)
def test_zero_at_equality(pair, kind):
    t, _ = pair
    np.testing.assert_allclose(compute(kind, t, t.copy()), 0.0, atol=1e-12)


@SETTINGS
@given(distributions(), KINDS, st.sampled_from(["probs", "log_probs", "logits"]))
def test_gradient_never_nan_or_inf_where_value_finite(pair, kind, pred_format):
    t, p = pair
    with np.errstate(divide="ignore"):
        given_p = p if pred_format == "probs" else np.log(p)
    if pred_format == "logits":
        given_p = np.where(np.isfinite(given_p), given_p, -1e4)  # a logit, not -inf
    student = torch.tensor(given_p, requires_grad=True)
    teacher = torch.tensor(t, requires_grad=True)
    value = compute(kind, teacher, student, y_pred_format=pred_format)
    finite_rows = torch.isfinite(value)
    value[finite_rows].sum().backward()
    assert torch.isfinite(student.grad[finite_rows]).all()
    assert torch.isfinite(teacher.grad[finite_rows]).all()


@SETTINGS
@given(distributions())
def test_js_half_is_symmetric_and_bounded_by_log_2(pair):
    t, p = pair
    forward = kldiv.js_divergence(t, p, beta=0.5, epsilon=0)
    backward = kldiv.js_divergence(p, t, beta=0.5, epsilon=0)
    np.testing.assert_allclose(forward, backward, rtol=1e-12, atol=1e-15)
    assert np.all(forward <= math.log(2) + 1e-12)


@SETTINGS
@given(distributions(), st.sampled_from([1e-4, 1e-5]))
def test_js_limits_are_scaled_kl(pair, beta):
    """JS_β / β → KL(P‖Q) as β → 0 and JS_β / (1−β) → KL(Q‖P) as β → 1 (finite KL only)."""
    t, p = pair
    # Mixed so that both supports are equal (both KLs finite) and every ratio t/p is in [1/3, 3].
    t, p = 0.75 * t + 0.25 * p, 0.25 * t + 0.75 * p
    forward = kldiv.kl_divergence(t, p, epsilon=0)
    reverse = kldiv.kl_divergence(t, p, epsilon=0, direction="reverse")
    near_zero = kldiv.js_divergence(t, p, beta=beta, epsilon=0) / beta
    near_one = kldiv.js_divergence(t, p, beta=1 - beta, epsilon=0) / beta
    # The first-order remainder is O(β · χ²); the mixing above bounds χ² by a few units.
    np.testing.assert_allclose(near_zero, forward, rtol=50 * beta, atol=50 * beta)
    np.testing.assert_allclose(near_one, reverse, rtol=50 * beta, atol=50 * beta)


@SETTINGS
@given(distributions(), st.floats(0.25, 4.0))
def test_temperature_one_is_identity_and_any_temperature_is_nonnegative(pair, temperature):
    t, p = pair
    np.testing.assert_allclose(
        kldiv.kl_divergence(t, p, epsilon=0, temperature=1.0), kldiv.kl_divergence(t, p, epsilon=0)
    )
    with np.errstate(divide="ignore"):
        log_t, log_p = np.log(t), np.log(p)
    value = kldiv.kl_divergence(
        log_t, log_p, y_true_format="log_probs", y_pred_format="log_probs", epsilon=0, temperature=temperature
    )
    assert np.all(value >= -1e-12)
