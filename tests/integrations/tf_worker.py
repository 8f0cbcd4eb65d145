"""Every TensorFlow check (tf_keras adapter, TF tensors in the agnostic API, tf.distribute); run by
``test_tf_keras.py`` in a process of its own, because the two logical CPU devices that
``MirroredStrategy`` needs must be configured before TensorFlow initialises. Prints one JSON object.

* ``tf_tensors``: ``kldiv.KLDivergence`` / ``kldiv.kl_divergence`` on TF tensors, eager, in
  ``tf.function`` with unknown batch dimensions and with ``jit_compile=True``, against NumPy inputs;
  ``tf.GradientTape`` gradients against tf_keras' own loss and the closed form ``-w·t/p/N``.
* ``fit``: ``compile``/``fit``/``evaluate`` (3 SGD steps, also ``jit_compile=True``) against
  ``tf_keras.losses.KLDivergence``; non-default options step by step against float64.
* ``save_load``: SavedModel, ``.h5`` and ``.keras``, loaded without ``custom_objects``.
* ``distribute``: ``MirroredStrategy`` over 2 logical CPUs: the ``ValueError`` outside ``fit``; ``fit``
  inside the scope against tf_keras' own loss and a single device; a custom loop with ``SUM`` divided
  by the global batch size against single-device gradients.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: tests.*

from tests.distillation import reference

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)

import tf_keras  # noqa: E402

import kldiv  # noqa: E402
import kldiv.tf_keras  # noqa: E402

STEPS = 3
BATCH = 32
RNG = np.random.default_rng(99)
X = RNG.normal(size=(BATCH, 6)).astype("float32")
TEACHER_LOGITS = (2.0 * RNG.normal(size=(BATCH, 4))).astype("float32")


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


TARGETS = softmax(TEACHER_LOGITS).astype("float32")
PREDICTIONS = softmax(RNG.normal(size=(BATCH, 4))).astype("float32")


def max_diff(a: Any, b: Any) -> dict[str, float]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    abs_diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return {"abs": abs_diff, "rel": abs_diff / scale if scale else abs_diff}


def dense_model(activation: str | None = "softmax") -> Any:
    tf_keras.utils.set_random_seed(3)
    return tf_keras.Sequential([tf_keras.Input((6,)), tf_keras.layers.Dense(4, activation=activation)])


def fit(model: Any, loss: Any, **compile_kwargs: Any) -> list[float]:
    model.compile(optimizer=tf_keras.optimizers.SGD(0.5), loss=loss, **compile_kwargs)
    history = model.fit(X, TARGETS, batch_size=BATCH, epochs=STEPS, shuffle=False, verbose=0)
    return [float(v) for v in history.history["loss"]]


def tf_tensors() -> dict[str, Any]:
    t, p = tf.constant(TARGETS), tf.constant(PREDICTIONS)
    weight = RNG.uniform(0, 2, size=BATCH).astype("float32")
    option_sets = {
        "default": {},
        "exact_symmetric": {"epsilon": 0, "direction": "symmetric"},
        "logits_T2": {"from_logits": True, "y_true_format": "logits", "temperature": 2.0},
        "reverse_mean": {"direction": "reverse", "reduction": "mean"},
        "sum_weighted": {"reduction": "sum"},
        "jsd_exact": {"beta": 0.5, "epsilon": 0},
        "logits_softcap": {
            "from_logits": True,
            "y_true_format": "logits",
            "student_softcap": 2.0,
            "teacher_softcap": 1.5,
            "teacher_logit_scale": 0.8,
        },
    }
    logits_inputs = (TEACHER_LOGITS, RNG.normal(size=(BATCH, 4)).astype("float32"))
    out: dict[str, Any] = {}
    for name, options in option_sets.items():
        inputs = logits_inputs if "logits" in name else (TARGETS, PREDICTIONS)
        loss = (kldiv.JSDivergence if "beta" in options else kldiv.KLDivergence)(**options)
        numpy_value = loss(*inputs, sample_weight=weight)
        eager = loss(*(tf.constant(x) for x in inputs), sample_weight=tf.constant(weight))

        @tf.function(
            input_signature=[tf.TensorSpec([None, 4]), tf.TensorSpec([None, 4]), tf.TensorSpec([None])]
        )
        def graph(a: Any, b: Any, w: Any, loss: Any = loss) -> Any:
            return loss(a, b, sample_weight=w)

        xla = tf.function(jit_compile=True)(lambda a, b, w, loss=loss: loss(a, b, sample_weight=w))
        tensors = [tf.constant(x) for x in (*inputs, weight)]
        out[name] = {
            "type": type(eager).__name__,
            "eager_vs_numpy": max_diff(eager.numpy(), numpy_value),
            "graph_vs_numpy": max_diff(graph(*tensors).numpy(), numpy_value),
            "xla_vs_numpy": max_diff(xla(*tensors).numpy(), numpy_value),
        }
    # A keep-mask with an unknown batch dimension (token_mean counts the kept rows on the device).
    mask = RNG.uniform(size=BATCH) > 0.3
    masked = kldiv.KLDivergence(reduction="token_mean", epsilon=0)
    masked_graph = tf.function(
        lambda a, b, m: masked(a, b, mask=m),
        input_signature=[tf.TensorSpec([None, 4]), tf.TensorSpec([None, 4]), tf.TensorSpec([None], tf.bool)],
    )
    out["masked_graph_vs_numpy"] = max_diff(
        masked_graph(t, p, tf.constant(mask)).numpy(), masked(TARGETS, PREDICTIONS, mask=mask)
    )
    per_sample = kldiv.kl_divergence(t, p)
    out["kl_divergence_function"] = {
        "type": type(per_sample).__name__,
        "vs_numpy": max_diff(per_sample.numpy(), kldiv.kl_divergence(TARGETS, PREDICTIONS)),
    }
    # Gradients through GradientTape: against tf_keras' own loss and the closed form -w t / p / N.
    variable = tf.Variable(PREDICTIONS)
    grads = {}
    for name, loss in (("kldiv", kldiv.KLDivergence()), ("tf_keras", tf_keras.losses.KLDivergence())):
        with tf.GradientTape() as tape:
            value = loss(t, variable, sample_weight=weight)
        grads[name] = tape.gradient(value, variable).numpy()
    closed_form = -weight[:, None] * np.clip(TARGETS, 1e-7, 1) / PREDICTIONS / BATCH
    out["gradient_vs_tf_keras"] = max_diff(grads["kldiv"], grads["tf_keras"])
    out["gradient_vs_closed_form"] = max_diff(grads["kldiv"], closed_form)
    # bfloat16 tensors: accumulated in float32, returned in bfloat16.
    low = kldiv.KLDivergence()(tf.cast(t, tf.bfloat16), tf.cast(p, tf.bfloat16))
    out["bfloat16"] = {
        "dtype": low.dtype.name,
        "vs_float64": max_diff(
            tf.cast(low, tf.float32).numpy(),
            np.mean(reference.divergence(TARGETS, PREDICTIONS, epsilon=1e-7)),
        ),
    }
    return out


def fit_checks() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode, compile_kwargs in (
        ("graph", {}),
        ("jit_compile", {"jit_compile": True}),
        ("eager", {"run_eagerly": True}),
    ):
        theirs = fit(dense_model(), tf_keras.losses.KLDivergence(), **compile_kwargs)
        ours_model = dense_model()
        ours = fit(ours_model, kldiv.tf_keras.KLDivergence(), **compile_kwargs)
        out[mode] = {"tf_keras": theirs, "kldiv": ours, "diff": max_diff(ours, theirs)}
    out["evaluate_diff"] = max_diff(
        ours_model.evaluate(X, TARGETS, verbose=0),
        tf_keras.losses.KLDivergence()(TARGETS, ours_model(X)).numpy(),
    )
    # Options, one SGD step at a time, against float64 on the weights each step starts from.
    model = dense_model(activation=None)
    loss = kldiv.tf_keras.KLDivergence(
        y_true_format="logits",
        from_logits=True,
        temperature=2.0,
        scale_by_temperature_squared=True,
        epsilon=0,
    )
    model.compile(optimizer=tf_keras.optimizers.SGD(0.5), loss=loss)
    logged, expected = [], []
    for _ in range(STEPS):
        kernel, bias = (w.astype(np.float64) for w in model.get_weights())
        logits = X.astype(np.float64) @ kernel + bias
        per_sample = reference.divergence(
            TEACHER_LOGITS, logits, true_format="logits", pred_format="logits", temperature=2.0
        )
        expected.append(4.0 * float(np.mean(per_sample)))
        history = model.fit(X, TEACHER_LOGITS, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        logged.append(float(history.history["loss"][0]))
    out["options_vs_float64"] = {"kldiv": logged, "float64": expected, "diff": max_diff(logged, expected)}
    return out


def save_load() -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, name in (("tf", "saved_model"), ("h5", "m.h5"), ("keras", "m.keras")):
            model = dense_model()
            loss = kldiv.tf_keras.KLDivergence(reduction="sum", temperature=1.5, name="kl_t")
            model.compile(optimizer=tf_keras.optimizers.SGD(0.5), loss=loss)
            model.fit(X, TARGETS, batch_size=BATCH, epochs=1, verbose=0)
            path = str(Path(tmp) / name)
            model.save(path, save_format=fmt)
            loaded = tf_keras.models.load_model(path)
            loaded_loss = loaded.loss
            out[fmt] = {
                "loss_type": f"{type(loaded_loss).__module__}.{type(loaded_loss).__name__}",
                "config_equal": loaded_loss.get_config() == loss.get_config(),
                "evaluate_diff": max_diff(
                    loaded.evaluate(X, TARGETS, verbose=0), model.evaluate(X, TARGETS, verbose=0)
                ),
            }
    # A soft-capped loss: its config round trip, and its value against the float64 formula on logits
    # capped by hand (then the divergence without maps).
    maps = {"student_softcap": 2.0, "student_logit_scale": 1.3, "teacher_softcap": 1.5}
    capped = kldiv.tf_keras.KLDivergence(y_true_format="logits", from_logits=True, epsilon=0, **maps)
    restored = kldiv.tf_keras.KLDivergence.from_config(capped.get_config())
    student = RNG.normal(size=(BATCH, 4)).astype("float32") * 4
    by_hand = reference.divergence(
        1.5 * np.tanh(TEACHER_LOGITS.astype(np.float64) / 1.5),
        2.0 * np.tanh(1.3 * student.astype(np.float64) / 2.0),
        true_format="logits",
        pred_format="logits",
    )
    out["softcap"] = {
        "config_equal": restored.get_config() == capped.get_config(),
        "student_softcap": capped.get_config()["student_softcap"],
        "vs_float64": max_diff(
            restored(tf.constant(TEACHER_LOGITS), tf.constant(student)).numpy(), float(np.mean(by_hand))
        ),
    }
    config = kldiv.tf_keras.KLDivergence().get_config()
    out["missing_options"] = [
        field for field in kldiv.Options.__dataclass_fields__ if field != "beta" and field not in config
    ]
    out["registered_name"] = tf_keras.saving.get_registered_name(kldiv.tf_keras.KLDivergence)
    return out


def distribute() -> dict[str, Any]:
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out: dict[str, Any] = {"replicas": strategy.num_replicas_in_sync}
    t, p = tf.constant(TARGETS), tf.constant(PREDICTIONS)

    def raises(call: Any) -> str | None:
        try:
            call()
        except ValueError as error:
            return str(error)
        return None

    with strategy.scope():
        for reduction in ("auto", "sum_over_batch_size"):
            out[f"scope_{reduction}"] = raises(
                lambda r=reduction: kldiv.tf_keras.KLDivergence(reduction=r)(t, p)
            )
            out[f"agnostic_scope_{reduction}"] = raises(
                lambda r=reduction: kldiv.KLDivergence(reduction=r)(t, p)
            )
        out["scope_sum"] = raises(lambda: kldiv.tf_keras.KLDivergence(reduction="sum")(t, p))
        out["scope_none"] = raises(lambda: kldiv.tf_keras.KLDivergence(reduction="none")(t, p))
    out["run_auto"] = raises(lambda: strategy.run(lambda: kldiv.tf_keras.KLDivergence()(t, p)))

    # compile / fit inside the scope: AUTO works and is scaled per replica as tf_keras does.
    histories = {}
    for name, make_loss in (
        ("kldiv", kldiv.tf_keras.KLDivergence),
        ("tf_keras", tf_keras.losses.KLDivergence),
    ):
        with strategy.scope():
            histories[name] = fit(dense_model(), make_loss())
    single = fit(dense_model(), kldiv.tf_keras.KLDivergence())
    out["fit"] = {
        **histories,
        "single_device": single,
        "diff_vs_tf_keras": max_diff(histories["kldiv"], histories["tf_keras"]),
        "diff_vs_single_device": max_diff(histories["kldiv"], single),
    }

    # Custom loop: SUM / global batch per replica, gradients summed across replicas.
    def replica_gradients(loss: Any, model: Any, x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True)) / BATCH
        return tape.gradient(value, model.trainable_variables)

    single_model = dense_model()
    with tf.GradientTape() as tape:
        value = kldiv.tf_keras.KLDivergence()(TARGETS, single_model(X, training=True))
    single_grads = [g.numpy() for g in tape.gradient(value, single_model.trainable_variables)]
    dataset = tf.data.Dataset.from_tensor_slices((X, TARGETS)).batch(BATCH)
    loop = {}
    for name, loss in (
        ("tf_keras_adapter", kldiv.tf_keras.KLDivergence(reduction="sum")),
        ("agnostic", kldiv.KLDivergence(reduction="sum")),
    ):
        with strategy.scope():
            model = dense_model()
        ((x, y),) = list(strategy.experimental_distribute_dataset(dataset))
        per_replica = strategy.run(
            lambda x, y, loss=loss, model=model: replica_gradients(loss, model, x, y), args=(x, y)
        )
        grads = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None).numpy() for g in per_replica]
        loop[name] = max(max_diff(g, s)["rel"] for g, s in zip(grads, single_grads, strict=True))
    out["custom_loop_grad_rel_diff"] = loop
    return out


def main() -> dict[str, Any]:
    out: dict[str, Any] = {
        "versions": {
            "tensorflow": tf.__version__,
            "tf_keras": tf_keras.__version__,
            "kldiv": kldiv.__version__,
        },
        "steps": STEPS,
        "seconds": {},
    }
    for name, check in (
        ("tf_tensors", tf_tensors),
        ("fit", fit_checks),
        ("save_load", save_load),
        ("distribute", distribute),
    ):
        start = time.perf_counter()
        out[name] = check()
        out["seconds"][name] = round(time.perf_counter() - start, 2)
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
