"""The general Numba kernel (logits, log-probabilities, reverse KL) against JAX ``jit``, in one process.

``kldiv bench`` times Keras' own case (probabilities, forward KL). This script times the formats that
distillation uses, where the student and teacher come as logits or log-probabilities: for each case,
kldiv's kernel (``kldiv.kernels.numba_cpu.fused_rows``, value only and value + gradient) and the same
divergence as a ``jax.jit`` program (``log_softmax`` of both inputs, then the KL; ``jax.value_and_grad``
for the gradient), interleaved, median of ``--repeats`` calls after a warm-up, and prints JAX / kldiv.

    python benchmarks/logits_kernel.py --rows 4096 --vocab 32000 --repeats 7 [--blocks]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

CASES = (
    ("logits", "forward"),
    ("log_probs", "forward"),
    ("logits", "reverse"),
)


def _jax_programs(fmt: str, direction: str):
    import jax
    import jax.numpy as jnp

    def divergence(t, p):
        a = jax.nn.log_softmax(t, -1) if fmt == "logits" else t
        b = jax.nn.log_softmax(p, -1) if fmt == "logits" else p
        if direction == "reverse":
            a, b = b, a
        return jnp.mean(jnp.sum(jnp.exp(a) * (a - b), -1))

    return jax.jit(divergence), jax.jit(jax.value_and_grad(divergence, argnums=1))


def _kldiv_call(t: np.ndarray, p: np.ndarray, fmt: str, direction: str, want_grad: bool):
    from kldiv.kernels.numba_cpu import fused_rows

    coef = np.full(t.shape[0], 1.0 / t.shape[0])
    options = dict(
        true_format=fmt, pred_format=fmt, direction=direction, beta=None, epsilon=1e-7, temperature=1.0
    )
    return lambda: fused_rows(t, p, coef, None, want_grad=want_grad, **options)


def _jax_call(program, t, p):
    import jax

    return lambda: jax.block_until_ready(program(t, p))


def _median_ms(calls: dict, repeats: int, blocks: bool) -> dict:
    """Median ms per call: interleaved round-robin, or (``blocks``) each call's repeats back to back."""
    for call in calls.values():
        call()
    times = {name: [] for name in calls}
    if blocks:
        order = [name for name in calls for _ in range(repeats)]
    else:
        order = [name for _ in range(repeats) for name in calls]
    for name in order:
        start = time.perf_counter()
        calls[name]()
        times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


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
        calls = {
            "kldiv": _kldiv_call(t, p, fmt, direction, False),
            "jax": _jax_call(value, tj, pj),
            "kldiv_grad": _kldiv_call(t, p, fmt, direction, True),
            "jax_grad": _jax_call(value_and_grad, tj, pj),
        }
        ms = _median_ms(calls, args.repeats, args.blocks)
        for mode, suffix in (("value", ""), ("value+grad", "_grad")):
            k, j = ms["kldiv" + suffix], ms["jax" + suffix]
            print(f"{fmt + ' ' + direction + ' ' + mode:<30} {k:>9.1f} {j:>9.1f} {j / k:>10.2f}")


if __name__ == "__main__":
    main()
