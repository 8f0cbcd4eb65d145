"""One ``kldiv bench`` run: every selected implementation at every size, timed round-robin.

Every figure is the median of ``repeats`` timings after ``warmup`` calls (compilation, caches), with
the implementations of one size and mode interleaved (:mod:`kldiv.bench.timing`). Implementations
whose modules are not installed, and sizes that would not fit in memory, are skipped and named; a
case that fails records its error and the run goes on. Nothing here asserts a time.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import statistics
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ..machine import machine_info, missing_modules, versions
from ..timing import Case, one_line, progress_bar, timed
from .cases import MODE_TITLES, MODES, PEERS, Implementation, implementations
from .frameworks import keras_backend
from .inputs import Inputs
from .memory import measure_memory, size_skip_reason

DEFAULT_SIZES = ((32, 1000), (1024, 32000), (4096, 32000), (2048, 128256))


@dataclasses.dataclass
class Config:
    """What to measure: ``[rows, vocab]`` sizes, modes, peers, timed and warm-up calls, memory, seed."""

    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES
    modes: Sequence[str] = MODES
    peers: Sequence[str] = PEERS
    repeats: int = 5
    warmup: int = 1
    memory: bool = False
    seed: int = 0


def _select(config: Config, backend_name: str | None) -> tuple[list[Implementation], list[dict[str, Any]]]:
    """The implementations to run, and those skipped because a module they need is not installed."""
    groups = {"floor", "kldiv", *config.peers}
    chosen, skipped = [], []
    for impl in implementations(backend_name):
        if impl.group not in groups or impl.mode not in config.modes:
            continue
        missing = missing_modules(impl.needs)
        if missing:
            fields = {"key": impl.key, "mode": impl.mode, "label": impl.label, "group": impl.group}
            skipped.append({**fields, "reason": f"not installed: {', '.join(missing)}"})
        else:
            chosen.append(impl)
    return chosen, skipped


def run_benchmark(config: Config, stream: TextIO = sys.stderr, use_rich: bool = True) -> dict[str, Any]:
    """Measure every selected implementation at every size; returns the JSON-able report."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    keras = "keras" in config.peers and not missing_modules(("keras",))
    backend_name = keras_backend() if keras else None
    chosen, skipped = _select(config, backend_name)
    skipped_sizes, sizes = {}, []
    for shape in config.sizes:
        reason = size_skip_reason(shape, {i.group for i in chosen})
        if reason:
            skipped_sizes[f"{shape[0]}x{shape[1]}"] = reason
        else:
            sizes.append(shape)
    for entry in skipped:
        print(f"skipped {MODE_TITLES[entry['mode']]} {entry['label']}: {entry['reason']}", file=stream)
    for size, reason in skipped_sizes.items():
        print(f"skipped size {size}: {reason}", file=stream)

    results: list[dict[str, Any]] = []
    calls = len(chosen) * len(sizes) * (config.warmup + config.repeats)
    children = (len(chosen) + 1) * len(sizes) if config.memory else 0
    with progress_bar(calls + children, stream, use_rich) as progress:
        for shape in sizes:
            inputs = Inputs(*shape, config.seed)
            for mode in config.modes:
                results += _measure([i for i in chosen if i.mode == mode], inputs, config, progress)
            del inputs
            gc.collect()
        if config.memory:
            measure_memory(results, sizes, config.seed, progress)
    add_ratios(results)
    return {
        "benchmark": "KL(t||p) of fp32 softmax rows, mean over rows",
        "config": {
            **dataclasses.asdict(config),
            "sizes": [list(s) for s in config.sizes],
            "modes": list(config.modes),
            "peers": list(config.peers),
        },
        "machine": machine_info(),
        "versions": versions(),
        "keras_backend": backend_name,
        "skipped": {"implementations": skipped, "sizes": skipped_sizes},
        "results": results,
    }


def _measure(
    chosen: list[Implementation], inputs: Inputs, config: Config, progress: Any
) -> list[dict[str, Any]]:
    """Build, warm up, then time ``chosen`` round-robin, ``config.repeats`` times."""
    size = f"{inputs.shape[0]}x{inputs.shape[1]}"
    entries: list[dict[str, Any]] = []
    cases: dict[str, Case] = {}
    for impl in chosen:
        entry = {"size": list(inputs.shape), "mode": impl.mode, "key": impl.key, "label": impl.label}
        entry |= {"group": impl.group, "times_ms": []}
        entries.append(entry)
        description = f"{size} {MODE_TITLES[impl.mode]}: warm-up {impl.label}"
        progress.update(description)
        try:
            case = impl.build(inputs)
            for _ in range(config.warmup):
                timed(case)
            cases[impl.key] = case
        except Exception as exc:  # a peer failing (memory, version) must not stop the run
            entry["error"] = one_line(exc)
        progress.update(description, advance=config.warmup)
    for repetition in range(config.repeats):
        for entry in entries:
            description = f"{size} {MODE_TITLES[entry['mode']]}: run {repetition + 1}/{config.repeats}"
            progress.update(description)
            case = cases.get(entry["key"])
            if case is not None:
                try:
                    entry["times_ms"].append(timed(case) * 1e3)
                except Exception as exc:
                    entry["error"] = one_line(exc)
                    del cases[entry["key"]]
            progress.update(description, advance=1)
    for entry in entries:
        times = entry["times_ms"]
        entry["median_ms"] = statistics.median(times) if times and "error" not in entry else None
    cases.clear()
    gc.collect()
    return entries


def add_ratios(results: list[dict[str, Any]]) -> None:
    """``vs_fused``: time / kldiv fused of the same size and mode; ``vs_floor``: time / the floor
    of the mode (reading both inputs for forward, reading both and writing one for backward)."""
    for entry in results:
        same = [e for e in results if e["size"] == entry["size"] and e["mode"] == entry["mode"]]
        fused = _median_of(same, "kldiv_fused")
        floor = _median_of(same, "floor_read" if entry["mode"] == "forward" else "floor_rw")
        median = entry["median_ms"]
        entry["vs_fused"] = median / fused if median and fused else None
        entry["vs_floor"] = median / floor if median and floor else None


def _median_of(entries: list[dict[str, Any]], key: str) -> float | None:
    return next((e["median_ms"] for e in entries if e["key"] == key and e["median_ms"]), None)
