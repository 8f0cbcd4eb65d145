"""``kldiv.jax``: ``jit`` / ``grad`` / ``vmap`` equal eager, float64 reference, the optax-style helpers, and
``pmap`` / sharded ``jit`` on 2 host devices (subprocess, see ``jax_worker.py``)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import kldiv
import kldiv.jax

OPTION_SETS = {
    "default": {},
    "exact_reverse": {"epsilon": 0, "direction": "reverse"},
    "logits_T2_squared": {
        "y_true_format": "logits",
        "from_logits": True,
        "temperature": 2.0,
        "scale_by_temperature_squared": True,
    },
    "symmetric_log_probs": {
        "direction": "symmetric",
        "y_true_format": "log_probs",
        "y_pred_format": "log_probs",
    },
}
FLOAT32 = 2e-6


def _inputs(options: dict[str, Any], shape: tuple[int, ...] = (6, 3, 5), seed: int = 0) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    logits_t, logits_p = 2 * rng.normal(size=shape), rng.normal(size=shape)

    def convert(z: np.ndarray, fmt: str) -> jax.Array:
        log_probs = z - z.max(-1, keepdims=True)
        log_probs = log_probs - np.log(np.exp(log_probs).sum(-1, keepdims=True))
        return jnp.asarray(
            {"probs": np.exp(log_probs), "log_probs": log_probs, "logits": z}[fmt], jnp.float32
        )

    pred_format = "logits" if options.get("from_logits") else options.get("y_pred_format", "probs")
    return convert(logits_t, options.get("y_true_format", "probs")), convert(logits_p, pred_format)


@pytest.mark.parametrize("name", list(OPTION_SETS))
@pytest.mark.parametrize("reduction", ["none", "auto", "sum", "batchmean", "token_mean"])
def test_jit_equals_eager(name: str, reduction: str) -> None:
    options = OPTION_SETS[name]
    y_true, y_pred = _inputs(options)
    weight = jnp.linspace(0.0, 2.0, 6)
    mask = jnp.arange(18).reshape(6, 3) % 4 != 0

    def loss(t: jax.Array, p: jax.Array, w: jax.Array, m: jax.Array) -> jax.Array:
        return kldiv.jax.kl_divergence(t, p, w, reduction=reduction, mask=m, **options)

    eager = loss(y_true, y_pred, weight, mask)
    assert isinstance(eager, jax.Array)
    np.testing.assert_allclose(jax.jit(loss)(y_true, y_pred, weight, mask), eager, rtol=FLOAT32, atol=1e-7)


@pytest.mark.parametrize("name", list(OPTION_SETS))
def test_grad_equals_eager_and_float64(name: str, reference: Any) -> None:
    options = OPTION_SETS[name]
    y_true, y_pred = _inputs(options, shape=(4, 5))

    def loss(p: jax.Array) -> jax.Array:
        return kldiv.jax.kl_divergence(y_true, p, reduction="sum", **options)

    eager, jitted = jax.grad(loss)(y_pred), jax.jit(jax.grad(loss))(y_pred)
    np.testing.assert_allclose(jitted, eager, rtol=FLOAT32, atol=1e-6)
    reference_options = {
        "true_format": options.get("y_true_format", "probs"),
        "pred_format": "logits" if options.get("from_logits") else options.get("y_pred_format", "probs"),
        "direction": options.get("direction", "forward"),
        "temperature": options.get("temperature", 1.0),
        "epsilon": options.get("epsilon", 1e-7),
    }
    scale = options["temperature"] ** 2 if options.get("scale_by_temperature_squared") else 1.0

    def reference_loss(p: np.ndarray) -> float:
        return scale * float(np.sum(reference.divergence(np.asarray(y_true), p, **reference_options)))

    expected = reference.finite_difference_gradient(reference_loss, np.asarray(y_pred, np.float64))
    np.testing.assert_allclose(eager, expected, rtol=2e-3, atol=2e-4)


def test_value_and_grad_keras_closed_form() -> None:
    """Keras mode: d/dp of the mean loss is ``-w·t/p / N`` (``t`` clipped to ``[1e-7, 1]``)."""
    y_true, y_pred = _inputs({}, shape=(8, 4))
    weight = jnp.linspace(0.5, 1.5, 8)
    grad = jax.jit(jax.grad(lambda p: kldiv.jax.kl_divergence(y_true, p, weight, reduction="auto")))(y_pred)
    expected = -weight[:, None] * jnp.clip(y_true, 1e-7, 1.0) / y_pred / 8
    np.testing.assert_allclose(grad, expected, rtol=FLOAT32)


@pytest.mark.parametrize("name", list(OPTION_SETS))
def test_vmap_equals_batched_call(name: str) -> None:
    options = OPTION_SETS[name]
    y_true, y_pred = _inputs(options)
    batched = kldiv.jax.kl_divergence(y_true, y_pred, **options)
    mapped = jax.vmap(lambda t, p: kldiv.jax.kl_divergence(t, p, **options))(y_true, y_pred)
    np.testing.assert_allclose(mapped, batched, rtol=FLOAT32, atol=1e-7)
    per_example = jax.vmap(lambda t, p: kldiv.jax.kl_divergence(t, p, reduction="sum", **options))(
        y_true, y_pred
    )
    np.testing.assert_allclose(per_example, batched.sum(-1), rtol=FLOAT32, atol=1e-6)


def test_functions_equal_the_agnostic_api() -> None:
    y_true, y_pred = _inputs({})
    np.testing.assert_array_equal(
        kldiv.jax.kl_divergence(y_true, y_pred), kldiv.kl_divergence(y_true, y_pred)
    )
    np.testing.assert_array_equal(
        kldiv.jax.js_divergence(y_true, y_pred, reduction="sum", beta=0.2),
        kldiv.JSDivergence(reduction="sum", beta=0.2)(y_true, y_pred),
    )


def test_make_loss_is_optax_kl_divergence() -> None:
    rng = np.random.default_rng(1)
    log_predictions = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(5, 7)), jnp.float32))
    targets = jax.nn.softmax(jnp.asarray(rng.normal(size=(5, 7)), jnp.float32)).at[0, 0].set(0.0)
    loss = kldiv.jax.make_loss(y_pred_format="log_probs", epsilon=0)
    np.testing.assert_allclose(
        jax.jit(loss)(log_predictions, targets),
        optax.losses.kl_divergence(log_predictions, targets),
        rtol=FLOAT32,
    )
    where = jnp.array([True, False, True, True, False])
    masked = loss(log_predictions, targets, where=where)
    np.testing.assert_array_equal(masked[~where], 0.0)
    np.testing.assert_array_equal(masked[where], loss(log_predictions, targets)[where])
    with pytest.raises(ValueError, match="divergence"):
        kldiv.jax.make_loss("hellinger")


def test_make_train_step_with_optax() -> None:
    rng = np.random.default_rng(2)
    inputs = jnp.asarray(rng.normal(size=(32, 6)), jnp.float32)
    teacher = jnp.asarray(2 * rng.normal(size=(32, 4)), jnp.float32)
    params = {"w": jnp.zeros((6, 4)), "b": jnp.zeros(4)}
    optimizer = optax.sgd(0.5)

    def apply_fn(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        return x @ p["w"] + p["b"]

    options = {"from_logits": True, "y_true_format": "logits", "temperature": 2.0}
    step = kldiv.jax.make_train_step(apply_fn, optimizer, **options)
    state = optimizer.init(params)
    expected_value, expected_grads = jax.value_and_grad(
        lambda p: kldiv.KLDivergence(**options)(teacher, apply_fn(p, inputs))
    )(params)
    new_params, state, value = step(params, state, inputs, teacher)
    np.testing.assert_allclose(value, expected_value, rtol=FLOAT32)
    np.testing.assert_allclose(new_params["w"], -0.5 * expected_grads["w"], rtol=FLOAT32, atol=1e-7)
    losses = [float(value)]
    for _ in range(2):
        new_params, state, value = step(new_params, state, inputs, teacher)
        losses.append(float(value))
    assert losses[2] < losses[1] < losses[0]


@pytest.fixture(scope="module")
def two_devices(worker: Any) -> dict[str, Any]:
    return worker("jax_worker.py")


def test_pmap_and_sharded_jit(two_devices: dict[str, Any]) -> None:
    assert two_devices["devices"] == 2
    assert two_devices["pmap_per_sample"] <= FLOAT32
    assert two_devices["pmap_grad_vs_full_batch"] <= 1e-5
    assert two_devices["pmap_grad_replicas_equal"]
    assert two_devices["sharded_input_devices"] == 2 and two_devices["sharded_grad_devices"] == 2
    assert two_devices["sharded_value"] <= FLOAT32 and two_devices["sharded_grad"] <= FLOAT32
