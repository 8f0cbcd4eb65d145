"""``VocabParallelFusedLinearKLDivergence`` / ``JSDivergence`` on 2 and 4 gloo ranks (CPU, 127.0.0.1).

The ranks run in ``fused_worker.py`` (one spawn per world size, every case in it): each rank's loss and
gradients (hidden states; its rows of the weight, bias and teacher shard) against the single-process
fused loss on the full head and against a float64 program written out by hand, on uneven and empty
vocabulary shards. Cheap checks that need no process group run in-process.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from kldiv.distributed.torch import (  # noqa: E402
    VocabParallelFusedLinearJSDivergence,
    VocabParallelFusedLinearKLDivergence,
)

from .helpers import run_worker  # noqa: E402

WORLDS = (2, 4)
MISMATCHES = ("hidden_grad", "teacher_shard", "options", "topk")  # fused_worker.MISMATCHES
TOLERANCE = {"float64": 1e-10, "float32": 1e-5}  # relative: max |x − ref| / max |ref|


@pytest.fixture(scope="module")
def report() -> dict[int, dict[str, Any]]:
    worlds = run_worker("fused_worker.py", *(str(w) for w in WORLDS))["worlds"]
    return {entry["world"]: entry for entry in worlds}


@pytest.mark.parametrize("world", WORLDS)
def test_every_rank_ran_every_case(report: dict[int, dict[str, Any]], world: int) -> None:
    ranks = report[world]["ranks"]
    assert [r["rank"] for r in ranks] == list(range(world))
    names = [c["name"] for c in ranks[0]["cases"]]
    assert len(names) > 60 and names[-1] == "after_mismatches"
    for rank in ranks:
        assert rank["errors"] == [], rank["errors"]
        assert [c["name"] for c in rank["cases"]] == names
    splits = {tuple(case["split"]) for case in ranks[0]["cases"]}
    assert any(0 in split for split in splits) and any(len(set(split)) > 1 for split in splits)


@pytest.mark.parametrize("world", WORLDS)
def test_equals_single_process_and_float64(report: dict[int, dict[str, Any]], world: int) -> None:
    """The loss and every gradient on each rank's shard: the single-process fused loss, the float64
    program (and its per-token values the float64 oracle's), the forward-only value."""
    largest = {"single": 0.0, "float64": 0.0}
    compared_float64 = 0
    for rank in report[world]["ranks"]:
        for case in rank["cases"]:
            tolerance = TOLERANCE[case["dtype"]]
            assert case["forward_only"] <= tolerance, (rank["rank"], case)
            for reference in ("single", "float64"):
                for name, (relative, _) in case.get(reference, {}).items():
                    assert relative <= tolerance, (rank["rank"], case["name"], reference, name, relative)
                    largest[reference] = max(largest[reference], relative)
            if "oracle" in case:
                compared_float64 += 1
                assert case["oracle"][0] <= TOLERANCE["float64"], (rank["rank"], case)
    assert compared_float64 > 40 * world  # most cases have a float64 reference
    print(f"world={world}: largest relative difference {largest}")


@pytest.mark.parametrize("world", WORLDS)
def test_partial_hidden_gradients_sum_to_the_full_one(report: dict[int, dict[str, Any]], world: int) -> None:
    partial = [c for rank in report[world]["ranks"] for c in rank["cases"] if "partial_hidden" in c]
    assert partial
    for case in partial:
        assert case["partial_hidden"][0] <= TOLERANCE[case["dtype"]], case
        assert case["partial_differs"], case  # reduce_hidden_grad=False really leaves partial sums


@pytest.mark.parametrize("world", WORLDS)
def test_mismatched_ranks_raise_value_error_everywhere(report: dict[int, dict[str, Any]], world: int) -> None:
    for rank in report[world]["ranks"]:
        assert [m["name"] for m in rank["mismatch"]] == list(MISMATCHES)
        for mismatch in rank["mismatch"]:
            assert mismatch["outcome"] == "ValueError", (rank["rank"], mismatch)
            assert mismatch["seconds"] < 30, mismatch  # the collectives' own timeout is 60 s


@pytest.mark.parametrize(
    "name, value",
    [
        ("backend", "numba"),
        ("teacher_topk_format", "logits"),
        ("vocab_alignment", "pad_student"),
        ("return_stats", True),
        ("weight_hard_loss", 0.5),
        ("weight_soft_loss", 0.5),
        ("accumulation_dtype", "float32"),
        ("support", "student"),
        ("topk", 8),
    ],
)
def test_options_the_collective_does_not_take(name: str, value: Any) -> None:
    with pytest.raises(TypeError, match=f"`{name}`"):
        VocabParallelFusedLinearKLDivergence(**{name: value})


def test_module_behaviour() -> None:
    loss = VocabParallelFusedLinearJSDivergence(beta=0.3, temperature=2.0, chunk_size=5, student_softcap=30.0)
    text = repr(loss)
    for shown in ("beta=0.3", "temperature=2.0", "chunk_size=5", "student_softcap=30.0"):
        assert shown in text
    config = loss.get_config()
    assert "return_stats" not in config and "weight_hard_loss" not in config
    again = VocabParallelFusedLinearJSDivergence.from_config(config)
    assert again.get_config() == config
    for clone in (copy.deepcopy(loss), pickle.loads(pickle.dumps(loss)), loss.to(torch.float64)):
        assert clone.get_config() == config
    assert loss.state_dict() == {}
    partial = VocabParallelFusedLinearKLDivergence(reduce_hidden_grad=False)
    assert partial.get_config()["reduce_hidden_grad"] is False
    with pytest.raises(TypeError, match="reduce_hidden_grad"):
        VocabParallelFusedLinearKLDivergence(reduce_hidden_grad="yes")
