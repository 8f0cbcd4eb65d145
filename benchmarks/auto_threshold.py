"""Where the fused Numba kernel starts to beat kldiv's core: the measurement behind
``kldiv.kernels.dispatch.AUTO_THRESHOLD``.

For inputs of ``rows × vocab`` fp32 softmax rows with 2⁸ … 2²⁰ elements (vocab 100 and 1000), times
``KLDivergence(backend="core")`` and ``backend="numba"`` on NumPy arrays (forward) and on CPU torch
tensors (forward, and forward + ``backward()``), interleaved, median of ``--repeats`` calls after
warm-ups; prints the ratio core / numba (> 1: the kernel is faster) and, per case, the smallest
size from which the kernel is faster at every larger size measured.

    python benchmarks/auto_threshold.py --repeats 15
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _softmax_rows(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    z = 2.0 * rng.standard_normal(shape)
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _median_ms(call, repeats: int) -> float:
    call()
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _time_backend(loss, t: np.ndarray, p: np.ndarray, repeats: int) -> dict[str, float]:
    import torch

    tt = torch.from_numpy(t)

    def backward() -> None:
        loss(tt, torch.from_numpy(p).requires_grad_()).backward()

    return {
        "numpy": _median_ms(lambda: loss(t, p), repeats),
        "torch": _median_ms(lambda: loss(tt, torch.from_numpy(p)), repeats),
        "torch_backward": _median_ms(backward, repeats),
    }


def measure(repeats: int) -> list[dict]:
    import kldiv

    losses = {name: kldiv.KLDivergence(backend=name) for name in ("core", "numba")}
    rng = np.random.default_rng(0)
    rows_out = []
    for vocab in (100, 1000):
        for log2 in range(max(8, vocab.bit_length()), 21):
            rows = (1 << log2) // vocab
            t, p = _softmax_rows(rng, (rows, vocab)), _softmax_rows(rng, (rows, vocab))
            result = {"rows": rows, "vocab": vocab, "elements": rows * vocab}
            for backend, loss in losses.items():
                for case, ms in _time_backend(loss, t, p, repeats).items():
                    result[f"{case}_{backend}"] = ms
            rows_out.append(result)
    return rows_out


def crossover(results: list[dict], case: str, vocab: int) -> int | None:
    """Smallest element count from which numba is faster than core at every larger size measured."""
    sizes = [r for r in results if r["vocab"] == vocab]
    best = None
    for r in reversed(sizes):
        if r[f"{case}_numba"] < r[f"{case}_core"]:
            best = r["elements"]
        else:
            break
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    from kldiv.kernels.dispatch import AUTO_THRESHOLD

    results = measure(args.repeats)
    cases = ("numpy", "torch", "torch_backward")
    header = f"{'rows×vocab':>12} {'elements':>9} " + " ".join(f"{c + ' core/numba':>26}" for c in cases)
    print(header)
    for r in results:
        ratios = " ".join(
            f"{r[c + '_core']:9.3f}/{r[c + '_numba']:7.3f} ms={r[c + '_core'] / r[c + '_numba']:5.2f}"
            for c in cases
        )
        print(f"{r['rows']:>6}×{r['vocab']:<5} {r['elements']:>9} {ratios}")
    for vocab in (100, 1000):
        found = {case: crossover(results, case, vocab) for case in cases}
        print(f"vocab {vocab}: numba faster from (elements): {found}")
    print(f"AUTO_THRESHOLD = {AUTO_THRESHOLD}")


if __name__ == "__main__":
    main()
