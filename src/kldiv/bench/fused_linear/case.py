"""One case of ``kldiv bench fused-linear``, measured in its own process.

``python -m kldiv.bench.fused_linear.case SPEC_JSON`` runs :func:`run_case` and prints its record as
one JSON line; :func:`kldiv.bench.fused_linear.run.run_child` starts it with a timeout.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from ..machine import reset_peak, status_kib
from .cases import make_inputs, make_loss


def _required_kib(field: str) -> int:
    kib = status_kib(field)
    if kib is None:
        raise RuntimeError(f"no {field} in /proc/self/status: a CPU case cannot be measured here")
    return kib


def _cpu_steps(step: Callable[[], Any], repeats: int) -> tuple[list[float], Any, int]:
    """Milliseconds of each step, the last value, and the peak RSS above the baseline in bytes."""
    if not reset_peak():
        raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs)")
    baseline = _required_kib("VmRSS") * 1024
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = step()
        times.append((time.perf_counter() - start) * 1e3)
    return times, value, _required_kib("VmHWM") * 1024 - baseline


def _cuda_steps(step: Callable[[], Any], repeats: int) -> tuple[list[float], Any, int]:
    """CUDA-event milliseconds of each step, the last value, and the peak allocated above the baseline."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    times, value = [], None
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        value = step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return times, value, torch.cuda.max_memory_allocated() - baseline


def run_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one case (``spec``: impl, bt, hidden, vocab, dtype, teacher, device, warmup, repeats,
    seed, and ``k`` for a sparse teacher) in this process; returns the spec plus ``loss``,
    ``peak_extra_mib``, ``grads_mib``, ``temporaries_mib``, ``median_ms``, ``times_ms`` (or ``error``)."""
    import torch

    device = spec["device"]
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available")
    loss_fn = make_loss(spec["impl"])
    dtype = getattr(torch, spec["dtype"])
    result = dict(spec)
    try:
        inputs = make_inputs(
            spec["bt"],
            spec["hidden"],
            spec["vocab"],
            dtype,
            device,
            spec["teacher"],
            spec["seed"],
            k=spec.get("k"),
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
        steps = _cuda_steps if device == "cuda" else _cpu_steps
        times, value, peak_bytes = steps(step, spec["repeats"])
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


if __name__ == "__main__":
    print(json.dumps(run_case(json.loads(sys.argv[1]))))
