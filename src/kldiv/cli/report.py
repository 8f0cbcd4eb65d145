"""Print a :class:`~kldiv.cli.compute.Result`: a table (``rich`` when installed, else plain text) or JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TextIO

import numpy as np

from .compute import Result

VALUE_HEADER = "kl_divergence"
INDEX_HEADER = "sample"
RESOLVED_REDUCTIONS = {"auto": "auto (sum_over_batch_size)"}


def number(x: Any, precision: int) -> str:
    """``x`` with ``precision`` significant digits (``nan`` and ``inf`` spelled as such)."""
    return f"{float(x):.{precision}g}"


def nested(value: Any, precision: int) -> str:
    """A number or a nested list of numbers, each with ``precision`` significant digits."""
    if isinstance(value, list):
        return "[" + ", ".join(nested(item, precision) for item in value) + "]"
    return number(value, precision)


def rows(per_sample: np.ndarray, precision: int) -> Iterator[tuple[str, str]]:
    """``(index, value)`` per element of the per-sample loss; ``-`` indexes a 0-d loss."""
    for index in np.ndindex(per_sample.shape):
        yield ", ".join(map(str, index)) or "-", number(per_sample[index], precision)


def reduced_line(result: Result, precision: int) -> str:
    """``"<reduction>: <value>"``, e.g. ``auto (sum_over_batch_size): 0.458143``."""
    label = RESOLVED_REDUCTIONS.get(result.reduction, result.reduction)
    return f"{label}: {nested(result.value.tolist(), precision)}"


def plain_table(result: Result, precision: int) -> str:
    """The per-sample table as right-aligned plain text."""
    table = [(INDEX_HEADER, VALUE_HEADER), *rows(result.per_sample, precision)]
    widths = [max(len(row[column]) for row in table) for column in (0, 1)]
    return "\n".join(f"{index:>{widths[0]}}  {value:>{widths[1]}}" for index, value in table)


def print_text(result: Result, precision: int, file: TextIO) -> None:
    """The per-sample table, then the reduced value."""
    if not _print_rich_table(result, precision, file):
        print(plain_table(result, precision), file=file)
    print(reduced_line(result, precision), file=file)


def _print_rich_table(result: Result, precision: int, file: TextIO) -> bool:
    """Print the table with ``rich``; False when ``rich`` is not installed."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return False
    table = Table(INDEX_HEADER, VALUE_HEADER)
    for column in table.columns:
        column.justify = "right"
    for index, value in rows(result.per_sample, precision):
        table.add_row(index, value)
    Console(file=file, highlight=False).print(table)
    return True


def as_json(result: Result) -> str:
    """One JSON object with full-precision values (non-finite values as ``NaN`` / ``Infinity``)."""
    return json.dumps(
        {
            "per_sample": result.per_sample.tolist(),
            "reduction": result.reduction,
            "value": result.value.tolist(),
            "options": result.options,
            "dtype": str(result.value.dtype),
        }
    )
