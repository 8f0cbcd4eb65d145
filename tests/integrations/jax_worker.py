"""``pmap`` and sharding checks for ``kldiv.jax`` on 2 host CPU devices (run by ``test_jax.py``; the
device count must be set before JAX starts). Prints one JSON object."""

from __future__ import annotations

import json
import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import kldiv.jax

OPTIONS = {"from_logits": True, "y_true_format": "logits", "temperature": 2.0}


def max_rel(a: object, b: object) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def main() -> dict[str, object]:
    devices = jax.devices()
    rng = np.random.default_rng(3)
    teacher = jnp.asarray(rng.normal(size=(2, 4, 3, 7)), dtype=jnp.float32)  # [device, batch, tokens, vocab]
    student = jnp.asarray(rng.normal(size=(2, 4, 3, 7)), dtype=jnp.float32)
    mask = jnp.asarray(rng.uniform(size=(2, 4, 3)) > 0.4)
    out: dict[str, object] = {"devices": len(devices), "jax": jax.__version__}

    # pmap: per-sample values equal the unmapped call.
    per_sample = jax.pmap(lambda t, p: kldiv.jax.kl_divergence(t, p, **OPTIONS))(teacher, student)
    out["pmap_per_sample"] = max_rel(per_sample, kldiv.jax.kl_divergence(teacher, student, **OPTIONS))

    # pmap data parallel: a replicated student weight, token_mean with the global count of kept
    # tokens, per-device gradients summed = the gradient of one big batch.
    inputs = jnp.asarray(rng.normal(size=(2, 4, 3, 5)), dtype=jnp.float32)
    weight = jnp.asarray(rng.normal(size=(5, 7)), dtype=jnp.float32)

    def shard_loss(w: jax.Array, x: jax.Array, t: jax.Array, m: jax.Array) -> jax.Array:
        count = jax.lax.psum(jnp.sum(m.astype(jnp.float32)), "batch")
        return kldiv.jax.kl_divergence(t, x @ w, reduction="token_mean", mask=m, num_items=count, **OPTIONS)

    grads = jax.pmap(
        lambda w, x, t, m: jax.lax.psum(jax.grad(shard_loss)(w, x, t, m), "batch"),
        axis_name="batch",
        in_axes=(None, 0, 0, 0),
    )(weight, inputs, teacher, mask)

    def full_loss(w: jax.Array) -> jax.Array:
        return kldiv.jax.kl_divergence(teacher, inputs @ w, reduction="token_mean", mask=mask, **OPTIONS)

    out["pmap_grad_vs_full_batch"] = max_rel(grads[0], jax.grad(full_loss)(weight))
    out["pmap_grad_replicas_equal"] = bool(jnp.all(grads[0] == grads[1]))

    # jit with inputs sharded over the batch axis: XLA inserts the collectives.
    mesh = Mesh(np.array(devices), ("batch",))
    sharding = NamedSharding(mesh, PartitionSpec("batch"))
    flat_t, flat_p, flat_m = (x.reshape(8, *x.shape[2:]) for x in (teacher, student, mask))
    sharded = [jax.device_put(x, sharding) for x in (flat_t, flat_p, flat_m)]

    @jax.jit
    def value_and_grad(t: jax.Array, p: jax.Array, m: jax.Array) -> tuple[jax.Array, jax.Array]:
        return jax.value_and_grad(
            lambda q: kldiv.jax.kl_divergence(t, q, reduction="token_mean", mask=m, **OPTIONS)
        )(p)

    value, grad = value_and_grad(*sharded)
    value_ref, grad_ref = value_and_grad(flat_t, flat_p, flat_m)
    out["sharded_input_devices"] = len(sharded[1].sharding.device_set)
    out["sharded_value"] = max_rel(value, value_ref)
    out["sharded_grad"] = max_rel(grad, grad_ref)
    out["sharded_grad_devices"] = len(grad.sharding.device_set)
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
