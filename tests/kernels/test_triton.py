"""The Triton kernel equals the core (the reference) for every option, values and gradients.

The comparisons run in a subprocess (this file run as a script) that prints one JSON object: on a
machine without a GPU under ``TRITON_INTERPRET=1`` (set before triton is imported; the interpreter
runs the kernel on CPU tensors), and natively on CUDA tensors when a GPU is present. The rule is
ml-cross-entropy's: elementwise, the kernel's error against a float64 ground truth may not exceed
the core's own error in the same dtype by more than ``slack · max(|truth|, 1)``.

Triton is a test dependency (``kldiv[test]`` on x86-64 Linux): these tests fail, not skip, when it
is missing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

FORMATS = ("probs", "log_probs", "logits")
KINDS = ({"direction": "forward"}, {"direction": "reverse"}, {"direction": "symmetric"}, {"beta": 0.3})
SLACK = {"float32": 2e-6, "bfloat16": 2.0**-7}
"""Per input dtype: how much worse than the core (relative to the entry's scale) the kernel may be.
bfloat16: one ulp of the gradient, which is written in bfloat16 (the core rounds to nearest; Triton's
interpreter truncates)."""


# --------------------------------------------------------------------------------------------------
# The worker (runs in the subprocesses)
# --------------------------------------------------------------------------------------------------


class _Shard:
    """Cases ``index, index + count, ...`` of the worker's sequence: shards run in parallel processes
    (each compiles, or interprets, its own kernels)."""

    def __init__(self, index: int, count: int) -> None:
        self.index, self.count, self.seen = index, count, 0

    def take(self) -> bool:
        mine = self.seen % self.count == self.index
        self.seen += 1
        return mine


def _make(fmt: str, logits: np.ndarray, zeros: np.ndarray | None) -> np.ndarray:
    """Inputs of one format from float64 logits; ``zeros`` marks entries of probability 0."""
    import scipy.special

    log_probs = scipy.special.log_softmax(logits, axis=-1)
    if zeros is not None:
        log_probs = np.where(zeros, -np.inf, log_probs)
        log_probs = log_probs - scipy.special.logsumexp(log_probs, axis=-1, keepdims=True)
    if fmt == "probs":
        return np.exp(log_probs)
    if fmt == "logits":
        return np.where(np.isfinite(log_probs), log_probs + 2.0, -1e4)
    return log_probs


def _zero_masks(rng: np.random.Generator, shape: tuple[int, int], pattern: str) -> tuple[Any, Any]:
    """``(zeros of y_true, zeros of y_pred)``: none, the same entries, or one side only."""
    if pattern == "none" or shape[1] < 2:
        return None, None
    zeros = rng.random(shape) < 0.3
    zeros[:, 0] = False  # every row keeps some mass
    return {
        "shared": (zeros, zeros),
        "true": (zeros, None),
        "pred": (None, zeros),
    }[pattern]


def _excess(kernel: Any, core: Any, truth: Any, slack: float, scale: Any = 1.0) -> float:
    """``max(|kernel − truth| − |core − truth| − slack · max(|truth|, scale))`` over finite truths;
    ``inf`` when the kernel is not finite where the truth is, or differs where the truth is ±inf.
    Where the truth is NaN (the core's ``0 · inf`` where an underflowed probability meets a zero
    one), the kernel may be anything: it masks such entries."""
    kernel, core, truth = (np.asarray(x, dtype=np.float64) for x in (kernel, core, truth))
    finite = np.isfinite(truth)
    infinite = np.isinf(truth)
    if not np.all(np.isfinite(kernel[finite])) or not np.array_equal(kernel[infinite], truth[infinite]):
        return math.inf
    if not finite.any():
        return 0.0
    bound = np.abs(core - truth) + slack * np.maximum(np.abs(truth), scale)
    return float(np.max((np.abs(kernel - truth) - bound)[finite]))


def _reference(torch: Any, t: Any, p: Any, coef: Any, keep: Any, kind: dict, options: dict) -> tuple:
    """The core's per-row values and ``coef · ∂/∂y_pred`` (0 on rows that ``keep`` drops)."""
    import kldiv

    p = p.detach().clone().requires_grad_(True)
    common = {"y_true_format": options["true_format"], "y_pred_format": options["pred_format"]}
    common |= {"epsilon": options["epsilon"], "temperature": options["temperature"], "backend": "core"}
    if "beta" in kind:
        values = kldiv.js_divergence(t, p, beta=kind["beta"], **common)
    else:
        values = kldiv.kl_divergence(t, p, direction=kind["direction"], **common)
    (values * coef.to(values.dtype)).sum().backward()
    values, grad = values.detach().double(), p.grad.double()
    if keep is not None:
        values = torch.where(keep, values, 0.0)
        grad = torch.where(keep[:, None], grad, 0.0)
    return values.cpu().numpy(), grad.cpu().numpy()


def _case(
    torch: Any,
    device: str,
    shape: tuple,
    kind: dict,
    options: dict,
    *,
    dtype: str = "float32",
    zeros: str = "shared",
    masked: bool = False,
    strided: bool = False,
    seed: int = 0,
) -> dict:
    """Run one case through the launcher; returns the worst excess of values and gradient."""
    from kldiv.kernels.triton import fused_rows_triton

    rng = np.random.default_rng(seed)
    rows, n = shape
    zeros_t, zeros_p = _zero_masks(rng, shape, zeros)
    torch_dtype = getattr(torch, dtype)
    t = torch.tensor(_make(options["true_format"], rng.normal(size=shape) * 2, zeros_t)).to(torch_dtype)
    p = torch.tensor(_make(options["pred_format"], rng.normal(size=shape) * 2, zeros_p)).to(torch_dtype)
    t, p = t.to(device), p.to(device)
    coef = torch.linspace(0.5, 2.0, rows, dtype=torch.float64, device=device)
    keep = torch.tensor([r % 3 != 1 for r in range(rows)], device=device) if masked else None
    kernel_t, kernel_p = t, p
    if keep is not None:  # rows that keep drops may hold anything
        kernel_t = torch.where(keep[:, None], t, torch.nan)
        kernel_p = torch.where(keep[:, None], p, torch.nan)
    if strided:  # a row stride other than n
        kernel_t = torch.cat([kernel_t, kernel_t], dim=1)[:, :n]
        kernel_p = torch.cat([kernel_p, kernel_p], dim=1)[:, :n]
    launcher_options = {k: options[k] for k in ("true_format", "pred_format", "epsilon", "temperature")}
    values, grad = fused_rows_triton(
        kernel_t,
        kernel_p,
        coef,
        keep,
        direction=kind.get("direction", "forward"),
        beta=kind.get("beta"),
        want_grad=True,
        **launcher_options,
    )
    core = _reference(torch, t, p, coef, keep, kind, options)
    truth = _reference(torch, t.double(), p.double(), coef, keep, kind, options)
    slack = SLACK[dtype]
    # Gradients on rows of finite value only (an infinite divergence has no gradient to match). The
    # scale of ∂/∂p is 1/p: the log-space gradient's rounding error, O(1), is divided by p.
    finite_rows = np.isfinite(truth[0])
    scale = 1.0 / np.abs(p.double().cpu().numpy()) if options["pred_format"] == "probs" else 1.0
    scale = np.broadcast_to(np.maximum(scale, 1.0), truth[1].shape)[finite_rows]
    return {
        "values": _excess(values.cpu(), core[0], truth[0], slack),
        "grad": _excess(
            grad.float().cpu()[finite_rows], core[1][finite_rows], truth[1][finite_rows], slack, scale
        ),
        "values_dtype": str(values.dtype).rsplit(".", 1)[-1],
        "grad_dtype": str(grad.dtype).rsplit(".", 1)[-1],
    }


def _launcher_section(torch: Any, device: str, shard: _Shard) -> dict:
    """Every option at (3, 37), all kinds and formats at (1, 1), mixed options at (5, 130)."""
    from kldiv.kernels.triton import launcher

    cases, failures = 0, []

    def check(label: str, expect_dtype: str = "float32", **case: Any) -> None:
        nonlocal cases
        if not shard.take():
            return
        cases += 1
        result = _case(torch, device, **case)
        if not (result["values"] <= 0 and result["grad"] <= 0) or result["values_dtype"] != expect_dtype:
            failures.append({"case": label, **result})

    product = itertools.product(FORMATS, FORMATS, KINDS, (0.0, 1e-7), (1.0, 2.0))
    for index, (true_format, pred_format, kind, epsilon, temperature) in enumerate(product):
        options = {"true_format": true_format, "pred_format": pred_format}
        options |= {"epsilon": epsilon, "temperature": temperature}
        label = f"{options} {kind}"
        check(
            f"(3, 37) {label}", shape=(3, 37), kind=kind, options=options, masked=index % 2 == 0, seed=index
        )
        if temperature == 1.0:
            check(f"(1, 1) {label}", shape=(1, 1), kind=kind, options=options, seed=index)
        if index % 3 == 0:
            zeros = ("none", "shared", "true", "pred")[index // 3 % 4]
            check(
                f"(5, 130) {label} zeros={zeros}",
                shape=(5, 130),
                kind=kind,
                options=options,
                zeros=zeros,
                masked=True,
                strided=index % 2 == 0,
                seed=index,
            )
    # Several tiles per row (online log-sum-exp across tiles): 32-entry tiles, and one long row.
    launcher.TILE_BYTES = 128
    launcher.launch_config.cache_clear()
    try:
        for index, kind in enumerate(KINDS):
            for epsilon in (0.0, 1e-7):
                options = {"true_format": "logits", "pred_format": FORMATS[index % 3]}
                options |= {"epsilon": epsilon, "temperature": 0.7}
                check(
                    f"(5, 130) 32-entry tiles {options} {kind}",
                    shape=(5, 130),
                    kind=kind,
                    options=options,
                    masked=True,
                    seed=100 + index,
                )
    finally:
        launcher.TILE_BYTES = 16384
        launcher.launch_config.cache_clear()
    long_row = {"true_format": "logits", "pred_format": "logits", "epsilon": 0.0, "temperature": 1.0}
    check("(2, 5000) logits", shape=(2, 5000), kind=KINDS[0], options=long_row, zeros="none")
    return {"cases": cases, "failures": failures}


def _bf16_section(torch: Any, device: str, shard: _Shard) -> dict:
    """bfloat16 inputs: float32 accumulation and values, a bfloat16 gradient."""
    cases, failures = 0, []
    for index, (pred_format, kind) in enumerate(itertools.product(FORMATS, KINDS)):
        if not shard.take():
            continue
        options = {"true_format": FORMATS[(index + 1) % 3], "pred_format": pred_format}
        options |= {"epsilon": (0.0, 1e-7)[index % 2], "temperature": (1.0, 2.0)[index // 2 % 2]}
        cases += 1
        result = _case(
            torch,
            device,
            (5, 130),
            kind,
            options,
            dtype="bfloat16",
            zeros="none",
            masked=index % 3 == 0,
            seed=200 + index,
        )
        if not (result["values"] <= 0 and result["grad"] <= 0) or result["grad_dtype"] != "bfloat16":
            failures.append({"case": f"bf16 {options} {kind}", **result})
    return {"cases": cases, "failures": failures}


def _api_section(torch: Any, device: str, shard: _Shard) -> dict:
    """``backend="triton"`` through the losses and the autograd Function equals ``backend="core"``."""
    import kldiv

    rng = np.random.default_rng(7)
    cases, failures = 0, []
    shape = (4, 3, 41)
    t = torch.tensor(_make("logits", rng.normal(size=shape), None), device=device, dtype=torch.float32)
    p_data = torch.tensor(rng.normal(size=shape) * 2, device=device, dtype=torch.float32)
    weight = torch.tensor(rng.random(shape[:-1]), device=device, dtype=torch.float32)
    mask = torch.tensor(rng.random(shape[:-1]) < 0.6, device=device)
    settings = [
        ("KLDivergence", {"reduction": "batchmean", "direction": "forward"}, False, False),
        ("KLDivergence", {"reduction": "token_mean", "direction": "reverse"}, True, False),
        ("KLDivergence", {"reduction": "sum", "direction": "symmetric"}, False, True),
        ("KLDivergence", {"reduction": "none", "direction": "forward", "epsilon": 1e-7}, True, True),
        ("JSDivergence", {"reduction": "batchmean", "beta": 0.4}, True, False),
        ("JSDivergence", {"reduction": "none", "beta": 0.5}, False, True),
    ]
    for name, options, masked, weighted in settings:
        if not shard.take():
            continue
        results = {}
        for backend in ("triton", "core"):
            p = p_data.clone().requires_grad_(True)
            loss = getattr(kldiv, name)(
                y_true_format="logits",
                y_pred_format="logits",
                temperature=2.0,
                scale_by_temperature_squared=True,
                backend=backend,
                **({"epsilon": 0.0} | options),
            )
            value = loss(t, p, sample_weight=weight if weighted else None, mask=mask if masked else None)
            upstream = torch.linspace(0.5, 2.0, value.numel(), device=device).reshape(value.shape)
            (value * upstream).sum().backward(retain_graph=True)
            (value * upstream).sum().backward()  # a second backward recomputes the gradient
            results[backend] = (value.detach().double().cpu().numpy(), p.grad.double().cpu().numpy())
        cases += 1
        for part, (kernel, core) in enumerate(zip(results["triton"], results["core"], strict=True)):
            if not np.allclose(kernel, core, rtol=1e-5, atol=1e-6):
                failures.append(
                    {
                        "case": f"{name} {options} masked={masked} weighted={weighted} part={part}",
                        "max_abs_diff": float(np.max(np.abs(kernel - core))),
                    }
                )
    return {"cases": cases, "failures": failures}


def _dispatch_section(torch: Any, device: str) -> dict:
    """Which kernel each backend picks, and what ``backend="triton"`` refuses."""
    import array_api_compat.torch as xp

    import kldiv
    from kldiv.kernels import dispatch

    checks = {}
    x = torch.full((2, 3), 1 / 3, device=device)
    from kldiv.options import Options

    # The kernel backend="auto" picks for these tensors, above any size threshold.
    request = dataclasses.replace(dispatch.describe(xp, x, x), chunked=True)
    checks["kernel_for"] = dispatch.plan(Options(), request).kernel
    try:
        kldiv.kl_divergence(np.full((2, 3), 1 / 3), np.full((2, 3), 1 / 3), backend="triton")
        checks["numpy_refused"] = False
    except ValueError as error:
        checks["numpy_refused"] = "Triton kernel" in str(error)
    empty = torch.zeros((0, 7), device=device)
    checks["empty_rows"] = tuple(kldiv.kl_divergence(empty, empty, backend="triton").shape) == (0,)
    from kldiv.kernels.triton import fused_rows_triton

    values, grad = fused_rows_triton(
        torch.zeros((3, 0), device=device),
        torch.zeros((3, 0), device=device),
        torch.ones(3, device=device),
        None,
        true_format="probs",
        pred_format="probs",
        direction="forward",
        beta=None,
        epsilon=0.0,
        temperature=1.0,
        want_grad=True,
    )
    checks["empty_vocabulary"] = values.tolist() == [0.0, 0.0, 0.0] and tuple(grad.shape) == (3, 0)
    if device == "cuda":  # no host synchronisation on the CUDA path, forward and backward
        from kldiv.kernels import fused

        options = Options(y_true_format="logits", y_pred_format="logits", epsilon=0.0, backend="triton")
        t = torch.randn(8, 1000, device=device)
        p = torch.randn(8, 1000, device=device, requires_grad=True)
        keep = torch.tensor([True, False] * 4, device=device)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            fused.per_sample_torch(options, t, p, keep, -1, 1 / 8, kernel="triton").mean().backward()
            checks["no_host_sync"] = True
        except RuntimeError as error:
            checks["no_host_sync"] = str(error)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return checks


def main(device: str, index: int, count: int) -> dict:
    """Shard ``index`` of ``count``: each section's cases and failures (the dispatch checks: shard 0)."""
    import torch

    shard = _Shard(index, count)
    start = time.perf_counter()
    result = {
        "device": device,
        "interpreter": os.environ.get("TRITON_INTERPRET", ""),
        "launcher": _launcher_section(torch, device, shard),
        "bf16": _bf16_section(torch, device, shard),
        "api": _api_section(torch, device, shard),
        "dispatch": _dispatch_section(torch, device) if index == 0 else {},
    }
    result["seconds"] = time.perf_counter() - start
    return result


# --------------------------------------------------------------------------------------------------
# The tests (run the worker)
# --------------------------------------------------------------------------------------------------


def run_workers(device: str, interpret: bool, shards: int | None = None) -> dict:
    """This file as a script in ``shards`` parallel processes (``TRITON_INTERPRET`` set or unset
    before triton is imported); their JSON merged."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    shards = shards or max(1, min(8, os.cpu_count() or 1))
    processes = [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), device, str(index), str(shards)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(shards)
    ]
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, f"exit code {process.returncode}\n{stderr[-6000:]}"
    parts = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    merged = {"device": device, "shards": shards, "seconds": max(part["seconds"] for part in parts)}
    for section in ("launcher", "bf16", "api"):
        merged[section] = {
            "cases": sum(part[section]["cases"] for part in parts),
            "failures": [failure for part in parts for failure in part[section]["failures"]],
        }
    merged["dispatch"] = parts[0]["dispatch"]
    return merged


@pytest.fixture(scope="module")
def interpreted() -> dict:
    return run_workers("cpu", interpret=True)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def test_triton_is_installed():
    assert importlib.util.find_spec("triton") is not None, (
        "triton is a test dependency: pip install kldiv[test]"
    )


def test_launcher_matches_core_for_every_option(interpreted):
    section = interpreted["launcher"]
    assert section["cases"] >= 250
    assert section["failures"] == [], json.dumps(section["failures"][:5], indent=1)


def test_bfloat16_accumulates_in_float32(interpreted):
    section = interpreted["bf16"]
    assert section["cases"] == 12
    assert section["failures"] == [], json.dumps(section["failures"][:5], indent=1)


def test_autograd_function_through_the_losses(interpreted):
    section = interpreted["api"]
    assert section["cases"] == 6
    assert section["failures"] == [], json.dumps(section["failures"], indent=1)


def test_dispatch(interpreted):
    checks = interpreted["dispatch"]
    assert checks["kernel_for"] == "numba"  # "auto" never picks Triton for CPU tensors
    assert checks["numpy_refused"]
    assert checks["empty_rows"]
    assert checks["empty_vocabulary"]


@pytest.mark.skipif(
    not _cuda_available(), reason="no CUDA device: the interpreter tests above cover the kernel"
)
def test_native_cuda_matches_core():
    result = run_workers("cuda", interpret=False)
    for section in ("launcher", "bf16", "api"):
        assert result[section]["failures"] == [], json.dumps(result[section]["failures"][:5], indent=1)
    assert result["dispatch"]["kernel_for"] == "triton"
    assert result["dispatch"]["no_host_sync"] is True, result["dispatch"]["no_host_sync"]


if __name__ == "__main__":
    # python tests/kernels/test_triton.py DEVICE [SHARD COUNT]: one shard's JSON on the last line;
    # python tests/kernels/test_triton.py DEVICE --all: every shard, in parallel, merged.
    arguments = sys.argv[1:] or ["cpu"]
    if arguments[1:] == ["--all"]:
        print(json.dumps(run_workers(arguments[0], interpret=os.environ.get("TRITON_INTERPRET") == "1")))
    else:
        shard_index, shard_count = (int(x) for x in arguments[1:3]) if len(arguments) == 3 else (0, 1)
        print(json.dumps(main(arguments[0], shard_index, shard_count)))
