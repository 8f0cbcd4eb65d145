"""kldiv's fused Numba kernel on distillation's formats (logits, log-probabilities, reverse KL)
against JAX ``jit``, in one process.

``kldiv bench`` times Keras' own case (probabilities, forward KL). This script times the formats that
distillation uses, where the student and teacher come as logits or log-probabilities: for each case,
``kldiv.KLDivergence(y_true_format=fmt, y_pred_format=fmt, direction=..., backend="numba")`` on NumPy
arrays (the value) and on CPU torch tensors with ``backward()`` (value + gradient), and the same
divergence as a ``jax.jit`` program (``log_softmax`` of both inputs, then the KL;
``jax.value_and_grad`` for the gradient), interleaved, median of ``--repeats`` calls after a warm-up
(:func:`kldiv.bench.timing.median_ms`), and prints JAX / kldiv.

    python benchmarks/logits_kernel.py --rows 4096 --vocab 32000 --repeats 7 [--blocks]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np

from kldiv.bench.timing import median_ms

CASES = (
    ("logits", "forward"),
    ("log_probs", "forward"),
    ("logits", "reverse"),
)


def _jax_programs(fmt: str, direction: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    import jax
    import jax.numpy as jnp

    def divergence(t: Any, p: Any) -> Any:
        a = jax.nn.log_softmax(t, -1) if fmt == "logits" else t
        b = jax.nn.log_softmax(p, -1) if fmt == "logits" else p
        if direction == "reverse":
            a, b = b, a
        return jnp.mean(jnp.sum(jnp.exp(a) * (a - b), -1))

    return jax.jit(divergence), jax.jit(jax.value_and_grad(divergence, argnums=1))


def _kldiv_calls(t: np.ndarray, p: np.ndarray, fmt: str, direction: str) -> dict[str, Callable[[], Any]]:
    import torch

    import kldiv

    loss = kldiv.KLDivergence(y_true_format=fmt, y_pred_format=fmt, direction=direction, backend="numba")
    tt = torch.from_numpy(t)

    def value_and_grad() -> Any:
        value = loss(tt, torch.from_numpy(p).requires_grad_())
        value.backward()
        return value

    return {"kldiv": lambda: loss(t, p), "kldiv_grad": value_and_grad}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--blocks",
        action="store_true",
        help="time each implementation's calls back to back instead of interleaved (JAX's and Numba's "
        "thread pools then do not take turns spinning on the two cores)",
    )
    args = parser.parse_args()

    import jax

    rng = np.random.default_rng(0)
    shape = (args.rows, args.vocab)
    logits = [(2.0 * rng.standard_normal(shape)).astype(np.float32) for _ in range(2)]
    log_probs = [x - np.log(np.exp(x).sum(-1, keepdims=True)) for x in logits]
    how = "back-to-back" if args.blocks else "interleaved"
    print(f"[{args.rows}, {args.vocab}] fp32, median of {args.repeats} {how} calls (ms)")
    print(f"{'case':<30} {'kldiv':>9} {'JAX jit':>9} {'JAX/kldiv':>10}")
    for fmt, direction in CASES:
        t, p = logits if fmt == "logits" else log_probs
        tj, pj = jax.device_put(t), jax.device_put(p)
        value, value_and_grad = _jax_programs(fmt, direction)
        calls = _kldiv_calls(t, p, fmt, direction)
        calls["jax"] = lambda value=value, tj=tj, pj=pj: jax.block_until_ready(value(tj, pj))
        calls["jax_grad"] = lambda f=value_and_grad, tj=tj, pj=pj: jax.block_until_ready(f(tj, pj))
        ms = median_ms(calls, args.repeats, interleaved=not args.blocks)
        for mode, suffix in (("value", ""), ("value+grad", "_grad")):
            k, j = ms["kldiv" + suffix], ms["jax" + suffix]
            print(f"{fmt + ' ' + direction + ' ' + mode:<30} {k:>9.1f} {j:>9.1f} {j / k:>10.2f}")


if __name__ == "__main__":
    main()
