"""Where the fused Numba kernel starts to beat kldiv's core: the measurement behind the element
counts from which ``backend="auto"`` picks the kernel (README, "Fast: fused kernels").

For inputs of ``rows × vocab`` fp32 softmax rows with 2⁸ … 2²⁰ elements (vocab 100 and 1000), times
``KLDivergence(backend="core")`` and ``backend="numba"`` on NumPy arrays (forward) and on CPU torch
tensors (forward, and forward + ``backward()``), interleaved, median of ``--repeats`` calls after
two warm-ups (:func:`kldiv.bench.timing.median_ms`); prints the ratio core / numba (> 1: the kernel
is faster) and, per case, the smallest size from which the kernel is faster at every larger size
measured.

    python benchmarks/auto_threshold.py --repeats 15
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from kldiv.bench.kl.inputs import softmax_rows
from kldiv.bench.timing import median_ms

CASES = ("numpy", "torch", "torch_backward")
BACKENDS = ("core", "numba")


def _calls(rows: int, vocab: int, seed: int) -> dict[str, Callable[[], Any]]:
    """``"<case>_<backend>" → call`` for one size."""
    import torch

    import kldiv

    t, p = softmax_rows(rows, vocab, seed), softmax_rows(rows, vocab, seed + 1)
    tt, tp = torch.from_numpy(t), torch.from_numpy(p)
    calls = {}
    for backend in BACKENDS:
        loss = kldiv.KLDivergence(backend=backend)

        def backward(loss: Any = loss) -> None:
            loss(tt, torch.from_numpy(p).requires_grad_()).backward()

        calls[f"numpy_{backend}"] = lambda loss=loss: loss(t, p)
        calls[f"torch_{backend}"] = lambda loss=loss: loss(tt, tp)
        calls[f"torch_backward_{backend}"] = backward
    return calls


def measure(repeats: int) -> list[dict[str, Any]]:
    """One record per size: rows, vocab, elements and the median ms of every case and backend."""
    records = []
    for vocab in (100, 1000):
        for log2 in range(max(8, vocab.bit_length()), 21):
            rows = (1 << log2) // vocab
            record: dict[str, Any] = {"rows": rows, "vocab": vocab, "elements": rows * vocab}
            record |= median_ms(_calls(rows, vocab, seed=log2), repeats, warmup=2)
            records.append(record)
    return records


def crossover(results: list[dict[str, Any]], case: str, vocab: int) -> int | None:
    """Smallest element count from which numba is faster than core at every larger size measured."""
    best = None
    for r in reversed([r for r in results if r["vocab"] == vocab]):
        if r[f"{case}_numba"] >= r[f"{case}_core"]:
            break
        best = r["elements"]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    results = measure(args.repeats)
    print(f"{'rows×vocab':>12} {'elements':>9} " + " ".join(f"{c + ' core/numba':>26}" for c in CASES))
    for r in results:
        ratios = " ".join(
            f"{r[c + '_core']:9.3f}/{r[c + '_numba']:7.3f} ms={r[c + '_core'] / r[c + '_numba']:5.2f}"
            for c in CASES
        )
        print(f"{r['rows']:>6}×{r['vocab']:<5} {r['elements']:>9} {ratios}")
    for vocab in (100, 1000):
        found = {case: crossover(results, case, vocab) for case in CASES}
        print(f"vocab {vocab}: numba faster from (elements): {found}")


if __name__ == "__main__":
    main()
