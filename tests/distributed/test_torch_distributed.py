"""``kldiv.distributed.torch`` on 2 and 4 gloo ranks (CPU, 127.0.0.1), against the single-process kldiv.

The ranks run in ``torch_worker.py`` (one ``torch.multiprocessing.spawn`` per world size, every case in
it); the tests here assert on its report. Cheap checks that need no process group run in-process.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import torch
import torch.distributed as dist

from kldiv.distributed.torch import VocabParallelJSDivergence, VocabParallelKLDivergence, global_num_items

from . import torch_worker
from .helpers import TOLERANCE, run_worker, worst

WORLDS = (2, 4)
MISMATCH_SECONDS = 10.0  # "in seconds": the collectives' own timeout is 60 s


@pytest.fixture(scope="module")
def report() -> dict[int, dict[str, Any]]:
    worlds = run_worker("torch_worker.py", *(str(w) for w in WORLDS))["worlds"]
    return {entry["world"]: entry for entry in worlds}


@pytest.mark.parametrize("world", WORLDS)
def test_every_rank_ran_every_case(report: dict[int, dict[str, Any]], world: int) -> None:
    ranks = report[world]["ranks"]
    assert [r["rank"] for r in ranks] == list(range(world))
    for rank in ranks:
        assert rank["errors"] == [], rank["errors"]
        assert [c["name"] for c in rank["vocab"]] == [*torch_worker.VOCAB_CASES, "after_mismatches"]
        assert len(rank["mismatch"]) == 7


@pytest.mark.parametrize("world", WORLDS)
def test_vocab_parallel_equals_single_process(report: dict[int, dict[str, Any]], world: int) -> None:
    """Value and student gradient on uneven (and empty) vocabulary shards, every option, float64."""
    ranks = report[world]["ranks"]
    splits = {tuple(case["split"]) for case in ranks[0]["vocab"]}
    assert any(0 in split for split in splits) and any(len(set(split)) > 1 for split in splits)
    for rank in ranks:
        for case in rank["vocab"]:
            assert case["value_rel"] <= TOLERANCE, (rank["rank"], case)
            assert case["grad_rel"] <= TOLERANCE, (rank["rank"], case)
    largest, name = worst([case for rank in ranks for case in rank["vocab"]])
    print(f"world={world}: largest relative difference {largest:.3g} ({name})")


@pytest.mark.parametrize("world", WORLDS)
def test_data_parallel_global_num_items_equals_one_big_batch(
    report: dict[int, dict[str, Any]], world: int
) -> None:
    """Uneven split of the sequences (one rank may hold none), masks: summed gradient = single."""
    ranks = report[world]["ranks"]
    names = [case["name"] for case in ranks[0]["data"]]
    assert names == list(torch_worker.DATA_CASES)
    for rank in ranks:
        for case in rank["data"]:
            assert case["value_rel"] <= TOLERANCE, (rank["rank"], case)
            assert case["grad_rel"] <= TOLERANCE, (rank["rank"], case)
    num_items = {case["name"]: case["num_items"] for case in ranks[0]["data"]}
    assert num_items["kl_auto_no_mask"] == 5 * 4  # every element of the global [5, 4] loss
    assert num_items["js_batchmean_labels"] == 5  # sequences
    largest, name = worst([case for rank in ranks for case in rank["data"]])
    print(f"world={world}: data parallel, largest relative difference {largest:.3g} ({name})")


@pytest.mark.parametrize("world", WORLDS)
def test_mismatched_ranks_raise_value_error_everywhere(report: dict[int, dict[str, Any]], world: int) -> None:
    """A rank with other rows, rank, dtype, options or mask, or a local error (bad shapes, NaN with
    ``validate=True``): ValueError on every rank, in seconds (the descriptor all-gather comes before any
    other collective); the group stays usable afterwards."""
    for rank in report[world]["ranks"]:
        outcomes = {case["name"]: case for case in rank["mismatch"]}
        for case in outcomes.values():
            assert case["outcome"] == "ValueError", (rank["rank"], case)
            assert case["seconds"] < MISMATCH_SECONDS, (rank["rank"], case)
        assert "(3, 5)" in outcomes["rows"]["message"] and "(4, 5)" in outcomes["rows"]["message"]
        assert "(15,)" in outcomes["rank"]["message"]
        assert "torch.float32" in outcomes["dtype"]["message"]
        assert "options" in outcomes["options"]["message"]
        assert "mask" in outcomes["mask"]["message"]
        expected = "equal shapes" if rank["rank"] == 0 else "rank(s) [0]"
        assert expected in outcomes["local_error"]["message"]
        expected = "no NaN values" if rank["rank"] == 0 else "rank(s) [0]"
        assert expected in outcomes["validate"]["message"]


def test_import_is_light() -> None:
    """``import kldiv.distributed`` imports no framework; the submodules import their own."""
    code = (
        "import sys, kldiv.distributed; "
        "print(sorted(m for m in ('torch', 'jax', 'tensorflow', 'numba') if m in sys.modules))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"


def test_probabilities_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"y_true_format.*'logits', 'log_probs'"):
        VocabParallelKLDivergence(y_true_format="probs")
    with pytest.raises(ValueError, match="y_pred_format"):
        VocabParallelJSDivergence(y_pred_format="probs")
    with pytest.raises(ValueError, match="reduction"):
        VocabParallelKLDivergence(reduction="avg")
    with pytest.raises(TypeError, match="backend"):
        VocabParallelKLDivergence(backend="numba")


def test_config_round_trip() -> None:
    loss = VocabParallelJSDivergence(
        reduction="token_mean", beta=0.3, temperature=2.0, epsilon=0, y_true_format="log_probs"
    )
    config = loss.get_config()
    assert config["beta"] == 0.3 and config["y_true_format"] == "log_probs" and "backend" not in config
    assert VocabParallelJSDivergence.from_config(config).get_config() == config
    assert "beta=0.3" in repr(loss)


@pytest.mark.skipif(dist.is_available() and dist.is_initialized(), reason="a process group exists")
def test_needs_an_initialized_process_group() -> None:
    with pytest.raises(RuntimeError, match="init_process_group"):
        VocabParallelKLDivergence()(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(RuntimeError, match="init_process_group"):
        global_num_items(3)
