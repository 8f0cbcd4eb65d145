"""Argument types and up-front checks shared by the ``kldiv bench`` commands.

Every check here runs before any measurement starts, so that a bad ``--plot`` / ``--json`` path or a
missing optional package costs nothing but its one-line error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from .. import errors

INSTALL_BENCH = 'pip install "kldiv[bench]"'
INSTALL_TORCH = 'pip install "kldiv[torch]"'


def argument(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type=`` that reports ``parse``'s ``ValueError`` as argparse's own error."""

    def wrapped(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return wrapped


def count(least: int) -> Callable[[str], int]:
    """Parse an integer ``>= least``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise ValueError(f"expected an integer >= {least}; received {text!r}")
        return value

    return parse


def names(allowed: Sequence[str], allow_none: bool = False) -> Callable[[str], list[str]]:
    """Parse comma-separated names from ``allowed`` (and, with ``allow_none``, ``none`` / ``all``)."""

    def parse(text: str) -> list[str]:
        found = [name.strip() for name in text.split(",") if name.strip()]
        if allow_none and found == ["none"]:
            return []
        if allow_none and found == ["all"]:
            return list(allowed)
        if not found or any(name not in allowed for name in found):
            raise ValueError(f"expected names from {', '.join(allowed)}; received {text!r}")
        return found

    return parse


def sizes(spelling: str, example: str) -> Callable[[str], list[tuple[int, ...]]]:
    """Parse comma-separated sizes such as ``1024x32000`` (``spelling`` ``ROWSxVOCAB``, one int per part)."""
    dims = spelling.count("x") + 1

    def parse_one(text: str) -> tuple[int, ...]:
        parts = text.strip().lower().replace("×", "x").split("x")
        try:
            size = tuple(int(part) for part in parts)
        except ValueError:
            size = ()
        if len(size) != dims:
            raise ValueError(f"expected a size {spelling} such as {example}; received {text!r}")
        if min(size) < 1:
            raise ValueError(f"expected positive sizes; received {text!r}")
        return size

    def parse(text: str) -> list[tuple[int, ...]]:
        found = [parse_one(part) for part in text.split(",") if part.strip()]
        if not found:
            raise ValueError(f"expected sizes {spelling},... such as {example}; received {text!r}")
        return found

    return parse


def add_run_options(parser: argparse.ArgumentParser, repeats: int, warmup_least: int, unit: str) -> None:
    """``--repeats`` (timed ``unit``s), ``--warmup`` (at least ``warmup_least``) and ``--seed``."""
    parser.add_argument(
        "--repeats",
        type=argument(count(1)),
        default=repeats,
        metavar="N",
        help=f"timed {unit}s (default: {repeats})",
    )
    parser.add_argument(
        "--warmup",
        type=argument(count(warmup_least)),
        default=1,
        metavar="N",
        help=f"warm-up {unit}s (default: 1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")


def add_output_options(parser: argparse.ArgumentParser, plot: bool = False) -> None:
    """``--json``, (``plot``) ``--plot``, ``--markdown`` and ``--plain``."""
    parser.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    if plot:
        parser.add_argument(
            "--plot", metavar="PATH", help="write a PNG plot of time against size (needs matplotlib)"
        )
    parser.add_argument("--markdown", metavar="PATH", help="write the tables as Markdown")
    parser.add_argument("--plain", action="store_true", help="plain text, no rich progress bar or tables")


def check_outputs(args: argparse.Namespace) -> None:
    """Fail now, not after the run, on an output path that cannot be written or (``--plot``) a
    matplotlib that cannot be imported."""
    if getattr(args, "plot", None) is not None:
        check_importable("matplotlib", "Argument `--plot`", INSTALL_BENCH)
    for option in ("json", "plot", "markdown"):
        check_output(f"--{option}", getattr(args, option, None))


def check_output(option: str, path: str | None) -> None:
    """``ValueError`` unless ``path`` (when given) can be written: its directory exists and takes a
    new file, and the path is not a directory."""
    if path is None:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        detail = "a directory"
    elif not os.path.isdir(directory):
        detail = f"no such directory {directory}"
    else:
        try:
            if os.path.exists(path):
                with open(path, "a"):  # opens for writing, changes nothing
                    pass
            else:
                tempfile.TemporaryFile(dir=directory).close()
            return
        except OSError as exc:
            detail = f"not writable: {exc.strerror or exc}"
    raise ValueError(
        f"{errors.message(option, 'a file path in a writable directory', path)[:-1]} ({detail})."
    )


def check_importable(module: str, needed_by: str, install: str) -> None:
    """``ValueError`` with the install hint unless ``module`` can be imported."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # any import failure means "not usable here"
        raise ValueError(
            f"{needed_by} needs {module}, which cannot be imported ({type(exc).__name__}: {exc}); "
            f"install it with {install}"
        ) from None


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (checked by :func:`check_output` before the run)."""
    with open(path, "w", encoding="utf-8") as out:
        out.write(text)
