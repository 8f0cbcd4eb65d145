"""One ``kldiv bench fused-linear`` run: every case in a fresh process, then the ratios.

``config`` (a dict, see :func:`default_config`): sizes ``(BT, H, V)``, dtypes, impls, teacher
("logits" or "hidden"), device ("cpu" or "cuda"), warmup, repeats, timeout (seconds per case
process), seed, mode ("memory+time" or "accuracy") and ``top_k`` (the ``k`` of each sparse-teacher
case; the top-k impls run once per ``k``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ..machine import machine_info
from .cases import IMPLS, TOPK_IMPLS, label_of, liger_jsd
from .estimates import (
    PROBE_VOCAB,
    constants,
    matmul_probe,
    memory_skip_reason,
    probe_text,
    step_flops,
    time_skip_reason,
)

GRID_BT = (1024, 4096, 8192)
GRID_HIDDEN = 1024
GRID_VOCAB = (32000, 128256)
GRID_DTYPES = ("float32", "bfloat16")
DEFAULT_SIZES = ((1024, 1024, 32000), (4096, 1024, 32000))
ACCURACY_SIZES = ((256, 256, 4096), (128, 1024, 32000))
DTYPES = ("float32", "bfloat16")
DEVICES = ("cpu", "cuda")
TEACHERS = ("logits", "hidden")
DEFAULT_IMPLS = {"cpu": ("naive-kl", "kldiv-kl"), "cuda": tuple(i for i in IMPLS if i not in TOPK_IMPLS)}
TOPK_DEFAULT_IMPLS = ("naive-kl", "kldiv-kl", "naive-topk", "kldiv-topk")
"""The implementations of a ``--top-k`` run: the sparse teacher against the dense one."""
ACCURACY_IMPLS = ("naive-kl", "kldiv-kl", "naive-jsd", "kldiv-jsd", "naive-topk", "kldiv-topk")
ACCURACY_DEFAULT_IMPLS = ACCURACY_IMPLS[:4]
"""Without ``--top-k``; with it the top-k pair too."""
# (numerator, denominator) pairs of the ratio table.
COMPARISONS = (
    ("kldiv-kl", "naive-kl"),
    ("kldiv-jsd", "naive-jsd"),
    ("kldiv-jsd", "liger-jsd"),
    ("liger-jsd", "naive-jsd"),
    ("kldiv-topk", "naive-topk"),
    ("kldiv-topk", "kldiv-kl"),
    ("kldiv-topk", "naive-kl"),
)
CASE_MODULE = "kldiv.bench.fused_linear.case"


def grid_sizes() -> list[tuple[int, int, int]]:
    """The grid of issue #7: BT ∈ {1024, 4096, 8192} × V ∈ {32000, 128256}, H = 1024."""
    return [(bt, GRID_HIDDEN, vocab) for vocab in GRID_VOCAB for bt in GRID_BT]


def cuda_missing_reason() -> str | None:
    """Why ``device="cuda"`` cannot run here (no CUDA), or None."""
    import torch

    if torch.cuda.is_available():
        return None
    build = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no device"
    return f"CUDA is not available (torch {torch.__version__}, {build})"


def run_child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One case in a fresh interpreter; the spec plus ``error`` if it fails or runs past ``timeout``."""
    command = [sys.executable, "-m", CASE_MODULE, json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:g} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        if done.returncode < 0:
            tail = f"killed by signal {-done.returncode} (out of memory?)"
        else:
            tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {**spec, "error": tail}
    return json.loads(lines[-1])


def _probe(config: dict[str, Any], stream: TextIO) -> dict[str, Any] | None:
    """The CPU matmul probe at ``H = min(largest H, 1024)``, ``V = min(largest V, PROBE_VOCAB)``."""
    if config["device"] != "cpu":
        return None
    hidden = min(max(size[1] for size in config["sizes"]), GRID_HIDDEN)
    vocab = min(max(size[2] for size in config["sizes"]), PROBE_VOCAB)
    probe = matmul_probe(config["dtypes"], hidden, vocab, config["seed"])
    for name, figures in probe.items():
        print(f"matmul probe {name}: {probe_text(figures)}", file=stream, flush=True)
    return probe


def _skip_reason(spec: dict[str, Any], config: dict[str, Any], probe: dict[str, Any] | None) -> str | None:
    """Why a CPU case must not start (memory, then time; sets ``predicted_step_s``), or None."""
    if probe is None:
        return None
    bt, hidden, vocab, dtype, impl = spec["bt"], spec["hidden"], spec["vocab"], spec["dtype"], spec["impl"]
    spec["predicted_step_s"] = step_flops(bt, hidden, vocab, spec["teacher"]) / (probe[dtype]["gflops"] * 1e9)
    steps = config["warmup"] + config["repeats"]
    return memory_skip_reason(impl, bt, hidden, vocab, dtype, spec["teacher"]) or time_skip_reason(
        spec["predicted_step_s"], steps, config["timeout"], dtype
    )


def run_benchmark(config: dict[str, Any], stream: TextIO = sys.stderr) -> dict[str, Any]:
    """Every case of ``config``, each in a fresh process; returns the report (``results``,
    ``comparisons``, the machine, the probe and the estimate's constants)."""
    probe = _probe(config, stream)
    results = []
    for bt, hidden, vocab in config["sizes"]:
        for dtype in config["dtypes"]:
            for impl, k in impl_cases(config):
                spec = {"impl": impl, "bt": bt, "hidden": hidden, "vocab": vocab, "dtype": dtype}
                spec |= {key: config[key] for key in ("teacher", "device", "warmup", "repeats", "seed")}
                if k is not None:
                    spec["k"] = k
                label = f"{label_of(spec)} [{bt}, {hidden}, {vocab}] {dtype}"
                reason = _skip_reason(spec, config, probe)
                if reason:
                    record = {**spec, "skipped": reason}
                    print(f"{label}: skipped: {reason}", file=stream, flush=True)
                else:
                    print(f"{label}: running", file=stream, flush=True)
                    record = run_child(spec, config["timeout"])
                    if "error" in record:
                        print(f"{label}: {record['error']}", file=stream, flush=True)
                results.append(record)
    return {
        "config": jsonable(config),
        "machine": machine(config["device"]),
        "matmul_probe": probe,
        "constants": constants(),
        "results": results,
        "comparisons": comparisons(results),
    }


def impl_cases(config: dict[str, Any]) -> list[tuple[str, int | None]]:
    """``(impl, k)`` of each case of one size and dtype: the top-k impls once per ``k``."""
    cases = []
    for impl in config["impls"]:
        ks = (config.get("top_k") or []) if impl in TOPK_IMPLS else [None]
        cases.extend((impl, k) for k in ks)
    return cases


def jsonable(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its sizes as lists."""
    return {**config, "sizes": [list(s) for s in config["sizes"]]}


def _ok(record: dict[str, Any] | None) -> bool:
    return record is not None and "median_ms" in record


def comparisons(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ratios ``numerator / denominator`` of peak memory and median time, per size and dtype."""
    found = {(r["bt"], r["hidden"], r["vocab"], r["dtype"], r["impl"], r.get("k")): r for r in results}
    keys = sorted({k[:4] for k in found}, key=lambda k: (k[2], k[0], k[1], k[3]))
    ks = sorted({k[5] for k in found if k[5] is not None})
    rows = []
    for key in keys:
        for top, bottom in COMPARISONS:
            for k in ks if top in TOPK_IMPLS else [None]:
                a = found.get((*key, top, k))
                b = found.get((*key, bottom, k if bottom in TOPK_IMPLS else None))
                if a is not None and b is not None:
                    rows.append(_comparison(key, a, b))
    return rows


def _comparison(key: tuple, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """One row of the ratio table: ``a / b`` at size and dtype ``key``."""
    row: dict[str, Any] = {"size": list(key[:3]), "dtype": key[3], "ratio": f"{label_of(a)} / {label_of(b)}"}
    if _ok(a) and _ok(b):
        row["memory_ratio"] = _divide(a["peak_extra_mib"], b["peak_extra_mib"])
        row["temporaries_ratio"] = _divide(a["temporaries_mib"], b["temporaries_mib"])
        row["time_ratio"] = a["median_ms"] / b["median_ms"]
        row["loss_difference"] = abs(a["loss"] - b["loss"])
    else:
        row["missing"] = "; ".join(
            f"{label_of(r)}: {r.get('skipped') or r.get('error')}" for r in (a, b) if not _ok(r)
        )
    return row


def _divide(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def machine(device: str) -> dict[str, Any]:
    """:func:`kldiv.bench.machine.machine_info` plus torch, its threads, the GPU and Liger on CUDA."""
    import torch

    info = machine_info()
    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        liger, version = liger_jsd()
        if liger is not None:
            info["liger_kernel"] = version
    return info
