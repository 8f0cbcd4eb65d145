"""Keras 3 differential harness for ``kldiv.KLDivergence`` (run by ``test_keras3_contract.py``).

Run as a script, in a process of its own with ``KERAS_BACKEND=numpy`` (the backend is fixed per
process, and the test process may already hold Keras with another backend): it generates the cases
deterministically (seeded NumPy RNG), computes each with the real ``keras.losses.KLDivergence`` and with
``kldiv.KLDivergence`` under the same reduction spelling, and prints one JSON object on stdout.
Imported as a module (by the test process) it only provides :func:`generate_cases`: Keras is imported
inside :func:`main` alone.

Keras 3 converts y_true, y_pred and sample_weight to the loss ``dtype`` (float32); kldiv is called with
``dtype=None`` on float32 ``y_pred`` (its own dtype), or with ``dtype="float32"`` on float64 ``y_pred``
(the option that mirrors Keras 3's loss dtype).

Known, intended differences, read in ``keras/src/losses/loss.py`` (Keras 3.15.1), and how they are
checked instead of a plain comparison:

* ``reduce_values`` returns the weighted values *unreduced* when their shape is ``(0,)``: an empty
  float32 array for ``"sum"``, ``"sum_over_batch_size"``, ``"mean"`` and ``"mean_with_sample_weight"``.
  kldiv returns a float32 scalar 0 for every reduction but ``"none"``/``None`` (SPEC §1: "Scalar for
  every reduction but NONE"; "0 for an empty batch, never NaN"). Checked: kldiv gives ``0.0``, shape
  ``()``, float32. (For any other empty shape, e.g. ``(0, 3)``, Keras 3 reduces to 0 like kldiv.)
* The spellings ``"sum_over_batch_size"``, ``"sum"`` and ``"none"`` are tf_keras spellings too, and kldiv
  applies tf_keras' shape rules to them (README / ``kldiv.core.reductions``): tf_keras squeezes a
  y_true/y_pred trailing 1 where Keras 3 expands a rank-1 partner instead, squeezes a weight one rank
  above the loss (and fails if its trailing axis is not 1) and expands a weight one rank below it, where
  Keras 3 only touches trailing axes of size 1 and otherwise broadcasts. Under these spellings a case
  where kldiv and Keras 3 disagree is not a mismatch here but a ``family_candidates`` entry: the test
  process re-runs it with the real tf_keras and requires kldiv to equal tf_keras exactly there (and
  tf_keras to differ from Keras 3, which proves the difference is one of shape rules, not of kldiv).
  The Keras 3 spellings ``"mean"`` (= Keras' ``"sum_over_batch_size"``), ``"mean_with_sample_weight"``
  and ``None`` (= ``"none"``) get Keras 3's rules in kldiv and are compared with Keras 3 case by case.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NamedTuple

import numpy as np

SEED = 20240531
SPELLINGS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", None, "none")
KERAS3_SPELLINGS = ("mean", "mean_with_sample_weight", None)  # kldiv applies Keras 3's rules
CASES_PER_SPELLING = 60
PLANNED_CASES = CASES_PER_SPELLING * len(SPELLINGS)

WEIGHT_KINDS = (
    "none",
    "python_scalar",
    "scalar_array",
    "batch",
    "loss_shape",
    "loss_shape_trailing_1",
    "broadcastable",
    "lower_rank_suffix",
    "one_rank_lower",
    "invalid",
)
SPECIAL_VALUES = np.array([0.0, 1.0, 1e-9, 1e-7, 0.5, 2.0, 1.5, -0.5, -1.0])
SPECIAL_WEIGHTS = np.array([0.0, 1.0, 0.5, 2.0, -1.0])
# Both sides run the same NumPy float32 operations (Keras' numpy backend, kldiv's NumPy path), so the
# differences are a few float32 ulp at most: |kldiv - keras| <= ATOL + RTOL * |keras| + MRTOL * magnitude
# (magnitude: the same reduction of |w| * sum(|t log(t/p)|), see `_magnitude`), the float32 tolerances
# of the tf_keras comparison.
ATOL, RTOL, MRTOL = 1e-6, 1e-5, 1e-6


class Case(NamedTuple):
    index: int
    reduction: str | None
    y_true: np.ndarray
    y_pred: np.ndarray
    sample_weight: Any
    weight_kind: str
    dtype: str | None  # kldiv's `dtype` option


def _dims(rng: np.random.Generator, rank: int) -> tuple[int, ...]:
    # sizes 0..5, with 0 rarer so that most cases are not empty
    return tuple(int(d) for d in rng.choice(6, size=rank, p=[0.06, 0.2, 0.2, 0.2, 0.17, 0.17]))


def _values(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    mode = rng.integers(3)
    if mode == 0 and shape:  # distributions along the last axis, some entries tiny
        x = rng.random(shape) ** 4
        total = x.sum(axis=-1, keepdims=True)
        x = np.divide(x, total, out=x.copy(), where=total > 0)
    elif mode == 1:
        x = rng.uniform(-0.5, 1.5, size=shape)
    else:
        x = rng.random(shape)
    special = rng.random(shape) < 0.3  # zeros, ones, > 1, negatives, tiny (1e-9)
    x = np.where(special, rng.choice(SPECIAL_VALUES, size=shape), x)
    return np.asarray(x, dtype=dtype)


def _weight_shape(rng: np.random.Generator, kind: str, loss_shape: tuple[int, ...], batch: int) -> tuple:
    rank = len(loss_shape)
    if kind == "batch":
        return (batch,)
    if kind == "loss_shape":
        return loss_shape
    if kind == "loss_shape_trailing_1":
        return (*loss_shape, 1)
    if kind == "broadcastable":
        return tuple(1 if rng.random() < 0.5 else d for d in loss_shape)
    if kind == "lower_rank_suffix" and rank >= 1:
        return loss_shape[int(rng.integers(1, rank + 1)) :]
    if kind == "one_rank_lower" and rank >= 1:
        return loss_shape[:-1]
    if kind == "invalid":
        axes = [i for i, d in enumerate(loss_shape) if d != 1]
        if axes:  # same rank, one axis neither equal nor 1: no rule of either family aligns it
            axis = int(rng.choice(axes))
            new = int(rng.choice([m for m in range(2, 7) if m != loss_shape[axis]]))
            return (*loss_shape[:axis], new, *loss_shape[axis + 1 :])
        return (*loss_shape, int(rng.integers(2, 6)))  # rejected by tf_keras; Keras 3 may broadcast it
    return ()


def generate_cases(seed: int = SEED) -> list[Case]:
    """The planned cases, identical in every process (seeded generator, no global state)."""
    rng = np.random.default_rng(seed)
    cases = []
    for reduction in SPELLINGS:
        for _ in range(CASES_PER_SPELLING):
            shape = _dims(rng, int(rng.integers(1, 5)))
            true_shape = pred_shape = shape
            variant = rng.random()
            if variant < 0.15:  # y_true broadcast against y_pred
                true_shape = tuple(1 if rng.random() < 0.5 else d for d in shape)
            elif variant < 0.22:  # y_pred with a trailing 1 that y_true lacks
                pred_shape = (*shape, 1)
            elif variant < 0.29:  # y_true with a trailing 1 that y_pred lacks
                true_shape = (*shape, 1)
            float64_pred = rng.random() < 0.15
            y_pred = _values(rng, pred_shape, np.float64 if float64_pred else np.float32)
            y_true = _values(rng, true_shape, np.float64 if rng.random() < 0.3 else np.float32)
            kind = str(rng.choice(WEIGHT_KINDS))
            if kind == "none":
                weight = None
            elif kind == "python_scalar":
                weight = (
                    float(rng.choice(SPECIAL_WEIGHTS)) if rng.random() < 0.4 else float(rng.uniform(-2, 3))
                )
            else:
                weight_shape = _weight_shape(rng, kind, pred_shape[:-1], pred_shape[0])
                weight = np.where(
                    rng.random(weight_shape) < 0.3,
                    rng.choice(SPECIAL_WEIGHTS, size=weight_shape),
                    rng.uniform(-2, 3, size=weight_shape),
                ).astype(np.float64 if rng.random() < 0.5 else np.float32)
            dtype = "float32" if float64_pred else None
            cases.append(Case(len(cases), reduction, y_true, y_pred, weight, kind, dtype))
    return cases


def outcome(fn: Any) -> dict[str, Any]:
    """What ``fn()`` gave: a value (shape, dtype, float64 values) or an error (type, message)."""
    try:
        value = fn()
    except Exception as error:  # an outcome to compare, whatever it is
        return {"error": type(error).__name__, "message": str(error)[:400]}
    array = np.asarray(value)
    return {
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "type": type(value).__module__.split(".")[0],
        "value": array.astype(np.float64).ravel().tolist(),
    }


def construction(fn: Any) -> str:
    """``"ok"`` or the name of the exception that ``fn()`` raised."""
    try:
        fn()
    except Exception as error:  # an outcome to compare, whatever it is
        return type(error).__name__
    return "ok"


def values_close(actual: dict, expected: dict, magnitude: Any) -> bool:
    """Same shape and dtype, values within the float32 tolerance (``magnitude`` may be None)."""
    if actual["shape"] != expected["shape"] or actual["dtype"] != expected["dtype"]:
        return False
    a, e = np.array(actual["value"]), np.array(expected["value"])
    scale = np.abs(np.asarray(magnitude, np.float64)).ravel() if magnitude is not None else 0.0
    return bool(np.all(np.abs(a - e) <= ATOL + RTOL * np.abs(e) + MRTOL * scale))


def shape_text(x: Any) -> str | None:
    return str(tuple(x.shape)) if isinstance(x, np.ndarray) else None


def main() -> dict[str, Any]:
    import keras  # KERAS_BACKEND=numpy is set by the caller, before this import
    from keras.src.losses.losses import LossFunctionWrapper

    import kldiv

    assert keras.backend.backend() == "numpy", keras.backend.backend()

    def abs_kl_terms(y_true: Any, y_pred: Any) -> Any:
        # Keras 3's kl_divergence program with every term made non-negative (the tolerance scale)
        y_pred = keras.ops.convert_to_tensor(y_pred)
        y_true = keras.ops.clip(keras.ops.convert_to_tensor(y_true, y_pred.dtype), 1e-7, 1)
        y_pred = keras.ops.clip(y_pred, 1e-7, 1)
        return keras.ops.sum(keras.ops.abs(y_true * keras.ops.log(y_true / y_pred)), axis=-1)

    def magnitude(case: Case) -> Any:
        weight = case.sample_weight
        if weight is not None:
            weight = abs(weight) if isinstance(weight, float) else np.abs(weight)
        try:
            scale = LossFunctionWrapper(abs_kl_terms, reduction=case.reduction)
            return np.asarray(scale(case.y_true, case.y_pred, sample_weight=weight))
        except Exception:  # no magnitude where Keras 3 rejects the case
            return None

    report: dict[str, Any] = {
        "planned": PLANNED_CASES,
        "compared": 0,
        "by_spelling": {},
        "outcomes": {},
        "documented_differences": {"empty_unreduced": []},
        "family_candidates": [],
        "mismatches": [],
    }
    for case in generate_cases():
        spelling = repr(case.reduction)
        report["by_spelling"][spelling] = report["by_spelling"].get(spelling, 0) + 1
        keras_loss = keras.losses.KLDivergence(reduction=case.reduction)
        kldiv_loss = kldiv.KLDivergence(reduction=case.reduction, dtype=case.dtype)
        expected = outcome(lambda c=case, f=keras_loss: f(c.y_true, c.y_pred, sample_weight=c.sample_weight))
        actual = outcome(lambda c=case, f=kldiv_loss: f(c.y_true, c.y_pred, sample_weight=c.sample_weight))
        report["compared"] += 1
        kind = "both raised" if "error" in expected else "computed"
        report["outcomes"][kind] = report["outcomes"].get(kind, 0) + 1

        problem = None
        if "error" in expected:
            if actual.get("error") != "ValueError":
                problem = "Keras 3 raised; kldiv did not raise ValueError"
            elif (
                isinstance(case.sample_weight, np.ndarray)
                and "error" not in outcome(lambda c=case, f=keras_loss: f(c.y_true, c.y_pred))
                and shape_text(case.sample_weight) not in actual["message"]
            ):
                # the weight is at fault (the inputs alone are fine): kldiv's message must name it
                problem = "kldiv's ValueError does not name the sample_weight shape"
        elif case.reduction not in ("none", None) and expected["shape"] == [0]:
            # documented difference: Keras 3 leaves a (0,)-shaped loss unreduced, kldiv returns 0
            report["documented_differences"]["empty_unreduced"].append(case.index)
            if not ("error" not in actual and actual["shape"] == [] and actual["value"] == [0.0]):
                problem = "empty loss: kldiv did not return a scalar 0"
            elif actual["dtype"] != "float32" or actual["type"] != "numpy":
                problem = "empty loss: kldiv's 0 is not a float32 NumPy scalar"
        elif "error" in actual or not values_close(actual, expected, magnitude(case)):
            problem = "values, shapes or dtypes differ"
        elif actual["type"] != "numpy":
            problem = "kldiv did not return a NumPy value"

        if problem is None:
            continue
        if case.reduction not in KERAS3_SPELLINGS and not problem.startswith("kldiv's ValueError"):
            # a tf_keras spelling: maybe a difference of shape rules; the test process asks tf_keras
            report["family_candidates"].append({"index": case.index, "keras": expected, "kldiv": actual})
            continue
        report["mismatches"].append(
            {
                "index": case.index,
                "reduction": case.reduction,
                "dtype_option": case.dtype,
                "y_true": {"shape": list(case.y_true.shape), "dtype": str(case.y_true.dtype)},
                "y_pred": {"shape": list(case.y_pred.shape), "dtype": str(case.y_pred.dtype)},
                "sample_weight": case.sample_weight
                if not isinstance(case.sample_weight, np.ndarray)
                else {"shape": list(case.sample_weight.shape), "weight_kind": case.weight_kind},
                "problem": problem,
                "keras": expected,
                "kldiv": actual,
            }
        )
    report["checks"] = named_checks(keras, kldiv)
    return report


def named_checks(keras: Any, kldiv: Any) -> dict[str, Any]:
    """Keras 3 facts the test process asserts on: seed numbers, empty and scalar losses, configs,
    unknown reductions."""

    def both(spelling: str | None, y_true: Any, y_pred: Any, weight: Any = None) -> dict[str, Any]:
        keras_loss = keras.losses.KLDivergence(reduction=spelling)
        kldiv_loss = kldiv.KLDivergence(reduction=spelling)
        return {
            "keras": outcome(lambda: keras_loss(y_true, y_pred, sample_weight=weight)),
            "kldiv": outcome(lambda: kldiv_loss(y_true, y_pred, sample_weight=weight)),
        }

    vector = (np.array([0.4, 0.9, 0.2], np.float32), np.array([0.5, 0.8, 0.12], np.float32))
    matrix = (np.array([[0.0, 1.0], [0.0, 0.0]], np.float32), np.array([[0.6, 0.4], [0.4, 0.6]], np.float32))
    seed_inputs = {
        "vector": (*vector, None),
        "matrix": (*matrix, None),
        "weighted": (*matrix, np.array([0.8, 0.2], np.float32)),
    }
    seeds = {
        f"{spelling!r}/{label}": both(spelling, *inputs)
        for spelling in SPELLINGS
        for label, inputs in seed_inputs.items()
    }
    empty = {
        f"{spelling!r}/{shape}": both(spelling, np.zeros(shape, np.float32), np.zeros(shape, np.float32))
        for spelling in SPELLINGS
        for shape in ((0, 3), (0, 2, 3), (0,))
    }
    # A per-sample loss of rank 0 (y_pred of rank 1) with a sample_weight, the smallest such inputs.
    scalar_loss = {
        f"{spelling!r}/{shape_text(weight) or weight}": both(spelling, *vector, weight)
        for spelling in SPELLINGS
        for weight in (2.0, np.array(2.0, np.float32), np.array([2.0], np.float32))
    }
    configs = {}
    for spelling in SPELLINGS:
        keras_config = keras.losses.KLDivergence(reduction=spelling, name="kl").get_config()
        kldiv_config = kldiv.KLDivergence(reduction=spelling, name="kl").get_config()
        shared = {k: kldiv_config[k] for k in keras_config if k in kldiv_config}
        configs[repr(spelling)] = {
            "keras": keras_config,
            "kldiv_keys": sorted(kldiv_config),
            "kldiv_shared": shared,
            "round_trip": kldiv.KLDivergence.from_config(kldiv_config).get_config() == kldiv_config,
            "keras_accepts_kldiv_shared": keras.losses.KLDivergence.from_config(shared).get_config()
            == keras_config,
        }
    unknown = {
        reduction: {
            "keras": construction(lambda r=reduction: keras.losses.KLDivergence(reduction=r)),
            "kldiv": construction(lambda r=reduction: kldiv.KLDivergence(reduction=r)),
        }
        for reduction in ("avg", "SUM", "batch", "", "auto")
    }
    return {
        "seeds": seeds,
        "configs": configs,
        "unknown_reductions": unknown,
        "empty": empty,
        "scalar_loss": scalar_loss,
    }


if __name__ == "__main__":
    json.dump(main(), sys.stdout, allow_nan=True)
    sys.stdout.write("\n")
