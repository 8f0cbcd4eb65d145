"""``kldiv.distributed.torch`` on gloo ranks (CPU, 127.0.0.1 only), run by ``test_torch_distributed.py``.

``python torch_worker.py 2 4`` spawns the ranks of each world size once (``torch.multiprocessing.spawn``);
each rank runs every case below and writes its results to a JSON file; the parent prints one JSON
report (last line of stdout):

* ``vocab``: vocabulary-parallel loss and student gradient on uneven (even empty) vocabulary shards vs
  the single-process ``kldiv.KLDivergence`` / ``kldiv.JSDivergence`` (``backend="core"``) on the full
  rows, float64, every direction, JS(β), formats, Keras / exact mode, masks, labels, every reduction.
* ``data``: data parallel on an uneven split of the sequences (one rank may hold none) with
  ``num_items=global_num_items(...)``: the loss and the gradient summed over the ranks equal the
  single-process ones.
* ``mismatch``: ranks that disagree (rows, dtype, options, masks, a local error) all raise ValueError,
  in seconds; afterwards the group still computes a correct loss.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import socket
import sys
import tempfile
import time
import traceback
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import kldiv
from kldiv.distributed.torch import VocabParallelJSDivergence, VocabParallelKLDivergence, global_num_items

TIMEOUT = datetime.timedelta(seconds=60)
F64 = torch.float64
INF = math.inf
V = 11  # vocabulary of the vocab-parallel cases
SPLITS = {  # uneven shards of V, one list per case in turn (an empty shard included)
    1: [[V]],
    2: [[4, 7], [11, 0], [1, 10]],
    4: [[1, 4, 0, 6], [3, 3, 3, 2], [5, 1, 2, 3]],
}
LOGITS = {"y_true_format": "logits", "y_pred_format": "logits"}

# name: (divergence, options, reduction, extras). extras: data ("normal", "extreme" for Keras' clip,
# "inf_teacher" / "inf_common" for exact-mode zero probabilities), mask ("mask", "labels"), "weight"
# (a sample_weight shape), "num_items", "upstream" (reduction="none": a random grad_output), "axis".
VOCAB_CASES: dict[str, tuple[str, dict[str, Any], Any, dict[str, Any]]] = {
    "forward_keras": ("kl", {}, "auto", {}),
    "forward_exact_T2_squared_batchmean_mask": (
        "kl",
        {"epsilon": 0, "temperature": 2.0, "scale_by_temperature_squared": True},
        "batchmean",
        {"mask": "mask"},
    ),
    "reverse_exact_T1.5_token_mean_labels": (
        "kl",
        {"epsilon": 0, "direction": "reverse", "temperature": 1.5},
        "token_mean",
        {"mask": "labels"},
    ),
    "reverse_keras_clipped_sum": ("kl", {"direction": "reverse"}, "sum", {"data": "extreme"}),
    "symmetric_exact_T0.7_mean_weight": (
        "kl",
        {"epsilon": 0, "direction": "symmetric", "temperature": 0.7},
        "mean",
        {"weight": (3, 1)},
    ),
    "symmetric_keras_clipped_sum_over_batch_size_mask": (
        "kl",
        {"direction": "symmetric"},
        "sum_over_batch_size",
        {"data": "extreme", "mask": "mask"},
    ),
    "js0.5_exact_token_mean_mask": ("js", {"epsilon": 0, "beta": 0.5}, "token_mean", {"mask": "mask"}),
    "js0.1_keras_clipped_T2_squared_batchmean": (
        "js",
        {"beta": 0.1, "temperature": 2.0, "scale_by_temperature_squared": True},
        "batchmean",
        {"data": "extreme"},
    ),
    "js0.9_exact_none_upstream": ("js", {"epsilon": 0, "beta": 0.9}, "none", {"upstream": True}),
    "js0_keras_auto": ("js", {"beta": 0.0}, "auto", {}),
    "js1_exact_sum": ("js", {"epsilon": 0, "beta": 1.0}, "sum", {}),
    "forward_teacher_log_probs_keras_token_mean_labels": (
        "kl",
        {"y_true_format": "log_probs"},
        "token_mean",
        {"mask": "labels"},
    ),
    "reverse_log_probs_exact_mean_with_sample_weight": (
        "kl",
        {"y_true_format": "log_probs", "y_pred_format": "log_probs", "epsilon": 0, "direction": "reverse"},
        "mean_with_sample_weight",
        {"weight": (3, 5)},
    ),
    "reverse_log_probs_keras_clipped_none_upstream": (
        "kl",
        {"y_true_format": "log_probs", "y_pred_format": "log_probs", "direction": "reverse"},
        None,
        {"data": "extreme", "upstream": True},
    ),
    "symmetric_log_probs_T2_keras_auto": (
        "kl",
        {
            "y_true_format": "log_probs",
            "y_pred_format": "log_probs",
            "direction": "symmetric",
            "temperature": 2.0,
        },
        "auto",
        {},
    ),
    "forward_exact_inf_teacher_token_mean_num_items": (
        "kl",
        {"epsilon": 0},
        "token_mean",
        {"data": "inf_teacher", "mask": "mask", "num_items": 7.0},
    ),
    "js0.5_exact_inf_teacher_sum": ("js", {"epsilon": 0}, "sum", {"data": "inf_teacher"}),
    "js0.3_exact_inf_common_sum": ("js", {"epsilon": 0, "beta": 0.3}, "sum", {"data": "inf_common"}),
    "reverse_exact_inf_common_batchmean": (
        "kl",
        {"epsilon": 0, "direction": "reverse"},
        "batchmean",
        {"data": "inf_common"},
    ),
    "symmetric_exact_inf_common_none_upstream": (
        "kl",
        {"epsilon": 0, "direction": "symmetric"},
        "none",
        {"data": "inf_common", "upstream": True, "mask": "mask"},
    ),
    "forward_keras_axis1_T3_squared_mask": (
        "kl",
        {"temperature": 3.0, "scale_by_temperature_squared": True, "axis": 1},
        "auto",
        {"mask": "mask", "axis": 1},
    ),
    "js0.3_exact_axis1_token_mean_labels": (
        "js",
        {"epsilon": 0, "beta": 0.3, "axis": 1, "ignore_index": -1},
        "token_mean",
        {"mask": "labels", "axis": 1},
    ),
    "forward_keras_none_upstream": ("kl", {}, "none", {"upstream": True}),
    # Logit maps (soft cap, logit scale): element-wise, each rank maps its shard; -inf slots stay -inf,
    # logits of ~25 saturate a cap of 3.
    "forward_exact_softcaps_inf_common_token_mean_mask": (
        "kl",
        {"epsilon": 0, "student_softcap": 3.0, "teacher_softcap": 5.0, "teacher_logit_scale": 0.7},
        "token_mean",
        {"data": "inf_common", "mask": "mask"},
    ),
    "js0.3_keras_softcap_scale_extreme_T2_sum": (
        "js",
        {"beta": 0.3, "temperature": 2.0, "student_softcap": 3.0, "student_logit_scale": 1.3},
        "sum",
        {"data": "extreme"},
    ),
    "symmetric_exact_scale_axis1_none_upstream": (
        "kl",
        {"epsilon": 0, "direction": "symmetric", "student_logit_scale": 0.5, "axis": 1},
        "none",
        {"upstream": True, "axis": 1},
    ),
}


def full_inputs(index: int, extras: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The full (unsharded) float64 inputs of a case, the same on every rank."""
    generator = torch.Generator().manual_seed(1000 + index)
    axis = extras.get("axis", -1)
    shape = (3, V, 5) if axis == 1 else (3, 5, V)
    scale = 25.0 if extras.get("data") == "extreme" else 2.0
    teacher = scale * torch.randn(shape, generator=generator, dtype=F64)
    student = scale * torch.randn(shape, generator=generator, dtype=F64)
    if extras.get("data") in ("inf_teacher", "inf_common"):
        holes = torch.rand(shape, generator=generator) < 0.25
        teacher = teacher.masked_fill(holes, -INF)
        if extras["data"] == "inf_common":
            student = student.masked_fill(holes, -INF)
    if options.get("y_true_format") == "log_probs":
        teacher = torch.log_softmax(teacher, dim=axis)
    if options.get("y_pred_format") == "log_probs":
        student = torch.log_softmax(student, dim=axis)
    loss_shape = (3, 5)
    call: dict[str, Any] = {}
    if extras.get("mask") == "mask":
        call["mask"] = torch.rand(loss_shape, generator=generator) > 0.3
    elif extras.get("mask") == "labels":
        labels = torch.randint(0, V, loss_shape, generator=generator)
        call["labels"] = labels.masked_fill(
            torch.rand(loss_shape, generator=generator) < 0.3, options.get("ignore_index", -100)
        )
    if "weight" in extras:
        call["sample_weight"] = torch.rand(extras["weight"], generator=generator, dtype=F64) + 0.5
    if "num_items" in extras:
        call["num_items"] = torch.tensor(extras["num_items"], dtype=F64)
    upstream = torch.randn(loss_shape, generator=generator, dtype=F64) if extras.get("upstream") else None
    return {"teacher": teacher, "student": student, "call": call, "upstream": upstream, "axis": axis}


def rel(value: torch.Tensor, reference: torch.Tensor) -> float:
    """``max |value − reference| / max |reference|`` (infinities must sit at the same places)."""
    finite = torch.isfinite(reference)
    if not torch.equal(finite, torch.isfinite(value)) or not torch.equal(value[~finite], reference[~finite]):
        return INF
    if not bool(finite.any()):
        return 0.0
    scale = float(reference[finite].abs().max())
    return float((value[finite] - reference[finite]).abs().max()) / max(scale, 1e-300)


def value_and_grad(loss: Any, teacher: torch.Tensor, student: torch.Tensor, data: dict[str, Any]) -> Any:
    student = student.detach().clone().requires_grad_(True)
    value = loss(teacher, student, **data["call"])
    upstream = data["upstream"] if data["upstream"] is not None else torch.ones_like(value)
    (grad,) = torch.autograd.grad(value, student, grad_outputs=upstream)
    return value.detach(), grad


def vocab_case(index: int, name: str, rank: int, world: int) -> dict[str, Any]:
    divergence, options, reduction, extras = VOCAB_CASES[name]
    data = full_inputs(index, extras, options)
    agnostic = kldiv.KLDivergence if divergence == "kl" else kldiv.JSDivergence
    parallel = VocabParallelKLDivergence if divergence == "kl" else VocabParallelJSDivergence
    formats = {**LOGITS, **{k: v for k, v in options.items() if k.endswith("_format")}}
    rest = {k: v for k, v in options.items() if not k.endswith("_format")}
    reference = agnostic(reduction=reduction, backend="core", **formats, **rest)
    ref_value, ref_grad = value_and_grad(reference, data["teacher"], data["student"], data)
    split = SPLITS[world][index % len(SPLITS[world])]
    start, size = sum(split[:rank]), split[rank]
    axis = data["axis"]
    local = [x.narrow(axis, start, size) for x in (data["teacher"], data["student"])]
    loss = parallel(reduction=reduction, **options)
    value, grad = value_and_grad(loss, *local, data)
    with torch.no_grad():  # forward only: no gradient kept, same value
        value_rel = max(rel(value, ref_value), rel(loss(*local, **data["call"]), ref_value))
    return {
        "name": name,
        "split": split,
        "value_rel": value_rel,
        "grad_rel": rel(grad, ref_grad.narrow(axis, start, size)),
        "value": ref_value.flatten()[:1].item(),
    }


# Data parallel: a student Linear(6 → 9) on [sequences=5, tokens=4] inputs, split unevenly by sequence.
DATA_SPLITS = {1: [5], 2: [1, 4], 4: [0, 2, 1, 2]}
DATA_CASES = {
    "kl_token_mean_mask_T2": (
        "kl",
        {"temperature": 2.0, "y_true_format": "logits", "from_logits": True},
        "token_mean",
        "tokens",
    ),
    "js_batchmean_labels": (
        "js",
        {"beta": 0.3, "y_true_format": "logits", "from_logits": True, "epsilon": 0},
        "batchmean",
        "sequences",
    ),
    "reverse_keras3_mean_mask": (
        "kl",
        {"direction": "reverse", "y_true_format": "logits", "from_logits": True},
        "mean",
        "tokens",
    ),
    "kl_auto_no_mask": ("kl", {"y_true_format": "logits", "from_logits": True}, "auto", "elements"),
}


def data_inputs() -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(5, 4, 6, generator=generator, dtype=F64)
    teacher = 2 * torch.randn(5, 4, 9, generator=generator, dtype=F64)
    mask = torch.rand(5, 4, generator=generator) > 0.35
    mask[3] = False  # a sequence with no kept token
    labels = torch.randint(0, 9, (5, 4), generator=generator).masked_fill(~mask, -100)
    return x, teacher, mask, labels


def student() -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Linear(6, 9).double()


def data_loss(divergence: str, options: dict[str, Any], reduction: str) -> Any:
    cls = kldiv.KLDivergence if divergence == "kl" else kldiv.JSDivergence
    return cls(reduction=reduction, backend="core", **options)


def data_case(name: str, rank: int, world: int) -> dict[str, Any]:
    """Each rank: its rows, ``num_items=global_num_items(local count)``; gradients summed over ranks
    (DDP averages instead: then pass ``num_items / world``, see ``tests/integrations/ddp_worker.py``)."""
    divergence, options, reduction, count_kind = DATA_CASES[name]
    x, teacher, mask, labels = data_inputs()
    call_full: dict[str, Any] = {}
    if count_kind == "tokens":
        call_full["mask"] = mask
    elif count_kind == "sequences":
        call_full["labels"] = labels
    single = student()
    single_loss = data_loss(divergence, options, reduction)(teacher, single(x), **call_full)
    single_grads = torch.autograd.grad(single_loss, list(single.parameters()))

    split = DATA_SPLITS[world]
    rows = slice(sum(split[:rank]), sum(split[: rank + 1]))
    call = {key: value[rows] for key, value in call_full.items()}
    local_x, local_teacher = x[rows], teacher[rows]
    if count_kind == "tokens":
        local_count: Any = call["mask"].sum()  # a tensor
    elif count_kind == "sequences":
        local_count = local_x.shape[0]  # an int
    else:
        local_count = float(local_x.shape[0] * local_x.shape[1])  # a float
    num_items = global_num_items(local_count)
    model = student()
    loss = data_loss(divergence, options, reduction)(
        local_teacher, model(local_x), **call, num_items=num_items
    )
    loss.backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    for grad in grads:
        dist.all_reduce(grad)
    total = loss.detach().clone()
    dist.all_reduce(total)
    return {
        "name": name,
        "split": split,
        "num_items": float(num_items),
        "value_rel": rel(total, single_loss.detach()),
        "grad_rel": max(rel(g, s) for g, s in zip(grads, single_grads, strict=True)),
    }


def mismatch_case(name: str, rank: int, world: int) -> dict[str, Any]:
    """One rank (the last, or rank 0 for a local error) disagrees; every rank must raise ValueError."""
    generator = torch.Generator().manual_seed(11)
    teacher = torch.randn(3, 5, 4, generator=generator, dtype=F64)
    student_shard = torch.randn(3, 5, 4, generator=generator, dtype=F64, requires_grad=True)
    odd = rank == world - 1
    options: dict[str, Any] = {"reduction": "token_mean"}
    call: dict[str, Any] = {}
    if name == "rows" and odd:
        teacher, student_shard = (torch.randn(4, 5, 4, dtype=F64) for _ in range(2))
    elif name == "rank" and odd:
        teacher, student_shard = (torch.randn(15, 4, dtype=F64) for _ in range(2))
    elif name == "dtype" and odd:
        teacher, student_shard = teacher.float(), student_shard.detach().float()
    elif name == "options" and odd:
        options["temperature"] = 2.0
    elif name == "mask":
        call["mask"] = torch.ones(3, 5, dtype=torch.bool)
        call["mask"][0, : rank + 1] = False
    elif name == "local_error" and rank == 0:
        teacher = teacher[..., :3]
    elif name == "validate":
        options["validate"] = True
        if rank == 0:
            teacher = teacher.clone()
            teacher[0, 0, 0] = math.nan
    begin = time.perf_counter()
    try:
        VocabParallelKLDivergence(**options)(teacher, student_shard, **call)
        outcome, message = "returned", ""
    except ValueError as error:
        outcome, message = "ValueError", str(error)
    except Exception as error:
        outcome, message = type(error).__name__, str(error)
    return {"name": name, "outcome": outcome, "message": message, "seconds": time.perf_counter() - begin}


def rank_main(rank: int, world: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=TIMEOUT)
    results: dict[str, Any] = {"rank": rank, "vocab": [], "data": [], "mismatch": [], "errors": []}
    begin = time.perf_counter()
    try:
        for index, name in enumerate(VOCAB_CASES):
            t0 = time.perf_counter()
            results["vocab"].append(vocab_case(index, name, rank, world))
            results["vocab"][-1]["seconds"] = time.perf_counter() - t0
        for name in DATA_CASES:
            t0 = time.perf_counter()
            results["data"].append(data_case(name, rank, world))
            results["data"][-1]["seconds"] = time.perf_counter() - t0
        for name in ("rows", "rank", "dtype", "options", "mask", "local_error", "validate"):
            results["mismatch"].append(mismatch_case(name, rank, world))
        after = vocab_case(0, "forward_exact_T2_squared_batchmean_mask", rank, world)  # the group still works
        results["vocab"].append({**after, "name": "after_mismatches"})
    except Exception:
        results["errors"].append(traceback.format_exc())
    results["seconds"] = time.perf_counter() - begin
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(results, handle)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_world(world: int, entry: Any = None) -> dict[str, Any]:
    """Spawn ``world`` ranks of ``entry(rank, world, out_dir)`` (default :func:`rank_main`; each writes
    ``rank<r>.json`` into ``out_dir``) on a free 127.0.0.1 port; their results, rank by rank."""
    os.environ["MASTER_PORT"] = str(free_port())
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(entry or rank_main, args=(world, out_dir), nprocs=world, join=True)
        ranks = []
        for rank in range(world):
            with open(os.path.join(out_dir, f"rank{rank}.json")) as handle:
                ranks.append(json.load(handle))
    return {"world": world, "seconds": time.perf_counter() - begin, "ranks": ranks}


def main(entry: Any = None) -> None:
    """``python <worker>.py 2 4``: each world size's ranks of ``entry``, one JSON report on stdout."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"})
    print(json.dumps({"worlds": [run_world(int(world), entry) for world in sys.argv[1:]]}))


if __name__ == "__main__":
    main()
