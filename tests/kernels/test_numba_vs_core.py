"""The fused Numba kernel equals the core (the reference) for every option, to float32 rounding.

The rule (ml-cross-entropy's): the kernel's error against a float64 ground truth may not exceed the
core's own float32 error by more than a small tolerance.
"""

from __future__ import annotations

import contextlib

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kldiv

SETTINGS = settings(max_examples=60, deadline=None)
KINDS = [{"direction": "forward"}, {"direction": "reverse"}, {"direction": "symmetric"}, {"beta": 0.3}]
FORMATS = ["probs", "log_probs", "logits"]


def compute(kind, t, p, **options):
    if "beta" in kind:
        return kldiv.js_divergence(t, p, beta=kind["beta"], **options)
    return kldiv.kl_divergence(t, p, direction=kind["direction"], **options)


def make(fmt: str, logits: np.ndarray, zeros: bool) -> np.ndarray:
    log_probs = scipy.special.log_softmax(logits, axis=-1)
    if zeros:
        row_max = logits == logits.max(axis=-1, keepdims=True)  # every row keeps some mass
        log_probs = np.where((logits < -1.5) & ~row_max, -np.inf, log_probs)
        log_probs = log_probs - scipy.special.logsumexp(log_probs, axis=-1, keepdims=True)
    if fmt == "probs":
        return np.exp(log_probs)
    if fmt == "logits":
        return np.where(np.isfinite(log_probs), log_probs + 2.0, -1e4)
    return log_probs


def kernel_error_within_core_error(kernel, core, exact, *, slack):
    """|kernel − truth| ≤ |core32 − truth| + slack · |truth|, elementwise, on finite values."""
    kernel, core, exact = (np.asarray(x, dtype=np.float64) for x in (kernel, core, exact))
    finite = np.isfinite(exact)
    assert np.array_equal(np.isfinite(kernel), finite), (kernel, exact)
    bound = np.abs(core - exact) + slack * np.maximum(np.abs(exact), 1.0)
    assert np.all(np.abs(kernel - exact)[finite] <= bound[finite]), np.max(np.abs(kernel - exact)[finite])


@SETTINGS
@given(
    kind=st.sampled_from(KINDS),
    true_format=st.sampled_from(FORMATS),
    pred_format=st.sampled_from(FORMATS),
    epsilon=st.sampled_from([0.0, 1e-7]),
    temperature=st.sampled_from([1.0, 2.0]),
    rows=st.integers(1, 9),
    n=st.integers(1, 700),
    zeros=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_values_match_core(kind, true_format, pred_format, epsilon, temperature, rows, n, zeros, seed):
    rng = np.random.default_rng(seed)
    t = make(true_format, rng.normal(size=(rows, n)) * 2, zeros)
    p = make(pred_format, rng.normal(size=(rows, n)) * 2, zeros and epsilon > 0)
    options = {
        "y_true_format": true_format,
        "y_pred_format": pred_format,
        "epsilon": epsilon,
        "temperature": temperature,
    }
    t32, p32 = t.astype(np.float32), p.astype(np.float32)
    with np.errstate(all="ignore"):
        kernel = compute(kind, t32, p32, backend="numba", **options)
        core = compute(kind, t32, p32, backend="core", **options)
        exact = compute(kind, t32.astype(np.float64), p32.astype(np.float64), backend="core", **options)
    assert kernel.dtype == np.float32
    kernel_error_within_core_error(kernel, core, exact, slack=2e-6)


@SETTINGS
@given(
    kind=st.sampled_from(KINDS),
    pred_format=st.sampled_from(FORMATS),
    epsilon=st.sampled_from([0.0, 1e-7]),
    temperature=st.sampled_from([1.0, 0.5]),
    reduction=st.sampled_from(["auto", "sum", "batchmean", "token_mean", "none"]),
    weighted=st.booleans(),
    masked=st.booleans(),
    shape=st.sampled_from([(3, 5, 17), (1, 1), (7, 1), (4, 300)]),
    seed=st.integers(0, 2**16),
)
def test_torch_gradients_match_core(
    kind, pred_format, epsilon, temperature, reduction, weighted, masked, shape, seed
):
    rng = np.random.default_rng(seed)
    t = torch.tensor(make("probs", rng.normal(size=shape), False))
    p_data = make(pred_format, rng.normal(size=shape), False)
    batch = shape[:-1]
    weight = torch.tensor(rng.random(batch)) if weighted else None
    mask = torch.tensor(rng.random(batch) < 0.6) if masked else None
    results = {}
    for backend in ("numba", "core"):
        p = torch.tensor(p_data, requires_grad=True)
        loss = kldiv.KLDivergence(
            reduction=reduction,
            y_pred_format=pred_format,
            epsilon=epsilon,
            temperature=temperature,
            scale_by_temperature_squared=True,
            backend=backend,
            **({"direction": kind["direction"]} if "direction" in kind else {}),
        )
        if "beta" in kind:
            loss = kldiv.JSDivergence(
                reduction=reduction,
                beta=kind["beta"],
                y_pred_format=pred_format,
                epsilon=epsilon,
                temperature=temperature,
                backend=backend,
            )
        value = loss(t, p, sample_weight=weight, mask=mask)
        upstream = torch.linspace(0.5, 2.0, value.numel(), dtype=value.dtype).reshape(value.shape)
        (value * upstream).sum().backward()  # grad_output != 1, and per row for "none"
        results[backend] = (value.detach().numpy(), p.grad.numpy())
    np.testing.assert_allclose(results["numba"][0], results["core"][0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(results["numba"][1], results["core"][1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("axis", [0, 1])
def test_non_last_axis_and_non_contiguous(axis):
    rng = np.random.default_rng(0)
    t = scipy.special.softmax(rng.normal(size=(6, 5, 40)), axis=axis).astype(np.float32)
    p = scipy.special.softmax(rng.normal(size=(6, 5, 40)), axis=axis).astype(np.float32)
    t_view, p_view = t[:, ::1, ::2], p[:, ::1, ::2]  # non-contiguous views
    kernel = kldiv.kl_divergence(t_view, p_view, axis=axis, backend="numba", epsilon=0)
    core = kldiv.kl_divergence(t_view, p_view, axis=axis, backend="core", epsilon=0)
    np.testing.assert_allclose(kernel, core, rtol=2e-6, atol=1e-7)


def test_empty_input():
    empty = np.zeros((0, 7), dtype=np.float32)
    assert kldiv.kl_divergence(empty, empty, backend="numba").shape == (0,)
    assert kldiv.KLDivergence(backend="numba")(empty, empty) == 0.0


def test_torch_gradcheck_through_the_autograd_function():
    rng = np.random.default_rng(1)
    t = torch.tensor(scipy.special.softmax(rng.normal(size=(3, 6)), -1))
    p = torch.tensor(rng.normal(size=(3, 6)), requires_grad=True)

    def fn(student):
        return kldiv.kl_divergence(t, student, from_logits=True, epsilon=0, backend="numba", temperature=1.7)

    assert torch.autograd.gradcheck(fn, (p,), eps=1e-6, atol=1e-7)


def test_backend_numba_refuses_what_it_cannot_serve():
    with pytest.raises(ValueError, match=r"`backend`.*broadcast"):
        kldiv.kl_divergence(np.ones((2, 3)) / 3, np.ones(3) / 3, backend="numba")
    with pytest.raises(ValueError, match=r"`backend`.*beta at an endpoint"):
        kldiv.js_divergence(np.ones((2, 3)) / 3, np.ones((2, 3)) / 3, backend="numba", beta=0.0)
    with pytest.raises(ValueError, match=r"`backend`.*jax"):
        kldiv.kl_divergence(jnp.ones((2, 3)) / 3, jnp.ones((2, 3)) / 3, backend="numba")


def test_float16_is_computed_in_float32_by_the_kernel():
    rng = np.random.default_rng(4)
    t = scipy.special.softmax(rng.normal(size=(5, 30)), -1).astype(np.float16)
    p = scipy.special.softmax(rng.normal(size=(5, 30)), -1).astype(np.float16)
    kernel = kldiv.kl_divergence(t, p, backend="numba")
    assert kernel.dtype == np.float16
    core = kldiv.kl_divergence(t, p, backend="core")
    np.testing.assert_allclose(kernel.astype(np.float32), core.astype(np.float32), rtol=1e-3)


def test_auto_uses_the_kernel_only_for_large_inputs(monkeypatch):
    from kldiv.kernels import dispatch, fused

    calls = []
    original_numpy, original_torch = fused.per_sample_numpy, fused.per_sample_torch
    monkeypatch.setattr(fused, "per_sample_numpy", lambda *a: calls.append("numpy") or original_numpy(*a))
    monkeypatch.setattr(
        fused, "per_sample_torch", lambda *a, **k: calls.append("torch") or original_torch(*a, **k)
    )

    def uniform(elements):
        return np.full((elements // 128, 128), 1 / 128, dtype=np.float32)

    below, at = dispatch.AUTO_THRESHOLD - 128, dispatch.AUTO_THRESHOLD
    for elements, expected in ((below, []), (at, ["numpy"])):
        calls.clear()
        kldiv.kl_divergence(uniform(elements), uniform(elements))
        assert calls == expected, elements
    for elements, expected in ((below, []), (at, ["torch"])):
        calls.clear()
        x = torch.from_numpy(uniform(elements))
        kldiv.kl_divergence(x, x)
        assert calls == expected, elements
    for elements, expected in ((below, []), (at, ["torch"])):
        calls.clear()
        x = torch.from_numpy(uniform(elements))
        kldiv.KLDivergence()(x, x.clone().requires_grad_()).backward()
        assert calls == expected, elements


def test_second_backward_through_the_same_graph_recomputes():
    rng = np.random.default_rng(2)
    t = torch.tensor(scipy.special.softmax(rng.normal(size=(4, 9)), -1))
    grads = {}
    for backend in ("numba", "core"):
        p = torch.tensor(rng.normal(size=(4, 9)) if backend == "numba" else grads["data"], requires_grad=True)
        grads["data"] = p.detach().numpy()
        value = kldiv.KLDivergence(backend=backend, from_logits=True, epsilon=0)(t, p)
        value.backward(retain_graph=True)
        value.backward(retain_graph=True)
        (2 * value).backward()
        grads[backend] = p.grad.numpy().copy()
    np.testing.assert_allclose(grads["numba"], grads["core"], rtol=1e-10, atol=1e-14)


_DIVIDING_REDUCTIONS = (
    "auto",
    "sum_over_batch_size",
    "mean",
    "mean_with_sample_weight",
    "batchmean",
    "token_mean",
)


@pytest.mark.parametrize(
    ("reduction", "num_items"),
    [("sum", None)] + [(r, n) for r in _DIVIDING_REDUCTIONS for n in (None, 7, "tensor")],
)
@pytest.mark.parametrize("masked", [False, True])
def test_reduced_loss_is_one_autograd_node(reduction, masked, num_items):
    """An unweighted reduction joins the kernel's node: ``loss.backward()`` (upstream 1) returns the
    kernel's pre-scaled gradient as it is, and equals the core's gradient. (``num_items`` needs a
    reduction that divides.)"""
    rng = np.random.default_rng(3)
    t = torch.tensor(scipy.special.softmax(rng.normal(size=(3, 4, 50)), -1))
    data = scipy.special.softmax(rng.normal(size=(3, 4, 50)), -1)
    mask = torch.tensor(rng.random((3, 4)) < 0.6) if masked else None
    results = {}
    for backend in ("numba", "core"):
        p = torch.tensor(data, requires_grad=True)
        items = torch.tensor(7.0, dtype=torch.float64) if num_items == "tensor" else num_items
        value = kldiv.KLDivergence(reduction=reduction, backend=backend)(t, p, mask=mask, num_items=items)
        if backend == "numba":
            # The tensor num_items is divided by after the kernel's node (its gradient is not a host number).
            assert (type(value.grad_fn).__name__ == "FusedDivergenceBackward") == (num_items != "tensor")
        value.backward()
        results[backend] = (value.item(), p.grad.numpy())
    assert results["numba"][0] == pytest.approx(results["core"][0], rel=1e-12)
    np.testing.assert_allclose(results["numba"][1], results["core"][1], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("context", ["plain", "no_grad", "inference_mode"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"epsilon": 0.0},
        {"y_pred_format": "logits", "temperature": 2.0},
        {"y_pred_format": "logits", "student_softcap": 3.0},
    ],
)
def test_torch_call_without_a_gradient_makes_no_autograd_node(context, options, monkeypatch):
    """Where nothing needs a gradient (``y_pred`` without ``requires_grad``, or one under
    ``torch.no_grad()`` / ``torch.inference_mode()``) the kernel runs without an autograd node, and
    gives the values of the call that builds one, and of the core."""
    rng = np.random.default_rng(7)
    t = torch.tensor(scipy.special.softmax(rng.normal(size=(6, 40)), -1))
    fmt = options.get("y_pred_format", "probs")
    data = rng.normal(size=(6, 40))
    data = data if fmt == "logits" else scipy.special.softmax(data, -1)
    mask = torch.tensor([True, False, True, True, False, True])
    leaf = torch.tensor(data, requires_grad=True)
    with_node = kldiv.KLDivergence(backend="numba", **options)(t, leaf, mask=mask)
    assert type(with_node.grad_fn).__name__ == "FusedDivergenceBackward"
    core = kldiv.KLDivergence(backend="core", **options)(t, torch.tensor(data), mask=mask)
    p = torch.tensor(data, requires_grad=context != "plain")
    scopes = {
        "plain": contextlib.nullcontext,
        "no_grad": torch.no_grad,
        "inference_mode": torch.inference_mode,
    }
    from kldiv.kernels.torch_function import FusedDivergence

    applied = []
    original = FusedDivergence.apply
    monkeypatch.setattr(FusedDivergence, "apply", lambda *a: applied.append(1) or original(*a))
    with scopes[context]():
        value = kldiv.KLDivergence(backend="numba", **options)(t, p, mask=mask)
        per_sample = kldiv.KLDivergence(backend="numba", reduction="none", **options)(t, p, mask=mask)
    assert value.grad_fn is None and not value.requires_grad and not applied
    assert value.dtype == with_node.dtype == torch.float64
    assert value.item() == with_node.item()
    assert value.item() == pytest.approx(core.item(), rel=1e-12)
    assert per_sample.shape == (6,) and per_sample.grad_fn is None
    assert per_sample[1].item() == per_sample[4].item() == 0.0


@pytest.mark.parametrize("pred_format", ["probs", "log_probs", "logits"])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_gradient_written_over_y_pred(pred_format, direction):
    """``out=y_pred``: the gradient overwrites the input it is computed from, with the same result."""
    from kldiv.kernels.numba_cpu import fused_rows

    rng = np.random.default_rng(7)
    t = rng.dirichlet(np.ones(300), size=9).astype(np.float32)
    p = rng.dirichlet(np.ones(300), size=9).astype(np.float32)
    p = {"probs": p, "log_probs": np.log(p), "logits": 3 * np.log(p) + 1}[pred_format]
    options = dict(true_format="probs", pred_format=pred_format, direction=direction, beta=None)
    kwargs = dict(epsilon=1e-7, temperature=1.0, want_grad=True, **options)
    values, grad = fused_rows(t, p.copy(), np.full(9, 0.5), **kwargs)
    buffer = p.copy()
    values_in_place, grad_in_place = fused_rows(t, buffer, np.full(9, 0.5), out=buffer, **kwargs)
    assert grad_in_place is buffer
    # Same math; aliasing may change LLVM's choice of vector or scalar loop (summation order).
    np.testing.assert_allclose(values_in_place, values, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(grad_in_place, grad, rtol=2e-6, atol=1e-7)
    with pytest.raises(ValueError, match="`out`"):
        fused_rows(t, p, np.ones(9), out=np.empty((9, 299), np.float32), **kwargs)


@pytest.mark.parametrize("epsilon", [1e-7, 0.0])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_non_finite_logit_rows_match_core(epsilon, direction):
    """A row of all ``-inf`` logits, or with a NaN, gives NaN values and NaN gradients on both paths."""
    t = torch.tensor([[0.0, 1.0, 2.0], [-np.inf, -np.inf, -np.inf], [1.0, np.nan, 0.0], [0.5, 0.0, 1.0]])
    data = [[1.0, 0.0, 2.0], [-np.inf, -np.inf, -np.inf], [0.0, 1.0, 2.0], [np.nan, 0.0, 1.0]]
    results = {}
    for backend in ("numba", "core"):
        p = torch.tensor(data, requires_grad=True)
        value = kldiv.kl_divergence(
            t,
            p,
            y_true_format="logits",
            from_logits=True,
            epsilon=epsilon,
            direction=direction,
            backend=backend,
        )
        value.sum().backward()
        results[backend] = (value.detach().numpy(), p.grad.numpy())
    for kernel, core in zip(results["numba"], results["core"], strict=True):
        np.testing.assert_array_equal(np.isnan(kernel), np.isnan(core))
        np.testing.assert_allclose(kernel, core, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hostile", [False, True])
def test_exact_mode_gradient_written_over_y_pred_or_y_true(hostile):
    """Exact mode's forward KL stages a block's gradient when ``out`` shares memory with an input, so
    that a block it computes again (zeros, NaN, denormals: not ordinary) still reads the inputs as they
    were: ``out=y_pred`` and ``out=y_true`` give the gradient of separate arrays, equal to the core's."""
    from kldiv.kernels.numba_cpu import fused_rows

    rng = np.random.default_rng(11)
    t = rng.dirichlet(np.ones(1300), size=5).astype(np.float32)  # three blocks per row
    p = rng.dirichlet(np.ones(1300), size=5).astype(np.float32)
    if hostile:
        t[0, 5], p[1, 700], p[2, 3], t[3, 1200], p[4, 10] = 0.0, 0.0, np.nan, 1e-41, 1e-41
    kwargs = dict(true_format="probs", pred_format="probs", direction="forward", beta=None)
    kwargs |= dict(epsilon=0.0, temperature=1.0, want_grad=True)
    with np.errstate(all="ignore"):
        values, grad = fused_rows(t, p.copy(), np.ones(5), **kwargs)
        for target in ("y_pred", "y_true"):
            tt, pp = t.copy(), p.copy()
            buffer = pp if target == "y_pred" else tt
            values_in_place, grad_in_place = fused_rows(tt, pp, np.ones(5), out=buffer, **kwargs)
            np.testing.assert_array_equal(values_in_place, values)
            np.testing.assert_array_equal(grad_in_place, grad)
        core = torch.tensor(p.astype(np.float64), requires_grad=True)
        expected = kldiv.kl_divergence(torch.tensor(t.astype(np.float64)), core, epsilon=0.0, backend="core")
        expected.sum().backward()
    np.testing.assert_allclose(values, expected.detach().numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad, core.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("epsilon", [1e-7, 0.0])
@pytest.mark.parametrize("target", [None, "y_pred", "y_true"])
def test_outside_flags_match_numpy_in_every_block_and_in_place(epsilon, target):
    """The [0, 1] check of the probabilities kernel (a float sum of the distance from [0, 1] per block,
    counted where it is not 0) flags exactly the rows NumPy's comparisons flag, whichever block holds
    the entry, with a NaN beside it, in float32 and in float64, and when the gradient overwrites an
    input (the block is counted after its gradient is written)."""
    from kldiv.kernels.numba_cpu import OUTSIDE_PRED, OUTSIDE_TRUE, fused_rows

    rng = np.random.default_rng(12)
    for dtype in (np.float32, np.float64):
        t = rng.dirichlet(np.ones(1300), size=10).astype(dtype)  # three blocks per row
        p = rng.dirichlet(np.ones(1300), size=10).astype(dtype)
        t[1, 600] = -0.1  # second block
        p[2, 1299] = 1.5  # last entry
        p[3, 7] = np.nan  # NaN alone: not outside
        p[4, 520], p[4, 530] = np.nan, -0.25  # NaN beside an outside entry
        t[5, 0] = np.inf
        t[6, 900] = -1e-41 if dtype == np.float32 else -1e-310  # a negative subnormal
        p[7, 3] = np.nextafter(dtype(1), dtype(2))  # one ulp above 1
        t[8, 4], p[8, 4] = -0.0, 0.0  # zeros of both signs: inside
        t[9, 1000], p[9, 10] = 1.0, 0.0  # the ends of [0, 1]: inside
        expected = np.where(((t < 0) | (t > 1)).any(1), OUTSIDE_TRUE, 0) | np.where(
            ((p < 0) | (p > 1)).any(1), OUTSIDE_PRED, 0
        )
        tt, pp = t.copy(), p.copy()
        out = {None: None, "y_pred": pp, "y_true": tt}[target]
        outside = np.full(10, 255, np.uint8)
        kwargs = dict(true_format="probs", pred_format="probs", direction="forward", beta=None)
        with np.errstate(all="ignore"):
            fused_rows(
                tt,
                pp,
                np.ones(10),
                epsilon=epsilon,
                temperature=1.0,
                want_grad=True,
                out=out,
                outside=outside,
                **kwargs,
            )
        np.testing.assert_array_equal(outside, expected, err_msg=f"{dtype.__name__}")
