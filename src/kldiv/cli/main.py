"""Entry point of the ``kldiv`` command (``kldiv = "kldiv.cli.main:main"``).

Every error, argparse's included, is reported as one line ``kldiv: error: <message>`` on stderr
with exit status 2; a library warning (e.g. probabilities outside [0, 1]) as one line
``kldiv: warning: <message>``. Subcommands dispatch in :func:`main` on ``argv[0]`` before the default command
:func:`divergence_command`: ``kldiv bench`` (:mod:`kldiv.cli.bench_kl`) and ``kldiv bench
fused-linear`` (:mod:`kldiv.cli.bench_fused`), each imported only then; they parse, check and print,
and the measuring is :mod:`kldiv.bench`'s.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence

from . import compute, report
from .parser import build_parser

EXIT_ERROR = 2
ERRORS = (ValueError, TypeError, OSError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kldiv`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:2] == ["bench", "fused-linear"]:
            from .bench_fused import bench_fused_command

            return bench_fused_command(args[2:])
        if args[:1] == ["bench"]:
            from .bench_kl import bench_command

            return bench_command(args[1:])
    except ERRORS as exc:
        return fail(exc)
    return divergence_command(args)


def divergence_command(argv: list[str]) -> int:
    """``kldiv Y_TRUE Y_PRED [options]``: compute, then print a table or JSON."""
    try:
        args = build_parser().parse_args(argv)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = compute.run(args)
    except ERRORS as exc:
        return fail(exc)
    for warning in {str(w.message): w for w in caught}:  # each message once, as one line
        print(f"kldiv: warning: {' '.join(warning.split())}", file=sys.stderr)
    try:
        if args.json:
            print(report.as_json(result))
        else:
            report.print_text(result, args.precision, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `kldiv ... | head -1`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


def fail(exc: BaseException) -> int:
    """Report ``exc`` as one line on stderr; returns the error exit status."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"kldiv: error: {message}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
