"""Entry point of the ``kldiv`` command (``kldiv = "kldiv.cli.main:main"``).

Every error, argparse's included, is reported as one line ``kldiv: error: <message>`` on stderr
with exit status 2. Subcommands dispatch in :func:`main` on ``argv[0]`` before the default command
:func:`divergence_command`: ``kldiv bench`` (:mod:`kldiv.cli.bench`, imported only then) and
``kldiv bench fused-linear`` (:mod:`kldiv.cli.bench_fused`: fused linear + KL/JSD against the naive
PyTorch path, memory, time and accuracy).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from . import compute, report
from .parser import build_parser

EXIT_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kldiv`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:2] == ["bench", "fused-linear"]:
        from .bench_fused import bench_fused_command

        try:
            return bench_fused_command(args[2:])
        except (ValueError, TypeError, OSError) as exc:
            return fail(exc)
    if args[:1] == ["bench"]:
        from .bench import bench_command

        try:
            return bench_command(args[1:])
        except (ValueError, TypeError, OSError) as exc:
            return fail(exc)
    return divergence_command(args)


def divergence_command(argv: list[str]) -> int:
    """``kldiv Y_TRUE Y_PRED [options]``: compute, then print a table or JSON."""
    try:
        args = build_parser().parse_args(argv)
        result = compute.run(args)
    except (ValueError, TypeError, OSError) as exc:
        return fail(exc)
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
