"""Peak memory and time of kldiv's fused linear + KL/JS divergence against the naive PyTorch path
(materialise the logits, ``log_softmax``, ``F.kl_div``), and its gradient accuracy against float64.

The measuring code lives in the package (:mod:`kldiv.cli.bench_fused`, also behind
``kldiv bench fused-linear``): one fresh process per case, peak RSS above a baseline (CPU) or
``torch.cuda.max_memory_allocated`` (CUDA), median step time, ratios kldiv / naive; cases that would
not fit in ``MemAvailable`` or would run past ``--timeout`` are skipped with the reason recorded.

    python benchmarks/fused_linear_memory.py --sizes 1024x1024x32000 --dtypes float32
    python benchmarks/fused_linear_memory.py --grid --repeats 2          # issue #7's grid (hours)
    python benchmarks/fused_linear_memory.py --accuracy                  # errors vs float64
    python benchmarks/fused_linear_memory.py --device cuda --grid        # + Liger-Kernel, on a GPU

Options are those of ``kldiv bench fused-linear --help``. Unless the command line names them, the
JSON report and the Markdown tables go to ``benchmarks/results/fused_linear[_accuracy].{json,md}``.
"""

import sys
from pathlib import Path

from kldiv.cli.bench_fused import main

RESULTS = Path(__file__).resolve().parent / "results"


def run(argv: list[str], stem: str = "fused_linear") -> int:
    args = list(argv)
    if not {"-h", "--help", "--case"} & set(args):
        if "--accuracy" in args:
            stem += "_accuracy"
        RESULTS.mkdir(exist_ok=True)
        for option, suffix in (("--json", "json"), ("--markdown", "md")):
            if option not in args:
                args += [option, str(RESULTS / f"{stem}.{suffix}")]
    return main(args)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
