"""Whether a CPU case of ``kldiv bench fused-linear`` can run: its memory and time, estimated.

Memory: inputs, gradients, and for the naive path ``NAIVE_LOGIT_COPIES[impl] × BT × V × 4`` bytes of
logits-sized temporaries, against ``MemAvailable``. Time: ``3 × 2·BT·H·V`` matmul flops per step (4×
with a hidden teacher) at the rate of a probe of each dtype. On CPUs without AMX / AVX512-BF16,
PyTorch's bfloat16 matmuls are much slower than its float32 ones, and unevenly so: on an AVX2 AMD
EPYC (torch 2.13), ``[256, 2048] @ [2048, 1024]`` (the layout of ``grad_hidden = g @ W``) ran at
0.6 GFLOP/s in bfloat16 against 34 GFLOP/s in float32, and a naive bfloat16 step at BT=256, H=1024,
V=32000 took 107 s. The probe therefore times a whole forward + backward of a linear layer. The time
estimate is optimistic (about 3x short for that bfloat16 case): it skips what cannot finish, the
case timeout catches the rest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..machine import available_memory

# Peak temporaries of one naive forward + backward step, in float32 [BT, V] arrays, gradients of the
# parameters excluded: (peak RSS above the baseline − gradients) / (BT·V·4 bytes). Measured on CPU,
# torch 2.13, `--sizes 512x1024x32000 --impls naive-kl,naive-jsd`, teacher as logits: naive-kl 4.0
# (377 MiB peak − 127 MiB gradients over 62.5 MiB), naive-jsd 8.0 (627 MiB); at 1024x1024x32000
# naive-kl 5.0 (758 MiB − 129 MiB over 125 MiB). Rounded up by one (plus one more for the teacher's
# logits when it is given as hidden states + weight). bfloat16 adds float32 copies of the weight in
# the matmuls (at 256x1024x32000 the peak, 250 MiB, is the same for naive and kldiv): covered by
# counting bfloat16 gradients three times.
NAIVE_LOGIT_COPIES = {"naive-kl": 6.0, "naive-jsd": 10.0, "naive-topk": 6.0}
# kldiv's chunks: at most a few memory budgets (96 MiB each by default).
FUSED_TEMPORARY_BYTES = 512 * 2**20
# Imports (torch, Numba, kldiv) and allocator slack of one case process.
PROCESS_BYTES = 1 * 2**30
# Skip a case whose estimate exceeds this share of the available memory.
MEMORY_SAFETY = 0.9
# Matmul throughput probe: forward + backward of [PROBE_ROWS, H] @ [H, PROBE_VOCAB] in each dtype.
PROBE_ROWS = 256
PROBE_VOCAB = 4096


def constants() -> dict[str, object]:
    """The estimate's constants, as the report keeps them."""
    return {
        "naive_logit_copies": NAIVE_LOGIT_COPIES,
        "fused_temporary_bytes": FUSED_TEMPORARY_BYTES,
        "process_bytes": PROCESS_BYTES,
        "memory_safety": MEMORY_SAFETY,
    }


def _itemsize(dtype: str) -> int:
    return {"float32": 4, "bfloat16": 2, "float64": 8}[dtype]


def estimate_bytes(impl: str, bt: int, hidden: int, vocab: int, dtype: str, teacher: str) -> int:
    """A generous estimate of the peak resident memory of one CPU case process."""
    size = _itemsize(dtype)
    params = (bt * hidden + vocab * hidden) * size
    # A top-k teacher is formed from these dense inputs first (and dropped before the steps).
    teacher_bytes = bt * vocab * size if teacher == "logits" else params
    grads = params if size >= 4 else params * 3  # bfloat16: float32 accumulators besides the result
    if impl.startswith("naive"):
        copies = NAIVE_LOGIT_COPIES[impl] + (1 if teacher == "hidden" else 0)
        temporaries = int(copies * bt * vocab * 4)
    else:
        temporaries = FUSED_TEMPORARY_BYTES
    return PROCESS_BYTES + params + teacher_bytes + grads + temporaries


def step_flops(bt: int, hidden: int, vocab: int, teacher: str) -> float:
    """Matmul flops of one forward + backward step: logits, grad_hidden, grad_weight (+ the teacher's)."""
    return 2.0 * bt * hidden * vocab * (4 if teacher == "hidden" else 3)


def memory_skip_reason(impl: str, bt: int, hidden: int, vocab: int, dtype: str, teacher: str) -> str | None:
    """Why a CPU case must not start (it would not fit in the available memory), or None."""
    need = estimate_bytes(impl, bt, hidden, vocab, dtype, teacher)
    free = available_memory()
    if free is not None and need > MEMORY_SAFETY * free:
        return f"would need ~{need / 2**30:.1f} GiB, machine has {free / 2**30:.1f} GiB available"
    return None


def time_skip_reason(predicted_s: float | None, steps: int, timeout: float, dtype: str) -> str | None:
    """Why a case must not start (its matmuls alone would run past the timeout), or None."""
    if predicted_s is None or predicted_s * steps <= timeout:
        return None
    return (
        f"would take ~{predicted_s * steps:.0f} s ({steps} steps of ~{predicted_s:.0f} s of {dtype} "
        f"matmuls at the probed rate), over the {timeout:.0f} s timeout"
    )


def matmul_probe(
    dtypes: Sequence[str], hidden: int, vocab: int = PROBE_VOCAB, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """GFLOP/s of the three matmuls of a linear layer's forward + backward, ``[R, H] @ [H, V]`` and
    the two products of its backward (each layout has its own speed), in each dtype on the CPU
    (best of 2 after a warm-up, ``R = PROBE_ROWS``)."""
    import time

    import torch

    generator = torch.Generator().manual_seed(seed)
    found = {}
    for name in dtypes:
        dtype = getattr(torch, name)
        a = torch.randn(PROBE_ROWS, hidden, generator=generator).to(dtype).requires_grad_()
        b = torch.randn(vocab, hidden, generator=generator).to(dtype).requires_grad_()
        g = torch.randn(PROBE_ROWS, vocab, generator=generator).to(dtype)
        best = math.inf
        for attempt in range(3):  # the first is a warm-up
            a.grad = b.grad = None
            start = time.perf_counter()
            (a @ b.T).backward(g)
            if attempt:
                best = min(best, time.perf_counter() - start)
        flops = 3 * 2.0 * PROBE_ROWS * hidden * vocab
        found[name] = {"shape": [PROBE_ROWS, hidden, vocab], "seconds": best, "gflops": flops / best / 1e9}
    return found


def probe_text(figures: dict[str, Any]) -> str:
    """``"12.3 GFLOP/s (forward + backward of [256, 1024] @ [1024, 4096])"``."""
    rows, hidden, vocab = figures["shape"]
    return f"{figures['gflops']:.1f} GFLOP/s (forward + backward of [{rows}, {hidden}] @ [{hidden}, {vocab}])"
