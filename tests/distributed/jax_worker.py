"""``kldiv.distributed.jax`` on 4 host devices, run by ``test_jax_distributed.py`` in a fresh interpreter.

``XLA_FLAGS=--xla_force_host_platform_device_count=4`` must be set before JAX is imported, so this runs
as its own process (the parent sets the flag). float64 throughout. Every case compares the value and
``jax.grad`` of a sharded, jitted program with the single-device ``kldiv.jax`` (``backend="core"``)
result; all cases of a group are traced into one ``jit`` (one compilation). Prints one JSON report:

* ``vocab``: ``shard_map`` over a 4-device ``"vocab"`` axis, :func:`vocab_parallel_kl_divergence` /
  :func:`vocab_parallel_js_divergence`, every direction, JS(β), formats, Keras / exact mode, masks.
* ``data``: ``shard_map`` over a 4-device ``"data"`` axis, a replicated linear student, uneven masks per
  shard, ``num_items=global_num_items(...)`` and ``psum``: value and parameter gradient.
* ``mesh2x2``: both at once on a ``("data", "vocab")`` mesh; ``gspmd``: plain ``kldiv.jax`` under ``jit``
  with inputs sharded over rows and vocabulary (XLA inserts the collectives).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import kldiv.jax
from kldiv.distributed import jax as kdj

jax.config.update("jax_enable_x64", True)

V = 12
# name: (divergence, options, reduction, inputs, extras); inputs picks the teacher / student arrays.
VOCAB_CASES: dict[str, tuple[str, dict[str, Any], Any, str, dict[str, Any]]] = {
    "forward_keras_T2_squared_batchmean_mask": (
        "kl",
        {"temperature": 2.0, "scale_by_temperature_squared": True},
        "batchmean",
        "normal",
        {"mask": True},
    ),
    "reverse_exact_token_mean_labels": (
        "kl",
        {"epsilon": 0, "direction": "reverse"},
        "token_mean",
        "normal",
        {"labels": True},
    ),
    "symmetric_keras_auto": ("kl", {"direction": "symmetric"}, "auto", "normal", {}),
    "symmetric_exact_inf_common_none": (
        "kl",
        {"epsilon": 0, "direction": "symmetric"},
        "none",
        "inf_common",
        {},
    ),
    "forward_keras_clipped_sum": ("kl", {}, "sum", "extreme", {}),
    "forward_exact_inf_teacher_token_mean_num_items": (
        "kl",
        {"epsilon": 0},
        "token_mean",
        "inf_teacher",
        {"mask": True, "num_items": 6.0},
    ),
    "forward_teacher_log_probs_mean_with_sample_weight": (
        "kl",
        {"y_true_format": "log_probs"},
        "mean_with_sample_weight",
        "log_probs",
        {"weight": True},
    ),
    "reverse_log_probs_exact_sum_over_batch_size": (
        "kl",
        {"y_true_format": "log_probs", "y_pred_format": "log_probs", "epsilon": 0, "direction": "reverse"},
        "sum_over_batch_size",
        "log_probs",
        {},
    ),
    "js0.5_exact_token_mean_mask": ("js", {"epsilon": 0}, "token_mean", "normal", {"mask": True}),
    "js0.2_keras_T1.5_sum": ("js", {"beta": 0.2, "temperature": 1.5}, "sum", "extreme", {}),
    "js0.7_exact_inf_teacher_batchmean": ("js", {"epsilon": 0, "beta": 0.7}, "batchmean", "inf_teacher", {}),
    "js1_exact_sum": ("js", {"epsilon": 0, "beta": 1.0}, "sum", "normal", {}),
    # Logit maps: element-wise on each shard; -inf slots stay -inf, logits of ~25 saturate a cap of 3.
    "forward_exact_softcaps_inf_common_token_mean_mask": (
        "kl",
        {"epsilon": 0, "student_softcap": 3.0, "teacher_softcap": 5.0, "teacher_logit_scale": 0.7},
        "token_mean",
        "inf_common",
        {"mask": True},
    ),
    "js0.3_keras_softcap_scale_T2_sum": (
        "js",
        {"beta": 0.3, "temperature": 2.0, "student_softcap": 3.0, "student_logit_scale": 1.3},
        "sum",
        "extreme",
        {},
    ),
}


def rel(value: Any, reference: Any) -> float:
    """``max |value − reference| / max |reference|`` (infinities must sit at the same places)."""
    value, reference = np.asarray(value, np.float64), np.asarray(reference, np.float64)
    finite = np.isfinite(reference)
    if not np.array_equal(finite, np.isfinite(value)) or not np.array_equal(
        value[~finite], reference[~finite]
    ):
        return math.inf
    if not finite.any():
        return 0.0
    scale = float(np.abs(reference[finite]).max())
    return float(np.abs(value[finite] - reference[finite]).max()) / max(scale, 1e-300)


def vocab_inputs(axis: int = -1) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    shape = (3, 5, V)
    teacher, student = 2 * rng.normal(size=shape), 2 * rng.normal(size=shape)
    holes = rng.random(shape) < 0.25
    arrays = {
        "normal": (teacher, student),
        "extreme": (12.5 * teacher, 12.5 * student),
        "inf_teacher": (np.where(holes, -np.inf, teacher), student),
        "inf_common": (np.where(holes, -np.inf, teacher), np.where(holes, -np.inf, student)),
        "log_probs": (
            np.asarray(jax.nn.log_softmax(teacher, axis=-1)),
            np.asarray(jax.nn.log_softmax(student, axis=-1)),
        ),
    }
    return {
        "arrays": {k: tuple(jnp.asarray(np.moveaxis(x, -1, axis)) for x in v) for k, v in arrays.items()},
        "mask": jnp.asarray(rng.random((3, 5)) > 0.3),
        "labels": jnp.asarray(np.where(rng.random((3, 5)) < 0.3, -100, rng.integers(0, V, (3, 5)))),
        "weight": jnp.asarray(rng.random((3, 5)) + 0.5),
        "upstream": jnp.asarray(rng.normal(size=(3, 5))),
    }


def call_arguments(case: tuple, data: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    _, options, reduction, _, extras = case
    call: dict[str, Any] = {"reduction": reduction, **options}
    for key in ("mask", "labels"):
        if extras.get(key):
            call[key] = data[key]
    if extras.get("weight"):
        call["sample_weight"] = data["weight"]
    if "num_items" in extras:
        call["num_items"] = jnp.asarray(extras["num_items"])
    return call, (data["upstream"] if reduction == "none" else None)


def scalar(values: Any, upstream: Any) -> Any:
    """The loss itself, or ``Σ upstream · values`` for ``reduction="none"`` (a random grad_output)."""
    return values if upstream is None else jnp.sum(upstream * values)


def reference(divergence: str, teacher: Any, student: Any, call: dict[str, Any], upstream: Any) -> Any:
    function = kldiv.jax.kl_divergence if divergence == "kl" else kldiv.jax.js_divergence
    formats = {"y_true_format": "logits", "y_pred_format": "logits"}
    call = {**formats, **call, "backend": "core"}
    return jax.value_and_grad(lambda s: scalar(function(teacher, s, **call), upstream))(student)


def run_vocab(mesh: Any) -> list[dict[str, Any]]:
    data = vocab_inputs()
    spec = NamedSharding(mesh, P(None, None, "vocab"))
    replicated = NamedSharding(mesh, P())
    sharded = {k: tuple(jax.device_put(x, spec) for x in v) for k, v in data["arrays"].items()}
    extras = {k: jax.device_put(data[k], replicated) for k in ("mask", "labels", "weight", "upstream")}

    def parallel_all(sharded_arrays: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, case in VOCAB_CASES.items():
            divergence, inputs = case[0], case[3]
            function = (
                kdj.vocab_parallel_kl_divergence if divergence == "kl" else kdj.vocab_parallel_js_divergence
            )

            def local(t: Any, s: Any, extra: dict, case: tuple = case, function: Any = function) -> Any:
                call, upstream = call_arguments(case, extra)  # row arrays enter as (replicated) arguments
                return scalar(function(t, s, axis_name="vocab", **call), upstream)

            mapped = jax.shard_map(
                local,
                mesh=mesh,
                in_specs=(P(None, None, "vocab"), P(None, None, "vocab"), P()),
                out_specs=P(),
            )
            out[name] = jax.value_and_grad(mapped, argnums=1)(*sharded_arrays[inputs], extra)
        return out

    def reference_all(arrays: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, case in VOCAB_CASES.items():
            call, upstream = call_arguments(case, extra)
            out[name] = reference(case[0], *arrays[case[3]], call, upstream)
        return out

    with jax.set_mesh(mesh):
        got = jax.jit(parallel_all)(sharded, extras)
    expected = jax.jit(reference_all)(data["arrays"], {k: data[k] for k in extras})
    return [
        {
            "name": name,
            "value_rel": rel(got[name][0], expected[name][0]),
            "grad_rel": rel(got[name][1], expected[name][1]),
            "value": float(expected[name][0]),
        }
        for name in VOCAB_CASES
    ]


def data_inputs() -> dict[str, Any]:
    rng = np.random.default_rng(1)
    mask = rng.random((8, 3)) > 0.4
    mask[0:2] = [[True, True, True], [True, False, True]]  # shard 0 keeps 5 tokens
    mask[2:4] = False  # shard 1 keeps none
    labels = np.where(mask, rng.integers(0, 7, (8, 3)), -100)
    return {
        "x": jnp.asarray(rng.normal(size=(8, 3, 6))),
        "teacher": jnp.asarray(2 * rng.normal(size=(8, 3, 7))),
        "mask": jnp.asarray(mask),
        "labels": jnp.asarray(labels),
        "w": jnp.asarray(rng.normal(size=(6, 7))),
    }


# name: (divergence, options, reduction, what num_items counts)
DATA_CASES = {
    "kl_token_mean_mask_T2": (
        "kl",
        {"temperature": 2.0, "y_true_format": "logits", "from_logits": True},
        "token_mean",
        "tokens",
    ),
    "js_batchmean_labels": (
        "js",
        {"beta": 0.3, "epsilon": 0, "y_true_format": "logits", "from_logits": True},
        "batchmean",
        "sequences",
    ),
    "reverse_keras3_mean_mask": (
        "kl",
        {"direction": "reverse", "y_true_format": "logits", "from_logits": True},
        "mean",
        "tokens",
    ),
}


def data_call(case: tuple, mask: Any, labels: Any, x: Any, axis_name: str | None) -> dict[str, Any]:
    _, options, reduction, counts = case
    call: dict[str, Any] = {"reduction": reduction, **options}
    if counts == "tokens":
        call["mask"] = mask
        local = jnp.sum(mask.astype(jnp.float64))
    else:
        call["labels"] = labels
        local = jnp.asarray(float(x.shape[0]))
    if axis_name is not None:
        call["num_items"] = kdj.global_num_items(local, axis_name)
    return call


def run_data(mesh: Any) -> list[dict[str, Any]]:
    data = data_inputs()
    rows = NamedSharding(mesh, P("data"))
    sharded = {k: jax.device_put(data[k], rows) for k in ("x", "teacher", "mask", "labels")}
    w = jax.device_put(data["w"], NamedSharding(mesh, P()))

    def parallel_all(w: Any, x: Any, teacher: Any, mask: Any, labels: Any) -> dict[str, Any]:
        out = {}
        for name, case in DATA_CASES.items():
            function = kldiv.jax.kl_divergence if case[0] == "kl" else kldiv.jax.js_divergence

            def local(
                w: Any, x: Any, t: Any, m: Any, lab: Any, case: tuple = case, function: Any = function
            ) -> Any:
                loss = function(t, x @ w, **data_call(case, m, lab, x, "data"), backend="core")
                return jax.lax.psum(loss, "data")

            mapped = jax.shard_map(
                local, mesh=mesh, in_specs=(P(), P("data"), P("data"), P("data"), P("data")), out_specs=P()
            )
            out[name] = jax.value_and_grad(mapped)(w, x, teacher, mask, labels)
        return out

    def reference_all(w: Any, x: Any, teacher: Any, mask: Any, labels: Any) -> dict[str, Any]:
        out = {}
        for name, case in DATA_CASES.items():
            function = kldiv.jax.kl_divergence if case[0] == "kl" else kldiv.jax.js_divergence
            call = data_call(case, mask, labels, x, None)
            out[name] = jax.value_and_grad(
                lambda w, call=call, function=function: function(teacher, x @ w, **call, backend="core")
            )(w)
        return out

    with jax.set_mesh(mesh):
        got = jax.jit(parallel_all)(w, *(sharded[k] for k in ("x", "teacher", "mask", "labels")))
    expected = jax.jit(reference_all)(data["w"], data["x"], data["teacher"], data["mask"], data["labels"])
    return [
        {
            "name": name,
            "value_rel": rel(got[name][0], expected[name][0]),
            "grad_rel": rel(got[name][1], expected[name][1]),
        }
        for name in DATA_CASES
    ]


def run_mesh2x2(mesh: Any) -> list[dict[str, Any]]:
    """Rows over ``"data"`` with a global token count, vocabulary over ``"vocab"``; and GSPMD."""
    rng = np.random.default_rng(2)
    teacher, student = jnp.asarray(2 * rng.normal(size=(4, 3, V))), jnp.asarray(rng.normal(size=(4, 3, V)))
    mask = jnp.asarray(rng.random((4, 3)) > 0.4).at[2:].set(False).at[3, 0].set(True)
    options = {
        "temperature": 2.0,
        "scale_by_temperature_squared": True,
        "direction": "symmetric",
        "epsilon": 0,
    }
    both = NamedSharding(mesh, P("data", None, "vocab"))
    rows = NamedSharding(mesh, P("data"))

    def local(t: Any, s: Any, m: Any) -> Any:
        count = kdj.global_num_items(jnp.sum(m.astype(jnp.float64)), "data")
        loss = kdj.vocab_parallel_kl_divergence(
            t, s, axis_name="vocab", reduction="token_mean", mask=m, num_items=count, **options
        )
        return jax.lax.psum(loss, "data")

    specs = (P("data", None, "vocab"), P("data", None, "vocab"), P("data"))
    mapped = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P())
    formats = {"y_true_format": "logits", "y_pred_format": "logits", "backend": "core"}

    def plain(t: Any, s: Any, m: Any) -> Any:
        return kldiv.jax.kl_divergence(t, s, reduction="token_mean", mask=m, **options, **formats)

    unchecked = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P(), check_vma=False)
    placed = (jax.device_put(teacher, both), jax.device_put(student, both), jax.device_put(mask, rows))
    with jax.set_mesh(mesh):
        got = jax.jit(jax.value_and_grad(mapped, argnums=1))(*placed)
        got_unchecked = jax.jit(jax.value_and_grad(unchecked, argnums=1))(*placed)
        gspmd = jax.jit(jax.value_and_grad(plain, argnums=1))(*placed)
    expected = jax.jit(jax.value_and_grad(plain, argnums=1))(teacher, student, mask)
    return [
        {
            "name": "shard_map_data_x_vocab",
            "value_rel": rel(got[0], expected[0]),
            "grad_rel": rel(got[1], expected[1]),
        },
        {
            "name": "shard_map_data_x_vocab_check_vma_false",
            "value_rel": rel(got_unchecked[0], expected[0]),
            "grad_rel": rel(got_unchecked[1], expected[1]),
        },
        {
            "name": "gspmd_jit_sharded_inputs",
            "value_rel": rel(gspmd[0], expected[0]),
            "grad_rel": rel(gspmd[1], expected[1]),
        },
    ]


def main() -> None:
    begin = time.perf_counter()
    devices = jax.devices()
    report: dict[str, Any] = {"devices": len(devices), "platform": devices[0].platform}
    report["vocab"] = run_vocab(jax.make_mesh((4,), ("vocab",)))
    report["data"] = run_data(jax.make_mesh((4,), ("data",)))
    report["mesh2x2"] = run_mesh2x2(jax.make_mesh((2, 2), ("data", "vocab")))
    report["seconds"] = time.perf_counter() - begin
    print(json.dumps(report))


if __name__ == "__main__":
    main()
