"""JAX's form of Keras' clip (:mod:`kldiv._jax_clip`) is the core's rule: the same values as the
generic ``where`` program (NaN stays NaN, ±inf and the interval's ends included) and the gradient of
``torch.clamp`` (1 inside the closed interval, 0 outside it and at NaN), eagerly and under ``jit``;
and the namespace lookup registers it for JAX arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
torch = pytest.importorskip("torch")

import kldiv  # noqa: E402
from kldiv import _jax_clip, _namespace  # noqa: E402
from kldiv.core import divergences  # noqa: E402

LOW, HIGH = 1e-7, 1.0
VALUES = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-41, 1e-8, 1e-7, 0.3, 1.0, 1.5, -2.0, 3e38]


def generic_clip(x):
    divergences.CLIPS.pop("jax.numpy", None)
    try:
        return divergences.clip(jnp, x, LOW, HIGH)
    finally:
        divergences.CLIPS["jax.numpy"] = _jax_clip.clip


def test_values_equal_the_generic_program() -> None:
    x = jnp.asarray(VALUES, dtype=jnp.float32)
    for clip in (lambda v: _jax_clip.clip(v, LOW, HIGH), jax.jit(lambda v: _jax_clip.clip(v, LOW, HIGH))):
        got, want = np.asarray(clip(x)), np.asarray(generic_clip(x))
        np.testing.assert_array_equal(got, want)


def test_the_derivatives_parts_equal_the_value_and_the_interval() -> None:
    # clip_apart (the clip a derivative recomputes) is the value; inside is the closed interval.
    x = jnp.asarray(VALUES, dtype=jnp.float32)
    for f in (
        lambda v: _jax_clip.clip_apart(v, LOW, HIGH),
        jax.jit(lambda v: _jax_clip.clip_apart(v, LOW, HIGH)),
    ):
        np.testing.assert_array_equal(np.asarray(f(x)), np.asarray(generic_clip(x)))
    xn = np.asarray(VALUES, dtype=np.float32)
    want = (xn >= np.float32(LOW)) & (xn <= HIGH)
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda v: _jax_clip.inside(v, LOW, HIGH))(x)), want)


def test_gradient_is_torch_clamp_rule() -> None:
    x = jnp.asarray(VALUES, dtype=jnp.float32)
    grad = jax.jit(jax.grad(lambda v: jnp.sum(_jax_clip.clip(v, LOW, HIGH) * 3.0)))(x)
    xt = torch.tensor(np.asarray(x), requires_grad=True)
    (torch.clamp(xt, torch.tensor(LOW, dtype=torch.float32), HIGH) * 3.0).sum().backward()
    np.testing.assert_array_equal(np.asarray(grad), xt.grad.numpy())
    generic = jax.grad(lambda v: jnp.sum(generic_clip(v) * 3.0))(x)
    np.testing.assert_array_equal(np.asarray(grad), np.asarray(generic))


def test_a_jax_array_registers_it() -> None:
    _namespace.namespace_of(jnp.ones(2))
    assert divergences.CLIPS["jax.numpy"] is _jax_clip.clip


def test_kl_divergence_of_jax_equals_numpy_on_clipped_values() -> None:
    rng = np.random.default_rng(3)
    t = rng.dirichlet(np.full(50, 0.05), size=8).astype(np.float32)  # many entries below 1e-7
    p = rng.dirichlet(np.full(50, 0.05), size=8).astype(np.float32)
    t[0, 0], p[1, 1] = np.nan, 1.5
    with pytest.warns(UserWarning, match="outside"):
        want = kldiv.kl_divergence(t, p, backend="core")
    got = jax.jit(lambda a, b: kldiv.kl_divergence(a, b))(jnp.asarray(t), jnp.asarray(p))
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-6, atol=1e-7)
    np.testing.assert_array_equal(np.isnan(np.asarray(got)), np.isnan(want))
