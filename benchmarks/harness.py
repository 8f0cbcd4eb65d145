"""Shared by the benchmark scripts: run a ``kldiv`` benchmark command with its outputs kept here.

The measuring code is :mod:`kldiv.bench` (behind ``kldiv bench`` and ``kldiv bench fused-linear``);
a script names its command, the stem of its result files and the outputs it keeps, and passes its
command line through. Unless the command line names them, the outputs go to
``benchmarks/results/<stem>.<suffix>`` (or another directory the script gives).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from kldiv.cli.main import main as kldiv_main

RESULTS = Path(__file__).resolve().parent / "results"


def run(
    command: Sequence[str],
    stem: str,
    argv: Sequence[str],
    outputs: Mapping[str, str],
    directory: Path = RESULTS,
) -> int:
    """``kldiv <command> <argv>``, adding ``<option> <directory>/<stem>.<suffix>`` for each output
    option ``argv`` leaves out (none with ``--help``); returns the exit status."""
    args = list(argv)
    if not {"-h", "--help"} & set(args):
        directory.mkdir(parents=True, exist_ok=True)
        for option, suffix in outputs.items():
            if option not in args:
                args += [option, str(directory / f"{stem}.{suffix}")]
    return kldiv_main([*command, *args])
