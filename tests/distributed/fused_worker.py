"""``VocabParallelFusedLinear*`` on gloo ranks (CPU, 127.0.0.1), run by ``test_fused_vocab_parallel.py``.

``python fused_worker.py 2 4`` spawns the ranks of each world size once; each rank runs every case and
writes its results to a JSON file; the parent prints one JSON report (last line of stdout). For each
case (hidden ``[3, 4, 8]``, a head of ``V = 37`` rows split unevenly, even with an empty shard) every
rank compares its loss and gradients (hidden; its own rows of the weight, bias and teacher shard) with

* ``single``: the single-process :class:`kldiv.fused.torch.FusedLinearKLDivergence` /
  ``FusedLinearJSDivergence`` on the full head (``backend="core"``: autograd through kldiv's core);
* ``float64``: a materialized float64 textbook program in torch (``[BT, V]`` logits, the logit maps,
  log-softmax, the divergence written out with ``0·log 0 = 0``, the reduction), differentiated by
  autograd; its per-token values are checked against :mod:`kldiv.testing.reference` (``oracle``).

Differences are ``max |x − ref| / max |ref|`` (NaN / inf patterns must match, else ``inf``) and the
largest absolute difference.
"""

from __future__ import annotations

import datetime
import itertools
import json
import math
import os
import time
import traceback
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch_worker import main

from kldiv.distributed.torch import VocabParallelFusedLinearJSDivergence, VocabParallelFusedLinearKLDivergence
from kldiv.fused.torch import FusedLinearJSDivergence, FusedLinearKLDivergence
from kldiv.testing import reference

TIMEOUT = datetime.timedelta(seconds=60)
F64 = torch.float64
INF = math.inf
B, T, H, H_T, V = 3, 4, 8, 6, 37
SPLITS = {1: [[V]], 2: [[19, 18], [5, 32], [37, 0]], 4: [[10, 9, 9, 9], [1, 20, 0, 16], [9, 10, 9, 9]]}
DIVERGENCES = {
    "forward": ("kl", {"direction": "forward"}),
    "reverse": ("kl", {"direction": "reverse"}),
    "symmetric": ("kl", {"direction": "symmetric"}),
    "js0.5": ("js", {"beta": 0.5}),
    "js0.2": ("js", {"beta": 0.2}),
}
REDUCTIONS = ("token_mean", "sum", "batchmean", "none")
MASKS = (None, "mask", "labels")
MAPS = (
    {},
    {"student_softcap": 3.0},
    {"teacher_logit_scale": 0.5, "student_logit_scale": 1.5},
    {"student_softcap": 4.0, "teacher_softcap": 2.5, "student_logit_scale": 0.8},
)


def _grid() -> dict[str, dict[str, Any]]:
    """Every direction × reduction × mask; temperature, T², logit maps, teacher form, teacher gradient
    and chunk size vary with the case."""
    cases = {}
    for index, (name, reduction, mask) in enumerate(itertools.product(DIVERGENCES, REDUCTIONS, MASKS)):
        divergence, options = DIVERGENCES[name]
        options = {
            **options,
            "temperature": (1.0, 2.0, 0.7)[index % 3],
            "scale_by_temperature_squared": index % 5 == 0,
            "chunk_size": (5, 12, 1)[index % 3],
            **MAPS[index % 4],
        }
        cases[f"{name}_{reduction}_{mask or 'nomask'}"] = {
            "divergence": divergence,
            "options": options,
            "reduction": reduction,
            "mask": mask,
            "teacher": ("logits", "hidden")[index % 2],
            "teacher_grad": index % 3 == 1,
        }
    return cases


CASES: dict[str, dict[str, Any]] = {
    **_grid(),
    # -inf logits through the biases at the same entries on both sides (exact mode: finite); entries
    # 10..18 are rank 1's whole shard with the 4-way split [10, 9, 9, 9].
    "holes_forward_teacher_hidden_grad": {
        "divergence": "kl",
        "options": {"temperature": 2.0, "chunk_size": 5},
        "reduction": "token_mean",
        "mask": "mask",
        "teacher": "hidden",
        "teacher_grad": True,
        "data": "holes",
    },
    "holes_reverse_softcap_none": {
        "divergence": "kl",
        "options": {"direction": "reverse", "student_softcap": 3.0, "chunk_size": 4},
        "reduction": "none",
        "mask": "labels",
        "teacher": "logits",
        "teacher_grad": True,
        "data": "holes",
    },
    "holes_symmetric_sum": {
        "divergence": "kl",
        "options": {"direction": "symmetric", "chunk_size": 7},
        "reduction": "sum",
        "mask": None,
        "teacher": "hidden",
        "teacher_grad": False,
        "data": "holes",
    },
    "holes_js0.3_batchmean": {
        "divergence": "js",
        "options": {"beta": 0.3, "temperature": 1.5, "chunk_size": 5},
        "reduction": "batchmean",
        "mask": "mask",
        "teacher": "hidden",
        "teacher_grad": True,
        "data": "holes",
    },
    # The student puts no mass where the teacher does: forward KL +inf on every row.
    "student_inf_forward_sum": {
        "divergence": "kl",
        "options": {"chunk_size": 5},
        "reduction": "sum",
        "mask": "mask",
        "teacher": "logits",
        "teacher_grad": False,
        "data": "student_inf",
    },
    "student_inf_forward_none": {
        "divergence": "kl",
        "options": {"chunk_size": 5},
        "reduction": "none",
        "mask": "mask",
        "teacher": "logits",
        "teacher_grad": False,
        "data": "student_inf",
    },
    # Masked rows full of NaN (teacher logits) and of 1e200 (student hidden states: inf logits).
    "hostile_masked_rows_js": {
        "divergence": "js",
        "options": {"chunk_size": 5, "temperature": 2.0},
        "reduction": "token_mean",
        "mask": "mask",
        "teacher": "logits",
        "teacher_grad": False,
        "data": "nan_masked",
    },
    "hostile_masked_rows_reverse_labels": {
        "divergence": "kl",
        "options": {"direction": "reverse", "chunk_size": 12},
        "reduction": "sum",
        "mask": "labels",
        "teacher": "logits",
        "teacher_grad": False,
        "data": "nan_masked",
    },
    "every_row_masked_token_mean": {
        "divergence": "kl",
        "options": {"chunk_size": 5},
        "reduction": "token_mean",
        "mask": "none_kept",
        "teacher": "hidden",
        "teacher_grad": True,
    },
    "sample_weight_num_items_single_only": {
        "divergence": "js",
        "options": {"beta": 0.4, "chunk_size": 5},
        "reduction": "token_mean",
        "mask": "mask",
        "teacher": "hidden",
        "teacher_grad": True,
        "sample_weight": True,
        "num_items": 7.0,
    },
    "float32_forward_T2": {
        "divergence": "kl",
        "options": {"temperature": 2.0, "chunk_size": 5, "student_softcap": 5.0},
        "reduction": "token_mean",
        "mask": "labels",
        "teacher": "hidden",
        "teacher_grad": True,
        "dtype": "float32",
    },
    "float32_js_none": {
        "divergence": "js",
        "options": {"chunk_size": 5},
        "reduction": "none",
        "mask": "mask",
        "teacher": "logits",
        "teacher_grad": True,
        "dtype": "float32",
    },
    # The chunk size from the memory budget is planned for the largest shard: with 1300 tokens the
    # shards of 19 and 18 entries alone would give 600 and 633 rows per chunk.
    "memory_budget_chunks_agree": {
        "divergence": "kl",
        "options": {"memory_budget": 10 * 19 * 8 * 600},
        "reduction": "token_mean",
        "mask": None,
        "teacher": "logits",
        "teacher_grad": False,
        "tokens": 1300,
    },
}
CHECK_ORACLE = ("float64",)  # the programs whose values are checked against kldiv.testing.reference


def full_data(index: int, case: dict[str, Any]) -> dict[str, Any]:
    """The full (unsharded) inputs of a case, the same on every rank."""
    generator = torch.Generator().manual_seed(2000 + index)
    dtype = getattr(torch, case.get("dtype", "float64"))
    batch, tokens = (1, case["tokens"]) if "tokens" in case else (B, T)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (scale * torch.randn(*shape, generator=generator, dtype=F64)).to(dtype)

    data = {
        "hidden": randn(batch, tokens, H),
        "weight": randn(V, H, scale=0.7),
        "bias": randn(V),
        "teacher_hidden": randn(batch, tokens, H_T),
        "teacher_weight": randn(V, H_T, scale=0.8),
        "teacher_bias": randn(V),
        "teacher_logits": randn(batch, tokens, V, scale=2.0),
    }
    kept = torch.rand(batch, tokens, generator=generator) > 0.3
    kept[0, 0], kept[-1, -1] = True, False
    call: dict[str, Any] = {}
    if case["mask"] == "mask":
        call["mask"] = kept
    elif case["mask"] == "labels":
        call["labels"] = torch.randint(0, V, (batch, tokens), generator=generator).masked_fill(~kept, -100)
    elif case["mask"] == "none_kept":
        kept = torch.zeros(batch, tokens, dtype=torch.bool)
        call["mask"] = kept
    else:
        kept = torch.ones(batch, tokens, dtype=torch.bool)
    kind = case.get("data")
    if kind == "holes":
        holes = torch.tensor([0, 3, 9, *range(10, 19), 22, 36])
        data["bias"][holes] = -INF
        data["teacher_bias"][holes] = -INF
        data["teacher_logits"][..., holes] = -INF
    elif kind == "student_inf":
        data["bias"][[4, 30]] = -INF
    elif kind == "nan_masked":
        data["teacher_logits"][~kept] = math.nan
        data["hidden"][~kept] = 1e200
    if case.get("sample_weight"):
        call["sample_weight"] = torch.rand(batch, tokens, generator=generator, dtype=F64).to(dtype) + 0.5
    if "num_items" in case:
        call["num_items"] = torch.tensor(case["num_items"], dtype=dtype)
    data["upstream"] = randn(batch * tokens) if case["reduction"] == "none" else None
    return {"data": data, "call": call, "kept": kept}


def logit_map(z: torch.Tensor, scale: float | None, cap: float | None) -> torch.Tensor:
    """``cap·tanh(scale·z / cap)`` (−inf stays −inf), written out."""
    if scale is not None:
        z = z * scale
    if cap is not None:
        z = torch.where(z == -INF, z, cap * torch.tanh(z / cap))
    return z


def textbook_per_token(zt: torch.Tensor, zs: torch.Tensor, case: dict[str, Any]) -> torch.Tensor:
    """The divergence of each row of float64 logits: log-softmax at temperature T, then
    ``Σ p (log p − log q)`` with ``0·log 0 = 0`` (zeros replaced before any product: no NaN gradient)."""
    options = case["options"]
    temperature = options.get("temperature", 1.0)
    lt, ls = torch.log_softmax(zt / temperature, -1), torch.log_softmax(zs / temperature, -1)

    def kl(la: torch.Tensor, lb: torch.Tensor) -> torch.Tensor:
        zero = la == -INF
        la, lb = torch.where(zero, 0.0, la), torch.where(zero, 0.0, lb)
        return torch.where(zero, 0.0, la.exp() * (la - lb)).sum(-1)

    if case["divergence"] == "js":
        beta = options.get("beta", 0.5)
        both = (lt == -INF) & (ls == -INF)
        lt_safe, ls_safe = torch.where(both, 0.0, lt), torch.where(both, 0.0, ls)
        m = torch.logaddexp(lt_safe + math.log(beta), ls_safe + math.log1p(-beta))
        m = torch.where(both, -INF, m)
        return beta * kl(lt, m) + (1 - beta) * kl(ls, m)
    direction = options.get("direction", "forward")
    value = torch.zeros(zt.shape[:-1], dtype=zt.dtype)
    if direction in ("forward", "symmetric"):
        value = value + kl(lt, ls)
    if direction in ("reverse", "symmetric"):
        value = value + kl(ls, lt)
    return value


def oracle_per_token(zt: torch.Tensor, zs: torch.Tensor, case: dict[str, Any]) -> np.ndarray:
    """:mod:`kldiv.testing.reference` on the same mapped float64 logits (NumPy, no autograd)."""
    options = case["options"]
    temperature = options.get("temperature", 1.0)
    zt, zs = zt.detach().numpy(), zs.detach().numpy()
    if case["divergence"] == "js":
        return reference.js_divergence(
            zt,
            zs,
            beta=options.get("beta", 0.5),
            y_true_format="logits",
            y_pred_format="logits",
            epsilon=0.0,
            temperature=temperature,
        )
    return reference.kl_divergence(
        zt / temperature,
        zs / temperature,
        y_true_format="logits",
        y_pred_format="logits",
        epsilon=0.0,
        direction=options.get("direction", "forward"),
    )


def leaves(case: dict[str, Any], data: dict[str, Any], rows: slice) -> dict[str, torch.Tensor]:
    """The tensors a call differentiates: hidden, this rank's weight / bias rows, the teacher's."""
    out = {
        "hidden": data["hidden"],
        "weight": data["weight"][rows],
        "bias": data["bias"][rows],
    }
    if case["teacher"] == "logits":
        out["teacher_logits"] = data["teacher_logits"][..., rows]
    else:
        out["teacher_hidden"] = data["teacher_hidden"]
        out["teacher_weight"] = data["teacher_weight"][rows]
        out["teacher_bias"] = data["teacher_bias"][rows]
    return {
        k: v.detach().clone().requires_grad_(not k.startswith("teacher_") or case["teacher_grad"])
        for k, v in out.items()
    }


def _differentiate(value: torch.Tensor, tensors: dict[str, torch.Tensor], upstream: Any) -> dict[str, Any]:
    wanted = {k: v for k, v in tensors.items() if v.requires_grad}
    grad_output = upstream if upstream is not None else torch.ones_like(value)
    grads = torch.autograd.grad(value, list(wanted.values()), grad_outputs=grad_output, allow_unused=True)
    return {"value": value.detach(), **{k: g for k, g in zip(wanted, grads, strict=True)}}


def _teacher_call(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in tensors.items() if k.startswith("teacher_")}


def vp_program(
    case: dict[str, Any], full: dict[str, Any], rows: slice, grad: bool = True, **extra: Any
) -> dict[str, Any]:
    """This rank's call of the vocabulary-parallel loss (its rows of the heads): value and gradients."""
    kl = case["divergence"] == "kl"
    cls = VocabParallelFusedLinearKLDivergence if kl else VocabParallelFusedLinearJSDivergence
    tensors = leaves(case, full["data"], rows)
    loss = cls(reduction=case["reduction"], **case["options"], **extra)
    hidden, weight, bias = tensors["hidden"], tensors["weight"], tensors["bias"]
    if not grad:
        with torch.no_grad():
            return {"value": loss(hidden, weight, bias, **_teacher_call(tensors), **full["call"])}
    value = loss(hidden, weight, bias, **_teacher_call(tensors), **full["call"])
    return _differentiate(value, tensors, full["data"]["upstream"])


def single_program(case: dict[str, Any], full: dict[str, Any]) -> dict[str, Any]:
    cls = FusedLinearKLDivergence if case["divergence"] == "kl" else FusedLinearJSDivergence
    tensors = leaves(case, full["data"], slice(None))
    loss = cls(reduction=case["reduction"], backend="core", **case["options"])
    hidden, weight, bias = tensors["hidden"], tensors["weight"], tensors["bias"]
    value = loss(hidden, weight, bias, **_teacher_call(tensors), **full["call"])
    return _differentiate(value, tensors, full["data"]["upstream"])


def float64_program(case: dict[str, Any], full: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray, Any]:
    """The materialized textbook program in float64; also the oracle's and its own per-token values."""
    options = case["options"]
    tensors = leaves(case, {k: v if v is None else v.double() for k, v in full["data"].items()}, slice(None))
    kept = full["kept"].reshape(-1)
    student = tensors["hidden"] @ tensors["weight"].T + tensors["bias"]
    if case["teacher"] == "logits":
        teacher = tensors["teacher_logits"]
    else:
        teacher = tensors["teacher_hidden"] @ tensors["teacher_weight"].T + tensors["teacher_bias"]
    student = logit_map(student, options.get("student_logit_scale"), options.get("student_softcap"))
    teacher = logit_map(teacher, options.get("teacher_logit_scale"), options.get("teacher_softcap"))
    student, teacher = student.reshape(-1, V), teacher.reshape(-1, V)
    # Masked rows never enter the formula (their logits may be NaN or inf).
    safe = kept.unsqueeze(-1)
    student = torch.where(safe, student, 0.0)
    teacher = torch.where(safe, teacher, 0.0)
    per_token = torch.where(kept, textbook_per_token(teacher, student, case), 0.0)
    oracle = np.where(kept.numpy(), oracle_per_token(teacher, student, case), 0.0)
    if options.get("scale_by_temperature_squared"):
        per_token = per_token * options.get("temperature", 1.0) ** 2
        oracle = oracle * options.get("temperature", 1.0) ** 2
    reduction = case["reduction"]
    if reduction == "none":
        value = per_token  # per token, flat [BT] as the fused losses return it
    elif reduction == "sum":
        value = per_token.sum()
    elif reduction == "batchmean":
        value = per_token.sum() / full["kept"].shape[0]
    else:  # token_mean: over the kept tokens, 0 when there are none
        value = per_token.sum() / max(int(kept.sum()), 1)
    upstream = full["data"]["upstream"]
    return _differentiate(value, tensors, None if upstream is None else upstream.double()), oracle, per_token


def rel(value: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """``(max |value − ref| / max |ref|, max |value − ref|)`` over the finite entries of ``ref``;
    ``inf`` when the NaN / ±inf patterns differ."""
    value, ref = value.detach().double(), ref.detach().double()
    if value.shape != ref.shape:
        return INF, INF
    if not torch.equal(torch.isnan(value), torch.isnan(ref)):
        return INF, INF
    infinite = torch.isinf(ref)
    if not torch.equal(infinite, torch.isinf(value)) or not torch.equal(value[infinite], ref[infinite]):
        return INF, INF
    finite = torch.isfinite(ref)
    if not bool(finite.any()):
        return 0.0, 0.0
    diff = float((value[finite] - ref[finite]).abs().max())
    return diff / max(float(ref[finite].abs().max()), 1e-300), diff


def compare(result: dict[str, Any], ref: dict[str, Any], rows: slice) -> dict[str, Any]:
    """Per tensor: ``[relative, absolute]`` difference of ``result`` (this rank) and ``ref`` (full)."""
    out = {}
    for name, tensor in result.items():
        expected = ref[name]
        if name in ("weight", "bias", "teacher_weight", "teacher_bias"):
            expected = expected[rows]
        elif name == "teacher_logits":
            expected = expected[..., rows]
        out[name] = rel(tensor, expected)
    return out


def vocab_case(index: int, name: str, rank: int, world: int) -> dict[str, Any]:
    case = CASES[name]
    full = full_data(index, case)
    split = SPLITS[world][index % len(SPLITS[world])]
    start = sum(split[:rank])
    rows = slice(start, start + split[rank])
    result = vp_program(case, full, rows)
    again = vp_program(case, full, rows, grad=False)["value"]  # forward only: the same value
    report = {"name": name, "split": split, "dtype": case.get("dtype", "float64")}
    report["forward_only"] = rel(again, result["value"])[0]
    report["single"] = compare(result, single_program(case, full), rows)
    if case.get("sample_weight") is None and "num_items" not in case:
        expected, oracle, per_token = float64_program(case, full)
        report["float64"] = compare(result, expected, rows)
        report["oracle"] = rel(per_token, torch.from_numpy(oracle))
    if case["reduction"] != "none" and index % 7 == 0:
        # Partial hidden-state gradients (reduce_hidden_grad=False) sum over the ranks to the full one.
        partial = vp_program(case, full, rows, reduce_hidden_grad=False)
        summed = partial["hidden"].clone()
        dist.all_reduce(summed)
        report["partial_hidden"] = rel(summed, result["hidden"])
        report["partial_differs"] = 0 in split or not torch.equal(partial["hidden"], result["hidden"])
    return report


def mismatch_case(name: str, rank: int, world: int) -> dict[str, Any]:
    """One rank disagrees (the last) or fails a local check (rank 0): ValueError on every rank."""
    case = {**CASES["forward_token_mean_mask"], "teacher": "logits"}
    full = full_data(0, case)
    split = SPLITS[world][0]
    start = sum(split[:rank])
    tensors = leaves(case, full["data"], slice(start, start + split[rank]))
    odd = rank == world - 1
    options: dict[str, Any] = {"chunk_size": 5}
    if name == "hidden_grad" and odd:
        tensors["hidden"].requires_grad_(False)
    elif name == "teacher_shard" and rank == 0:
        tensors["teacher_logits"] = tensors["teacher_logits"][..., :-1]
    elif name == "options" and odd:
        options["temperature"] = 3.0
    elif name == "topk":
        tensors.pop("teacher_logits")
        tensors["teacher_topk_indices"] = torch.zeros(B, T, 2, dtype=torch.long)
        tensors["teacher_topk_values"] = torch.zeros(B, T, 2, dtype=F64)
    begin = time.perf_counter()
    try:
        VocabParallelFusedLinearKLDivergence(**options)(
            tensors["hidden"], tensors["weight"], tensors["bias"], **_teacher_call(tensors), **full["call"]
        )
        outcome, message = "returned", ""
    except ValueError as error:
        outcome, message = "ValueError", str(error)
    except Exception as error:
        outcome, message = type(error).__name__, str(error)
    return {"name": name, "outcome": outcome, "message": message, "seconds": time.perf_counter() - begin}


MISMATCHES = ("hidden_grad", "teacher_shard", "options", "topk")


def rank_main(rank: int, world: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=TIMEOUT)
    results: dict[str, Any] = {"rank": rank, "cases": [], "mismatch": [], "errors": []}
    begin = time.perf_counter()
    try:
        for index, name in enumerate(CASES):
            results["cases"].append(vocab_case(index, name, rank, world))
        for name in MISMATCHES:
            results["mismatch"].append(mismatch_case(name, rank, world))
        after = vocab_case(0, next(iter(CASES)), rank, world)  # the group still works
        results["cases"].append({**after, "name": "after_mismatches"})
    except Exception:
        results["errors"].append(traceback.format_exc())
    results["seconds"] = time.perf_counter() - begin
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(results, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(rank_main)
