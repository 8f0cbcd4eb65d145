"""What a ``kldiv bench`` report shows: one table per size and mode, and a log-log plot.

Each table lists the implementations with their median and spread (ms) and two ratios measured in
the same run: ``× fused`` (time / kldiv fused) and ``× floor`` (time / the mode's memory floor);
with ``--memory`` also the peak memory columns. Tables are ``(title, headers, rows)`` of strings, for
:mod:`kldiv.cli.tables` to print or write as Markdown.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from .cases import MODE_TITLES

Table = tuple[str, list[str], list[list[str]]]
HEADERS = ["implementation", "ms", "spread", "× fused", "× floor"]
MEMORY_HEADERS = ["peak MB", "op MB"]


def _times(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _mb(value: float | None) -> str:
    return "" if value is None else f"{max(value, 0.0):.0f}"  # below the baseline by noise: 0


def _rows(report: dict[str, Any], shape: list[int], mode: str) -> list[list[str]]:
    memory = report["config"].get("memory")
    rows = []
    for e in report["results"]:
        if e["size"] != shape or e["mode"] != mode:
            continue
        if e["median_ms"] is None:
            row = [e["label"], "—", e.get("error", "not measured"), "", ""]
        else:
            spread = f"{min(e['times_ms']):.3g}–{max(e['times_ms']):.3g}"
            row = [e["label"], f"{e['median_ms']:.4g}", spread, _times(e["vs_fused"]), _times(e["vs_floor"])]
        if memory:
            row += [_mb(e.get("peak_extra_mb")), _mb(e.get("op_peak_mb"))]
        rows.append(row)
    return rows


def tables(report: dict[str, Any]) -> Iterator[Table]:
    """One table per measured size (smallest first) and mode."""
    headers = HEADERS + (MEMORY_HEADERS if report["config"].get("memory") else [])
    shapes = sorted({tuple(e["size"]) for e in report["results"]}, key=math.prod)
    for shape in shapes:
        for mode in report["config"]["modes"]:
            rows = _rows(report, list(shape), mode)
            if rows:
                floor = "read floor" if mode == "forward" else "read+write floor"
                ratios = f"× fused: / kldiv fused; × floor: / {floor}"
                yield f"[{shape[0]}, {shape[1]}] {MODE_TITLES[mode]} ({ratios})", headers, rows


def write_plot(report: dict[str, Any], path: str) -> None:
    """Median time against the number of elements, per implementation, log-log; one panel per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = report["config"]["modes"]
    figure, axes = plt.subplots(1, len(modes), figsize=(7.5 * len(modes), 6), squeeze=False)
    for axis, mode in zip(axes[0], modes, strict=True):
        axis.set_prop_cycle(color=plt.get_cmap("tab20").colors)
        series: dict[str, list[tuple[int, float]]] = {}
        style: dict[str, str] = {}
        for e in report["results"]:
            if e["mode"] == mode and e["median_ms"]:
                series.setdefault(e["label"], []).append((math.prod(e["size"]), e["median_ms"]))
                style[e["label"]] = {"floor": "--", "kldiv": "-"}.get(e["group"], ":")
        for label, points in series.items():
            xs, ys = zip(*sorted(points), strict=True)
            width = 2.2 if style[label] == "-" else 1.2
            axis.plot(xs, ys, style[label], marker="o", markersize=3, linewidth=width, label=label)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("elements per input (rows × vocab)")
        axis.set_ylabel("median time (ms)")
        axis.set_title(f"KL(t‖p), fp32, {MODE_TITLES[mode]}")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7, loc="upper left")
    machine = report["machine"]
    figure.suptitle(
        f"{machine['cpu']}, {machine['usable_cpus']} cores, Numba target {machine['numba_target']}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
