"""Peak memory and time of kldiv's fused linear + KL/JS divergence against the naive PyTorch path
(materialise the logits, ``log_softmax``, ``F.kl_div``), and its gradient accuracy against float64.

``kldiv bench fused-linear`` (:mod:`kldiv.bench.fused_linear`) with its results kept: one fresh
process per case, peak RSS above a baseline (CPU) or ``torch.cuda.max_memory_allocated`` (CUDA),
median step time, ratios kldiv / naive; cases that would not fit in ``MemAvailable`` or would run
past ``--timeout`` are skipped with the reason recorded.

    python benchmarks/fused_linear_memory.py --sizes 1024x1024x32000 --dtypes float32
    python benchmarks/fused_linear_memory.py --grid --repeats 2          # issue #7's grid (hours)
    python benchmarks/fused_linear_memory.py --accuracy                  # errors vs float64
    python benchmarks/fused_linear_memory.py --device cuda --grid        # + Liger-Kernel, on a GPU

Options are those of ``kldiv bench fused-linear --help``. Unless the command line names them, the
JSON report and the Markdown tables go to ``benchmarks/results/fused_linear[_accuracy].{json,md}``.
"""

import sys

from harness import run

OUTPUTS = {"--json": "json", "--markdown": "md"}

if __name__ == "__main__":
    argv = sys.argv[1:]
    stem = "fused_linear_accuracy" if "--accuracy" in argv else "fused_linear"
    sys.exit(run(["bench", "fused-linear"], stem, argv, OUTPUTS))
