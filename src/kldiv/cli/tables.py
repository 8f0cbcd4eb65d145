"""Print benchmark tables — ``(title, headers, rows)`` of strings — as rich tables, plain text or Markdown."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from typing import TextIO

Table = tuple[str, Sequence[str], Sequence[Sequence[str]]]
LEFT_COLUMNS = {"dtype", "impl", "ratio", "note"}  # besides the first column, the text columns


def print_tables(tables: Iterable[Table], stream: TextIO, use_rich: bool = True) -> None:
    """``tables`` on ``stream``: rich tables if rich is installed and wanted, else aligned plain text."""
    if use_rich and importlib.util.find_spec("rich") is not None:
        from rich.console import Console
        from rich.table import Table as RichTable

        console = Console(file=stream, width=max(120, Console(file=stream).width))
        for title, headers, rows in tables:
            table = RichTable(title=title, title_justify="left")
            for number, header in enumerate(headers):
                table.add_column(header, justify="left" if number == 0 or header in LEFT_COLUMNS else "right")
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


def _cells(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"


def markdown(tables: Iterable[Table], notes: Sequence[str] = ()) -> str:
    """``notes`` (one paragraph each), then each table as a bold title and a Markdown table."""
    lines = []
    for note in notes:
        lines += [note, ""]
    for title, headers, rows in tables:
        lines += [f"**{title}**", "", _cells(headers)]
        lines.append("|" + "|".join("---" if n == 0 else "---:" for n in range(len(headers))) + "|")
        lines += [_cells(row) for row in rows]
        lines.append("")
    return "\n".join(lines)
