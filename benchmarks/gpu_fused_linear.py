"""GPU run of the fused linear + divergence benchmark: ``kldiv bench fused-linear --device cuda``.

Naive PyTorch (logits materialised) vs kldiv's ``FusedLinearKLDivergence`` / ``FusedLinearJSDivergence``
vs Liger-Kernel's ``LigerFusedLinearJSD`` (when importable), JS with β = 0.5, the teacher given as
hidden states + weight to all; peak ``torch.cuda.max_memory_allocated`` above the inputs and median
CUDA-event time of forward + backward, one fresh process per case. Without CUDA it says so and
exits 0 having measured nothing.

    python benchmarks/gpu_fused_linear.py --grid                 # issue #7's grid
    python benchmarks/gpu_fused_linear.py --sizes 4096x1024x32000 --dtypes bfloat16 --repeats 10

Outputs go to ``$OUT`` (or ``benchmarks/results``) as ``gpu_fused_linear.{json,md}`` unless named.
"""

import os
import sys
from pathlib import Path

from kldiv.cli.bench_fused import main

if __name__ == "__main__":
    out = Path(os.environ.get("OUT") or Path(__file__).resolve().parent / "results")
    args = sys.argv[1:]
    if "--device" not in args:
        args = ["--device", "cuda", *args]
    if not {"-h", "--help"} & set(args):
        out.mkdir(parents=True, exist_ok=True)
        for option, suffix in (("--json", "json"), ("--markdown", "md")):
            if option not in args:
                args += [option, str(out / f"gpu_fused_linear.{suffix}")]
    sys.exit(main(args))
