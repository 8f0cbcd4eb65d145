"""A loss object shared between threads: concurrent calls from 4 Python threads on different inputs equal
the sequential results, bit for bit, on the Numba kernel paths (the agnostic loss on NumPy arrays above
the kernel threshold, ``kldiv.torch.KLDivergence`` with gradients, ``FusedLinearKLDivergence``); and the
same call twice gives bit-identical values and gradients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

import kldiv
import kldiv.torch
from kldiv.kernels import dispatch

from . import determinism_worker

pytestmark = pytest.mark.skipif(not dispatch.numba_installed(), reason="needs Numba (the kernel paths)")

THREADS = 4
CALLS = 8  # different inputs, more than the threads: each thread runs several calls
ROUNDS = 2
ROWS, VOCAB = 64, 1024  # 2^16 elements: above every kernel threshold (NumPy 2^15, torch with grad 2^13)
AGNOSTIC_OPTIONS = {
    "kl-probs": {},
    "kl-logits-temperature": dict(y_true_format="logits", y_pred_format="logits", temperature=2.0),
    "kl-reverse-log-probs": dict(y_true_format="log_probs", y_pred_format="log_probs", direction="reverse"),
    "js-logits": dict(y_true_format="logits", y_pred_format="logits", beta=0.3),
}


def _array_inputs(options: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pair = []
    for side in ("y_true_format", "y_pred_format"):
        logits = rng.normal(size=(ROWS, VOCAB))
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        form = options.get(side, "probs")
        pair.append({"logits": logits, "log_probs": log_probs, "probs": np.exp(log_probs)}[form])
    return pair[0].astype(np.float32), pair[1].astype(np.float32)


def _concurrently(call, arguments: list) -> list:
    """``call`` on every argument from ``THREADS`` threads, ``ROUNDS`` times; each round's results."""
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return [list(pool.map(call, arguments)) for _ in range(ROUNDS)]


def _assert_identical(actual, expected) -> None:
    for a, e in zip(actual, expected, strict=True):
        if isinstance(e, torch.Tensor):
            assert a.dtype == e.dtype and torch.equal(a, e)
        else:
            assert a.dtype == e.dtype and np.array_equal(a, e)


def _call_twice_equal(call) -> tuple:
    first, second = call(), call()
    _assert_identical(second, first)
    return first


@pytest.mark.parametrize("reduction", [None, "auto"])
@pytest.mark.parametrize("name", list(AGNOSTIC_OPTIONS))
def test_agnostic_loss_on_numpy_shared_between_threads(name: str, reduction: str | None) -> None:
    options = AGNOSTIC_OPTIONS[name]
    cls = kldiv.JSDivergence if "beta" in options else kldiv.KLDivergence
    loss = cls(reduction=reduction, **options)
    arguments = [_array_inputs(options, seed) for seed in range(CALLS)]

    def call(pair: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray]:
        return (np.asarray(loss(*pair)),)

    sequential = [_call_twice_equal(lambda pair=pair: call(pair)) for pair in arguments]
    # The calls above ran the Numba kernel: backend="numba" gives the same bits, the core only close ones.
    kernel = cls(reduction=reduction, backend="numba", **options)
    core = cls(reduction=reduction, backend="core", **options)
    for pair, (value,) in zip(arguments, sequential, strict=True):
        assert np.array_equal(value, np.asarray(kernel(*pair)))
        np.testing.assert_allclose(value, np.asarray(core(*pair)), rtol=1e-5, atol=1e-6)
    for results in _concurrently(call, arguments):
        for got, want in zip(results, sequential, strict=True):
            _assert_identical(got, want)


TORCH_OPTIONS = {
    "kl-probs": {},
    "kl-logits-temperature": dict(
        reduction="batchmean", y_true_format="logits", y_pred_format="logits", temperature=2.0
    ),
    "js-logits": dict(reduction="sum", y_true_format="logits", y_pred_format="logits", beta=0.3),
}


@pytest.mark.parametrize("name", list(TORCH_OPTIONS))
def test_torch_module_with_gradients_shared_between_threads(name: str) -> None:
    options = TORCH_OPTIONS[name]
    cls = kldiv.torch.JSDivergence if "beta" in options else kldiv.torch.KLDivergence
    loss = cls(**options)
    arguments = [tuple(torch.from_numpy(a) for a in _array_inputs(options, seed)) for seed in range(CALLS)]

    def call(pair: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        y_true, y_pred = pair
        y_pred = y_pred.clone().requires_grad_(True)
        value = loss(y_true, y_pred)
        value.backward()
        return value.detach(), y_pred.grad

    sequential = [_call_twice_equal(lambda pair=pair: call(pair)) for pair in arguments]
    kernel = cls(backend="numba", **options)  # the calls above ran the Numba kernel: the same bits
    core = cls(backend="core", **options)
    for (y_true, y_pred), (value, grad) in zip(arguments, sequential, strict=True):
        leaf = y_pred.clone().requires_grad_(True)
        by_kernel = kernel(y_true, leaf)
        by_kernel.backward()
        _assert_identical((value, grad), (by_kernel.detach(), leaf.grad))
        leaf = y_pred.clone().requires_grad_(True)
        expected = core(y_true, leaf)
        expected.backward()
        torch.testing.assert_close(value, expected.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, leaf.grad, rtol=1e-4, atol=1e-7)
    for results in _concurrently(call, arguments):
        for got, want in zip(results, sequential, strict=True):
            _assert_identical(got, want)


FUSED_ROWS, HIDDEN = 96, 32


@pytest.mark.parametrize(
    "cls, options",
    [
        (kldiv.torch.FusedLinearKLDivergence, {}),
        (kldiv.torch.FusedLinearKLDivergence, dict(direction="reverse", temperature=2.0, chunk_size=32)),
        (kldiv.torch.FusedLinearJSDivergence, dict(beta=0.3, reduction="sum", chunk_size=40)),
    ],
    ids=["kl", "kl-reverse-chunked", "js-chunked"],
)
def test_fused_linear_shared_between_threads(cls: type, options: dict) -> None:
    """The chunks run the fused Numba kernel (CPU float32); the value and the gradients of the hidden
    states and the weight equal the sequential ones bit for bit, and the naive program's closely."""
    loss = cls(**options)
    generator = torch.Generator().manual_seed(0)
    arguments = [
        (
            torch.randn(FUSED_ROWS, HIDDEN, generator=generator),
            0.2 * torch.randn(VOCAB, HIDDEN, generator=generator),
            torch.randn(FUSED_ROWS, VOCAB, generator=generator),
        )
        for _ in range(CALLS)
    ]

    def call(triple: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        hidden, weight, teacher = (t.clone() for t in triple)
        hidden.requires_grad_(True)
        weight.requires_grad_(True)
        value = loss(hidden, weight, teacher_logits=teacher)
        value.backward()
        return value.detach(), hidden.grad, weight.grad

    sequential = [_call_twice_equal(lambda triple=triple: call(triple)) for triple in arguments]
    naive_options = {k: v for k, v in options.items() if k not in ("chunk_size", "reduction")}
    naive_cls = kldiv.torch.JSDivergence if "beta" in options else kldiv.torch.KLDivergence
    naive = naive_cls(
        reduction=options.get("reduction", "auto"),
        y_true_format="logits",
        y_pred_format="logits",
        epsilon=0.0,
        backend="core",
        **naive_options,
    )
    for (hidden, weight, teacher), (value, *grads) in zip(arguments, sequential, strict=True):
        hidden, weight = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        expected = naive(teacher, hidden @ weight.T)
        expected.backward()
        torch.testing.assert_close(value, expected.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grads[0], hidden.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(grads[1], weight.grad, rtol=1e-4, atol=1e-6)
    for results in _concurrently(call, arguments):
        for got, want in zip(results, sequential, strict=True):
            _assert_identical(got, want)


def _digests_in_a_fresh_interpreter() -> dict[str, str]:
    source_root = str(Path(kldiv.__file__).resolve().parents[1])
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("determinism_worker.py"))],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([source_root, *sys.path])},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_numba_paths_are_deterministic_run_to_run() -> None:
    """Two fresh interpreters and this one give bit-identical values and gradients."""
    here = determinism_worker.digests()
    assert here == determinism_worker.digests()
    assert len(here) == 4
    assert _digests_in_a_fresh_interpreter() == here
    assert _digests_in_a_fresh_interpreter() == here


def test_threads_under_numbas_workqueue_layer_do_not_abort() -> None:
    """Numba's fallback ``workqueue`` layer aborts the process on concurrent launches from two Python
    threads; kldiv serialises its kernel launches there. A fresh interpreter on that layer: 4 threads
    share one loss and get the sequential results bit for bit."""
    import os
    import subprocess
    import sys

    code = """
import concurrent.futures, numpy as np, numba, kldiv
rng = np.random.default_rng(0)
pairs = [tuple(rng.dirichlet(np.ones(1024), 64).astype(np.float32) for _ in range(2)) for _ in range(8)]
loss = kldiv.KLDivergence(reduction=None)
sequential = [loss(t, p) for t, p in pairs]
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    threaded = list(pool.map(lambda pair: loss(*pair), pairs * 4))
assert numba.threading_layer() == "workqueue", numba.threading_layer()
assert all(np.array_equal(a, b) for a, b in zip(threaded, sequential * 4))
print("ok")
"""
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr[-3000:]
