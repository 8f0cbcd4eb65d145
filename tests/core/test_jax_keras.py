"""JAX's form of Keras mode's forward KL of probabilities (:mod:`kldiv._jax_keras`) is the core's
program: the same values, the same NaN/inf pattern and the same gradient (w.r.t. ``t``, ``p`` and
both) as the generic clipped program and as NumPy's core, on hostile rows (NaN, ±inf, zeros, −0,
entries below ε and above 1, ε and 1 themselves, negative and subnormal entries), eagerly, under
``jit``, ``vmap``, ``grad`` and ``jvp``, along either axis and in both directions; mixed dtypes and
shapes go to the core's program."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import kldiv  # noqa: E402
import kldiv.jax  # noqa: E402
from kldiv import _jax_keras, _namespace  # noqa: E402
from kldiv.core import divergences  # noqa: E402

from .helpers import assert_same_pattern as assert_same  # noqa: E402

NAN, INF, EPS = math.nan, math.inf, 1e-7

# One hostile case per row; the columns pair each t entry with the p entry below it.
HOSTILE_T = [
    [0.25, 0.25, 0.25, 0.25],  # ordinary
    [0.0, 1.0, 0.0, 0.0],  # one-hot: zeros clip to ε
    [1e-8, 1e-7, 1.0, 0.5],  # below ε, ε itself, 1 itself
    [NAN, 0.5, 0.25, 0.25],  # NaN in t
    [0.25, 0.25, 0.25, 0.25],  # NaN in p
    [INF, 0.5, -INF, 0.25],  # ±inf in t
    [0.25, 0.25, 0.25, 0.25],  # ±inf in p
    [-0.1, 1.5, -0.0, 0.25],  # negative, above 1, −0 in t
    [0.25, 0.25, 0.25, 0.25],  # negative, above 1, −0 in p
    [1e-41, 1e-38, 1e-30, 1.0],  # subnormal and tiny t
    [NAN, 2.0, 0.5, 0.5],  # NaN in t above p outside the interval
]
HOSTILE_P = [
    [0.1, 0.2, 0.3, 0.4],
    [0.1, 0.6, 0.0, 0.3],
    [1e-7, 1e-8, 1.0, 2.0],
    [0.25, 0.25, 0.25, 0.25],
    [NAN, 0.25, 0.25, 0.5],
    [0.25, 0.25, 0.25, 0.25],
    [INF, 0.25, -INF, 0.5],
    [0.25, 0.25, 0.25, 0.25],
    [-0.1, 1.5, -0.0, 0.25],
    [1e-41, 1e-38, 1e-30, 0.5],
    [3.0, NAN, 0.25, 0.25],
]
FINITE_ROWS = [0, 1, 2, 7, 8, 9]
NAN_FREE_ROWS = [0, 1, 2, 5, 6, 7, 8, 9]


def generic(t, p, axis: int = -1, **keywords):
    """The core's Keras program itself (the special unregistered)."""
    special = divergences.KERAS_FORWARD_KL.pop("jax.numpy", None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return kldiv.jax.kl_divergence(t, p, axis=axis, **keywords)
    finally:
        if special is not None:
            divergences.KERAS_FORWARD_KL["jax.numpy"] = special


def keras(t, p, axis: int = -1, **keywords):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return kldiv.jax.kl_divergence(t, p, axis=axis, **keywords)


def hostile(dtype, rows: list[int]):
    t = np.asarray([HOSTILE_T[i] for i in rows], dtype=dtype)
    p = np.asarray([HOSTILE_P[i] for i in rows], dtype=dtype)
    return jnp.asarray(t), jnp.asarray(p)


def test_a_jax_array_registers_it_and_kl_uses_it(monkeypatch) -> None:
    _namespace.namespace_of(jnp.ones(2))
    assert divergences.KERAS_FORWARD_KL["jax.numpy"] is _jax_keras.forward_kl
    calls = []

    def spy(*arguments):
        calls.append(arguments[2:4])
        return _jax_keras.forward_kl(*arguments)

    monkeypatch.setitem(divergences.KERAS_FORWARD_KL, "jax.numpy", spy)
    t, p = hostile(np.float32, [0])
    keras(t, p)
    keras(t, p, epsilon=1e-3, axis=0)
    assert calls == [(EPS, 1), (1e-3, 0)]  # the axis normalized


def test_only_keras_mode_probabilities_at_temperature_1_take_it(monkeypatch) -> None:
    calls = []
    monkeypatch.setitem(
        divergences.KERAS_FORWARD_KL,
        "jax.numpy",
        lambda *arguments: calls.append(1) or _jax_keras.forward_kl(*arguments),
    )
    t, p = hostile(np.float32, FINITE_ROWS)
    log_t, log_p = jnp.log(jnp.clip(t, EPS, 1.0)), jnp.log(jnp.clip(p, EPS, 1.0))
    keras(t, p, temperature=2.0)
    keras(log_t, log_p, y_true_format="log_probs", y_pred_format="log_probs")
    keras(log_t, log_p, y_true_format="logits", y_pred_format="logits")
    keras(t, p, epsilon=0.0)
    kldiv.jax.js_divergence(t, p)
    assert calls == []
    keras(t, p, direction="symmetric")  # both directions of probabilities: twice
    assert len(calls) == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values_and_pattern_equal_the_generic_program(dtype) -> None:
    with jax.enable_x64(dtype == np.float64):
        t, p = hostile(dtype, list(range(len(HOSTILE_T))))
        want = generic(t, p)
        rtol = 2e-7 if dtype == np.float32 else 1e-15
        assert_same(keras(t, p), want, rtol)
        assert_same(jax.jit(keras)(t, p), want, rtol)
        for direction in ("reverse", "symmetric"):
            assert_same(keras(t, p, direction=direction), generic(t, p, direction=direction), rtol)


def test_equal_to_numpy_core_on_hostile_rows() -> None:
    t, p = hostile(np.float32, list(range(len(HOSTILE_T))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = kldiv.kl_divergence(np.asarray(t), np.asarray(p), backend="core")
    assert_same(jax.jit(keras)(t, p), want, 2e-6)


def test_random_rows_equal_the_generic_program_along_either_axis() -> None:
    rng = np.random.default_rng(11)
    t = rng.dirichlet(np.full(300, 0.05), size=64).astype(np.float32)  # many entries below ε
    p = rng.dirichlet(np.full(300, 0.5), size=64).astype(np.float32)
    t, p = jnp.asarray(t), jnp.asarray(p)
    assert_same(jax.jit(keras)(t, p), generic(t, p), 2e-6)
    assert_same(jax.jit(lambda a, b: keras(a, b, axis=0))(t.T, p.T), generic(t.T, p.T, axis=0), 2e-6)


def summed(f):
    """The finite rows' sum of ``f``: a scalar whose gradient reaches every entry of every row."""
    return lambda a, b: jnp.sum(jnp.where(jnp.isfinite(f(a, b)), f(a, b), 0.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradients_equal_the_generic_program_on_every_hostile_entry(dtype) -> None:
    # The gradient w.r.t. t, p and both, reverse mode (grad), under jit and eagerly; one (t, p) pair
    # per row as well as the whole rows, so each entry's derivative is also seen alone.
    with jax.enable_x64(dtype == np.float64):
        t, p = hostile(dtype, list(range(len(HOSTILE_T))))
        rtol = 1e-6 if dtype == np.float32 else 1e-14
        for a, b in ((t, p), (t.reshape(-1, 1), p.reshape(-1, 1))):
            for argnums in (0, 1, (0, 1)):
                want = jax.grad(summed(generic), argnums=argnums)(a, b)
                for got in (
                    jax.jit(jax.grad(summed(keras), argnums=argnums))(a, b),
                    jax.grad(summed(keras), argnums=argnums)(a, b),
                ):
                    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                        assert_same(g, w, rtol)


def test_gradients_against_the_closed_form_in_float64() -> None:
    # An independent reference: ∂/∂t = [ε ≤ t ≤ 1](log(t̄/p̄) + 1), ∂/∂p = −[ε ≤ p ≤ 1] t̄/p̄.
    with jax.enable_x64(True):
        t, p = hostile(np.float64, NAN_FREE_ROWS)
        tn, pn = np.asarray(t), np.asarray(p)
        tc, pc = np.clip(tn, EPS, 1.0), np.clip(pn, EPS, 1.0)
        with np.errstate(all="ignore"):
            want_t = np.where((tn >= EPS) & (tn <= 1), np.log(tc / pc) + 1, 0.0)
            want_p = np.where((pn >= EPS) & (pn <= 1), -tc / pc, 0.0)
        got_t, got_p = jax.jit(jax.grad(lambda a, b: jnp.sum(keras(a, b)), argnums=(0, 1)))(t, p)
        np.testing.assert_allclose(np.asarray(got_t), want_t, rtol=1e-13)
        np.testing.assert_allclose(np.asarray(got_p), want_p, rtol=1e-13)


def test_second_derivatives_equal_the_generic_program_at_the_bounds() -> None:
    # Entries at ε and 1 exactly, inside, below and above: the re-clip in the derivative follows the
    # clip's rule (derivative 1 on the closed interval), as the core's program does.
    with jax.enable_x64(True):
        t = jnp.asarray([[1.0, EPS, 0.3, 0.5], [0.2, 1e-9, 1.0, 2.0]], dtype=jnp.float64)
        p = jnp.asarray([[EPS, 1.0, 0.5, 1e-9], [1.0, 0.4, 2.0, 0.3]], dtype=jnp.float64)
        for argnums in (0, 1):
            for mixed in (0, 1):
                got = jax.jacfwd(jax.grad(summed(keras), argnums=argnums), argnums=mixed)(t, p)
                want = jax.jacfwd(jax.grad(summed(generic), argnums=argnums), argnums=mixed)(t, p)
                np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-300)
        got = jax.hessian(lambda a, b: jnp.sum(keras(a, b)), argnums=(0, 1))(t, p)
        want = jax.hessian(lambda a, b: jnp.sum(generic(a, b)), argnums=(0, 1))(t, p)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-12, atol=1e-300)


def test_forward_mode_equals_the_generic_program_where_no_entry_is_nan() -> None:
    t, p = hostile(np.float32, NAN_FREE_ROWS)
    rng = np.random.default_rng(8)
    dt, dp = (jnp.asarray(rng.normal(size=t.shape).astype(np.float32)) for _ in range(2))
    for tangents in ((jnp.zeros_like(t), dp), (dt, jnp.zeros_like(p)), (dt, dp)):
        value, got = jax.jit(lambda a, b, ta, tb: jax.jvp(keras, (a, b), (ta, tb)))(t, p, *tangents)
        want_value, want = jax.jvp(generic, (t, p), tangents)
        assert_same(value, want_value, 2e-7)
        assert_same(got, want, 1e-5)


def test_forward_mode_at_nan_entries_is_the_reverse_mode_map() -> None:
    # Where t or p is NaN the generic program's forward mode multiplies the clip's 0 by a NaN (every
    # such row's tangent is NaN); this rule, like reverse mode in both, keeps the 0: the tangent is
    # Σ grad · tangent with the generic program's own reverse-mode gradient.
    t, p = hostile(np.float32, [3, 4, 10])
    rng = np.random.default_rng(9)
    dt, dp = (jnp.asarray(rng.normal(size=t.shape).astype(np.float32)) for _ in range(2))
    grads = [jax.grad(lambda a, b, r=r: generic(a, b)[r], argnums=(0, 1))(t, p) for r in range(3)]
    want = np.asarray([float(jnp.sum(g_t[r] * dt[r] + g_p[r] * dp[r])) for r, (g_t, g_p) in enumerate(grads)])
    _, got = jax.jvp(keras, (t, p), (dt, dp))
    _, generic_forward = jax.jvp(generic, (t, p), (dt, dp))
    assert np.isnan(np.asarray(generic_forward)).all()
    assert np.isfinite(want[2])  # row 10: NaN t above p outside [ε, 1], NaN p below t inside it
    assert_same(got, want, 1e-5)


def test_vmap_reductions_and_sample_weight_are_unchanged() -> None:
    t, p = hostile(np.float32, list(range(len(HOSTILE_T))))
    batched = jax.vmap(lambda a, b: keras(a[None], b[None])[0])(t, p)
    assert_same(batched, generic(t, p), 2e-7)
    finite_t, finite_p = hostile(np.float32, FINITE_ROWS)
    weight = jnp.arange(len(FINITE_ROWS), dtype=jnp.float32)
    for reduction in ("sum", "sum_over_batch_size", "none"):
        keywords = {"reduction": reduction, "sample_weight": weight}
        assert_same(keras(finite_t, finite_p, **keywords), generic(finite_t, finite_p, **keywords), 2e-7)


def test_float16_mixed_dtypes_and_broadcast_shapes() -> None:
    t, p = hostile(np.float32, FINITE_ROWS)
    for low in (jnp.float16, jnp.bfloat16):
        half = keras(t.astype(low), p.astype(low))
        assert half.dtype == low
        want = generic(t.astype(low), p.astype(low))
        assert_same(half.astype(jnp.float32), want.astype(jnp.float32), 1e-2)
    for a, b in ((t, p.astype(jnp.float16)), (t[:1], p), (t.astype(jnp.int32), p.astype(jnp.int32))):
        assert _jax_keras.forward_kl(a, b, EPS, -1) is None  # the core's program runs instead
    assert_same(keras(t[:1], p), generic(t[:1], p), 2e-7)
    assert_same(keras(t, p.astype(jnp.float16)), generic(t, p.astype(jnp.float16)), 1e-3)
