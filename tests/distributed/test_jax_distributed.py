"""``kldiv.distributed.jax``: vocabulary-parallel and batch-parallel divergences on sharded arrays.

The 4-device checks run in ``jax_worker.py`` under ``XLA_FLAGS=--xla_force_host_platform_device_count=4``
in a fresh interpreter (the flag only acts before JAX is imported, and other tests import JAX without
it). In-process checks use ``vmap`` with an ``axis_name`` (collectives over a batch axis, one device).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kldiv.jax
from kldiv.distributed import jax as kdj

from . import jax_worker
from .helpers import TOLERANCE, run_worker, worst

FLOAT32 = 2e-5


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return run_worker("jax_worker.py", XLA_FLAGS="--xla_force_host_platform_device_count=4")


def test_worker_runs_on_four_devices(report: dict[str, Any]) -> None:
    assert report["devices"] == 4 and report["platform"] == "cpu"
    assert [c["name"] for c in report["vocab"]] == list(jax_worker.VOCAB_CASES)
    assert [c["name"] for c in report["data"]] == list(jax_worker.DATA_CASES)


@pytest.mark.parametrize("group", ["vocab", "data", "mesh2x2"])
def test_sharded_value_and_grad_equal_single_device(report: dict[str, Any], group: str) -> None:
    """``vocab``: shard_map over the vocabulary; ``data``: shard_map over rows with
    ``num_items=global_num_items(...)``; ``mesh2x2``: both (with and without ``check_vma``), and plain
    ``kldiv.jax`` under ``jit`` with sharded inputs. float64, relative to the single-device result."""
    for case in report[group]:
        assert case["value_rel"] <= TOLERANCE, case
        assert case["grad_rel"] <= TOLERANCE, case
    largest, name = worst(report[group])
    print(f"jax {group}: largest relative difference {largest:.3g} ({name})")


def _stacked_shards(x: jax.Array, shards: int) -> jax.Array:
    """``[..., V]`` → ``[shards, ..., V / shards]`` (shard ``k`` holds entries ``k·V/shards ...``)."""
    return jnp.stack(jnp.split(x, shards, axis=-1))


@pytest.mark.parametrize(
    ("divergence", "options"),
    [
        ("kl", {"temperature": 2.0, "reduction": "token_mean"}),
        ("kl", {"direction": "reverse", "epsilon": 0, "reduction": "sum"}),
        ("js", {"beta": 0.3, "reduction": "batchmean"}),
    ],
)
def test_vmap_axis_name_equals_single_device(divergence: str, options: dict[str, Any]) -> None:
    """Collectives over a ``vmap`` axis: value and ``jax.grad`` of shard 0's loss equal the full loss."""
    rng = np.random.default_rng(0)
    teacher = jnp.asarray(2 * rng.normal(size=(3, 4, 12)), jnp.float32)
    student = jnp.asarray(rng.normal(size=(3, 4, 12)), jnp.float32)
    mask = jnp.asarray(rng.random((3, 4)) > 0.3)
    parallel = kdj.vocab_parallel_kl_divergence if divergence == "kl" else kdj.vocab_parallel_js_divergence
    single = kldiv.jax.kl_divergence if divergence == "kl" else kldiv.jax.js_divergence

    def sharded(s: jax.Array) -> jax.Array:
        losses = jax.vmap(
            lambda t, s: parallel(t, s, axis_name="vocab", mask=mask, **options), axis_name="vocab"
        )(_stacked_shards(teacher, 3), s)
        return losses[0]

    def reference(s: jax.Array) -> jax.Array:
        return single(teacher, s, mask=mask, y_true_format="logits", from_logits=True, **options)

    value, grad = jax.jit(jax.value_and_grad(sharded))(_stacked_shards(student, 3))
    expected, expected_grad = jax.jit(jax.value_and_grad(reference))(student)
    np.testing.assert_allclose(value, expected, rtol=FLOAT32)
    np.testing.assert_allclose(jnp.concatenate(list(grad), axis=-1), expected_grad, rtol=FLOAT32, atol=1e-7)


def test_jit_and_errors() -> None:
    teacher = jnp.zeros((2, 3, 4))
    with pytest.raises(ValueError, match="y_pred_format"):
        kdj.vocab_parallel_kl_divergence(teacher, teacher, axis_name="vocab", y_pred_format="probs")
    with pytest.raises(ValueError, match="equal shapes"):
        jax.vmap(lambda t, s: kdj.vocab_parallel_kl_divergence(t, s, axis_name="v"), axis_name="v")(
            teacher, jnp.zeros((2, 3, 5))
        )
    count = jax.jit(jax.vmap(lambda c: kdj.global_num_items(c, "d"), axis_name="d"))(jnp.arange(4.0))
    np.testing.assert_array_equal(count, [6.0] * 4)
