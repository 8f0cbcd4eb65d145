"""Differential conformance of ``kldiv.KLDivergence`` against the real Keras 3 ``keras.losses.KLDivergence``.

``KERAS_BACKEND`` is fixed per process and this pytest process may already hold Keras with another
backend, so the comparisons run in a subprocess with ``KERAS_BACKEND=numpy`` (cheap: no TensorFlow):
``keras3_differential.py`` generates a fixed set of seeded cases (every Keras 3 reduction spelling:
``"sum_over_batch_size"``, ``"sum"``, ``"mean"``, ``"mean_with_sample_weight"``, ``None``, ``"none"``,
each with every sample_weight kind) and reports as JSON. kldiv is called with the SAME reduction
spelling as Keras 3. The known, intended differences between the two are documented (and checked as
such) in that script's docstring:

* Keras 3 leaves a ``(0,)``-shaped weighted loss unreduced (an empty array); kldiv returns a scalar 0.
* ``"sum_over_batch_size"``, ``"sum"`` and ``"none"`` are tf_keras spellings as well, for which kldiv
  applies tf_keras' shape rules (trailing-axis squeeze/expand of y_true, y_pred and sample_weight);
  where kldiv and Keras 3 differ under them, the case is re-run here with the real tf_keras, and kldiv
  must equal tf_keras there.
* ``"auto"`` is a tf_keras spelling that Keras 3 rejects; kldiv accepts it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import kldiv

HARNESS_PATH = Path(__file__).with_name("keras3_differential.py")


def _load_harness() -> Any:
    spec = importlib.util.spec_from_file_location("kldiv_conformance_keras3_differential", HARNESS_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


harness = _load_harness()
TF_ERRORS = (tf.errors.InvalidArgumentError, ValueError)


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """Run the harness once per module in a ``KERAS_BACKEND=numpy`` subprocess; its JSON report."""
    source_root = str(Path(kldiv.__file__).resolve().parents[1])  # the subprocess imports this kldiv
    env = {
        **os.environ,
        "KERAS_BACKEND": "numpy",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": os.pathsep.join(p for p in (source_root, os.environ.get("PYTHONPATH")) if p),
    }
    completed = subprocess.run(
        [sys.executable, str(HARNESS_PATH)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout)


def _describe(mismatches: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(m, default=str)[:1200] for m in mismatches[:10])


def test_keras3_cases_planned_and_compared(report: dict[str, Any]) -> None:
    """Every planned case ran, for every spelling, and the set exercises errors and empty losses."""
    planned = harness.PLANNED_CASES
    assert len(harness.generate_cases()) == planned
    assert report["planned"] == planned
    assert report["compared"] == planned
    assert report["by_spelling"] == {repr(s): harness.CASES_PER_SPELLING for s in harness.SPELLINGS}
    assert report["outcomes"]["computed"] >= planned // 2
    assert report["outcomes"]["both raised"] > 0
    assert report["documented_differences"]["empty_unreduced"], "no (0,)-shaped loss was generated"


@pytest.mark.parametrize("spelling", harness.SPELLINGS, ids=repr)
def test_keras3_matches(report: dict[str, Any], spelling: str | None) -> None:
    """kldiv == Keras 3 (value, shape, float32 dtype; or both raise, kldiv a ValueError naming the weight)."""
    mismatches = [m for m in report["mismatches"] if m["reduction"] == spelling]
    assert not mismatches, f"{len(mismatches)} mismatches with Keras 3:\n{_describe(mismatches)}"


def _tf_keras_outcome(case: Any) -> dict[str, Any]:
    """The real tf_keras on ``case`` (y_pred cast first where kldiv has ``dtype="float32"``)."""
    y_pred = case.y_pred.astype(np.float32) if case.dtype == "float32" else case.y_pred
    weight = case.sample_weight
    weight = tf.constant(weight) if isinstance(weight, np.ndarray) else weight
    loss = tf_keras.losses.KLDivergence(reduction=case.reduction)
    return harness.outcome(
        lambda: loss(tf.constant(case.y_true), tf.constant(y_pred), sample_weight=weight).numpy()
    )


def _tf_keras_magnitude(case: Any) -> np.ndarray:
    """tf_keras' reduction of |w| * sum(|t log(t/p)|) in float64: the tolerance scale (see harness.ATOL)."""

    def abs_terms(y_true: Any, y_pred: Any) -> Any:
        y_true = tf.clip_by_value(tf.cast(y_true, y_pred.dtype), 1e-7, 1.0)
        y_pred = tf.clip_by_value(y_pred, 1e-7, 1.0)
        return tf.reduce_sum(tf.abs(y_true * tf.math.log(y_true / y_pred)), axis=-1)

    weight = case.sample_weight
    if weight is not None:
        weight = abs(weight) if isinstance(weight, float) else tf.constant(np.abs(weight))
    loss = tf_keras.__internal__.losses.LossFunctionWrapper(abs_terms, reduction=case.reduction)
    y_true, y_pred = (tf.constant(x.astype(np.float64)) for x in (case.y_true, case.y_pred))
    return loss(y_true, y_pred, sample_weight=weight).numpy()


def test_keras3_shape_rule_differences_follow_tf_keras(report: dict[str, Any]) -> None:
    """Under a tf_keras spelling, where kldiv and Keras 3 differ, kldiv equals the real tf_keras.

    Each such case is a difference of shape rules between tf_keras and Keras 3 (tf_keras also differs
    from Keras 3 there), not a defect of kldiv.
    """
    cases = harness.generate_cases()
    candidates = report["family_candidates"]
    assert all(cases[c["index"]].reduction not in harness.KERAS3_SPELLINGS for c in candidates)
    failures = []
    for candidate in candidates:
        case = cases[candidate["index"]]
        expected = _tf_keras_outcome(case)
        loss = kldiv.KLDivergence(reduction=case.reduction, dtype=case.dtype)
        actual = harness.outcome(lambda c=case, f=loss: f(c.y_true, c.y_pred, sample_weight=c.sample_weight))
        if "error" in expected:
            ok = actual.get("error") == "ValueError"
            if ok and isinstance(case.sample_weight, np.ndarray):
                ok = str(tuple(case.sample_weight.shape)) in actual["message"]
        else:
            ok = "error" not in actual and harness.values_close(actual, expected, _tf_keras_magnitude(case))
        keras_out = candidate["keras"]
        differs = ("error" in expected) != ("error" in keras_out) or (
            "error" not in expected and not harness.values_close(keras_out, expected, None)
        )
        if not ok or not differs:
            failures.append(
                {
                    "index": case.index,
                    "reduction": case.reduction,
                    "shapes": [
                        list(case.y_true.shape),
                        list(case.y_pred.shape),
                        np.shape(case.sample_weight),
                    ],
                    "kldiv": actual,
                    "tf_keras": expected,
                    "keras3": keras_out,
                    "kldiv_equals_tf_keras": ok,
                    "tf_keras_differs_from_keras3": differs,
                }
            )
    assert not failures, _describe(failures)


def test_keras3_seed_examples(report: dict[str, Any]) -> None:
    """The seed examples under every Keras 3 spelling: kldiv == Keras 3, and the documented numbers."""
    seeds = report["checks"]["seeds"]
    assert len(seeds) == 3 * len(harness.SPELLINGS)
    for label, pair in seeds.items():
        assert "error" not in pair["keras"] and "error" not in pair["kldiv"], (label, pair)
        assert harness.values_close(pair["kldiv"], pair["keras"], None), (label, pair)
        assert pair["kldiv"]["dtype"] == "float32", (label, pair)
    # default Keras 3 reduction "sum_over_batch_size"; the API pages truncate to the printed digits
    documented = {"vector": (0.11891246, 1e-8), "matrix": (0.458, 1e-3), "weighted": (0.366, 1e-3)}
    for label, (number, unit) in documented.items():
        for side in ("keras", "kldiv"):
            (value,) = seeds[f"'sum_over_batch_size'/{label}"][side]["value"]
            assert abs(value - number) < unit, (label, side, value)
    none_row = seeds["None/matrix"]["kldiv"]["value"]
    assert abs(none_row[0] - 0.916) < 1e-3 and abs(none_row[1] - (-3.08e-06)) < 1e-8, none_row


def test_keras3_empty_loss(report: dict[str, Any]) -> None:
    """Documented difference: Keras 3 returns a (0,)-shaped loss unreduced, kldiv returns a scalar 0.

    For any other empty loss shape Keras 3 reduces to 0 (divide_no_nan) exactly like kldiv, and the
    unreduced spellings ("none", None) return the same empty array in both.
    """
    for label, pair in report["checks"]["empty"].items():
        spelling, shape = label.split("/", 1)
        keras_out, kldiv_out = pair["keras"], pair["kldiv"]
        assert "error" not in keras_out and "error" not in kldiv_out, (label, pair)
        assert kldiv_out["dtype"] == keras_out["dtype"] == "float32", (label, pair)
        if spelling in ("None", "'none'") or shape == "(0,)":  # unreduced, or a scalar loss
            assert kldiv_out["shape"] == keras_out["shape"] and kldiv_out["value"] == keras_out["value"]
        elif shape == "(0, 3)":  # per-sample loss of shape (0,): Keras 3 skips the reduction
            assert keras_out["shape"] == [0] and keras_out["value"] == [], (label, pair)
            assert kldiv_out["shape"] == [] and kldiv_out["value"] == [0.0], (label, pair)
        else:
            assert kldiv_out["shape"] == keras_out["shape"] == [], (label, pair)
            assert kldiv_out["value"] == keras_out["value"] == [0.0], (label, pair)


@pytest.mark.parametrize("spelling", harness.SPELLINGS, ids=repr)
def test_keras3_scalar_loss_with_sample_weight(report: dict[str, Any], spelling: str | None) -> None:
    """A rank-0 per-sample loss (y_pred of rank 1) with a sample_weight: kldiv == Keras 3.

    Keras 3's ``reduce_values`` returns values of shape ``()`` unreduced; for every spelling but
    ``"mean_with_sample_weight"`` that is what the reduction of one element gives anyway.
    """
    results = {k: v for k, v in report["checks"]["scalar_loss"].items() if k.split("/")[0] == repr(spelling)}
    assert len(results) == 3
    for label, pair in results.items():
        assert "error" not in pair["keras"] and "error" not in pair["kldiv"], (label, pair)
        assert harness.values_close(pair["kldiv"], pair["keras"], None), (
            f"{label}: kldiv {pair['kldiv']['value']} vs Keras 3 {pair['keras']['value']}"
        )


def test_keras3_config_keys(report: dict[str, Any]) -> None:
    """Keras 3's config keys ("name", "reduction") are in kldiv's, with equal values, both ways."""
    configs = report["checks"]["configs"]
    assert set(configs) == {repr(s) for s in harness.SPELLINGS}
    for spelling, config in configs.items():
        assert set(config["keras"]) == {"name", "reduction"}, config
        assert set(config["keras"]) <= set(config["kldiv_keys"]), config
        assert config["kldiv_shared"] == config["keras"], (spelling, config)
        assert config["round_trip"], spelling
        assert config["keras_accepts_kldiv_shared"], spelling


def test_keras3_unknown_reduction(report: dict[str, Any]) -> None:
    """Unknown reductions raise ValueError at construction in both; "auto" is a tf_keras spelling
    (documented difference: Keras 3 rejects it, kldiv accepts it as tf_keras does)."""
    unknown = report["checks"]["unknown_reductions"]
    for reduction in ("avg", "SUM", "batch", ""):
        assert unknown[reduction] == {"keras": "ValueError", "kldiv": "ValueError"}, reduction
    assert unknown["auto"] == {"keras": "ValueError", "kldiv": "ok"}
