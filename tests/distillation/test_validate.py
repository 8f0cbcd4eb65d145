"""``validate=True``: clear errors for invalid distributions; the default never raises where Keras
does not."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kldiv

GOOD = np.array([[0.25, 0.75], [0.5, 0.5]])


@pytest.mark.parametrize(
    ("y_true", "y_pred", "match"),
    [
        ([[-0.25, 1.25], [0.5, 0.5]], GOOD, r"`y_true`: expected probabilities in \[0, 1\]"),
        (
            GOOD,
            [[0.25, 0.5], [0.5, 0.5]],
            r"`y_pred`: expected probs whose rows sum to 1 .* off by up to 0.25",
        ),
        (GOOD, [[np.nan, 0.5], [0.5, 0.5]], r"`y_pred`: expected no NaN values"),
        ([[np.inf, 0.5], [0.5, 0.5]], GOOD, r"`y_true`: expected no \+inf values"),
        (
            GOOD,
            [[0.25, 0.75]],
            r"expected equal shapes \(validate=True\); received shapes \(2, 2\) and \(1, 2\)",
        ),
    ],
)
def test_invalid_probabilities_raise(y_true, y_pred, match):
    with pytest.raises(ValueError, match=match):
        kldiv.kl_divergence(np.asarray(y_true), np.asarray(y_pred), validate=True)


def test_invalid_log_probabilities_raise():
    with pytest.raises(ValueError, match="`y_pred`: expected log-probabilities <= 0"):
        kldiv.kl_divergence(GOOD, np.log(GOOD) + 1.0, y_pred_format="log_probs", validate=True)
    with pytest.raises(ValueError, match="`y_pred`: expected log_probs whose rows sum to 1"):
        kldiv.kl_divergence(GOOD, np.log(GOOD) - 0.1, y_pred_format="log_probs", validate=True)


def test_valid_inputs_pass_and_logits_are_unconstrained():
    value = kldiv.kl_divergence(GOOD, GOOD[::-1], validate=True)
    assert value.shape == (2,)
    kldiv.kl_divergence(GOOD, np.array([[30.0, -4.0], [1.0, 1.0]]), from_logits=True, validate=True)
    with np.errstate(divide="ignore"):
        zero_log = np.log(np.array([[0.0, 1.0], [0.5, 0.5]]))
    kldiv.kl_divergence(GOOD, zero_log, y_pred_format="log_probs", epsilon=0, validate=True)


def test_default_never_raises_where_keras_does_not():
    """Keras accepts any values (it clips); so does kldiv's default."""
    value = kldiv.KLDivergence()([[-1.0, 2.0]], [[3.0, np.nan]])
    assert np.isnan(value)


def test_validate_inside_jit_gives_a_clear_error():
    def fn(p):
        return kldiv.kl_divergence(jnp.asarray(GOOD, dtype=jnp.float32), p, validate=True)

    with pytest.raises(ValueError, match=r"validate=True.*traced"):
        jax.jit(fn)(jnp.asarray(GOOD, dtype=jnp.float32))
