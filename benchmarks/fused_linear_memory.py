"""Peak memory and time of kldiv's fused linear + KL divergence against the naive PyTorch path.

Each case runs in a fresh process (``--case``): it allocates the inputs, runs one warm-up step
(imports, Numba's compiled kernels, first-touch allocations), frees the gradients, resets the kernel's
peak-RSS counter (``/proc/self/clear_refs``), records the resident set size, then runs ``--repeats``
steps of forward + backward and reports the peak RSS above that baseline (``VmHWM``, the memory the
steps need at their peak, gradients included) and the median step time. The driver prints the
ratios kldiv / naive measured in the same session. Naive path: ``logits = h @ W.T``,
``log_softmax``, ``F.kl_div(log_target=True)``, backward.

    python benchmarks/fused_linear_memory.py --sizes 1024x1024x32000,4096x1024x32000 --dtypes float32
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def run_case(impl: str, bt: int, hidden: int, vocab: int, dtype_name: str, repeats: int) -> dict:
    import torch
    import torch.nn.functional as F

    from kldiv.fused.torch import FusedLinearKLDivergence

    torch.manual_seed(0)
    dtype = getattr(torch, dtype_name)
    h = (torch.randn(bt, hidden) / hidden**0.5).to(dtype).requires_grad_()
    w = (torch.randn(vocab, hidden) / hidden**0.5).to(dtype).requires_grad_()
    teacher = torch.randn(bt, vocab).to(dtype)
    loss_fn = FusedLinearKLDivergence(reduction="token_mean")

    def step():
        h.grad = w.grad = None
        if impl == "naive":
            logits = h @ w.T
            loss = F.kl_div(
                torch.log_softmax(logits.float(), -1),
                torch.log_softmax(teacher.float(), -1),
                reduction="batchmean",
                log_target=True,
            )
        else:
            loss = loss_fn(h, w, teacher_logits=teacher)
        loss.backward()
        return float(loss)

    step()
    h.grad = w.grad = None
    gc.collect()
    _reset_peak()
    baseline = _status_mib("VmRSS")
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = step()
        times.append(time.perf_counter() - start)
    peak = _status_mib("VmHWM")
    return {
        "impl": impl,
        "bt": bt,
        "hidden": hidden,
        "vocab": vocab,
        "dtype": dtype_name,
        "loss": value,
        "peak_extra_mib": peak - baseline,
        "median_s": statistics.median(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1024x1024x32000,4096x1024x32000")
    parser.add_argument("--dtypes", default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    parser.add_argument("--case", nargs=5, metavar=("IMPL", "BT", "H", "V", "DTYPE"))
    args = parser.parse_args()
    if args.case:
        impl, bt, hidden, vocab, dtype = args.case
        print(json.dumps(run_case(impl, int(bt), int(hidden), int(vocab), dtype, args.repeats)))
        return
    rows = []
    for size in args.sizes.split(","):
        bt, hidden, vocab = (int(x) for x in size.split("x"))
        for dtype in args.dtypes.split(","):
            result = {}
            for impl in ("naive", "kldiv"):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--repeats",
                        str(args.repeats),
                        "--case",
                        impl,
                        str(bt),
                        str(hidden),
                        str(vocab),
                        dtype,
                    ],
                    capture_output=True,
                    text=True,
                )
                if out.returncode != 0:
                    print(f"{impl} {size} {dtype}: failed ({out.stderr.strip().splitlines()[-1:]})")
                    continue
                result[impl] = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(result[impl])
            if len(result) == 2:
                n, k = result["naive"], result["kldiv"]
                memory = k["peak_extra_mib"] / n["peak_extra_mib"]
                speed = k["median_s"] / n["median_s"]
                print(
                    f"BT={bt} H={hidden} V={vocab} {dtype}: naive {n['peak_extra_mib']:.0f} MiB "
                    f"{n['median_s'] * 1e3:.0f} ms | kldiv {k['peak_extra_mib']:.0f} MiB "
                    f"{k['median_s'] * 1e3:.0f} ms | memory ratio {memory:.3f}, time ratio {speed:.2f}, "
                    f"|Δloss| {abs(k['loss'] - n['loss']):.2e}",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
