"""GPU benchmark: kldiv's Triton kernel vs PyTorch (and Liger-Kernel when importable).

Two workloads, each forward only (inputs need no gradient) and forward + backward (the student needs
one), with ``reduction="batchmean"``:

* ``log_probs``: ``F.kl_div(student_logp, teacher_logp, log_target=True)`` — PyTorch's own contract
  — vs ``kldiv.KLDivergence(y_true_format="log_probs", y_pred_format="log_probs", epsilon=0)`` and
  Liger-Kernel's ``LigerKLDivLossFunction`` (the same contract, a Triton kernel).
* ``logits``: distillation from logits, ``F.kl_div(log_softmax(s), log_softmax(t), log_target=True)``
  vs ``kldiv.KLDivergence(y_true_format="logits", y_pred_format="logits", epsilon=0)`` (the
  log-softmaxes fused into the kernel).

``kldiv`` is the public loss (``backend="triton"``), the only kldiv entry point this script uses (the
``kldiv-fn`` column of earlier runs in ``RESULTS_GPU.md`` called a private kernel function directly;
it is gone, so that internal changes cannot break the script). Times are medians of CUDA-event
timings after warm-up; ratios are ``other / kldiv`` (> 1: kldiv is faster), measured in one run.
Nothing is asserted. Sizes that do not fit in memory are reported as ``OOM``.

Usage: ``python benchmarks/gpu_triton.py [--out DIR] [--reps 10] [--bt 1024 4096 16384]
[--vocab 32000 131072] [--dtypes float32 bfloat16]``; writes ``gpu_triton.json`` and ``gpu_triton.md``
to ``DIR`` (default ``$OUT`` or ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import kldiv


def _liger() -> tuple[Any, str]:
    """Liger-Kernel's KL autograd Function, or None and why not."""
    try:
        from liger_kernel.ops.kl_div import LigerKLDivLossFunction
    except Exception as error:  # any import failure means "not available here"
        return None, f"{type(error).__name__}: {error}"
    import liger_kernel

    return LigerKLDivLossFunction, getattr(liger_kernel, "__version__", "installed")


def median_ms(fn: Callable[[], Any], reps: int, warmup: int = 3) -> float:
    """Median of ``reps`` CUDA-event timings of ``fn`` in milliseconds, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _losses(workload: str, liger: Any) -> dict[str, Callable[[torch.Tensor, torch.Tensor], Any]]:
    """``name → loss(teacher, student)`` for one workload (batchmean everywhere)."""
    fmt = "log_probs" if workload == "log_probs" else "logits"
    loss = kldiv.KLDivergence(
        reduction="batchmean", y_true_format=fmt, y_pred_format=fmt, epsilon=0.0, backend="triton"
    )
    if workload == "log_probs":
        impls = {
            "torch": lambda t, s: F.kl_div(s, t, reduction="batchmean", log_target=True),
            "kldiv": loss,
        }
        if liger is not None:
            impls["liger"] = lambda t, s: liger.apply(s, t, "batchmean", True, 1e-10)
        return impls
    return {
        "torch": lambda t, s: F.kl_div(
            F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), reduction="batchmean", log_target=True
        ),
        "kldiv": loss,
    }


def _inputs(workload: str, rows: int, vocab: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator(device="cuda").manual_seed(0)
    teacher = torch.randn(rows, vocab, device="cuda", generator=generator, dtype=dtype) * 2
    student = torch.randn(rows, vocab, device="cuda", generator=generator, dtype=dtype) * 2
    if workload == "log_probs":
        teacher = torch.log_softmax(teacher.float(), dim=-1).to(dtype)
        student = torch.log_softmax(student.float(), dim=-1).to(dtype)
    return teacher, student


def measure(workload: str, rows: int, vocab: int, dtype: torch.dtype, reps: int, liger: Any) -> list[dict]:
    """Every implementation × {forward, forward+backward} at one size."""
    results = []
    try:
        teacher, student = _inputs(workload, rows, vocab, dtype)
    except torch.cuda.OutOfMemoryError:
        return [{"workload": workload, "rows": rows, "vocab": vocab, "dtype": str(dtype)[6:], "error": "OOM"}]
    for name, loss in _losses(workload, liger).items():
        for mode in ("forward", "forward+backward"):
            record = {"workload": workload, "rows": rows, "vocab": vocab, "dtype": str(dtype)[6:]}
            record |= {"impl": name, "mode": mode}
            student.requires_grad_(mode != "forward")

            def step(loss=loss, mode=mode, teacher=teacher, student=student) -> torch.Tensor:
                student.grad = None
                value = loss(teacher, student)
                if mode != "forward":
                    value.backward()
                return value.detach()

            try:
                record["value"] = float(step())
                record["ms"] = median_ms(step, reps)
            except torch.cuda.OutOfMemoryError:
                record["error"] = "OOM"
            student.grad = None
            torch.cuda.empty_cache()
            results.append(record)
    del teacher, student
    torch.cuda.empty_cache()
    return results


def markdown(records: list[dict], header: str) -> str:
    """One table row per (workload, size, dtype, mode): the times and ``other / kldiv`` ratios."""
    impls = ["torch", "kldiv", "liger"]
    present = [i for i in impls if any(r.get("impl") == i for r in records)]
    lines = [header, ""]
    columns = ["workload", "BT", "V", "dtype", "mode", *(f"{i} ms" for i in present)]
    columns += [f"{i} / kldiv" for i in present if i != "kldiv"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    keys = sorted(
        {(r["workload"], r["rows"], r["vocab"], r["dtype"], r.get("mode", "-")) for r in records},
        key=lambda k: (k[0], k[2], k[1], k[3], k[4]),
    )
    for key in keys:
        found = {
            r.get("impl"): r
            for r in records
            if (r["workload"], r["rows"], r["vocab"], r["dtype"], r.get("mode", "-")) == key
        }
        times = {i: found[i].get("ms") if i in found else None for i in present}
        cells = [str(k) for k in key]
        for i in present:
            r = found.get(i)
            cells.append("-" if r is None else r.get("error") or f"{r['ms']:.3f}")
        base = times.get("kldiv")
        for i in present:
            if i != "kldiv":
                cells.append(f"{times[i] / base:.2f}" if times.get(i) and base else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"))
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--bt", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--vocab", type=int, nargs="+", default=[32000, 131072])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--workloads", nargs="+", default=["log_probs", "logits"])
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure", file=sys.stderr)
        return 1
    import triton

    liger, liger_info = _liger()
    environment = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "liger_kernel": liger_info,
    }
    print(json.dumps(environment), flush=True)
    records: list[dict] = []
    for workload in args.workloads:
        for dtype_name in args.dtypes:
            for vocab in args.vocab:
                for rows in args.bt:
                    batch = measure(workload, rows, vocab, getattr(torch, dtype_name), args.reps, liger)
                    for record in batch:
                        print(json.dumps(record), flush=True)
                    records += batch
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_triton.json").write_text(
        json.dumps({"environment": environment, "records": records}, indent=1)
    )
    header = f"{environment['device']}, torch {environment['torch']}, triton {environment['triton']}"
    table = markdown(records, header)
    (out / "gpu_triton.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
