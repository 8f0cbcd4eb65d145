"""The vocabulary-parallel losses give the core's answer on hostile values: the value, the gradient
w.r.t. each participant's student shard, and where each is NaN or infinite.

``kldiv.distributed.torch.VocabParallelKLDivergence`` / ``VocabParallelJSDivergence`` on a 1-rank
gloo group (in this process) and on a 2-rank gloo group (this file run as a script: two spawned
ranks on 127.0.0.1, uneven and empty vocabulary shards), and
``kldiv.distributed.jax.vocab_parallel_kl_divergence`` / ``vocab_parallel_js_divergence`` with their
collectives over a ``vmap`` axis (one shard per vocabulary entry; ``lax.pmax`` / ``lax.psum`` over a
named axis are the collectives ``shard_map`` runs, without the 4-device interpreter that
``tests/distributed/jax_worker.py`` needs) must equal ``kldiv.KLDivergence`` / ``kldiv.JSDivergence``
(``y_true_format="logits"``, ``from_logits=True``, ``backend="core"``) on the concatenated shards, for
the hostile logits of ``test_fused_vs_core.py`` (NaN, ±inf, rows of ``-inf``, ±1e30, 1e4, denormal
scale, rows masked by ``labels=-100`` or ``mask``, batches masked entirely), every direction and JS,
``epsilon ∈ {None (exact), 1e-7}``, ``T ∈ {1, 2}``, reductions ``"auto"``, ``"sum"``, ``"none"``.
The rule of equality is ``test_kernels_vs_core.py``'s.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from hypothesis import given
from test_fused_vs_core import (
    ALL_OPTIONS,
    CHUNKED,
    SETTINGS,
    Case,
    _results,
    _weights,
    hostile_case,
    through_core,
)
from test_kernels_vs_core import assert_same

from kldiv.distributed.torch import VocabParallelJSDivergence, VocabParallelKLDivergence

CASES = {name: case for name, case in CHUNKED.items() if name != "one_chunk_per_row"}  # chunking aside
VOCAB = CHUNKED["nan_in_student"].teacher.shape[1]
SPLITS = {1: [[VOCAB]], 2: [[3, VOCAB - 3], [VOCAB, 0]]}  # uneven shards, an empty one
WORKER_TIMEOUT_S = 600


def through_vocab(case: Case, options: dict, reduction: str, split: list[int], rank: int) -> dict:
    """This rank's value and student-shard gradient from the torch vocabulary-parallel loss."""
    start, size = sum(split[:rank]), split[rank]
    teacher = torch.tensor(case.teacher[:, start : start + size])
    student = torch.tensor(case.student[:, start : start + size], requires_grad=True)
    loss_type = VocabParallelJSDivergence if "beta" in options else VocabParallelKLDivergence
    value = loss_type(reduction=reduction, **options)(teacher, student, **case.call())
    return _results(value, {"student": student})


def check_torch(case: Case, options: dict, reduction: str, rank: int, world: int, name: str = "") -> None:
    """Every split of the vocabulary over ``world`` ranks: this rank's results equal the core's."""
    with np.errstate(all="ignore"):
        want = through_core(case, options, reduction, torch.float32)
        truth = through_core(case, options, reduction, torch.float64)
        for split in SPLITS[world]:
            start, size = sum(split[:rank]), split[rank]
            got = through_vocab(case, options, reduction, split, rank)
            what = f"{name} world={world} split={split} rank={rank} {options} reduction={reduction}"
            assert_same(got["value"], want["value"], truth["value"], f"value {what}")
            columns = slice(start, start + size)
            assert_same(
                got["grad student"],
                want["grad student"][:, columns],
                truth["grad student"][:, columns],
                f"gradient {what}",
            )


def every_option(case: Case, rank: int, world: int, name: str) -> None:
    for options, reduction in ALL_OPTIONS:
        check_torch(case, options, reduction, rank, world, name)


def one_rank_group() -> None:
    """A one-rank gloo default group (in-memory store), as ``tests/modules/cases.py`` makes it."""
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    assert dist.get_world_size() == 1


@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_one_rank_named_edge_case(name: str) -> None:
    one_rank_group()
    every_option(CASES[name], 0, 1, name)


@SETTINGS
@given(case=hostile_case(fused=False))
def test_torch_one_rank_hostile_values(case) -> None:
    one_rank_group()
    case, options, reduction = case
    check_torch(case, options, reduction, 0, 1, "hypothesis")


def test_torch_two_ranks_agree_with_core() -> None:
    """Both ranks of a 2-rank gloo group, every named case on both splits, report no failure."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())],
        env=env,
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(report) == ["0", "1"], report
    for rank, entry in report.items():
        assert entry["checked"] == len(CASES) * len(ALL_OPTIONS), (rank, entry["checked"])
        assert entry["failures"] == [], "\n".join(entry["failures"][:8])


# JAX: shards along a vmap axis named "vocab" (one vocabulary entry each).


def _jax_batch(cases: list[Case], masking: str) -> Case:
    """The rows of ``cases`` stacked into one batch (rows are independent), their masks as
    ``labels`` or ``mask``."""
    kept = []
    for case in cases:
        keep = np.ones(case.teacher.shape[0], dtype=bool)
        if case.labels is not None:
            keep &= case.labels != -100
        if case.mask is not None:
            keep &= case.mask
        kept.append(keep)
    keep = np.concatenate(kept)
    return Case(
        teacher=np.concatenate([c.teacher for c in cases]),
        student=np.concatenate([c.student for c in cases]),
        labels=np.where(keep, 1, -100) if masking == "labels" else None,
        mask=keep if masking == "mask" else None,
    )


_PARTLY_MASKED = [case for name, case in sorted(CASES.items()) if not name.startswith("all_masked")]
JAX_BATCHES = {
    "every_case_labels": _jax_batch(_PARTLY_MASKED, "labels"),
    "every_case_mask": _jax_batch(_PARTLY_MASKED, "mask"),
    "all_masked_labels": CASES["all_masked_labels"],
    "all_masked_mask": CASES["all_masked_mask"],
}


def through_jax(case: Case, options: dict, reduction: str, parallel: bool) -> dict:
    """Value and student gradient from the JAX vocabulary-parallel function (``parallel``) or from
    ``kldiv.KLDivergence`` / ``JSDivergence`` (``backend="core"``) on the full JAX arrays."""
    import jax
    import jax.numpy as jnp

    import kldiv
    from kldiv.distributed import jax as kdj

    js = "beta" in options
    call = {k: None if v is None else jnp.asarray(v.numpy()) for k, v in case.call().items()}
    teacher, student = jnp.asarray(case.teacher), jnp.asarray(case.student)
    if parallel:
        function = kdj.vocab_parallel_js_divergence if js else kdj.vocab_parallel_kl_divergence

        def per_shard(t, s):
            return function(t, s, axis_name="vocab", reduction=reduction, **call, **options)

        def loss(s):  # [V, rows, 1] shards; every shard returns the same loss
            return jax.vmap(per_shard, axis_name="vocab")(teacher.T[..., None], s)[0]

        value, backward = jax.vjp(loss, student.T[..., None])
    else:
        core = (kldiv.JSDivergence if js else kldiv.KLDivergence)(
            reduction=reduction, y_true_format="logits", from_logits=True, backend="core", **options
        )
        value, backward = jax.vjp(lambda s: core(teacher, s, **call), student)
    upstream = jnp.asarray(_weights(value.size, torch.float32).numpy()).reshape(value.shape)
    (grad,) = backward(upstream)
    grad = grad[..., 0].T if parallel else grad
    return {"value": np.asarray(value, dtype=np.float64), "grad student": np.asarray(grad, dtype=np.float64)}


# A shard of one vocabulary entry is no size-1 distribution axis: no warning on this path.
@pytest.mark.filterwarnings("error:Argument `y_pred`. the distribution axis")
@pytest.mark.parametrize("name", sorted(JAX_BATCHES))
def test_jax_vmap_axis_agrees_with_core(name: str) -> None:
    case = JAX_BATCHES[name]
    with np.errstate(all="ignore"):
        for options, reduction in ALL_OPTIONS:
            want = through_jax(case, options, reduction, parallel=False)
            got = through_jax(case, options, reduction, parallel=True)
            truth = through_core(case, options, reduction, torch.float64)
            for key in ("value", "grad student"):
                what = f"jax {name} {key} {options} reduction={reduction}"
                assert_same(got[key], want[key], truth[key], what)


# The 2-rank worker (this file run as a script).


def rank_main(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=120),
    )
    failures, checked = [], 0
    for name, case in sorted(CASES.items()):
        for options, reduction in ALL_OPTIONS:
            try:
                check_torch(case, options, reduction, rank, world, name)
            except AssertionError as error:
                failures.append(f"{name}: {str(error)[:600]}")
            checked += 1
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump({"checked": checked, "failures": failures}, handle)
    dist.destroy_process_group()


def worker_main(world: int = 2) -> None:
    import torch.multiprocessing as mp

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(rank_main, args=(world, port, out_dir), nprocs=world, join=True)
        report = {}
        for rank in range(world):
            with open(os.path.join(out_dir, f"rank{rank}.json")) as handle:
                report[str(rank)] = json.load(handle)
    print(json.dumps(report))


if __name__ == "__main__":
    worker_main()


@pytest.mark.parametrize("check_vma", [True, False])
def test_jax_shard_map_one_device(check_vma: bool) -> None:
    """Under ``shard_map`` (a one-device mesh: the varying / invariant typing of ``check_vma`` applies
    whatever the mesh size), the vocabulary-parallel gradient on a row whose gradient sum is infinite
    (exact reverse KL, a teacher logit of -inf) is the core's: NaN in every entry of that row."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    import kldiv
    from kldiv.distributed import jax as kdj

    case = CASES["neg_inf_in_teacher"]
    teacher, student = jnp.asarray(case.teacher), jnp.asarray(case.student)
    mesh = jax.make_mesh((1,), ("vocab",), devices=jax.devices()[:1])

    def local(t, s):
        return kdj.vocab_parallel_kl_divergence(t, s, axis_name="vocab", reduction="sum", direction="reverse")

    sharded = jax.shard_map(
        local, mesh=mesh, in_specs=(P(None, "vocab"), P(None, "vocab")), out_specs=P(), check_vma=check_vma
    )
    core = kldiv.KLDivergence(
        reduction="sum", y_true_format="logits", from_logits=True, backend="core", direction="reverse"
    )
    spec = jax.sharding.NamedSharding(mesh, P(None, "vocab"))
    with jax.set_mesh(mesh):
        placed_teacher, placed_student = jax.device_put(teacher, spec), jax.device_put(student, spec)
        value, grad = jax.value_and_grad(lambda s: sharded(placed_teacher, s))(placed_student)
    want_value, want_grad = jax.value_and_grad(lambda s: core(teacher, s))(student)
    truth = through_core(case, {"direction": "reverse"}, "sum", torch.float64)
    assert np.isnan(np.asarray(want_grad)[1]).all()
    assert_same(np.asarray(value, np.float64), np.asarray(want_value, np.float64), truth["value"], "value")
    assert_same(
        np.asarray(grad, np.float64), np.asarray(want_grad, np.float64), truth["grad student"], "grad"
    )
