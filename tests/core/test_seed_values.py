"""The numbers of the tf.keras ``KLDivergence`` API pages (SPEC §1), on every array type.

Each value is checked twice: against the rounded number printed in the Keras documentation, and
against the float64 oracle within float32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

import kldiv
from kldiv.testing import assert_close, reference

from .helpers import dtype_name, is_backend_array, to_backend

INPUT_KINDS = ("numpy", "list", "torch", "jax")
F32 = {"rtol": 2e-6, "atol": 1e-9}

Y_TRUE = [[0.0, 1.0], [0.0, 0.0]]
Y_PRED = [[0.6, 0.4], [0.4, 0.6]]
WEIGHT = [0.8, 0.2]


def convert(kind: str, values: list) -> object:
    return values if kind == "list" else to_backend(kind, values, "float32")


def check_type(kind: str, result: object, ndim: int) -> None:
    backend = "numpy" if kind == "list" else kind
    assert is_backend_array(backend, result), f"{kind} in, {type(result)} out"
    assert dtype_name(result) == "float32", result.dtype
    assert np.ndim(result) == ndim if backend == "numpy" else result.ndim == ndim


def as_float(x: object) -> float:
    return float(np.asarray(x.detach() if hasattr(x, "detach") else x))


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_three_element_example(kind):
    y_true, y_pred = [0.4, 0.9, 0.2], [0.5, 0.8, 0.12]
    result = kldiv.KLDivergence()(convert(kind, y_true), convert(kind, y_pred))
    check_type(kind, result, 0)
    assert as_float(result) == pytest.approx(0.11891246, rel=2e-7, abs=0)
    assert_close(result, reference.keras_kl(np.float32(y_true), np.float32(y_pred)), **F32)


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_default_reduction(kind):
    result = kldiv.KLDivergence()(convert(kind, Y_TRUE), convert(kind, Y_PRED))
    check_type(kind, result, 0)
    assert as_float(result) == pytest.approx(0.458, abs=1e-3)
    assert as_float(result) == pytest.approx(0.45814, abs=1e-5)
    expected = reference.reduce_weighted(reference.keras_kl(Y_TRUE, Y_PRED), None, "auto")
    assert_close(result, expected, **F32)


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_sample_weight(kind):
    loss = kldiv.KLDivergence()
    result = loss(convert(kind, Y_TRUE), convert(kind, Y_PRED), sample_weight=convert(kind, WEIGHT))
    check_type(kind, result, 0)
    assert as_float(result) == pytest.approx(0.366, abs=1e-3)  # the page truncates 0.36652
    expected = reference.reduce_weighted(reference.keras_kl(Y_TRUE, Y_PRED), WEIGHT, "auto")
    assert_close(result, expected, **F32)


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_sum_reduction(kind):
    loss = kldiv.KLDivergence(reduction=kldiv.Reduction.SUM)
    result = loss(convert(kind, Y_TRUE), convert(kind, Y_PRED))
    check_type(kind, result, 0)
    assert as_float(result) == pytest.approx(0.916, abs=1e-3)
    assert_close(result, reference.reduce_weighted(reference.keras_kl(Y_TRUE, Y_PRED), None, "sum"), **F32)


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_none_reduction(kind):
    loss = kldiv.KLDivergence(reduction=kldiv.Reduction.NONE)
    result = loss(convert(kind, Y_TRUE), convert(kind, Y_PRED))
    check_type(kind, result, 1)
    assert_close(result, np.array([0.916, -3.08e-06]), rtol=2e-3, atol=0)
    assert_close(result, reference.keras_kl(Y_TRUE, Y_PRED), **F32)


@pytest.mark.parametrize("kind", INPUT_KINDS)
@pytest.mark.parametrize(
    "function", [kldiv.kl_divergence, kldiv.kld, kldiv.KLD, kldiv.kullback_leibler_divergence]
)
def test_functional_form_is_per_sample(kind, function):
    result = function(convert(kind, Y_TRUE), convert(kind, Y_PRED))
    check_type(kind, result, 1)
    assert_close(result, reference.keras_kl(Y_TRUE, Y_PRED), **F32)


@pytest.mark.parametrize("kind", ["numpy", "torch", "jax"])
@pytest.mark.parametrize("reduction", ["auto", "sum_over_batch_size", "sum", "none"])
def test_empty_batch(kind, reduction):
    """An empty batch: the sum is 0 and the mean reductions give 0 (tf_keras), never NaN."""
    empty = to_backend(kind, np.zeros((0, 3)), "float32")
    result = kldiv.KLDivergence(reduction=reduction)(empty, empty)
    expected = reference.reduce_weighted(np.zeros((0,)), None, reduction)
    assert_close(result, expected, rtol=0, atol=0)
