"""KL(t‖p) of fp32 softmax rows: kldiv (fused and core) against NumPy, SciPy, PyTorch, JAX, optax,
tf_keras and Keras 3, and against the machine's floors; forward and forward+backward.

    python benchmarks/bench_kl.py                      # every size, every installed peer
    python benchmarks/bench_kl.py --sizes 1024x32000 --repeats 3 --peers jax,torch
    python benchmarks/bench_kl.py --memory             # also peak memory, one process per case

Options are those of ``kldiv bench --help``; results go to ``benchmarks/results/kl.{json,png,md}``.
"""

from harness import main

if __name__ == "__main__":
    main("kl")
