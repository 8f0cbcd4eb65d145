"""KL(t‖p) of fp32 softmax rows: kldiv (fused and core) against NumPy, SciPy, PyTorch, JAX, optax,
tf_keras and Keras 3, and against the machine's memory floors; forward and forward+backward.

    python benchmarks/bench_kl.py                      # every size, every installed peer
    python benchmarks/bench_kl.py --sizes 1024x32000 --repeats 3 --peers jax,torch
    python benchmarks/bench_kl.py --memory             # also peak memory, one process per case

``kldiv bench`` with its results kept in ``benchmarks/results/kl.{json,png,md}``; options are those
of ``kldiv bench --help``.
"""

import sys

from harness import run

if __name__ == "__main__":
    sys.exit(run(["bench"], "kl", sys.argv[1:], {"--json": "json", "--plot": "png", "--markdown": "md"}))
