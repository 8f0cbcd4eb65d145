"""float16 / bfloat16: accumulated in float32, returned in the input dtype, error vs float64 <= 1e-3.

The reference is the float64 divergence of the inputs *rounded to the low-precision dtype first*, so
the measured error is kldiv's arithmetic error alone, not the rounding of the inputs. The errors are
printed (``pytest -s``) so they can be quoted.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import kldiv

from . import reference

RNG = np.random.default_rng(11)
T_LOGITS = RNG.normal(size=(64, 1000)) * 3
P_LOGITS = RNG.normal(size=(64, 1000)) * 3
CASES = [
    ("forward", {"direction": "forward"}),
    ("reverse", {"direction": "reverse"}),
    ("symmetric", {"direction": "symmetric"}),
    ("js", {"beta": 0.5}),
]


def low(backend: str, dtype: str, x: np.ndarray):
    if backend == "torch":
        return torch.tensor(x, dtype=getattr(torch, dtype))
    return jnp.asarray(x, dtype=getattr(jnp, dtype))


def as_float64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).numpy()
    return np.asarray(x.astype(jnp.float32), dtype=np.float64)


def relative_error(result, expected: np.ndarray) -> float:
    return float(np.max(np.abs(as_float64(result) - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize(("name", "kind"), CASES)
def test_low_precision_error_against_float64(backend, dtype, name, kind):
    t, p = low(backend, dtype, T_LOGITS), low(backend, dtype, P_LOGITS)
    fn = kldiv.js_divergence if "beta" in kind else kldiv.kl_divergence
    extra = {"beta": kind["beta"]} if "beta" in kind else {"direction": kind["direction"]}
    result = fn(t, p, y_true_format="logits", from_logits=True, epsilon=0, **extra)
    assert str(result.dtype).endswith(dtype)
    expected = reference.divergence(
        as_float64(t), as_float64(p), true_format="logits", pred_format="logits", **kind
    )
    error = relative_error(result, expected)
    print(f"\n{backend} {dtype} {name}: max relative error vs float64 = {error:.2e}")
    # The result is rounded once to the output dtype: half an ulp is 4.9e-4 (fp16), 3.9e-3 (bf16).
    assert error <= {"float16": 1e-3, "bfloat16": 4e-3}[dtype]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_loss_is_accumulated_in_float32(dtype):
    """The reduced loss of a large batch: summing in the input dtype would lose ~1e-2 relative."""
    t, p = low("torch", dtype, T_LOGITS), low("torch", dtype, P_LOGITS)
    loss = kldiv.KLDivergence(reduction="sum", y_true_format="logits", from_logits=True, epsilon=0)
    value = loss(t, p)
    assert value.dtype == getattr(torch, dtype)
    expected = reference.divergence(
        as_float64(t), as_float64(p), true_format="logits", pred_format="logits"
    ).sum()
    error = abs(float(value) - expected) / expected
    print(f"\ntorch {dtype} sum over 64 rows: relative error vs float64 = {error:.2e}")
    assert error <= {"float16": 1e-3, "bfloat16": 4e-3}[dtype]


def test_dtype_option_returns_float32_for_bfloat16_inputs():
    t, p = low("torch", "bfloat16", T_LOGITS), low("torch", "bfloat16", P_LOGITS)
    value = kldiv.kl_divergence(t, p, y_true_format="logits", from_logits=True, epsilon=0, dtype="float32")
    assert value.dtype == torch.float32
    expected = reference.divergence(as_float64(t), as_float64(p), true_format="logits", pred_format="logits")
    error = relative_error(value, expected)
    print(f"\ntorch bfloat16 inputs, dtype='float32' output: relative error vs float64 = {error:.2e}")
    assert error <= 1e-5


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_gradient_is_finite_and_in_input_dtype(dtype):
    t = low("torch", dtype, T_LOGITS)
    p = low("torch", dtype, P_LOGITS).requires_grad_()
    kldiv.KLDivergence(y_true_format="logits", from_logits=True, epsilon=0)(t, p).backward()
    assert p.grad.dtype == getattr(torch, dtype)
    assert torch.isfinite(p.grad).all()
