"""``kldiv.tf_keras`` and TensorFlow tensors in the agnostic API, incl. ``tf.distribute`` (one subprocess,
see ``tf_worker.py``, with 2 logical CPU devices for ``MirroredStrategy``)."""

from __future__ import annotations

from typing import Any

import pytest

FLOAT32 = 1e-6
OPTIONS = 1e-5


@pytest.fixture(scope="module")
def report(worker: Any) -> dict[str, Any]:
    return worker("tf_worker.py")


@pytest.mark.parametrize(
    "case",
    [
        "default",
        "exact_symmetric",
        "logits_T2",
        "reverse_mean",
        "sum_weighted",
        "jsd_exact",
        "logits_softcap",
    ],
)
def test_tf_tensors_eager_graph_and_xla(report: dict[str, Any], case: str) -> None:
    result = report["tf_tensors"][case]
    assert result["type"] == "EagerTensor"  # TensorFlow in, TensorFlow out
    for mode in ("eager_vs_numpy", "graph_vs_numpy", "xla_vs_numpy"):
        assert result[mode]["rel"] <= FLOAT32, (mode, result)


def test_tf_tensors_mask_with_unknown_batch(report: dict[str, Any]) -> None:
    assert report["tf_tensors"]["masked_graph_vs_numpy"]["rel"] <= FLOAT32


def test_tf_tensors_functional_form(report: dict[str, Any]) -> None:
    result = report["tf_tensors"]["kl_divergence_function"]
    assert result["type"] == "EagerTensor"
    assert result["vs_numpy"]["rel"] <= FLOAT32


def test_gradient_tape(report: dict[str, Any]) -> None:
    assert report["tf_tensors"]["gradient_vs_tf_keras"]["rel"] <= FLOAT32
    assert report["tf_tensors"]["gradient_vs_closed_form"]["rel"] <= FLOAT32


def test_bfloat16_tensors(report: dict[str, Any]) -> None:
    low = report["tf_tensors"]["bfloat16"]
    assert low["dtype"] == "bfloat16"
    assert low["vs_float64"]["rel"] <= 1e-2


@pytest.mark.parametrize("mode", ["graph", "jit_compile", "eager"])
def test_fit_equals_tf_keras(report: dict[str, Any], mode: str) -> None:
    fit = report["fit"][mode]
    assert len(fit["kldiv"]) == report["steps"] == 3
    assert fit["diff"]["rel"] <= FLOAT32, fit


def test_evaluate_and_options_fit(report: dict[str, Any]) -> None:
    assert report["fit"]["evaluate_diff"]["rel"] <= FLOAT32
    assert report["fit"]["options_vs_float64"]["diff"]["rel"] <= OPTIONS


@pytest.mark.parametrize("fmt", ["tf", "h5", "keras"])
def test_save_and_load_without_custom_objects(report: dict[str, Any], fmt: str) -> None:
    saved = report["save_load"][fmt]
    assert saved["loss_type"] == "kldiv.tf_keras.KLDivergence"
    assert saved["config_equal"]
    assert saved["evaluate_diff"]["abs"] == 0.0


def test_softcap_loss_serializes_and_equals_float64(report: dict[str, Any]) -> None:
    softcap = report["save_load"]["softcap"]
    assert softcap["config_equal"] and softcap["student_softcap"] == 2.0
    assert softcap["vs_float64"]["rel"] <= 1e-5, softcap


def test_config_holds_every_option(report: dict[str, Any]) -> None:
    assert report["save_load"]["missing_options"] == []
    assert report["save_load"]["registered_name"] == "kldiv>KLDivergence"


@pytest.mark.parametrize("where", ["scope_auto", "scope_sum_over_batch_size", "run_auto"])
def test_distribute_rule_raises_outside_fit(report: dict[str, Any], where: str) -> None:
    message = report["distribute"][where]
    assert message is not None and "Reduction.SUM" in message and "Model.fit()" in message


@pytest.mark.parametrize("reduction", ["auto", "sum_over_batch_size"])
def test_agnostic_loss_follows_the_same_rule(report: dict[str, Any], reduction: str) -> None:
    message = report["distribute"][f"agnostic_scope_{reduction}"]
    assert message is not None and reduction in message


def test_sum_and_none_allowed_under_strategy(report: dict[str, Any]) -> None:
    assert report["distribute"]["scope_sum"] is None
    assert report["distribute"]["scope_none"] is None


def test_fit_under_mirrored_strategy(report: dict[str, Any]) -> None:
    dist = report["distribute"]
    assert dist["replicas"] == 2
    assert dist["fit"]["diff_vs_tf_keras"]["rel"] <= FLOAT32  # scaled per replica as tf_keras
    assert dist["fit"]["diff_vs_single_device"]["rel"] <= FLOAT32


@pytest.mark.parametrize("loss", ["tf_keras_adapter", "agnostic"])
def test_custom_loop_sum_over_global_batch(report: dict[str, Any], loss: str) -> None:
    assert report["distribute"]["custom_loop_grad_rel_diff"][loss] <= FLOAT32
