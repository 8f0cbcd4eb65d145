"""``kldiv bench fused-linear``: fused linear + divergence against the naive PyTorch path.

The naive path materialises the ``[BT, V]`` logits::

    logits = hidden @ weight.T                        # in the inputs' dtype
    loss = F.kl_div(log_softmax(logits.float()), log_softmax(teacher.float()),
                    reduction="batchmean", log_target=True)          # naive-kl
    loss = JS_0.5 of the same two log-softmaxes, mean over tokens    # naive-jsd
    loss.backward()

against :class:`kldiv.fused.torch.FusedLinearKLDivergence` / ``FusedLinearJSDivergence``
(``reduction="token_mean"``, the same value) and, on CUDA, Liger-Kernel's ``LigerFusedLinearJSD``
(``jsd_beta=0.5``, ``temperature=1``, no labels: the same JS_0.5 divided by BT). The teacher is given
as logits ``[BT, V]`` (default on CPU) or as hidden states + weight (``--teacher hidden``; default on
CUDA, and what Liger needs).

**Memory and time** (default mode). Each case (implementation × size × dtype) runs in a fresh
process: it allocates the inputs, runs ``--warmup`` steps of forward + backward (imports, Numba
compilation, first-touch allocations), frees the gradients, then records a baseline and runs
``--repeats`` steps. CPU: peak resident memory above the baseline (Linux ``VmHWM`` after resetting it
with ``/proc/self/clear_refs``: the memory the steps need at their peak, gradients included) and the
median ``time.perf_counter`` step. CUDA: ``torch.cuda.max_memory_allocated`` above
``memory_allocated`` after ``reset_peak_memory_stats``, and the median CUDA-event step. Ratios are
``kldiv / naive`` (and ``kldiv / liger``) of figures measured in the same run.

Before a CPU case starts, its memory is estimated (inputs, gradients, and for the naive path
``NAIVE_LOGIT_COPIES[impl] × BT × V × 4`` bytes of logits-sized temporaries; the constants were
measured on small cases, see below) and compared with ``MemAvailable`` from ``/proc/meminfo``; its
time is estimated from a matmul throughput probe of each dtype (``3 × 2·BT·H·V`` flops per step).
A case that would not fit, or would run past ``--timeout``, is skipped with the reason recorded
("would need ~X GiB, machine has Y GiB available"); a case that runs past ``--timeout`` anyway is
killed and recorded as "timed out after N s". On CPUs without AMX / AVX512-BF16, PyTorch's bfloat16
matmuls are much slower than its float32 ones, and unevenly so: on an AVX2 AMD EPYC (torch 2.13),
``[256, 2048] @ [2048, 1024]`` (the layout of ``grad_hidden = g @ W``) ran at 0.6 GFLOP/s in bfloat16
against 34 GFLOP/s in float32, and a naive bfloat16 step at BT=256, H=1024, V=32000 took 107 s. The
probe therefore times a whole forward + backward of a linear layer; its figures are printed and
kept in the report. The time estimate is optimistic (about 3x short for that bfloat16 case, whose
reduction over V = 32000 is slower than the probe's): it skips what cannot finish, the timeout
catches the rest.

**Accuracy** (``--accuracy``). In-process, small sizes: the relative error of the loss and of the
gradients w.r.t. the hidden states and the weight, for each implementation and dtype, against the
float64 evaluation of the naive program on the same (rounded) inputs: norm-wise
``‖g − g64‖ / ‖g64‖`` and elementwise ``max |g − g64| / |g64|`` over the entries with
``|g64| > 1e-3 · max |g64|``. Targets (issue #7), met or not on the loss and the norm-wise
gradient errors: ≤ 1e-5 in float32, ≤ 1e-2 in bfloat16 (the elementwise maxima are reported besides:
entries near the threshold lose digits to cancellation in any float32 program).

``python benchmarks/fused_linear_memory.py`` is this command with its outputs kept in
``benchmarks/results``; ``python benchmarks/gpu_fused_linear.py`` is its ``--device cuda`` run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from . import bench
from .bench import _argument, available_memory

GRID_BT = (1024, 4096, 8192)
GRID_HIDDEN = 1024
GRID_VOCAB = (32000, 128256)
GRID_DTYPES = ("float32", "bfloat16")
DEFAULT_SIZES = ((1024, 1024, 32000), (4096, 1024, 32000))
ACCURACY_SIZES = ((256, 256, 4096), (128, 1024, 32000))
DTYPES = ("float32", "bfloat16")
DEVICES = ("cpu", "cuda")
TEACHERS = ("logits", "hidden")
IMPLS = ("naive-kl", "kldiv-kl", "naive-jsd", "kldiv-jsd", "liger-jsd")
DEFAULT_IMPLS = {"cpu": ("naive-kl", "kldiv-kl"), "cuda": IMPLS}
ACCURACY_IMPLS = ("naive-kl", "kldiv-kl", "naive-jsd", "kldiv-jsd")
BETA = 0.5
# (numerator, denominator) pairs of the ratio table.
COMPARISONS = (
    ("kldiv-kl", "naive-kl"),
    ("kldiv-jsd", "naive-jsd"),
    ("kldiv-jsd", "liger-jsd"),
    ("liger-jsd", "naive-jsd"),
)
ACCURACY_TARGETS = {"float32": 1e-5, "bfloat16": 1e-2}
# Issue #7: peak extra memory <= 10 % of naive at <= 1.0x its time at [4096, 1024, 32000] fp32; no
# slowdown at BT <= 1024.
MEMORY_TARGET = {"size": (4096, 1024, 32000), "memory_ratio": 0.10, "time_ratio": 1.0}
SMALL_BT = 1024
SMALL_VOCAB = 32000  # the no-slowdown target is checked at BT <= SMALL_BT and V >= SMALL_VOCAB

# Peak temporaries of one naive forward + backward step, in float32 [BT, V] arrays, gradients of the
# parameters excluded: (peak RSS above the baseline − gradients) / (BT·V·4 bytes). Measured with
# this module on CPU, torch 2.13, `--sizes 512x1024x32000 --impls naive-kl,naive-jsd`, teacher as
# logits: naive-kl 4.0 (377 MiB peak − 127 MiB gradients over 62.5 MiB), naive-jsd 8.0 (627 MiB);
# at 1024x1024x32000 naive-kl 5.0 (758 MiB − 129 MiB over 125 MiB). Rounded up by one (plus one more
# for the teacher's logits when it is given as hidden states + weight).
# bfloat16 adds float32 copies of the weight in the matmuls (at 256x1024x32000 the peak, 250 MiB,
# is the same for naive and kldiv): covered by counting bfloat16 gradients three times.
NAIVE_LOGIT_COPIES = {"naive-kl": 6.0, "naive-jsd": 10.0}
# kldiv's chunks: at most a few memory budgets (kldiv.core.chunking.DEFAULT_MEMORY_BUDGET, 96 MiB).
FUSED_TEMPORARY_BYTES = 512 * 2**20
# Imports (torch, Numba, kldiv) and allocator slack of one case process.
PROCESS_BYTES = 1 * 2**30
# Skip a case whose estimate exceeds this share of the available memory.
MEMORY_SAFETY = 0.9
# Matmul throughput probe: forward + backward of [PROBE_ROWS, H] @ [H, PROBE_VOCAB] in each dtype.
PROBE_ROWS = 256
PROBE_VOCAB = 4096


# ---------------------------------------------------------------------------------------------
# Sizes and options


def parse_size(text: str) -> tuple[int, int, int]:
    """``"4096x1024x32000"`` → ``(4096, 1024, 32000)`` (BT, H, V)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        bt, hidden, vocab = (int(part) for part in parts)
    except ValueError:
        raise ValueError(f"expected a size BTxHxV such as 4096x1024x32000; received {text!r}") from None
    if min(bt, hidden, vocab) < 1:
        raise ValueError(f"expected positive sizes; received {text!r}")
    return bt, hidden, vocab


def parse_sizes(text: str) -> list[tuple[int, int, int]]:
    return [parse_size(part) for part in text.split(",") if part.strip()]


def grid_sizes() -> list[tuple[int, int, int]]:
    """The grid of issue #7: BT ∈ {1024, 4096, 8192} × V ∈ {32000, 128256}, H = 1024."""
    return [(bt, GRID_HIDDEN, vocab) for vocab in GRID_VOCAB for bt in GRID_BT]


def _names(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise ValueError(f"expected names from {', '.join(allowed)}; received {text!r}")
        return names

    return parse


# ---------------------------------------------------------------------------------------------
# Estimates: memory and time of one case


def _itemsize(dtype: str) -> int:
    return {"float32": 4, "bfloat16": 2, "float64": 8}[dtype]


def estimate_bytes(impl: str, bt: int, hidden: int, vocab: int, dtype: str, teacher: str) -> int:
    """A generous estimate of the peak resident memory of one CPU case process."""
    size = _itemsize(dtype)
    params = (bt * hidden + vocab * hidden) * size
    teacher_bytes = bt * vocab * size if teacher == "logits" else params
    grads = params if size >= 4 else params * 3  # bfloat16: float32 accumulators besides the result
    if impl.startswith("naive"):
        copies = NAIVE_LOGIT_COPIES[impl] + (1 if teacher == "hidden" else 0)
        temporaries = int(copies * bt * vocab * 4)
    else:
        temporaries = FUSED_TEMPORARY_BYTES
    return PROCESS_BYTES + params + teacher_bytes + grads + temporaries


def step_flops(bt: int, hidden: int, vocab: int, teacher: str) -> float:
    """Matmul flops of one forward + backward step: logits, grad_hidden, grad_weight (+ the teacher's)."""
    return 2.0 * bt * hidden * vocab * (4 if teacher == "hidden" else 3)


def memory_skip_reason(impl: str, bt: int, hidden: int, vocab: int, dtype: str, teacher: str) -> str | None:
    """Why a CPU case must not start (it would not fit in the available memory), or None."""
    need = estimate_bytes(impl, bt, hidden, vocab, dtype, teacher)
    free = available_memory()
    if free is not None and need > MEMORY_SAFETY * free:
        return f"would need ~{need / 2**30:.1f} GiB, machine has {free / 2**30:.1f} GiB available"
    return None


def time_skip_reason(predicted_s: float | None, steps: int, timeout: float, dtype: str) -> str | None:
    """Why a case must not start (its matmuls alone would run past the timeout), or None."""
    if predicted_s is None or predicted_s * steps <= timeout:
        return None
    return (
        f"would take ~{predicted_s * steps:.0f} s ({steps} steps of ~{predicted_s:.0f} s of {dtype} "
        f"matmuls at the probed rate), over the {timeout:.0f} s timeout"
    )


def matmul_probe(
    dtypes: Sequence[str], hidden: int, vocab: int = PROBE_VOCAB, seed: int = 0
) -> dict[str, dict[str, float]]:
    """GFLOP/s of the three matmuls of a linear layer's forward + backward, ``[R, H] @ [H, V]`` and
    the two products of its backward (each layout has its own speed), in each dtype on the CPU
    (best of 2 after a warm-up, ``R = PROBE_ROWS``); the run probes ``H = min(largest H, 1024)``,
    ``V = min(largest V, PROBE_VOCAB)``."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    found = {}
    for name in dtypes:
        dtype = getattr(torch, name)
        a = torch.randn(PROBE_ROWS, hidden, generator=generator).to(dtype).requires_grad_()
        b = torch.randn(vocab, hidden, generator=generator).to(dtype).requires_grad_()
        g = torch.randn(PROBE_ROWS, vocab, generator=generator).to(dtype)
        best = math.inf
        for attempt in range(3):  # the first is a warm-up
            a.grad = b.grad = None
            start = time.perf_counter()
            (a @ b.T).backward(g)
            if attempt:
                best = min(best, time.perf_counter() - start)
        flops = 3 * 2.0 * PROBE_ROWS * hidden * vocab
        found[name] = {"shape": [PROBE_ROWS, hidden, vocab], "seconds": best, "gflops": flops / best / 1e9}
    return found


# ---------------------------------------------------------------------------------------------
# The implementations


def liger_jsd() -> tuple[Any, str]:
    """Liger-Kernel's ``LigerFusedLinearJSD`` class and its version, or None and why not."""
    try:
        from liger_kernel.transformers import LigerFusedLinearJSD
    except Exception as error:  # any import failure means "not available here"
        return None, f"liger_kernel is not importable ({type(error).__name__}: {error})"
    try:
        import importlib.metadata

        version = importlib.metadata.version("liger-kernel")
    except Exception:
        version = "installed"
    return LigerFusedLinearJSD, version


def make_inputs(
    bt: int, hidden: int, vocab: int, dtype: Any, device: str, teacher: str, seed: int, need_grad: bool = True
) -> dict[str, Any]:
    """Student hidden states ``[BT, H]`` (std 1) and weight ``[V, H]`` (std ``1/√H``: logits of std
    about 1), and the teacher: logits ``[BT, V]`` (std 2) or hidden states + weight (logits of std
    about 2). Drawn directly in ``dtype`` on ``device`` (no float32 copy of the large tensors)."""
    import torch

    generator = torch.Generator(device=device).manual_seed(seed)

    def draw(*shape: int, scale: float) -> Any:
        return torch.randn(*shape, generator=generator, dtype=dtype, device=device).mul_(scale)

    inputs = {
        "hidden": draw(bt, hidden, scale=1.0).requires_grad_(need_grad),
        "weight": draw(vocab, hidden, scale=hidden**-0.5).requires_grad_(need_grad),
    }
    if teacher == "logits":
        inputs["teacher_logits"] = draw(bt, vocab, scale=2.0)
    else:
        inputs["teacher_hidden"] = draw(bt, hidden, scale=1.0)
        inputs["teacher_weight"] = draw(vocab, hidden, scale=2.0 * hidden**-0.5)
    return inputs


def _teacher_logits(inputs: dict[str, Any]) -> Any:
    import torch

    if "teacher_logits" in inputs:
        return inputs["teacher_logits"]
    with torch.no_grad():
        return inputs["teacher_hidden"] @ inputs["teacher_weight"].T


def naive_loss(kind: str, inputs: dict[str, Any], compute_dtype: Any = None) -> Any:
    """The naive program: logits in the inputs' dtype, log-softmax in float32 (float64 for float64
    inputs, or ``compute_dtype``), then KL (``F.kl_div`` batchmean) or JS_0.5 (mean over tokens)."""
    import torch
    import torch.nn.functional as F

    wide = compute_dtype or (torch.float64 if inputs["hidden"].dtype == torch.float64 else torch.float32)
    logits = inputs["hidden"] @ inputs["weight"].T
    log_q = torch.log_softmax(logits.to(wide), dim=-1)
    log_p = torch.log_softmax(_teacher_logits(inputs).to(wide), dim=-1)
    if kind == "kl":
        return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
    # JS_β(P, Q) = β KL(P‖M) + (1 − β) KL(Q‖M), M = β P + (1 − β) Q (P: teacher).
    log_m = torch.logaddexp(log_p + math.log(BETA), log_q + math.log(1 - BETA))
    per_token = BETA * (log_p.exp() * (log_p - log_m)).sum(-1) + (1 - BETA) * (
        log_q.exp() * (log_q - log_m)
    ).sum(-1)
    return per_token.mean()


def make_loss(impl: str) -> Callable[[dict[str, Any]], Any]:
    """``inputs → scalar loss`` of one implementation (see :data:`IMPLS`)."""
    if impl not in IMPLS:
        raise ValueError(f"unknown implementation {impl!r}; expected one of {', '.join(IMPLS)}")
    if impl.startswith("naive"):
        kind = impl.split("-")[1]
        return lambda inputs: naive_loss(kind, inputs)
    if impl.startswith("kldiv"):
        from ..fused.torch import FusedLinearJSDivergence, FusedLinearKLDivergence

        if impl == "kldiv-kl":
            module = FusedLinearKLDivergence(reduction="token_mean")
        else:
            module = FusedLinearJSDivergence(reduction="token_mean", beta=BETA)

        def fused(inputs: dict[str, Any]) -> Any:
            teacher = {k: v for k, v in inputs.items() if k.startswith("teacher_")}
            return module(inputs["hidden"], inputs["weight"], **teacher)

        return fused
    liger, why = liger_jsd()
    if liger is None:
        raise RuntimeError(why)
    module = liger(jsd_beta=BETA, ignore_index=-100, temperature=1.0)

    def liger_loss(inputs: dict[str, Any]) -> Any:
        if "teacher_hidden" not in inputs:
            raise ValueError("liger-jsd needs the teacher as hidden states + weight (--teacher hidden)")
        return module(
            inputs["hidden"], inputs["weight"], inputs["teacher_hidden"], inputs["teacher_weight"], None
        )

    return liger_loss


# ---------------------------------------------------------------------------------------------
# One case, in its own process


def _status_kib(field: str) -> int:
    """:func:`kldiv.cli.bench._status_kib`, required: a CPU case cannot be measured without it."""
    kib = bench._status_kib(field)
    if kib is None:
        raise RuntimeError(f"no {field} in /proc/self/status")
    return kib


def _reset_peak_rss() -> None:
    if not bench._reset_peak():
        raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs)")


def run_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one case (``spec``: impl, bt, hidden, vocab, dtype, teacher, device, warmup, repeats,
    seed) in this process; returns the spec plus ``loss``, ``peak_extra_mib``, ``median_ms``,
    ``times_ms`` (or ``error``)."""
    import gc

    import torch

    device = spec["device"]
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available")
    loss_fn = make_loss(spec["impl"])
    dtype = getattr(torch, spec["dtype"])
    result = dict(spec)
    try:
        inputs = make_inputs(
            spec["bt"], spec["hidden"], spec["vocab"], dtype, device, spec["teacher"], spec["seed"]
        )
        params = (inputs["hidden"], inputs["weight"])

        def step() -> Any:
            for p in params:
                p.grad = None
            loss = loss_fn(inputs)
            loss.backward()
            return loss.detach()

        for _ in range(spec["warmup"]):
            step()
        for p in params:
            p.grad = None
        gc.collect()
        times, value = [], None
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            baseline = torch.cuda.memory_allocated()
            for _ in range(spec["repeats"]):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                value = step()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            peak_bytes = torch.cuda.max_memory_allocated() - baseline
        else:
            _reset_peak_rss()
            baseline = _status_kib("VmRSS") * 1024
            for _ in range(spec["repeats"]):
                start_s = time.perf_counter()
                value = step()
                times.append((time.perf_counter() - start_s) * 1e3)
            peak_bytes = _status_kib("VmHWM") * 1024 - baseline
    except torch.cuda.OutOfMemoryError:
        result["error"] = "CUDA out of memory"
        return result
    grad_bytes = sum(p.numel() * p.element_size() for p in params)
    result.update(
        loss=float(value),
        peak_extra_mib=peak_bytes / 2**20,
        grads_mib=grad_bytes / 2**20,
        temporaries_mib=(peak_bytes - grad_bytes) / 2**20,
        median_ms=statistics.median(times),
        times_ms=times,
    )
    return result


def _run_child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "kldiv.cli.bench_fused", "--case", json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
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


# ---------------------------------------------------------------------------------------------
# The benchmark: every case, then the ratios


def run_benchmark(config: dict[str, Any], stream: TextIO = sys.stderr) -> dict[str, Any]:
    """Every case of ``config`` (sizes, dtypes, impls, teacher, device, warmup, repeats, timeout,
    seed), each in a fresh process; returns the report (``results``, ``comparisons``, ``targets``)."""
    probe = None
    if config["device"] == "cpu":
        probe = matmul_probe(
            config["dtypes"],
            min(max(size[1] for size in config["sizes"]), GRID_HIDDEN),
            min(max(size[2] for size in config["sizes"]), PROBE_VOCAB),
            config["seed"],
        )
        for name, figures in probe.items():
            print(
                f"matmul probe {name}: {_probe_text(figures)}",
                file=stream,
                flush=True,
            )
    results = []
    for bt, hidden, vocab in config["sizes"]:
        for dtype in config["dtypes"]:
            for impl in config["impls"]:
                spec = {
                    "impl": impl,
                    "bt": bt,
                    "hidden": hidden,
                    "vocab": vocab,
                    "dtype": dtype,
                    "teacher": config["teacher"],
                    "device": config["device"],
                    "warmup": config["warmup"],
                    "repeats": config["repeats"],
                    "seed": config["seed"],
                }
                label = f"{impl} [{bt}, {hidden}, {vocab}] {dtype}"
                reason = None
                if probe is not None:
                    flops = step_flops(bt, hidden, vocab, config["teacher"])
                    spec["predicted_step_s"] = flops / (probe[dtype]["gflops"] * 1e9)
                    reason = memory_skip_reason(impl, bt, hidden, vocab, dtype, config["teacher"])
                    reason = reason or time_skip_reason(
                        spec["predicted_step_s"],
                        config["warmup"] + config["repeats"],
                        config["timeout"],
                        dtype,
                    )
                if reason:
                    record = {**spec, "skipped": reason}
                    print(f"{label}: skipped: {reason}", file=stream, flush=True)
                else:
                    print(f"{label}: running", file=stream, flush=True)
                    record = _run_child(spec, config["timeout"])
                    if "error" in record:
                        print(f"{label}: {record['error']}", file=stream, flush=True)
                results.append(record)
    report = {
        "config": {**config, "sizes": [list(s) for s in config["sizes"]]},
        "machine": _machine(config["device"]),
        "matmul_probe": probe,
        "constants": {
            "naive_logit_copies": NAIVE_LOGIT_COPIES,
            "fused_temporary_bytes": FUSED_TEMPORARY_BYTES,
            "process_bytes": PROCESS_BYTES,
            "memory_safety": MEMORY_SAFETY,
        },
        "results": results,
    }
    report["comparisons"] = comparisons(results)
    report["targets"] = target_checks(report["comparisons"])
    return report


def _ok(record: dict[str, Any] | None) -> bool:
    return record is not None and "median_ms" in record


def comparisons(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ratios ``numerator / denominator`` of peak memory and median time, per size and dtype."""
    found = {(r["bt"], r["hidden"], r["vocab"], r["dtype"], r["impl"]): r for r in results}
    keys = sorted({k[:4] for k in found}, key=lambda k: (k[2], k[0], k[1], k[3]))
    rows = []
    for key in keys:
        for top, bottom in COMPARISONS:
            a, b = found.get((*key, top)), found.get((*key, bottom))
            if a is None or b is None:
                continue
            row: dict[str, Any] = {"size": list(key[:3]), "dtype": key[3], "ratio": f"{top} / {bottom}"}
            if _ok(a) and _ok(b):
                row["memory_ratio"] = _divide(a["peak_extra_mib"], b["peak_extra_mib"])
                row["temporaries_ratio"] = _divide(a["temporaries_mib"], b["temporaries_mib"])
                row["time_ratio"] = a["median_ms"] / b["median_ms"]
                row["loss_difference"] = abs(a["loss"] - b["loss"])
            else:
                row["missing"] = "; ".join(
                    f"{r['impl']}: {r.get('skipped') or r.get('error')}" for r in (a, b) if not _ok(r)
                )
            rows.append(row)
    return rows


def _divide(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def target_checks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue #7's targets for kldiv-kl / naive-kl where measured."""
    checks = []
    for row in rows:
        if row["ratio"] != "kldiv-kl / naive-kl" or "time_ratio" not in row:
            continue
        size = tuple(row["size"])
        if size == MEMORY_TARGET["size"] and row["dtype"] == "float32":
            goal = MEMORY_TARGET["memory_ratio"]
            checks.append(_check(row, "peak extra memory vs naive", row["memory_ratio"], goal))
            checks.append(
                _check(row, "peak extra memory excl. grads vs naive", row["temporaries_ratio"], goal)
            )
            checks.append(_check(row, "time vs naive", row["time_ratio"], MEMORY_TARGET["time_ratio"]))
        if size[0] <= SMALL_BT and size[2] >= SMALL_VOCAB:
            checks.append(_check(row, "no slowdown at BT <= 1024", row["time_ratio"], 1.0))
    return checks


def _check(row: dict[str, Any], target: str, value: float | None, goal: float) -> dict[str, Any]:
    met = value is not None and value <= goal
    return {
        "size": row["size"],
        "dtype": row["dtype"],
        "target": target,
        "ratio": value,
        "goal": goal,
        "met": met,
    }


def _machine(device: str) -> dict[str, Any]:
    from .bench import machine_info

    info = machine_info()
    import torch

    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    _, liger = liger_jsd() if device == "cuda" else (None, None)
    if liger is not None:
        info["liger_kernel"] = liger
    return info


# ---------------------------------------------------------------------------------------------
# Accuracy


def _relative_errors(value: Any, reference: Any) -> dict[str, float]:
    import torch

    value, reference = value.detach().to(torch.float64), reference.detach().to(torch.float64)
    difference = value - reference
    norm = float(reference.norm())
    large = reference.abs() > 1e-3 * float(reference.abs().max())
    elementwise = (difference.abs()[large] / reference.abs()[large]).max() if bool(large.any()) else 0.0
    return {
        "norm": float(difference.norm()) / norm if norm else float(difference.norm()),
        "max": float(elementwise),
    }


def accuracy_case(impl: str, bt: int, hidden: int, vocab: int, dtype: str, teacher: str, seed: int) -> dict:
    """Relative errors of one implementation's loss and gradients against the float64 naive program
    evaluated on the same inputs (rounded to ``dtype`` first)."""
    import torch

    inputs = make_inputs(bt, hidden, vocab, getattr(torch, dtype), "cpu", teacher, seed)
    reference = {k: v.detach().to(torch.float64).requires_grad_(v.requires_grad) for k, v in inputs.items()}
    kind = impl.split("-")[1]
    reference_loss = naive_loss(kind, reference)
    reference_loss.backward()
    loss = make_loss(impl)(inputs)
    loss.backward()
    loss, reference_loss = loss.detach(), reference_loss.detach()
    loss_error = abs(float(loss) - float(reference_loss)) / abs(float(reference_loss))
    record = {"impl": impl, "size": [bt, hidden, vocab], "dtype": dtype, "teacher": teacher}
    record |= {"loss": float(loss), "loss_float64": float(reference_loss), "loss_rel_error": loss_error}
    for name, key in (("grad_hidden", "hidden"), ("grad_weight", "weight")):
        errors = _relative_errors(inputs[key].grad, reference[key].grad)
        record[f"{name}_norm_rel_error"] = errors["norm"]
        record[f"{name}_max_rel_error"] = errors["max"]
    # The targets apply to the loss and the norm-wise gradient errors; the elementwise maxima are
    # reported besides (entries near 1e-3 · max lose digits to cancellation in any float32 program).
    record["target"] = ACCURACY_TARGETS[dtype]
    record["worst_rel_error"] = max(
        loss_error, record["grad_hidden_norm_rel_error"], record["grad_weight_norm_rel_error"]
    )
    record["met"] = record["worst_rel_error"] <= record["target"]
    return record


def run_accuracy(config: dict[str, Any], stream: TextIO = sys.stderr) -> dict[str, Any]:
    """Every accuracy case of ``config``, in this process."""
    records = []
    impls = [impl for impl in config["impls"] if impl in ACCURACY_IMPLS]
    for bt, hidden, vocab in config["sizes"]:
        for dtype in config["dtypes"]:
            for impl in impls:
                print(f"accuracy {impl} [{bt}, {hidden}, {vocab}] {dtype}", file=stream, flush=True)
                records.append(
                    accuracy_case(impl, bt, hidden, vocab, dtype, config["teacher"], config["seed"])
                )
    return {
        "config": {**config, "sizes": [list(s) for s in config["sizes"]]},
        "machine": _machine("cpu"),
        "accuracy": records,
    }


# ---------------------------------------------------------------------------------------------
# Tables: terminal, Markdown


def _probe_text(figures: dict[str, Any]) -> str:
    rows, hidden, vocab = figures["shape"]
    return f"{figures['gflops']:.1f} GFLOP/s (forward + backward of [{rows}, {hidden}] @ [{hidden}, {vocab}])"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}" if abs(value) >= 10 else f"{value:.1f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 100 else f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _error(value: float) -> str:
    return f"{value:.1e}"


def sections(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, headers, rows)`` of each table of a report."""
    found = []
    if "accuracy" in report:
        headers = ["impl", "size", "dtype", "loss", "grad_h norm", "grad_h max", "grad_w norm", "grad_w max"]
        headers += ["target", "met"]
        rows = [
            [
                r["impl"],
                "x".join(map(str, r["size"])),
                r["dtype"],
                _error(r["loss_rel_error"]),
                _error(r["grad_hidden_norm_rel_error"]),
                _error(r["grad_hidden_max_rel_error"]),
                _error(r["grad_weight_norm_rel_error"]),
                _error(r["grad_weight_max_rel_error"]),
                f"{r['target']:g}",
                "yes" if r["met"] else "no",
            ]
            for r in report["accuracy"]
        ]
        title = (
            "relative error vs the float64 naive program (norm-wise, elementwise max over |g64| > 1e-3 max)"
        )
        found.append((title, headers, rows))
        return found
    device = report["config"]["device"]
    memory = "peak extra MiB (" + ("max_memory_allocated" if device == "cuda" else "RSS") + ")"
    rows = []
    for r in report["results"]:
        note = r.get("skipped") or r.get("error") or ""
        rows.append(
            [
                "x".join(str(r[k]) for k in ("bt", "hidden", "vocab")),
                r["dtype"],
                r["impl"],
                _mib(r.get("peak_extra_mib")),
                _mib(r.get("temporaries_mib")),
                _ms(r.get("median_ms")),
                "-" if "loss" not in r else f"{r['loss']:.6g}",
                note,
            ]
        )
    found.append(
        (
            f"measurements ({device})",
            ["size", "dtype", "impl", memory, "excl. grads", "median ms", "loss", "note"],
            rows,
        )
    )
    rows = [
        [
            "x".join(map(str, c["size"])),
            c["dtype"],
            c["ratio"],
            _ratio(c.get("memory_ratio")),
            _ratio(c.get("temporaries_ratio")),
            _ratio(c.get("time_ratio")),
            "-" if "loss_difference" not in c else f"{c['loss_difference']:.1e}",
            c.get("missing", ""),
        ]
        for c in report["comparisons"]
    ]
    headers = ["size", "dtype", "ratio", "memory", "memory excl. grads", "time", "|Δloss|", "note"]
    found.append(("ratios kldiv / naive etc. (same run)", headers, rows))
    if report["targets"]:
        rows = [
            [
                "x".join(map(str, t["size"])),
                t["dtype"],
                t["target"],
                _ratio(t["ratio"]),
                f"≤ {t['goal']:g}",
                "yes" if t["met"] else "no",
            ]
            for t in report["targets"]
        ]
        found.append(("targets (issue #7)", ["size", "dtype", "target", "ratio", "goal", "met"], rows))
    return found


def print_report(report: dict[str, Any], stream: TextIO = sys.stdout, use_rich: bool = True) -> None:
    """The tables on ``stream``: rich tables if rich is installed, else aligned plain text."""
    tables = sections(report)
    if use_rich and importlib.util.find_spec("rich") is not None:
        from rich.console import Console
        from rich.table import Table

        console = Console(file=stream, width=max(120, Console(file=stream).width))
        for title, headers, rows in tables:
            table = Table(title=title, title_justify="left")
            for number, header in enumerate(headers):
                left = number == 0 or header in ("dtype", "impl", "ratio", "target", "note")
                table.add_column(header, justify="left" if left else "right")
            for row in rows:
                table.add_row(*row)
            console.print(table)
        return
    for title, headers, rows in tables:
        widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=True)]
        print(title, file=stream)
        for row in (headers, *rows):
            print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip(), file=stream)
        print(file=stream)


def markdown(report: dict[str, Any]) -> str:
    """The tables as Markdown."""
    machine = report.get("machine", {})
    where = machine.get("gpu") or f"{machine.get('cpu')}, {machine.get('usable_cpus')} cores"
    lines = [f"{where}, torch {machine.get('torch')}", ""]
    if report.get("matmul_probe"):
        probe = "; ".join(f"{k} {_probe_text(v)}" for k, v in report["matmul_probe"].items())
        lines += [f"matmul probe: {probe}", ""]
    for title, headers, rows in sections(report):
        lines += [f"**{title}**", "", "| " + " | ".join(h.replace("|", "\\|") for h in headers) + " |"]
        lines.append("|" + "|".join("---" if n == 0 else "---:" for n in range(len(headers))) + "|")
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser() -> Any:
    from .parser import Parser

    parser = Parser(
        prog="kldiv bench fused-linear",
        description=(
            "Fused linear + KL / JS divergence (kldiv.fused.torch) against the naive PyTorch path\n"
            "(logits materialised, log_softmax, F.kl_div): peak memory and median time of forward +\n"
            "backward, one fresh process per case, as ratios kldiv / naive; cases that would not fit\n"
            "in the available memory or would run past --timeout are skipped, with the reason. With\n"
            "--accuracy: relative errors of the loss and the gradients against float64."
        ),
        epilog=(
            "examples:\n"
            "  kldiv bench fused-linear --sizes 1024x1024x32000 --dtypes float32\n"
            "  kldiv bench fused-linear --grid --repeats 2 --json fused.json --markdown fused.md\n"
            "  kldiv bench fused-linear --accuracy\n"
            "  kldiv bench fused-linear --device cuda --grid      # + Liger-Kernel's fused linear JSD"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes",
        type=_argument(parse_sizes),
        metavar="BTxHxV,...",
        help="sizes (default: 1024x1024x32000,4096x1024x32000; with --accuracy 256x256x4096,128x1024x32000)",
    )
    parser.add_argument(
        "--grid",
        action="store_true",
        help="issue #7's grid: BT 1024,4096,8192 x V 32000,128256, H 1024, float32 and bfloat16",
    )
    parser.add_argument(
        "--dtypes",
        type=_argument(_names(DTYPES)),
        metavar="DTYPE,...",
        help="float32, bfloat16 (default: float32; both with --grid or --accuracy)",
    )
    parser.add_argument(
        "--impls",
        type=_argument(_names(IMPLS)),
        metavar="NAME,...",
        help=f"{', '.join(IMPLS)} (default: naive-kl,kldiv-kl on CPU, all on CUDA)",
    )
    parser.add_argument(
        "--teacher",
        choices=TEACHERS,
        help="logits or hidden (+ weight) (default: logits on CPU, hidden on CUDA)",
    )
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--repeats", type=_argument(_count(1)), default=3, metavar="N", help="timed steps (default: 3)"
    )
    parser.add_argument(
        "--warmup", type=_argument(_count(0)), default=1, metavar="N", help="warm-up steps (default: 1)"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, metavar="S", help="seconds per case process (default: 1800)"
    )
    parser.add_argument(
        "--accuracy", action="store_true", help="relative errors vs float64 instead of memory/time"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write the tables as Markdown")
    parser.add_argument("--plain", action="store_true", help="plain text tables (no rich)")
    return parser


def _count(least: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < least:
            raise ValueError(f"expected an integer >= {least}; received {text!r}")
        return value

    return parse


def make_config(args: argparse.Namespace) -> dict[str, Any]:
    """The run's configuration from the parsed options (defaults resolved by mode and device)."""
    if args.grid and args.sizes:
        raise ValueError("--grid and --sizes are exclusive")
    if args.accuracy and args.device != "cpu":
        raise ValueError("--accuracy runs on the CPU (float64 reference); drop --device")
    sizes = (
        grid_sizes() if args.grid else args.sizes or list(ACCURACY_SIZES if args.accuracy else DEFAULT_SIZES)
    )
    dtypes = args.dtypes or list(GRID_DTYPES if args.grid or args.accuracy else ("float32",))
    impls = args.impls or list(ACCURACY_IMPLS if args.accuracy else DEFAULT_IMPLS[args.device])
    teacher = args.teacher or ("hidden" if args.device == "cuda" else "logits")
    if "liger-jsd" in impls and teacher != "hidden":
        raise ValueError("liger-jsd takes the teacher as hidden states + weight: use --teacher hidden")
    return {
        "sizes": sizes,
        "dtypes": dtypes,
        "impls": impls,
        "teacher": teacher,
        "device": args.device,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "timeout": args.timeout,
        "seed": args.seed,
        "mode": "accuracy" if args.accuracy else "memory+time",
    }


def cuda_skip_reason(impls: Sequence[str]) -> str | None:
    """Why ``--device cuda`` cannot run here (no CUDA), or None."""
    import torch

    if not torch.cuda.is_available():
        build = (
            "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no device"
        )
        return f"CUDA is not available (torch {torch.__version__}, {build}): nothing measured"
    return None


def bench_fused_command(argv: Sequence[str]) -> int:
    """``kldiv bench fused-linear [options]``: run, print the tables, write the JSON / Markdown asked for."""
    args = build_parser().parse_args(list(argv))
    config = make_config(args)
    command = " ".join(["kldiv", "bench", "fused-linear", *argv])
    if config["device"] == "cuda":
        reason = cuda_skip_reason(config["impls"])
        if reason:
            print(f"kldiv bench fused-linear: skipped: {reason}", file=sys.stderr)
            if args.json:
                _write(
                    args.json,
                    json.dumps({"config": _jsonable(config), "skipped": reason, "command": command}, indent=1)
                    + "\n",
                )
            return 0
        if "liger-jsd" in config["impls"]:
            liger, why = liger_jsd()
            if liger is None:
                print(f"kldiv bench fused-linear: liger-jsd left out: {why}", file=sys.stderr)
                config["impls"] = [i for i in config["impls"] if i != "liger-jsd"]
    report = run_accuracy(config) if config["mode"] == "accuracy" else run_benchmark(config)
    report["command"] = command
    print_report(report, sys.stdout, use_rich=not args.plain)
    if args.json:
        _write(args.json, json.dumps(report, indent=1) + "\n")
    if args.markdown:
        _write(args.markdown, markdown(report))
    return 0


def _jsonable(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "sizes": [list(s) for s in config["sizes"]]}


def _write(path: str, text: str) -> None:
    with open(path, "w") as out:
        out.write(text)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kldiv.cli.bench_fused``: a case process (``--case SPEC_JSON``) or the command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--case"]:
        print(json.dumps(run_case(json.loads(args[1]))))
        return 0
    from .main import main as kldiv_main

    return kldiv_main(["bench", "fused-linear", *args])


if __name__ == "__main__":
    sys.exit(main())
