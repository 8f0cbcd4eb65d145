"""``kldiv.keras`` on Keras 3 with the TensorFlow, JAX and PyTorch backends (one subprocess each, see
``keras3_worker.py``): fit/evaluate against Keras' own ``KLDivergence``, options against float64,
``.keras`` save/load, masks, mixed-precision policies, every Keras 3 reduction, symbolic tensors."""

from __future__ import annotations

from typing import Any

import pytest

# float32 rounding: the default-option program is Keras' own, operation for operation.
FLOAT32 = 1e-6
# Non-default options against the float64 program: a few float32 ulps of accumulated rounding.
OPTIONS = 1e-5


@pytest.fixture(scope="module", params=["tensorflow", "jax", "torch"])
def report(request: pytest.FixtureRequest, worker: Any) -> dict[str, Any]:
    result = worker("keras3_worker.py", KERAS_BACKEND=request.param)
    assert result["backend"] == request.param
    return result


def test_default_options_fit_equals_keras(report: dict[str, Any]) -> None:
    fit = report["default_fit"]
    assert len(fit["kldiv"]) == report["steps"] == 3
    assert fit["diff"]["rel"] <= FLOAT32, fit
    assert fit["evaluate_diff"]["rel"] <= FLOAT32
    assert fit["weights_diff"]["abs"] <= FLOAT32


@pytest.mark.parametrize("case", ["logits_T2_squared", "symmetric_exact", "jsd_beta03_logits"])
def test_options_fit_equals_float64(report: dict[str, Any], case: str) -> None:
    fit = report["options_fit"][case]
    assert fit["diff"]["rel"] <= OPTIONS, fit
    assert fit["kldiv"][-1] < fit["kldiv"][0], "the loss did not decrease"


def test_save_and_load_without_custom_objects(report: dict[str, Any]) -> None:
    saved = report["save_load"]
    assert saved["loss_type"] == "kldiv.keras.KLDivergence"
    assert saved["config_equal"]
    assert saved["config"]["temperature"] == 1.5 and saved["config"]["reduction"] == "sum"
    assert saved["evaluate_diff"]["abs"] == 0.0
    assert saved["next_step_diff"]["rel"] <= FLOAT32


def test_keras_mask_is_honoured(report: dict[str, Any]) -> None:
    mask = report["mask"]
    assert mask["diff"]["rel"] <= FLOAT32, mask
    assert abs(mask["kldiv"][0] - mask["unmasked_first_loss"]) > 1e-3, "the mask did not reach the loss"


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_dtype_policy_fit_equals_keras(report: dict[str, Any], policy: str) -> None:
    run = report["policies"][policy]
    assert policy.removeprefix("mixed_") in run["model_output_dtype"]  # the model ran in low precision
    assert run["diff"]["rel"] <= FLOAT32, run


def test_bfloat16_loss_dtype(report: dict[str, Any]) -> None:
    low = report["policies"]["loss_dtype_mixed_bfloat16"]
    assert "bfloat16" in low["dtype"]
    assert low["kldiv_error"]["rel"] <= 1e-2
    assert low["kldiv_error"]["abs"] <= low["keras_error"]["abs"] + 1e-6


@pytest.mark.parametrize(
    "reduction", ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", "None"]
)
def test_keras3_reductions_equal_keras(report: dict[str, Any], reduction: str) -> None:
    assert report["reductions"][reduction]["rel"] <= FLOAT32


def test_reduction_spellings(report: dict[str, Any]) -> None:
    assert report["reductions"]["auto_is"] == "sum_over_batch_size"
    assert report["reductions"]["unknown_raises"]


@pytest.mark.parametrize(
    "case", ["reverse_keras_eps", "log_probs_exact", "jsd_logits_T3", "softcap_logits_T2"]
)
def test_direct_calls_equal_float64(report: dict[str, Any], case: str) -> None:
    assert report["direct_options"][case]["rel"] <= OPTIONS


def test_config_holds_every_option(report: dict[str, Any]) -> None:
    config = report["config"]
    assert config["missing_options"] == []
    assert config["dtype"] == "mixed_bfloat16"
    assert config["round_trip"]
    assert config["registered_name"] == "kldiv>KLDivergence"


def test_softcap_loss_serializes(report: dict[str, Any]) -> None:
    softcap = report["softcap_config"]
    assert softcap["maps"] == {
        "student_softcap": 2.0,
        "student_logit_scale": 1.3,
        "teacher_softcap": 1.5,
        "teacher_logit_scale": None,
    }
    assert softcap["round_trip"] and softcap["same_value"] and softcap["serialized"]


def test_symbolic_keras_tensors(report: dict[str, Any]) -> None:
    assert report["symbolic"] == {"type": "KerasTensor", "shape": [None, 7]}
