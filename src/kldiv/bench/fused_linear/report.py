"""What a ``kldiv bench fused-linear`` report shows: tables of ``(title, headers, rows)`` strings.

Memory + time: the measurements (peak extra memory, the same without the gradients, median step,
loss, and why a case was skipped or failed), then the ratios of figures measured in the same run.
Accuracy: the relative errors against float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .cases import label_of
from .estimates import probe_text

Table = tuple[str, list[str], list[list[str]]]


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}" if abs(value) >= 10 else f"{value:.1f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 100 else f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _size(values: Any) -> str:
    return "x".join(map(str, values))


def accuracy_table(report: dict[str, Any]) -> Table:
    """The relative errors of each implementation and dtype."""
    headers = ["impl", "size", "dtype", "loss", "grad_h norm", "grad_h max", "grad_w norm", "grad_w max"]
    keys = ("loss_rel_error", "grad_hidden_norm_rel_error", "grad_hidden_max_rel_error")
    keys += ("grad_weight_norm_rel_error", "grad_weight_max_rel_error")
    rows = [
        [label_of(r), _size(r["size"]), r["dtype"], *(f"{r[key]:.1e}" for key in keys)]
        for r in report["accuracy"]
    ]
    title = "relative error vs the float64 naive program (norm-wise, elementwise max over |g64| > 1e-3 max)"
    return title, headers, rows


Column = tuple[str, Callable[[dict[str, Any]], str]]


def _table(title: str, columns: list[Column], records: list[dict[str, Any]]) -> Table:
    """A table of one row per record, each cell given by its column's function."""
    return title, [header for header, _ in columns], [[cell(r) for _, cell in columns] for r in records]


def _loss(r: dict[str, Any]) -> str:
    return "-" if "loss" not in r else f"{r['loss']:.6g}"


def _loss_difference(r: dict[str, Any]) -> str:
    return "-" if "loss_difference" not in r else f"{r['loss_difference']:.1e}"


def measurement_table(report: dict[str, Any]) -> Table:
    """One row per case: memory, time, loss, and the reason a case was skipped or failed."""
    device = report["config"]["device"]
    memory = "peak extra MiB (" + ("max_memory_allocated" if device == "cuda" else "RSS") + ")"
    columns: list[Column] = [
        ("size", lambda r: _size(r[k] for k in ("bt", "hidden", "vocab"))),
        ("dtype", lambda r: r["dtype"]),
        ("impl", label_of),
        (memory, lambda r: _mib(r.get("peak_extra_mib"))),
        ("excl. grads", lambda r: _mib(r.get("temporaries_mib"))),
        ("median ms", lambda r: _ms(r.get("median_ms"))),
        ("loss", _loss),
        ("note", lambda r: r.get("skipped") or r.get("error") or ""),
    ]
    return _table(f"measurements ({device})", columns, report["results"])


def ratio_table(report: dict[str, Any]) -> Table:
    """The ratios of memory and time between implementations measured in the same run."""
    columns: list[Column] = [
        ("size", lambda c: _size(c["size"])),
        ("dtype", lambda c: c["dtype"]),
        ("ratio", lambda c: c["ratio"]),
        ("memory", lambda c: _ratio(c.get("memory_ratio"))),
        ("memory excl. grads", lambda c: _ratio(c.get("temporaries_ratio"))),
        ("time", lambda c: _ratio(c.get("time_ratio"))),
        ("|Δloss|", _loss_difference),
        ("note", lambda c: c.get("missing", "")),
    ]
    return _table("ratios kldiv / naive etc. (same run)", columns, report["comparisons"])


def tables(report: dict[str, Any]) -> list[Table]:
    """The tables of a report: accuracy, or measurements then ratios."""
    if "accuracy" in report:
        return [accuracy_table(report)]
    return [measurement_table(report), ratio_table(report)]


def notes(report: dict[str, Any]) -> list[str]:
    """Lines printed above the tables: the GPU where there is one, torch, the matmul probe."""
    machine = report.get("machine", {})
    lines = [
        f"{machine['gpu']}, torch {machine.get('torch')}"
        if machine.get("gpu")
        else f"torch {machine.get('torch')}"
    ]
    if report.get("matmul_probe"):
        lines.append(
            "matmul probe: " + "; ".join(f"{k} {probe_text(v)}" for k, v in report["matmul_probe"].items())
        )
    return lines
