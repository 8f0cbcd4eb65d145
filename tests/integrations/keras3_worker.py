"""Every Keras 3 check of ``kldiv.keras`` for ONE backend; run by ``test_keras3.py`` in a process of its
own (``KERAS_BACKEND`` is fixed per process). Prints one JSON object on stdout.

Tiny problems only: a Dense layer on 32 samples, 3 SGD steps (one full batch per epoch, so Keras'
per-epoch ``history`` holds the per-step losses). What is measured:

* ``default_fit``: ``fit`` histories with ``keras.losses.KLDivergence`` and with
  ``kldiv.keras.KLDivergence()`` from the same initial weights, then ``evaluate``.
* ``options_fit``: non-default options, each step's loss against the float64 reference program
  (``tests/distillation/reference.py``) evaluated on the weights the step started from.
* ``save_load``: ``model.save("m.keras")`` / ``keras.models.load_model`` without ``custom_objects``.
* ``mask``: a ``Masking`` layer's ``_keras_mask`` reaching the loss, against Keras' own loss.
* ``policies``: ``mixed_float16`` / ``mixed_bfloat16`` global policies (fit) and a ``mixed_bfloat16``
  loss dtype (direct call, against float64).
* ``reductions``: every Keras 3 reduction name with a sample weight, against Keras' own loss.
* ``direct_options``: direct calls with options against float64; ``symbolic``: ``KerasTensor`` inputs.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: tests.*

from tests.distillation import reference

STEPS = 3
BATCH = 32
RNG = np.random.default_rng(20240607)
X = RNG.normal(size=(BATCH, 6)).astype("float32")
TEACHER_LOGITS = (2.0 * RNG.normal(size=(BATCH, 4))).astype("float32")


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype("float32")


TARGETS = softmax(TEACHER_LOGITS)


def max_diff(a: Any, b: Any) -> dict[str, float]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    abs_diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return {"abs": abs_diff, "rel": abs_diff / scale if scale else abs_diff}


def main() -> dict[str, Any]:
    import keras

    import kldiv
    import kldiv.keras
    from kldiv.options import Options

    def numpy(x: Any) -> np.ndarray:
        return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")), dtype=np.float64)

    def dense_model(activation: str | None = "softmax") -> Any:
        keras.utils.set_random_seed(7)
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation=activation)])

    def fit(model: Any, loss: Any, x: Any = X, y: Any = TARGETS, **fit_kwargs: Any) -> list[float]:
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss)
        history = model.fit(x, y, batch_size=BATCH, epochs=STEPS, shuffle=False, verbose=0, **fit_kwargs)
        return [float(v) for v in history.history["loss"]]

    out: dict[str, Any] = {
        "backend": keras.backend.backend(),
        "versions": {"keras": keras.__version__, kldiv.__name__: kldiv.__version__},
        "steps": STEPS,
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        out["versions"]["tensorflow"] = tf.__version__
    elif keras.backend.backend() == "jax":
        import jax

        out["versions"]["jax"] = jax.__version__
    else:
        import torch

        out["versions"]["torch"] = torch.__version__

    timings: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(section: str) -> None:
        now = time.perf_counter()
        timings[section], clock[0] = round(now - clock[0], 2), now

    # default_fit: kldiv with default options against Keras' own KLDivergence, step by step.
    keras_model, kldiv_model = dense_model(), dense_model()
    keras_history = fit(keras_model, keras.losses.KLDivergence())
    kldiv_history = fit(kldiv_model, kldiv.keras.KLDivergence())
    out["default_fit"] = {
        "keras": keras_history,
        "kldiv": kldiv_history,
        "diff": max_diff(kldiv_history, keras_history),
        "evaluate_diff": max_diff(
            kldiv_model.evaluate(X, TARGETS, verbose=0), keras_model.evaluate(X, TARGETS, verbose=0)
        ),
        "weights_diff": max_diff(kldiv_model.get_weights()[0], keras_model.get_weights()[0]),
    }

    lap("default_fit")

    # options_fit: one SGD step at a time; each logged loss against float64 on the starting weights.
    cases = {
        "logits_T2_squared": (
            kldiv.keras.KLDivergence(
                y_true_format="logits", from_logits=True, temperature=2.0, scale_by_temperature_squared=True
            ),
            None,
            TEACHER_LOGITS,
            lambda t, z: (
                4.0
                * reference.divergence(
                    t, z, true_format="logits", pred_format="logits", temperature=2.0, epsilon=1e-7
                )
            ),
        ),
        "symmetric_exact": (
            kldiv.keras.KLDivergence(direction="symmetric", epsilon=0),
            "softmax",
            TARGETS,
            lambda t, z: reference.divergence(t, softmax_64(z), direction="symmetric"),
        ),
        "jsd_beta03_logits": (
            kldiv.keras.JSDivergence(beta=0.3, from_logits=True, epsilon=0),
            None,
            TARGETS,
            lambda t, z: reference.divergence(t, z, pred_format="logits", beta=0.3),
        ),
    }
    options_fit = {}
    for name, (loss, activation, targets, per_sample_64) in cases.items():
        model = dense_model(activation)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss)
        logged, expected = [], []
        for _ in range(STEPS):
            kernel, bias = (w.astype(np.float64) for w in model.get_weights())
            logits = X.astype(np.float64) @ kernel + bias
            expected.append(float(np.mean(per_sample_64(targets.astype(np.float64), logits))))
            history = model.fit(X, targets, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
            logged.append(float(history.history["loss"][0]))
        options_fit[name] = {"kldiv": logged, "float64": expected, "diff": max_diff(logged, expected)}
    out["options_fit"] = options_fit

    lap("options_fit")

    # save_load: the .keras format, loaded without custom_objects (importing kldiv.keras registered it).
    with tempfile.TemporaryDirectory() as tmp:
        saved = dense_model()
        saved.compile(
            optimizer=keras.optimizers.SGD(0.5),
            loss=kldiv.keras.KLDivergence(from_logits=False, temperature=1.5, reduction="sum", name="kl_t"),
        )
        saved.fit(X, TARGETS, batch_size=BATCH, epochs=1, verbose=0)
        path = Path(tmp) / "m.keras"
        saved.save(path)
        loaded = keras.models.load_model(path)
    after = [fit_one(m) for m in (saved, loaded)]
    out["save_load"] = {
        "loss_type": f"{type(loaded.loss).__module__}.{type(loaded.loss).__name__}",
        "config_equal": loaded.loss.get_config() == saved.loss.get_config(),
        "config": loaded.loss.get_config(),
        "evaluate_diff": max_diff(after[1][0], after[0][0]),
        "next_step_diff": max_diff(after[1][1], after[0][1]),
    }

    lap("save_load")

    # mask: Masking -> Dense; padded time steps carry _keras_mask = False into the loss.
    seq_x = RNG.normal(size=(BATCH, 5, 3)).astype("float32")
    lengths = RNG.integers(1, 6, size=BATCH)
    seq_x[np.arange(5)[None, :] >= lengths[:, None]] = 0.0
    seq_y = softmax(RNG.normal(size=(BATCH, 5, 4)))

    def masked_model() -> Any:
        keras.utils.set_random_seed(7)
        return keras.Sequential(
            [keras.Input((5, 3)), keras.layers.Masking(0.0), keras.layers.Dense(4, activation="softmax")]
        )

    keras_masked = fit(masked_model(), keras.losses.KLDivergence(), seq_x, seq_y)
    kldiv_masked = fit(masked_model(), kldiv.keras.KLDivergence(), seq_x, seq_y)
    keras.utils.set_random_seed(7)  # the same weights without Masking: the mask changes the loss
    unmasked = keras.Sequential([keras.Input((5, 3)), keras.layers.Dense(4, activation="softmax")])
    out["mask"] = {
        "keras": keras_masked,
        "kldiv": kldiv_masked,
        "diff": max_diff(kldiv_masked, keras_masked),
        "unmasked_first_loss": fit(unmasked, kldiv.keras.KLDivergence(), seq_x, seq_y)[0],
    }

    lap("mask")

    # policies: global mixed policies (Dense runs in float16/bfloat16, the loss in float32).
    policies = {}
    for policy in ("mixed_float16", "mixed_bfloat16"):
        keras.config.set_dtype_policy(policy)
        try:
            keras_run = fit(dense_model(), keras.losses.KLDivergence())
            kldiv_run = fit(dense_model(), kldiv.keras.KLDivergence())
            output_dtype = str(dense_model()(X[:2]).dtype)
        finally:
            keras.config.set_dtype_policy("float32")
        policies[policy] = {
            "keras": keras_run,
            "kldiv": kldiv_run,
            "diff": max_diff(kldiv_run, keras_run),
            "model_output_dtype": output_dtype,
        }
    predictions = softmax(RNG.normal(size=(BATCH, 4)))
    reference_value = float(np.mean(reference.divergence(TARGETS, predictions, epsilon=1e-7)))
    bf16_kldiv = kldiv.keras.KLDivergence(dtype="mixed_bfloat16")(TARGETS, predictions)
    bf16_keras = keras.losses.KLDivergence(dtype="mixed_bfloat16")(TARGETS, predictions)
    policies["loss_dtype_mixed_bfloat16"] = {
        "dtype": str(bf16_kldiv.dtype),
        "kldiv_error": max_diff(numpy(bf16_kldiv), reference_value),
        "keras_error": max_diff(numpy(bf16_keras), reference_value),
    }
    out["policies"] = policies

    lap("policies")

    # reductions: every Keras 3 name, with a per-sample weight, against Keras' own loss.
    weight = RNG.uniform(0.0, 2.0, size=BATCH).astype("float32")
    reductions = {}
    for reduction in ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None):
        ours = kldiv.keras.KLDivergence(reduction=reduction)(TARGETS, predictions, sample_weight=weight)
        theirs = keras.losses.KLDivergence(reduction=reduction)(TARGETS, predictions, sample_weight=weight)
        reductions[str(reduction)] = max_diff(numpy(ours), numpy(theirs))
    auto = kldiv.keras.KLDivergence(reduction="auto")
    reductions["auto_is"] = auto.reduction
    try:
        kldiv.keras.KLDivergence(reduction="batchmean")
        reductions["unknown_raises"] = False
    except ValueError:
        reductions["unknown_raises"] = True
    out["reductions"] = reductions

    lap("reductions")

    # direct_options: eager calls with options, against float64.
    logits = RNG.normal(size=(BATCH, 4)).astype("float32")
    direct = {
        "reverse_keras_eps": (
            kldiv.keras.KLDivergence(direction="reverse"),
            (TARGETS, predictions),
            reference.divergence(TARGETS, predictions, direction="reverse", epsilon=1e-7),
        ),
        "log_probs_exact": (
            kldiv.keras.KLDivergence(y_true_format="log_probs", y_pred_format="log_probs", epsilon=0),
            (np.log(TARGETS), np.log(predictions)),
            reference.divergence(
                np.log(TARGETS), np.log(predictions), true_format="log_probs", pred_format="log_probs"
            ),
        ),
        "jsd_logits_T3": (
            kldiv.keras.JSDivergence(
                beta=0.5, y_true_format="logits", from_logits=True, temperature=3.0, epsilon=0
            ),
            (TEACHER_LOGITS, logits),
            reference.divergence(
                TEACHER_LOGITS, logits, true_format="logits", pred_format="logits", beta=0.5, temperature=3.0
            ),
        ),
    }
    capped = 2.0 * np.tanh(1.3 * logits.astype(np.float64) / 2.0)  # Gemma's cap of Cohere's scale, by hand
    teacher_capped = 1.5 * np.tanh(TEACHER_LOGITS.astype(np.float64) / 1.5)
    maps = {"student_softcap": 2.0, "student_logit_scale": 1.3, "teacher_softcap": 1.5}
    direct["softcap_logits_T2"] = (
        kldiv.keras.KLDivergence(
            y_true_format="logits", from_logits=True, temperature=2.0, epsilon=0, **maps
        ),
        (TEACHER_LOGITS, logits),
        reference.divergence(
            teacher_capped, capped, true_format="logits", pred_format="logits", temperature=2.0
        ),
    )
    out["direct_options"] = {
        name: max_diff(numpy(loss(*inputs)), float(np.mean(expected)))
        for name, (loss, inputs, expected) in direct.items()
    }
    # A soft-capped loss serializes (get_config / from_config, and inside a saved .keras model).
    softcap = kldiv.keras.JSDivergence(y_true_format="logits", from_logits=True, **maps)
    softcap_config = softcap.get_config()
    restored = kldiv.keras.JSDivergence.from_config(softcap_config)
    out["softcap_config"] = {
        "maps": {key: softcap_config.get(key) for key in (*maps, "teacher_logit_scale")},
        "round_trip": restored.get_config() == softcap_config,
        "same_value": float(numpy(restored(TEACHER_LOGITS, logits)))
        == float(numpy(softcap(TEACHER_LOGITS, logits))),
        "serialized": keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(softcap)
        ).get_config()
        == softcap_config,
    }

    lap("direct_options")

    # config: every kldiv option is saved (read from the Options dataclass), dtype is Keras'.
    config = kldiv.keras.KLDivergence(dtype="mixed_bfloat16", temperature=2.0).get_config()
    fields = [field for field in Options.__dataclass_fields__ if field not in ("dtype", "beta")]
    js_config = kldiv.keras.JSDivergence().get_config()
    js_fields = [field for field in Options.__dataclass_fields__ if field not in ("dtype", "direction")]
    out["config"] = {
        "missing_options": [field for field in fields if field not in config]
        + [f"JSDivergence.{field}" for field in js_fields if field not in js_config],
        "dtype": config["dtype"],
        "round_trip": kldiv.keras.KLDivergence.from_config(config).get_config() == config,
        "registered_name": keras.saving.get_registered_name(kldiv.keras.KLDivergence),
    }

    lap("config")

    # symbolic: KerasTensor inputs go through the keras.ops namespace.
    symbolic = kldiv.keras.KLDivergence(reduction=None, from_logits=True, epsilon=0)(
        keras.KerasTensor((None, 7, 4)), keras.KerasTensor((None, 7, 4))
    )
    out["symbolic"] = {"type": type(symbolic).__name__, "shape": list(symbolic.shape)}
    lap("symbolic")
    out["seconds"] = timings
    return out


def softmax_64(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def fit_one(model: Any) -> tuple[float, float]:
    """(evaluate, loss of one more SGD step) of a compiled model."""
    value = float(model.evaluate(X, TARGETS, verbose=0))
    history = model.fit(X, TARGETS, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return value, float(history.history["loss"][0])


if __name__ == "__main__":
    print(json.dumps(main()))
