"""Time the same kldiv calls in two checkouts, alternating them, and print after / before ratios.

    python benchmarks/ab_checkouts.py --before /path/to/old/checkout/src --after src --rounds 4

Each round runs one fresh interpreter per checkout (``PYTHONPATH`` set to its ``src``), before and
after in turn (the order flips every round), so that a drift of the machine's speed during the run
falls on both sides alike. Within an interpreter every call is warmed up (Numba compiles or loads its
cache), then timed ``--repeats`` times; the median is that round's figure. The ratio of a round is
after / before of that round's medians; the summary is the median ratio over the rounds and its
range. Nothing is asserted: this script measures.

The calls, at ``[rows, vocab]`` float32 (default ``[4096, 32000]``), are the public API's:
``kldiv.KLDivergence()`` on NumPy probabilities (Keras mode, the default), the same with
``epsilon=0`` (exact mode), on NumPy logits (``from_logits=True, y_true_format="logits"``), and
``kldiv.torch.KLDivergence()`` forward and forward + backward on torch probabilities.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, statistics, sys, time
import numpy as np
import torch
import kldiv, kldiv.torch

rows, vocab, repeats = (int(x) for x in sys.argv[1:4])
rng = np.random.default_rng(0)
logits_t = rng.standard_normal((rows, vocab), dtype=np.float32) * 3
logits_p = rng.standard_normal((rows, vocab), dtype=np.float32) * 3
def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)
t, p = softmax(logits_t), softmax(logits_p)
tt, tp = torch.from_numpy(t), torch.from_numpy(p)
keras = kldiv.KLDivergence()
exact = kldiv.KLDivergence(epsilon=0)
logits = kldiv.KLDivergence(from_logits=True, y_true_format="logits")
module = kldiv.torch.KLDivergence()

def backward():
    x = tp.clone().requires_grad_(True)
    module(tt, x).backward()

calls = {
    "numpy probs, Keras mode": lambda: keras(t, p),
    "numpy probs, exact mode": lambda: exact(t, p),
    "numpy logits": lambda: logits(logits_t, logits_p),
    "torch probs forward": lambda: module(tt, tp),
    "torch probs forward+backward": backward,
}
out = {}
for name, call in calls.items():
    call(); call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    out[name] = statistics.median(times) * 1e3
print(json.dumps(out))
"""


def run(src: str, rows: int, vocab: int, repeats: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(src)}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(rows), str(vocab), str(repeats)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the src folder of the baseline checkout")
    parser.add_argument("--after", required=True, help="the src folder of the checkout measured")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=32000)
    args = parser.parse_args()
    medians: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    ratios: dict[str, list[float]] = {}
    for round_ in range(args.rounds):
        order = ("before", "after") if round_ % 2 == 0 else ("after", "before")
        figures = {side: run(getattr(args, side), args.rows, args.vocab, args.repeats) for side in order}
        for name in figures["before"]:
            for side in ("before", "after"):
                medians[side].setdefault(name, []).append(figures[side][name])
            ratios.setdefault(name, []).append(figures["after"][name] / figures["before"][name])
        print(f"round {round_ + 1} ({order[0]} first): " + json.dumps(figures), flush=True)
    size = f"[{args.rows}, {args.vocab}] float32"
    print(f"\n{size}, median of {args.repeats} calls per round, {args.rounds} rounds")
    print("| call | before ms (rounds) | after ms (rounds) | after / before: median (min–max) |")
    print("|---|---|---|---|")
    for name, values in ratios.items():
        before = " / ".join(f"{x:.1f}" for x in medians["before"][name])
        after = " / ".join(f"{x:.1f}" for x in medians["after"][name])
        print(
            f"| {name} | {before} | {after} | {statistics.median(values):.3f} "
            f"({min(values):.3f}–{max(values):.3f}) |"
        )


if __name__ == "__main__":
    main()
