"""Dtype rules: float16 / bfloat16 accumulate in float32 and come back in their own dtype; float64
stays float64; Python lists become float32; integer ``y_pred`` is a ``TypeError``; ``dtype=`` casts.

Low-precision results are compared with the float64 oracle applied to the inputs *after* rounding to
the low-precision dtype (what kldiv actually receives): the error must be at most ``1e-3`` relative
plus one unit in the last place of the output dtype (the unavoidable final rounding).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch

import kldiv
from kldiv.testing import assert_close, reference, to_numpy, ulp

from .helpers import dtype_name, is_backend_array, to_backend

LOW_PRECISION = [
    ("torch", "float16"),
    ("torch", "bfloat16"),
    ("jax", "float16"),
    ("jax", "bfloat16"),
    ("numpy", "float16"),
    ("numpy", "bfloat16"),
]


def vocabulary_inputs(seed: int = 0, rows: int = 4, vocab: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Nearby distributions over a large vocabulary: many tiny terms, a small divergence."""
    rng = np.random.default_rng(seed)
    t = rng.dirichlet(np.ones(vocab), size=rows)
    p = t * np.exp(0.1 * rng.normal(size=t.shape))
    return t, p / p.sum(-1, keepdims=True)


def assert_low_precision_close(result: object, expected: np.ndarray, dtype: str) -> None:
    actual = to_numpy(result).astype(np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    allowed = 1e-3 * np.abs(expected) + np.vectorize(lambda x: ulp(x, dtype))(expected) + 1e-12
    error = np.abs(actual - expected)
    assert np.all(error <= allowed), (
        f"{dtype}: max error {error.max():.3g} (allowed {allowed[np.argmax(error)]:.3g}) at "
        f"{np.unravel_index(np.argmax(error), error.shape)}; actual {actual}, expected {expected}"
    )


def assert_close_to_float32_or_rounded_inputs(result, t, p, backend: str, dtype: str) -> None:
    """Within the low-precision bound of the float64 oracle on the float32 inputs, or on the inputs
    rounded to ``dtype`` (both are float32 arithmetic; low-precision arithmetic is neither)."""
    from_float32 = reference.keras_kl(
        rounded(backend, to_backend(backend, t, "float32")),
        rounded(backend, to_backend(backend, p, "float32")),
    )
    from_rounded = reference.keras_kl(
        rounded(backend, to_backend(backend, t, dtype)), rounded(backend, to_backend(backend, p, dtype))
    )
    try:
        assert_low_precision_close(result, from_float32, dtype)
    except AssertionError:
        assert_low_precision_close(result, from_rounded, dtype)


def rounded(backend: str, x: object) -> np.ndarray:
    return to_numpy(x).astype(np.float64)


@pytest.mark.parametrize(("backend", "dtype"), LOW_PRECISION)
@pytest.mark.parametrize("epsilon", [1e-7, 0.0])
def test_low_precision_function(backend, dtype, epsilon):
    t, p = vocabulary_inputs()
    y_true, y_pred = to_backend(backend, t, dtype), to_backend(backend, p, dtype)
    result = kldiv.kl_divergence(y_true, y_pred, epsilon=epsilon)
    assert is_backend_array(backend, result)
    assert dtype_name(result) == dtype
    expected = reference.kl_divergence(rounded(backend, y_true), rounded(backend, y_pred), epsilon=epsilon)
    assert_low_precision_close(result, expected, dtype)


@pytest.mark.parametrize(("backend", "dtype"), LOW_PRECISION)
@pytest.mark.parametrize("reduction", ["auto", "sum", "none"])
def test_low_precision_loss_object(backend, dtype, reduction):
    t, p = vocabulary_inputs(1, rows=8, vocab=512)
    weight = np.linspace(0.5, 1.5, 8)
    y_true, y_pred = to_backend(backend, t, dtype), to_backend(backend, p, dtype)
    w = to_backend(backend, weight, dtype)
    result = kldiv.KLDivergence(reduction=reduction)(y_true, y_pred, sample_weight=w)
    assert is_backend_array(backend, result) and dtype_name(result) == dtype
    per_sample = reference.keras_kl(rounded(backend, y_true), rounded(backend, y_pred))
    expected = reference.reduce_weighted(per_sample, rounded(backend, w), reduction)
    assert_low_precision_close(result, expected, dtype)


def test_bfloat16_is_not_accumulated_in_bfloat16():
    """The naive bfloat16 program misses the 1e-3 bound on these inputs; kldiv must not."""
    t, p = vocabulary_inputs()
    y_true, y_pred = torch.tensor(t, dtype=torch.bfloat16), torch.tensor(p, dtype=torch.bfloat16)
    expected = reference.keras_kl(rounded("torch", y_true), rounded("torch", y_pred))
    clipped_t, clipped_p = y_true.clamp(1e-7, 1), y_pred.clamp(1e-7, 1)
    naive = (clipped_t * torch.log(clipped_t / clipped_p)).sum(-1)
    with pytest.raises(AssertionError):
        assert_low_precision_close(naive, expected, "bfloat16")
    assert_low_precision_close(kldiv.kl_divergence(y_true, y_pred), expected, "bfloat16")


@pytest.mark.parametrize(("backend", "dtype"), [("torch", "float16"), ("torch", "bfloat16")])
def test_low_precision_gradient_keeps_dtype(backend, dtype):
    t, p = vocabulary_inputs(2, rows=3, vocab=64)
    y_pred = to_backend(backend, p, dtype).requires_grad_()
    loss = kldiv.KLDivergence(reduction="sum")(to_backend(backend, t, dtype), y_pred)
    assert loss.dtype == getattr(torch, dtype)
    loss.backward()
    assert y_pred.grad.dtype == getattr(torch, dtype)
    expected = reference.keras_gradient(
        rounded(backend, to_backend(backend, t, dtype)), rounded(backend, y_pred), count=1
    )
    assert_close(y_pred.grad, expected, rtol=1e-2, atol=0)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_float64_stays_float64(backend):
    t, p = vocabulary_inputs(3, rows=3, vocab=10)
    y_true, y_pred = to_backend(backend, t, "float64"), to_backend(backend, p, "float64")
    result = kldiv.kl_divergence(y_true, y_pred)
    assert dtype_name(result) == "float64"
    assert_close(result, reference.keras_kl(t, p), rtol=1e-13, atol=1e-16)
    loss = kldiv.KLDivergence()(y_true, y_pred, sample_weight=to_backend(backend, [1.0, 2.0, 3.0], "float64"))
    assert dtype_name(loss) == "float64"
    assert_close(
        loss, reference.reduce_weighted(reference.keras_kl(t, p), [1.0, 2.0, 3.0]), rtol=1e-13, atol=0
    )


def test_float64_stays_float64_in_jax_with_x64():
    t, p = vocabulary_inputs(3, rows=3, vocab=10)
    with jax.enable_x64(True):
        result = kldiv.kl_divergence(jnp.asarray(t), jnp.asarray(p), epsilon=0)
        assert result.dtype == jnp.float64
        assert_close(result, reference.exact_kl(t, p), rtol=1e-13, atol=1e-16)


def test_python_lists_become_float32():
    y_true, y_pred = [[0.1, 0.9], [0.5, 0.5]], [[0.3, 0.7], [0.2, 0.8]]
    result = kldiv.kl_divergence(y_true, y_pred)
    assert isinstance(result, np.ndarray) and result.dtype == np.float32
    expected = reference.keras_kl(np.float32(y_true), np.float32(y_pred))
    assert_close(result, expected, rtol=2e-6, atol=1e-8)
    assert kldiv.KLDivergence()(y_true, y_pred).dtype == np.float32
    # integer targets are cast to the prediction's dtype
    assert kldiv.kl_divergence([[0, 1]], [[0.25, 0.75]]).dtype == np.float32


def test_targets_follow_the_prediction_dtype():
    t, p = vocabulary_inputs(4, rows=2, vocab=5)
    assert kldiv.kl_divergence(t.astype(np.float64), p.astype(np.float32)).dtype == np.float32
    assert kldiv.kl_divergence(t.astype(np.float32), p.astype(np.float64)).dtype == np.float64
    result = kldiv.kl_divergence(torch.tensor(t, dtype=torch.float64), torch.tensor(p, dtype=torch.float32))
    assert result.dtype == torch.float32


@pytest.mark.parametrize(
    "y_pred",
    [
        np.array([[0, 1], [1, 0]]),
        [[0, 1], [1, 0]],
        torch.tensor([[0, 1], [1, 0]]),
        jnp.asarray([[0, 1], [1, 0]]),
        np.array([[True, False], [False, True]]),
    ],
    ids=["numpy-int", "list-int", "torch-int", "jax-int", "numpy-bool"],
)
def test_integer_prediction_is_a_type_error_naming_y_pred(y_pred):
    with pytest.raises(TypeError, match="y_pred"):
        kldiv.kl_divergence([[0.5, 0.5], [0.5, 0.5]], y_pred)
    with pytest.raises(TypeError, match="y_pred"):
        kldiv.KLDivergence()([[0.5, 0.5], [0.5, 0.5]], y_pred)


@pytest.mark.parametrize("dtype", ["float64", np.float64, torch.float64])
def test_dtype_option_casts_to_float64(dtype):
    t, p = vocabulary_inputs(5, rows=3, vocab=7)
    t32, p32 = t.astype(np.float32), p.astype(np.float32)
    for y_true, y_pred in ((t32, p32), (torch.tensor(t32), torch.tensor(p32)), (t32.tolist(), p32.tolist())):
        result = kldiv.kl_divergence(y_true, y_pred, dtype=dtype)
        assert dtype_name(result) == "float64"
        # computed in float64 from the float32 values: far tighter than float32 arithmetic
        assert_close(result, reference.keras_kl(t32, p32), rtol=1e-13, atol=1e-16)


def test_dtype_option_casts_integer_prediction():
    result = kldiv.kl_divergence([[0.5, 0.5]], [[1, 0]], dtype="float64", epsilon=0)
    assert result.dtype == np.float64 and np.isinf(result[0])
    result = kldiv.KLDivergence(dtype="float32")([[0.5, 0.5]], np.array([[1, 1]]))
    assert result.dtype == np.float32
    assert_close(result, reference.keras_kl([[0.5, 0.5]], [[1.0, 1.0]]).mean(), rtol=1e-6, atol=0)


CAST_DOWN = [(backend, dtype) for backend in ("numpy", "torch", "jax") for dtype in ("float16", "bfloat16")]


@pytest.mark.parametrize(("backend", "dtype"), CAST_DOWN)
def test_dtype_option_low_precision_accumulates_in_float32(backend, dtype):
    """float32 inputs with ``dtype="float16"``/``"bfloat16"``: whether or not the inputs are rounded to
    ``dtype`` first, the arithmetic must be float32 ("always computed in float32 and rounded once at
    the end", ``kldiv.Options``), so the result is within the bound of one of the two oracles."""
    t, p = vocabulary_inputs(6, rows=3, vocab=300)
    y_true, y_pred = to_backend(backend, t, "float32"), to_backend(backend, p, "float32")
    result = kldiv.kl_divergence(y_true, y_pred, dtype=dtype)
    assert is_backend_array(backend, result) and dtype_name(result) == dtype
    assert_close_to_float32_or_rounded_inputs(result, t, p, backend, dtype)


@pytest.mark.parametrize(("backend", "dtype"), CAST_DOWN)
def test_dtype_option_casts_inputs_first(backend, dtype):
    """``dtype``: "a dtype name that both inputs are cast to first (as the Keras 3 loss ``dtype``)":
    the same result as inputs given in ``dtype``, i.e. the oracle on the rounded inputs."""
    t, p = vocabulary_inputs(6, rows=3, vocab=300)
    result = kldiv.kl_divergence(
        to_backend(backend, t, "float32"), to_backend(backend, p, "float32"), dtype=dtype
    )
    assert dtype_name(result) == dtype
    y_true, y_pred = to_backend(backend, t, dtype), to_backend(backend, p, dtype)
    expected = reference.keras_kl(rounded(backend, y_true), rounded(backend, y_pred))
    assert_low_precision_close(result, expected, dtype)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_numba_backend_serves_low_precision_dtype_option(dtype):
    """``kldiv.kernels.dispatch``: "float16 / bfloat16 are computed as float32" by the kernel, so
    ``backend="numba"`` must serve float32 NumPy inputs with ``dtype="float16"``/``"bfloat16"``."""
    t, p = vocabulary_inputs(7, rows=3, vocab=50)
    t32, p32 = t.astype(np.float32), p.astype(np.float32)
    result = kldiv.kl_divergence(t32, p32, dtype=dtype, backend="numba")
    assert dtype_name(result) == dtype
    assert_close_to_float32_or_rounded_inputs(result, t32, p32, "numpy", dtype)
    native = kldiv.kl_divergence(
        to_backend("numpy", t32, dtype), to_backend("numpy", p32, dtype), backend="numba"
    )
    assert dtype_name(native) == dtype
    expected = reference.keras_kl(
        rounded("numpy", to_backend("numpy", t32, dtype)), rounded("numpy", to_backend("numpy", p32, dtype))
    )
    assert_low_precision_close(native, expected, dtype)


@pytest.mark.parametrize(("backend", "dtype"), CAST_DOWN)
@pytest.mark.parametrize("fmt", ["probs", "log_probs"])
def test_validate_accepts_valid_inputs_with_low_precision_dtype_option(backend, dtype, fmt):
    """``validate=True`` allows rows of a low-precision dtype to sum to 1 within that dtype's
    tolerance (``kldiv._validate``: 1e-2 for float16, 3e-2 for bfloat16)."""
    t, p = vocabulary_inputs(8, rows=3, vocab=40)
    if fmt == "log_probs":
        t, p = np.log(t), np.log(p)
    y_true, y_pred = to_backend(backend, t, "float32"), to_backend(backend, p, "float32")
    options = {"y_true_format": fmt, "y_pred_format": fmt, "validate": True, "dtype": dtype}
    result = kldiv.kl_divergence(y_true, y_pred, **options)
    assert dtype_name(result) == dtype
    native = kldiv.kl_divergence(to_backend(backend, t, dtype), to_backend(backend, p, dtype), **options)
    assert dtype_name(native) == dtype


def test_numpy_bfloat16_is_ml_dtypes():
    assert to_backend("numpy", [0.5], "bfloat16").dtype == ml_dtypes.bfloat16


def test_dtype_names_are_remembered_per_type_and_dtype():
    """:func:`kldiv._namespace.dtype_name` remembers names per (type, dtype): dtypes that compare
    equal across types (NumPy's to Python types and strings) keep their own names, and dtype-like
    objects that cannot be hashed are still named."""
    import ml_dtypes
    import torch

    from kldiv._namespace import dtype_name as name_of

    class Unhashable:
        __hash__ = None
        name = "float32"

    for _ in range(2):  # the second round reads what the first remembered
        assert name_of(np.dtype("float64")) == "float64" and np.dtype("float64") == float
        assert name_of(float) == "float"
        assert name_of(np.float32) == name_of(np.dtype(np.float32)) == "float32"
        assert name_of(torch.bfloat16) == name_of(ml_dtypes.bfloat16) == "bfloat16"
        assert name_of(torch.float16) == "float16"
        assert name_of(Unhashable()) == "float32"
