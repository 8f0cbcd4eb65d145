"""JAX's form of exact mode's forward KL (:mod:`kldiv._jax_exact`) is the core's program: the same
values (to rounding), the same NaN/inf pattern and the same gradient as the generic masked program
and as NumPy's core, on hostile rows (zeros, −0, NaN, ±inf, negative entries, ``p = 0`` under
``t = 0`` and ``t > 0``, NaN, +inf and negative ``p`` under ``t = 0``, tiny and subnormal entries,
one-hot rows), eagerly, under ``jit``, ``vmap``, ``grad`` and ``jvp``; dtypes it does not serve
(float16, mixed, broadcast shapes) go to the core's program."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import kldiv  # noqa: E402
import kldiv.jax  # noqa: E402
from kldiv import _jax_exact, _namespace  # noqa: E402
from kldiv.core import divergences  # noqa: E402

from .helpers import assert_same_pattern as assert_same  # noqa: E402

NAN, INF = math.nan, math.inf

# Each row is one hostile case; each row's sum goes down its own branch of the fast form's test.
HOSTILE_T = [
    [0.25, 0.25, 0.25, 0.25],  # ordinary
    [0.0, 1.0, 0.0, 0.0],  # one-hot
    [0.0, 0.5, 0.5, 0.0],  # zeros where p = 0 (masked terms: finite)
    [0.5, 0.5, 0.0, 0.0],  # t > 0 where p = 0: +inf
    [-0.0, 0.5, 0.5, 0.0],  # negative zero
    [NAN, 0.5, 0.25, 0.25],  # NaN in t
    [0.25, 0.25, 0.25, 0.25],  # NaN in p
    [INF, 0.5, 0.25, 0.25],  # +inf in t
    [0.25, 0.25, 0.25, 0.25],  # +inf in p
    [-0.1, 0.6, 0.25, 0.25],  # negative t
    [0.25, 0.25, 0.25, 0.25],  # negative p
    [1e-30, 1e-38, 1e-41, 1.0],  # tiny and subnormal t (XLA flushes subnormals)
    [100.0, 0.5, 0.0, 0.0],  # small normal p: a ratio that overflows (t/p > 3.4e38)
    [2e-38, 1.0, 0.0, 0.0],  # small normal t against a large p: a ratio that underflows to 0
    [0.0, 0.0, 0.0, 1.0],  # t = 0 where p is NaN, +inf or negative (masked terms)
]
HOSTILE_P = [
    [0.1, 0.2, 0.3, 0.4],
    [0.1, 0.6, 0.2, 0.1],
    [0.0, 0.5, 0.5, 0.0],
    [0.0, 0.0, 0.5, 0.5],
    [0.25, 0.25, 0.25, 0.25],
    [0.25, 0.25, 0.25, 0.25],
    [NAN, 0.25, 0.25, 0.5],
    [0.25, 0.25, 0.25, 0.25],
    [INF, 0.25, 0.25, 0.5],
    [0.25, 0.25, 0.25, 0.25],
    [-0.1, 0.6, 0.25, 0.25],
    [0.25, 0.25, 0.25, 0.25],
    [2e-37, 0.5, 0.5, 0.5],
    [3e38, 1.0, 0.5, 0.5],
    [NAN, INF, -0.5, 0.5],
]


def generic(t, p, axis: int = -1):
    """The core's masked program itself (the special unregistered)."""
    special = divergences.EXACT_FORWARD_KL.pop("jax.numpy", None)
    try:
        return kldiv.kl_divergence(t, p, epsilon=0.0, axis=axis)
    finally:
        if special is not None:
            divergences.EXACT_FORWARD_KL["jax.numpy"] = special


def exact(t, p, axis: int = -1):
    return kldiv.kl_divergence(t, p, epsilon=0.0, axis=axis)


def hostile(dtype, rows: list[int]):
    t = np.asarray([HOSTILE_T[i] for i in rows], dtype=dtype)
    p = np.asarray([HOSTILE_P[i] for i in rows], dtype=dtype)
    return jnp.asarray(t), jnp.asarray(p)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [[0, 1, 11], [0, 1, 2, 4, 11, 13], list(range(len(HOSTILE_T)))])
def test_values_and_pattern_equal_the_generic_program(dtype, rows) -> None:
    # The first two sets are finite everywhere (the fast rows are returned); the last has every
    # hostile row (the fallback runs). Eager, jit and the registered special all agree.
    with jax.enable_x64(dtype == np.float64):
        t, p = hostile(dtype, rows)
        want = generic(t, p)
        rtol = 2e-6 if dtype == np.float32 else 1e-14
        assert_same(exact(t, p), want, rtol)
        assert_same(jax.jit(exact)(t, p), want, rtol)
        assert_same(_jax_exact.forward_kl(t, p, -1, divergences._exact_probs_program(jnp, -1)), want, rtol)


def test_equal_to_numpy_core_on_hostile_rows() -> None:
    t, p = hostile(np.float32, list(range(len(HOSTILE_T))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = kldiv.kl_divergence(np.asarray(t), np.asarray(p), epsilon=0.0, backend="core")
    got = np.asarray(jax.jit(exact)(t, p))
    # NumPy keeps subnormals where XLA's CPU code flushes them: row 11's subnormal entries are below
    # 1e-36 in NumPy, 0 in JAX — far below the tolerance.
    assert_same(got, want, 2e-6)


def test_random_rows_equal_the_generic_program_and_axis_0() -> None:
    rng = np.random.default_rng(5)
    t = rng.dirichlet(np.full(300, 0.05), size=64).astype(np.float32)  # many exact zeros after casting
    p = rng.dirichlet(np.full(300, 0.5), size=64).astype(np.float32)
    t[t < 1e-12] = 0.0
    t, p = jnp.asarray(t), jnp.asarray(p)
    assert_same(jax.jit(exact)(t, p), generic(t, p), 2e-6)
    assert_same(jax.jit(lambda a, b: exact(a, b, axis=0))(t.T, p.T), generic(t.T, p.T, axis=0), 2e-6)


@pytest.mark.parametrize("rows", [[0, 1, 2, 4], list(range(len(HOSTILE_T)))])
def test_gradients_equal_the_generic_program(rows) -> None:
    t, p = hostile(np.float32, rows)

    def loss(f):
        return lambda a, b: jnp.sum(jnp.where(jnp.isfinite(f(a, b)), f(a, b), 0.0))

    # argnums=1 is the closed-form rule (no tangent for t); 0 and (0, 1) differentiate the program.
    for argnums in (0, 1, (0, 1)):
        got = jax.jit(jax.grad(loss(exact), argnums=argnums))(t, p)
        want = jax.grad(loss(generic), argnums=argnums)(t, p)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(np.isnan(np.asarray(g)), np.isnan(np.asarray(w)))
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_mode_and_student_gradient_on_every_hostile_entry(dtype) -> None:
    # Every (t, p) pair of the hostile table, one entry per row, so each entry's derivative is seen
    # alone: grad w.r.t. p (the closed-form rule) and jvp with tangents for p only and for both.
    with jax.enable_x64(dtype == np.float64):
        t, p = hostile(dtype, list(range(len(HOSTILE_T))))
        t, p = t.reshape(-1, 2), p.reshape(-1, 2)
        got = jax.jit(jax.vmap(jax.grad(lambda a, b: exact(a[None], b[None])[0], argnums=1)))(t, p)
        want = jax.vmap(jax.grad(lambda a, b: generic(a[None], b[None])[0], argnums=1))(t, p)
        rtol = 1e-6 if dtype == np.float32 else 1e-14
        assert_same(got, want, rtol)
        rng = np.random.default_rng(8)
        dt, dp = (jnp.asarray(rng.normal(size=t.shape).astype(dtype)) for _ in range(2))
        for tangents in ((jnp.zeros_like(t), dp), (dt, dp)):
            _, got = jax.jvp(exact, (t, p), tangents)
            _, want = jax.jvp(generic, (t, p), tangents)
            assert_same(got, want, rtol)


def test_vmap_and_reductions_are_unchanged() -> None:
    t, p = hostile(np.float32, list(range(len(HOSTILE_T))))
    batched = jax.vmap(lambda a, b: exact(a[None], b[None])[0])(t, p)
    assert_same(batched, generic(t, p), 2e-6)
    weight = jnp.arange(len(HOSTILE_T), dtype=jnp.float32)
    finite_t, finite_p = hostile(np.float32, [0, 1, 2, 4, 11])
    for reduction in ("sum", "sum_over_batch_size", "none"):
        got = kldiv.jax.kl_divergence(
            finite_t, finite_p, epsilon=0.0, reduction=reduction, sample_weight=weight[:5]
        )
        special = divergences.EXACT_FORWARD_KL.pop("jax.numpy")
        try:
            want = kldiv.jax.kl_divergence(
                finite_t, finite_p, epsilon=0.0, reduction=reduction, sample_weight=weight[:5]
            )
        finally:
            divergences.EXACT_FORWARD_KL["jax.numpy"] = special
        assert_same(got, want, 2e-6)


def test_other_dtypes_and_shapes_take_the_core_program() -> None:
    calls = []

    def reference(a, b):
        calls.append(a.dtype)
        return divergences._exact_probs_program(jnp, -1)(a, b)

    t, p = hostile(np.float32, [0, 1])
    for a, b in ((t.astype(jnp.float16), p.astype(jnp.float16)), (t, p.astype(jnp.float16)), (t, p[:1])):
        _jax_exact.forward_kl(a, b, -1, reference)
    assert len(calls) == 3
    half = exact(t.astype(jnp.float16), p.astype(jnp.float16))
    assert half.dtype == jnp.float16
    assert_same(half, generic(t.astype(jnp.float16), p.astype(jnp.float16)), 1e-3)


def test_a_jax_array_registers_it() -> None:
    _namespace.namespace_of(jnp.ones(2))
    assert divergences.EXACT_FORWARD_KL["jax.numpy"] is _jax_exact.forward_kl
