"""``kldiv bench [options]``: parse, check the outputs up front, run :mod:`kldiv.bench.kl`, print.

It prints the machine (CPU model, ISA, Numba's target), then one table per size and mode: medians,
spreads and the ratios to kldiv fused and to the memory floor, all measured in this run.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence

from ..bench.kl.cases import MODES, PEERS
from ..bench.kl.report import tables, write_plot
from ..bench.kl.run import DEFAULT_SIZES, Config, run_benchmark
from ..bench.machine import CPU_TARGETS, machine_line, select_cpu_target
from . import arguments
from .parser import Parser
from .tables import markdown, print_tables

DESCRIPTION = """\
Time kldiv (fused Numba kernel and core) against NumPy, SciPy, PyTorch, JAX, optax, tf_keras and
Keras 3, and against the machine's memory floors (reading both inputs; reading both and writing a
gradient): KL(t||p) of fp32 softmax rows, mean over rows, forward and forward+backward. Medians of
runs interleaved round-robin after a warm-up; ratios to kldiv fused and to the floor, measured in
the same run; the CPU, its ISA and Numba's code-generation target (--cpu-target) are printed with
them. kldiv runs in Keras mode (clip at 1e-7) and in exact mode (epsilon=0). Peers that are not
installed are skipped and named."""

EPILOG = """\
examples:
  kldiv bench
  kldiv bench --sizes 32x1000,1024x32000 --repeats 3 --peers jax,torch
  kldiv bench --json results.json --plot results.png --memory
  kldiv bench --sizes 4096x32000 --cpu-target x86-64-v3

--plot needs matplotlib (pip install "kldiv[bench]"); --plot, --json and --markdown are checked
before anything is measured."""


def build_parser() -> Parser:
    """The parser of ``kldiv bench``."""
    parser = Parser("kldiv bench", DESCRIPTION, EPILOG)
    default_sizes = ",".join(f"{r}x{n}" for r, n in DEFAULT_SIZES)
    parser.add_argument(
        "--sizes",
        type=arguments.argument(arguments.sizes("ROWSxVOCAB", "1024x32000")),
        default=list(DEFAULT_SIZES),
        metavar="RxN,...",
        help=f"input sizes [rows, vocab] (default: {default_sizes})",
    )
    parser.add_argument(
        "--modes",
        type=arguments.argument(arguments.names(MODES)),
        default=list(MODES),
        metavar="MODE,...",
        help="forward, backward (forward+backward) (default: both)",
    )
    parser.add_argument(
        "--peers",
        type=arguments.argument(arguments.names(PEERS, allow_none=True)),
        default=list(PEERS),
        metavar="NAME,...",
        help=f"peers to compare with: {', '.join(PEERS)}, or 'none' (default: all installed)",
    )
    parser.add_argument(
        "--memory", action="store_true", help="also measure peak memory, one fresh process per case (slow)"
    )
    parser.add_argument(
        "--cpu-target",
        choices=list(CPU_TARGETS),
        default="host",
        help="the CPU Numba generates the kernels for: host (default), x86-64-v3 (AVX2 code), "
        "x86-64-v4 (AVX-512 code on 256-bit vectors); the target that ran is printed",
    )
    arguments.add_run_options(parser, repeats=5, warmup_least=1, unit="run")
    arguments.add_output_options(parser, plot=True)
    return parser


def bench_command(argv: Sequence[str]) -> int:
    """``kldiv bench [options]``: run, print the tables, write the JSON / plot / Markdown asked for."""
    args = build_parser().parse_args(list(argv))
    arguments.check_outputs(args)
    select_cpu_target(args.cpu_target)  # before anything imports Numba
    config = Config(**{field.name: getattr(args, field.name) for field in dataclasses.fields(Config)})
    report = run_benchmark(config, stream=sys.stderr, use_rich=not args.plain)
    report["command"] = " ".join(["kldiv", "bench", *argv])
    notes = [machine_line(report["machine"])]
    print(notes[0], file=sys.stdout)
    print_tables(tables(report), sys.stdout, use_rich=not args.plain)
    if args.json:
        arguments.write_text(args.json, json.dumps(report, indent=1) + "\n")
    if args.plot:
        write_plot(report, args.plot)
    if args.markdown:
        arguments.write_text(args.markdown, markdown(tables(report), notes))
    return 0
