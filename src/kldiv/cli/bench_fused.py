"""``kldiv bench fused-linear [options]``: parse, check up front, run :mod:`kldiv.bench.fused_linear`, print.

Memory and time (one fresh process per case) as ratios kldiv / naive measured in the same run, or
with ``--accuracy`` the relative errors against float64. ``--device cuda`` without CUDA, an output
that cannot be written, or contradicting options are errors before anything runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from ..bench.fused_linear.accuracy import run_accuracy
from ..bench.fused_linear.cases import IMPLS, TOPK_IMPLS, liger_jsd
from ..bench.fused_linear.report import notes, tables
from ..bench.fused_linear.run import (
    ACCURACY_DEFAULT_IMPLS,
    ACCURACY_IMPLS,
    ACCURACY_SIZES,
    DEFAULT_IMPLS,
    DEFAULT_SIZES,
    DEVICES,
    DTYPES,
    GRID_DTYPES,
    TEACHERS,
    TOPK_DEFAULT_IMPLS,
    cuda_missing_reason,
    grid_sizes,
    run_benchmark,
)
from ..bench.machine import machine_line
from . import arguments
from .parser import Parser
from .tables import markdown, print_tables

DESCRIPTION = """\
Fused linear + KL / JS divergence (kldiv.torch.FusedLinearKLDivergence) against the naive PyTorch
path (logits materialised, log_softmax, F.kl_div): peak memory and median time of forward +
backward, one fresh process per case, as ratios kldiv / naive measured in the same run; cases that
would not fit in the available memory or would run past --timeout are skipped, with the reason.
With --accuracy: relative errors of the loss and the gradients against float64."""

EPILOG = """\
examples:
  kldiv bench fused-linear --sizes 1024x1024x32000 --dtypes float32
  kldiv bench fused-linear --grid --repeats 2 --json fused.json --markdown fused.md
  kldiv bench fused-linear --accuracy
  kldiv bench fused-linear --accuracy --top-k 8,64     # + the sparse teacher vs float64
  kldiv bench fused-linear --sizes 4096x1024x32000 --top-k 32,128,512   # sparse teacher vs dense
  kldiv bench fused-linear --device cuda --grid      # + Liger-Kernel's fused linear JSD"""


def build_parser() -> Parser:
    """The parser of ``kldiv bench fused-linear``."""
    parser = Parser("kldiv bench fused-linear", DESCRIPTION, EPILOG)
    parser.add_argument(
        "--sizes",
        type=arguments.argument(arguments.sizes("BTxHxV", "4096x1024x32000")),
        metavar="BTxHxV,...",
        help="sizes (default: 1024x1024x32000,4096x1024x32000; with --accuracy 256x256x4096,128x1024x32000)",
    )
    parser.add_argument(
        "--grid",
        action="store_true",
        help="issue #7's grid: BT 1024,4096,8192 x V 32000,128256, H 1024, float32 and bfloat16",
    )
    parser.add_argument(
        "--dtypes",
        type=arguments.argument(arguments.names(DTYPES)),
        metavar="DTYPE,...",
        help="float32, bfloat16 (default: float32; both with --grid or --accuracy)",
    )
    parser.add_argument(
        "--impls",
        type=arguments.argument(arguments.names(IMPLS)),
        metavar="NAME,...",
        help=f"{', '.join(IMPLS)} (default: naive-kl,kldiv-kl on CPU, all on CUDA)",
    )
    parser.add_argument(
        "--teacher",
        choices=TEACHERS,
        help="logits or hidden (+ weight) (default: logits on CPU, hidden on CUDA)",
    )
    parser.add_argument(
        "--top-k",
        type=arguments.argument(arguments.sizes("K", "128")),
        metavar="K,...",
        help="sparse-teacher cases: the teacher stored as its top K log-probabilities (e.g. 32,128,512); "
        "runs naive-kl, kldiv-kl, naive-topk, kldiv-topk unless --impls says otherwise (with --accuracy "
        "the JS pair too)",
    )
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, metavar="S", help="seconds per case process (default: 1800)"
    )
    parser.add_argument(
        "--accuracy", action="store_true", help="relative errors vs float64 instead of memory/time"
    )
    arguments.add_run_options(parser, repeats=3, warmup_least=0, unit="step")
    arguments.add_output_options(parser)
    return parser


def make_config(args: argparse.Namespace) -> dict[str, Any]:
    """The run's configuration from the parsed options (defaults resolved by mode and device)."""
    if args.grid and args.sizes:
        raise ValueError("--grid and --sizes are exclusive")
    if args.accuracy and args.device != "cpu":
        raise ValueError("--accuracy runs on the CPU (float64 reference); drop --device")
    sizes = (
        grid_sizes() if args.grid else args.sizes or list(ACCURACY_SIZES if args.accuracy else DEFAULT_SIZES)
    )
    dtypes = args.dtypes or list(GRID_DTYPES if args.grid or args.accuracy else ("float32",))
    top_k = [size[0] for size in args.top_k or []]
    if args.accuracy:
        default = ACCURACY_IMPLS if top_k else ACCURACY_DEFAULT_IMPLS
    else:
        default = TOPK_DEFAULT_IMPLS if top_k else DEFAULT_IMPLS[args.device]
    impls = args.impls or list(default)
    if not top_k and any(impl in TOPK_IMPLS for impl in impls):
        raise ValueError(f"--impls {','.join(TOPK_IMPLS)} need the teacher's k: add --top-k K,...")
    too_large = [k for k in top_k for size in sizes if k > size[2]]
    if too_large:
        raise ValueError(f"--top-k: expected k ≤ V of every size; received {too_large[0]}")
    teacher = args.teacher or ("hidden" if args.device == "cuda" else "logits")
    if "liger-jsd" in impls and teacher != "hidden":
        raise ValueError("liger-jsd takes the teacher as hidden states + weight: use --teacher hidden")
    return {
        "sizes": sizes,
        "dtypes": dtypes,
        "impls": impls,
        "teacher": teacher,
        "device": args.device,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "timeout": args.timeout,
        "seed": args.seed,
        "mode": "accuracy" if args.accuracy else "memory+time",
        "top_k": top_k,
    }


def bench_fused_command(argv: Sequence[str]) -> int:
    """``kldiv bench fused-linear [options]``: run, print the tables, write the JSON / Markdown asked for."""
    args = build_parser().parse_args(list(argv))
    config = make_config(args)
    arguments.check_importable("torch", "kldiv bench fused-linear", arguments.INSTALL_TORCH)
    arguments.check_outputs(args)
    if config["device"] == "cuda":
        reason = cuda_missing_reason()
        if reason:
            raise ValueError(f"--device cuda: {reason}; nothing was measured")
        if "liger-jsd" in config["impls"]:
            liger, why = liger_jsd()
            if liger is None:
                print(f"kldiv bench fused-linear: liger-jsd left out: {why}", file=sys.stderr)
                config["impls"] = [i for i in config["impls"] if i != "liger-jsd"]
    report = run_accuracy(config) if config["mode"] == "accuracy" else run_benchmark(config)
    report["command"] = " ".join(["kldiv", "bench", "fused-linear", *argv])
    lines = [machine_line(report["machine"]), *notes(report)]
    for line in lines:
        print(line, file=sys.stdout)
    print_tables(tables(report), sys.stdout, use_rich=not args.plain)
    if args.json:
        arguments.write_text(args.json, json.dumps(report, indent=1) + "\n")
    if args.markdown:
        arguments.write_text(args.markdown, markdown(tables(report), lines))
    return 0
