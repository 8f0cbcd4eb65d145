"""Shared harness of the benchmark scripts: one op's run of :mod:`kldiv.cli.bench`, results kept here.

The measuring code lives in the package (:mod:`kldiv.cli.bench`, also behind ``kldiv bench``); a
script names its op and passes its command line through. Unless the command line says otherwise,
the JSON report, the plot and the Markdown tables go to ``benchmarks/results/<op>.{json,png,md}``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from kldiv.cli.main import main as kldiv_main

RESULTS = Path(__file__).resolve().parent / "results"
OUTPUTS = {"--json": "json", "--plot": "png", "--markdown": "md"}


def run(op: str, argv: Sequence[str]) -> int:
    """``kldiv bench`` with ``argv``, writing ``results/<op>.*`` for the outputs ``argv`` leaves out."""
    args = list(argv)
    if "-h" not in args and "--help" not in args:
        RESULTS.mkdir(exist_ok=True)
        for option, suffix in OUTPUTS.items():
            if option not in args:
                args += [option, str(RESULTS / f"{op}.{suffix}")]
    return kldiv_main(["bench", *args])


def main(op: str) -> None:
    sys.exit(run(op, sys.argv[1:]))
