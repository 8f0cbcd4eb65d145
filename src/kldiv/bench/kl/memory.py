"""Memory of ``kldiv bench``: which sizes fit, and the peak of each case in a fresh process.

``peak_extra_mb`` is a case process's peak resident memory (``VmHWM``: imports, framework copies of
the inputs, compilation and the call) minus that of a process that only allocates the inputs;
``op_peak_mb`` is the peak during one warm call (reset with ``clear_refs``) minus the resident
memory before it. ``python -m kldiv.bench.kl.memory KEY MODE ROWS VOCAB SEED`` is one case process:
it prints its peaks in KiB as one JSON line.
"""

from __future__ import annotations

import gc
import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from ..machine import available_memory, peak_kib, reset_peak, status_kib
from ..timing import timed
from .cases import MODE_TITLES, find
from .inputs import Inputs

CHILD_MODULE = "kldiv.bench.kl.memory"


def arrays_needed(groups: set[str]) -> int:
    """A generous count of ``[rows, vocab]`` float32 arrays one size needs at its peak.

    Inputs (2) and ``log p`` (1), the copies JAX (3) and TensorFlow (2) hold, the temporaries of the
    hungriest case (one eager tf_keras / Keras 3 gradient: 8; kldiv core's torch backward: 7) and
    allocator slack (2). Measured: the whole run peaks at 18 arrays' worth at [2048, 128256].
    """
    count = 3 + 8 + 2
    if groups & {"jax", "optax"}:
        count += 3
    if groups & {"tf_keras", "keras"}:
        count += 2
    return count


def size_skip_reason(shape: tuple[int, int], groups: set[str]) -> str | None:
    """Why a size must not run (it would not fit in the available memory), or None."""
    need = math.prod(shape) * 4 * arrays_needed(groups)
    free = available_memory()
    if free is not None and need > free:
        return f"needs about {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB available"
    return None


def memory_child(key: str, mode: str, shape: tuple[int, int], seed: int) -> dict[str, Any]:
    """Run in a fresh process: allocate the inputs, then (unless ``key == "inputs"``) build the case,
    warm it up and run it once. Returns peaks in KiB: ``peak_kib`` (the whole process) and ``op_kib``
    (one warm call: its peak minus the resident memory just before it; None where the peak cannot be
    reset)."""
    inputs = Inputs(*shape, seed)
    if key == "inputs":
        return {"peak_kib": peak_kib()}
    case = find(key, mode).build(inputs)
    timed(case)
    gc.collect()
    peak = peak_kib()
    before = status_kib("VmRSS")
    resettable = before is not None and reset_peak()
    timed(case)
    op = max(0, peak_kib() - before) if resettable else None
    return {"peak_kib": max(peak, peak_kib()), "op_kib": op}


def run_memory_child(key: str, mode: str, shape: tuple[int, int], seed: int) -> dict[str, Any]:
    """:func:`memory_child` in a fresh interpreter; ``{"error": <last stderr line>}`` if it fails."""
    command = [sys.executable, "-m", CHILD_MODULE, key, mode, str(shape[0]), str(shape[1]), str(seed)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {"error": tail}
    return json.loads(lines[-1])


def measure_memory(
    results: list[dict[str, Any]], sizes: Sequence[tuple[int, int]], seed: int, progress: Any
) -> None:
    """Add ``peak_extra_mb`` / ``op_peak_mb`` (or ``memory_error``) to each measured entry."""
    for shape in sizes:
        size = f"{shape[0]}x{shape[1]}"
        progress.update(f"{size} memory: inputs only")
        baseline = run_memory_child("inputs", "forward", shape, seed).get("peak_kib")
        progress.update(f"{size} memory: inputs only", advance=1)
        for entry in results:
            if tuple(entry["size"]) != shape:
                continue
            description = f"{size} memory: {MODE_TITLES[entry['mode']]} {entry['label']}"
            progress.update(description)
            if "error" not in entry:
                report = run_memory_child(entry["key"], entry["mode"], shape, seed)
                if "error" in report:
                    entry["memory_error"] = report["error"]
                else:
                    if baseline is not None:
                        entry["peak_extra_mb"] = (report["peak_kib"] - baseline) / 1024
                    if report.get("op_kib") is not None:
                        entry["op_peak_mb"] = report["op_kib"] / 1024
            progress.update(description, advance=1)


if __name__ == "__main__":  # one case process of --memory
    key, mode, rows, vocab, seed = sys.argv[1:]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(json.dumps(memory_child(key, mode, (int(rows), int(vocab)), int(seed))))
