"""GPU run of the fused linear + divergence benchmark: ``kldiv bench fused-linear --device cuda``.

Naive PyTorch (logits materialised) vs kldiv's ``FusedLinearKLDivergence`` / ``FusedLinearJSDivergence``
vs Liger-Kernel's ``LigerFusedLinearJSD`` (when importable), JS with β = 0.5, the teacher given as
hidden states + weight to all; peak ``torch.cuda.max_memory_allocated`` above the inputs and median
CUDA-event time of forward + backward, one fresh process per case. Without CUDA it says so on one
line and exits with status 2, having measured nothing.

    python benchmarks/gpu_fused_linear.py --grid                 # issue #7's grid
    python benchmarks/gpu_fused_linear.py --sizes 4096x1024x32000 --dtypes bfloat16 --repeats 10

Outputs go to ``$OUT`` (or ``benchmarks/results``) as ``gpu_fused_linear.{json,md}`` unless named.
"""

import os
import sys
from pathlib import Path

from harness import RESULTS, run

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--device" not in argv:
        argv = ["--device", "cuda", *argv]
    directory = Path(os.environ["OUT"]) if os.environ.get("OUT") else RESULTS
    outputs = {"--json": "json", "--markdown": "md"}
    sys.exit(run(["bench", "fused-linear"], "gpu_fused_linear", argv, outputs, directory))
