"""Differential conformance of ``kldiv.KLDivergence`` / ``kldiv.kl_divergence`` against the real tf_keras.

tf_keras (2.x, eager) gets ``tf.constant`` tensors, as ``compile``/``fit`` hands them to a loss (tf_keras
applies its y_true/y_pred rank fix-up to tensors only); kldiv gets NumPy arrays of the same values.
Every comparison checks the value, the shape and the dtype (kldiv returns ``y_pred``'s float dtype,
like tf_keras), and an input that tf_keras rejects must make kldiv raise ``ValueError`` naming both
shapes. Frameworks are imported at module top on purpose: the test extras install them, and a missing
one must fail loudly rather than skip.

Known, intended difference (SPEC §2: "float16 inputs accumulate in float32 and return the input dtype"):
tf_keras runs its float16 program in float16, where the clip bound ``1e-7`` rounds to ``1.19e-7`` and
``y_true / y_pred`` overflows to ``inf`` as soon as it exceeds 65504 (``KLDivergence()([[1, 0]], [[0, 1]])``
is ``inf`` in tf_keras float16 and 16.12 in kldiv). So float16 values are compared with tf_keras run in
float32 on the same values and rounded to float16 (kldiv's documented semantics), and with tf_keras'
own float16 program only where that program is well conditioned (every value in ``[2**-6, 1]``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import kldiv

TF_REDUCTIONS = ("auto", "none", "sum", "sum_over_batch_size")
FLOAT_DTYPES = (np.float16, np.float32, np.float64)
EPSILON = 1e-7  # tf_keras backend.epsilon()
# What tf_keras raises for an input it rejects in eager mode: InvalidArgumentError from the Squeeze or
# Mul op (sample_weight), ValueError from its own checks.
TF_ERRORS = (tf.errors.InvalidArgumentError, ValueError)

# Every case below costs a handful of ~2 ms eager tf_keras calls; 150 examples per test keep the module
# at a few seconds per test on a shared 2-core machine.
HYPOTHESIS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Tolerances: |kldiv - reference| <= ATOL + RTOL * |reference| + MRTOL * magnitude, where `magnitude` is
# the same reduction, with the same weight alignment, of |w| * sum(|t * log(t / p)|), computed by
# tf_keras in float64 (see `_magnitude`). A per-sample loss is a sum of signed terms and a reduced loss
# a sum of signed weighted losses; rounding errors scale with the sum of the absolute terms, not with a
# result that may have cancelled to ~0.
TOLERANCES = {
    # Same operation sequence as tf_keras (clip, divide, log, multiply, sum); only the summation order
    # (NumPy pairwise vs Eigen tree) and libm's vs Eigen's log differ: at most ~(log2(625) + 3) = 13 ulp
    # (u = 1.1e-16) of the magnitude for the <= 625 terms generated here, so 1e-13 of the magnitude.
    np.float64: (1e-15, 1e-12, 1e-13),
    # The same reasoning with u = 6e-8: 13 ulp of the magnitude is 8e-7 < 1e-6; rtol 1e-5 is the usual
    # float32 tolerance for one program evaluated by two libraries.
    np.float32: (1e-6, 1e-5, 1e-6),
    # kldiv computes float16 inputs in float32 and rounds once; the reference is tf_keras in float32 on
    # the same values, rounded to float16. The two float32 values agree to the float32 tolerance above,
    # so after rounding they may sit on neighbouring float16 values: 2 ulp of float16 (2 * 2**-10 ~ 2e-3)
    # relative, plus float16's smallest subnormal (6e-8) absolute, plus the float32 magnitude term.
    np.float16: (1e-7, 2e-3, 1e-6),
}
# kldiv vs tf_keras' own float16 program (well-conditioned inputs only): tf_keras rounds y_true to
# float16 and every op (divide, log, multiply, each addition) to float16 (u = 4.9e-4). With `magnitude`
# here the reduction of |w| * sum(t * (1 + |log(t / p)|)) (the error of log(t / p) is absolute, ~u,
# even where the log is ~0), a few ulp per term plus the float16 summation of up to 625 weighted
# losses: 1e-2 of that magnitude, 2 ulp relative, and 1e-3 absolute for results near 0.
FLOAT16_PROGRAM_TOLERANCE = (1e-3, 2e-3, 1e-2)

SPECIAL_VALUES = (0.0, 1.0, 1e-9, 1e-7, 1e-30, 0.5, 2.0, 1.5, -0.5, -1.0)
ELEMENTS = st.one_of(
    st.sampled_from(SPECIAL_VALUES),  # zeros, ones, > 1, negatives, tiny (1e-9), the clip bound itself
    st.floats(-1.0, 2.0),
    st.floats(1e-10, 1e-5),
)
WEIGHT_ELEMENTS = st.one_of(st.sampled_from((0.0, 1.0, 0.5, 2.0, -1.0)), st.floats(-2.0, 3.0))
# Python floats are drawn unrestricted in [-2, 3]: both libraries must convert them to float32 first
# (tf.convert_to_tensor), which a float64 comparison at 1e-12 would notice.
PYTHON_WEIGHTS = st.one_of(st.sampled_from((0.0, 1.0, 0.1, 2.0, -1.0)), st.floats(-2.0, 3.0))

VALID_WEIGHT_KINDS = (
    "none",  # sample_weight=None
    "python_scalar",  # a Python float
    "scalar_array",  # a 0-d array
    "batch",  # shape [batch]
    "loss_shape",  # the per-sample loss shape [batch, d0..dN-1]
    "loss_shape_trailing_1",  # [batch, d0..dN-1, 1] (tf_keras squeezes the trailing axis)
    "broadcastable",  # the loss shape with some axes set to 1
    "lower_rank_suffix",  # a trailing part of the loss shape (plain broadcasting, or expansion if rank-1)
    "one_rank_lower",  # the loss shape without its last axis (tf_keras expands a trailing axis)
)
INVALID_WEIGHT_KINDS = (
    "mismatched_axis",  # same rank as the loss, one axis neither equal nor 1: no broadcasting
    "trailing_not_one",  # one rank more than the loss with a trailing axis > 1: tf_keras cannot squeeze it
)


class Case(NamedTuple):
    reduction: str
    y_true: np.ndarray
    y_pred: np.ndarray
    sample_weight: Any
    weight_kind: str


# --------------------------------------------------------------------------------------------------
# tf_keras side


def _tf_weight(sample_weight: Any) -> Any:
    if sample_weight is None or isinstance(sample_weight, float):
        return sample_weight
    return tf.constant(sample_weight)


def tf_keras_loss(reduction: str, y_true: np.ndarray, y_pred: np.ndarray, sample_weight: Any = None) -> Any:
    """The real ``tf_keras.losses.KLDivergence`` on tensors, as a NumPy value."""
    loss = tf_keras.losses.KLDivergence(reduction=reduction)
    result = loss(tf.constant(y_true), tf.constant(y_pred), sample_weight=_tf_weight(sample_weight))
    return result.numpy()


def _abs_kl_terms(y_true: Any, y_pred: Any) -> Any:
    """tf_keras' kl_divergence program with every term made non-negative."""
    y_pred = tf.convert_to_tensor(y_pred)
    y_true = tf.clip_by_value(tf.cast(y_true, y_pred.dtype), EPSILON, 1.0)
    y_pred = tf.clip_by_value(y_pred, EPSILON, 1.0)
    return tf.reduce_sum(tf.abs(y_true * tf.math.log(y_true / y_pred)), axis=-1)


def _float16_error_terms(y_true: Any, y_pred: Any) -> Any:
    """sum(t * (1 + |log(t / p)|)): the scale of tf_keras' float16 rounding errors per sample."""
    y_pred = tf.convert_to_tensor(y_pred)
    y_true = tf.clip_by_value(tf.cast(y_true, y_pred.dtype), EPSILON, 1.0)
    y_pred = tf.clip_by_value(y_pred, EPSILON, 1.0)
    return tf.reduce_sum(y_true * (1.0 + tf.abs(tf.math.log(y_true / y_pred))), axis=-1)


def _magnitude(
    reduction: str, y_true: np.ndarray, y_pred: np.ndarray, sample_weight: Any, fn: Any = _abs_kl_terms
) -> np.ndarray:
    """The reduction of |w| * fn(y_true, y_pred) in float64, weighted and aligned by tf_keras itself."""
    loss = tf_keras.__internal__.losses.LossFunctionWrapper(fn, reduction=reduction)
    if sample_weight is not None:
        sample_weight = abs(sample_weight) if isinstance(sample_weight, float) else np.abs(sample_weight)
    result = loss(
        tf.constant(y_true.astype(np.float64)),
        tf.constant(y_pred.astype(np.float64)),
        sample_weight=_tf_weight(sample_weight),
    )
    return result.numpy()


# --------------------------------------------------------------------------------------------------
# assertions


def assert_close(actual: Any, expected: Any, magnitude: Any, tolerance: tuple, what: str) -> None:
    actual_64 = np.asarray(actual, dtype=np.float64)
    expected_64 = np.asarray(expected, dtype=np.float64)
    assert actual_64.shape == expected_64.shape, f"{what}: shape {actual_64.shape} != {expected_64.shape}"
    atol, rtol, mrtol = tolerance
    bound = atol + rtol * np.abs(expected_64) + mrtol * np.abs(np.asarray(magnitude, dtype=np.float64))
    same_infinity = np.isinf(expected_64) & (actual_64 == expected_64)  # float16 overflow on both sides
    ok = same_infinity | (np.abs(actual_64 - expected_64) <= bound)
    assert ok.all(), (
        f"{what}: kldiv {actual_64[~ok][:5]} vs reference {expected_64[~ok][:5]} "
        f"(max error {np.max(np.abs(actual_64 - expected_64)[~ok]):.3g}, bound {np.min(bound[~ok]):.3g})"
    )


def _loss_shape_without_weight(y_true: np.ndarray, y_pred: np.ndarray) -> tuple | None:
    """The per-sample loss shape tf_keras computes (None when the inputs themselves are rejected)."""
    try:
        return tuple(tf_keras_loss("none", y_true, y_pred).shape)
    except TF_ERRORS:
        return None


def assert_kldiv_raises_like_tf_keras(case: Case) -> None:
    """tf_keras rejected ``case``: kldiv raises ``ValueError``, naming both shapes if the weight is at
    fault (that is, if tf_keras accepts the same inputs without the weight)."""
    loss = kldiv.KLDivergence(reduction=case.reduction)
    with pytest.raises(ValueError) as info:
        loss(case.y_true, case.y_pred, sample_weight=case.sample_weight)
    assert type(info.value) is ValueError
    loss_shape = _loss_shape_without_weight(case.y_true, case.y_pred)
    if loss_shape is not None and isinstance(case.sample_weight, np.ndarray):
        message = str(info.value)
        assert str(tuple(case.sample_weight.shape)) in message, message
        assert str(loss_shape) in message, message


def _well_conditioned_for_float16(*arrays: np.ndarray) -> bool:
    """Every value in [2**-6, 1]: tf_keras' float16 program neither clips nor overflows (t/p <= 64)."""
    return all(bool(np.all((a >= 2.0**-6) & (a <= 1.0))) for a in arrays)


def check_against_tf_keras(case: Case) -> str:
    """Run tf_keras and kldiv on ``case`` and compare outcomes; returns the outcome (for ``event``)."""
    try:
        expected = tf_keras_loss(case.reduction, case.y_true, case.y_pred, case.sample_weight)
    except TF_ERRORS:
        assert_kldiv_raises_like_tf_keras(case)
        return "both raised"
    actual = kldiv.KLDivergence(reduction=case.reduction)(
        case.y_true, case.y_pred, sample_weight=case.sample_weight
    )
    assert isinstance(actual, (np.ndarray, np.generic)), type(actual)
    assert actual.dtype == expected.dtype == case.y_pred.dtype, (actual.dtype, expected.dtype)
    assert np.shape(actual) == np.shape(expected)
    magnitude = _magnitude(case.reduction, case.y_true, case.y_pred, case.sample_weight)
    if case.y_pred.dtype == np.float16:
        reference = tf_keras_loss(
            case.reduction,
            case.y_true.astype(np.float32),
            case.y_pred.astype(np.float32),
            case.sample_weight,
        ).astype(np.float16)
        assert_close(actual, reference, magnitude, TOLERANCES[np.float16], "float16 vs tf_keras float32")
        if _well_conditioned_for_float16(case.y_true, case.y_pred):
            scale = _magnitude(
                case.reduction, case.y_true, case.y_pred, case.sample_weight, fn=_float16_error_terms
            )
            assert_close(actual, expected, scale, FLOAT16_PROGRAM_TOLERANCE, "float16 vs tf_keras float16")
            return "both computed, float16 program compared"
    else:
        assert_close(actual, expected, magnitude, TOLERANCES[case.y_pred.dtype.type], "tf_keras")
    return "both computed"


# --------------------------------------------------------------------------------------------------
# strategies


@st.composite
def input_values(draw: Any, shape: tuple, dtype: Any) -> np.ndarray:
    x = draw(hnp.arrays(np.float64, shape, elements=ELEMENTS))
    if x.ndim and draw(st.booleans()):  # rows that are distributions along the last axis (the intended input)
        x = np.abs(x)
        total = x.sum(axis=-1, keepdims=True)
        x = np.divide(x, total, out=x.copy(), where=total > 0)
    return x.astype(dtype)


def _weight_shape(draw: Any, kind: str, loss_shape: tuple, batch: int) -> tuple:
    rank = len(loss_shape)
    if kind == "batch":
        return (batch,)
    if kind == "loss_shape":
        return loss_shape
    if kind == "loss_shape_trailing_1":
        return (*loss_shape, 1)
    if kind == "broadcastable":
        ones = draw(st.lists(st.booleans(), min_size=rank, max_size=rank))
        return tuple(1 if one else d for one, d in zip(ones, loss_shape, strict=True))
    if kind == "lower_rank_suffix" and rank >= 1:
        return loss_shape[draw(st.integers(1, rank)) :]
    if kind == "one_rank_lower" and rank >= 1:
        return loss_shape[:-1]
    if kind == "mismatched_axis":
        axes = [i for i, d in enumerate(loss_shape) if d != 1]
        if axes:
            axis = draw(st.sampled_from(axes))
            new = draw(st.sampled_from([m for m in range(2, 7) if m != loss_shape[axis]]))
            return (*loss_shape[:axis], new, *loss_shape[axis + 1 :])
        kind = "trailing_not_one"  # every axis is 1 (or the loss is a scalar): nothing to mismatch
    if kind == "trailing_not_one":
        return (*loss_shape, draw(st.integers(2, 5)))
    return ()  # "scalar_array", and the rank-dependent kinds on a scalar loss


@st.composite
def sample_weights(draw: Any, kind: str, loss_shape: tuple, batch: int) -> Any:
    if kind == "none":
        return None
    if kind == "python_scalar":
        return draw(PYTHON_WEIGHTS)
    shape = _weight_shape(draw, kind, loss_shape, batch)
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    return draw(hnp.arrays(np.float64, shape, elements=WEIGHT_ELEMENTS)).astype(dtype)


@st.composite
def kl_cases(draw: Any, weight_kinds: tuple = VALID_WEIGHT_KINDS, reductions: tuple = TF_REDUCTIONS) -> Case:
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    true_dtype = draw(st.one_of(st.just(dtype), st.sampled_from(FLOAT_DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5))
    true_shape = shape
    if draw(st.integers(0, 3)) == 0:  # y_true broadcast against y_pred (some axes of size 1)
        ones = draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)))
        true_shape = tuple(1 if one else d for one, d in zip(ones, shape, strict=True))
    y_pred = draw(input_values(shape, dtype))
    y_true = draw(input_values(true_shape, true_dtype))
    kind = draw(st.sampled_from(weight_kinds))
    weight = draw(sample_weights(kind, shape[:-1], shape[0]))
    return Case(draw(st.sampled_from(reductions)), y_true, y_pred, weight, kind)


# --------------------------------------------------------------------------------------------------
# hypothesis: the differential tests


@pytest.mark.parametrize("weight_kind", VALID_WEIGHT_KINDS)
@settings(HYPOTHESIS, max_examples=30)  # x 9 kinds = 270 cases
@given(data=st.data())
def test_matches_tf_keras(weight_kind: str, data: st.DataObject) -> None:
    """Every reduction, dtype, shape (0-size included) with each valid sample_weight kind.

    "Valid" as the tf_keras docs describe them; tf_keras' code still rejects some (a [batch] weight on a
    loss of rank >= 3, or on a scalar loss), and there kldiv must raise ValueError as well.
    """
    case = data.draw(kl_cases(weight_kinds=(weight_kind,)), label="case")
    event(check_against_tf_keras(case))


@pytest.mark.parametrize("weight_kind", INVALID_WEIGHT_KINDS)
@settings(HYPOTHESIS, max_examples=75)  # x 2 kinds = 150 cases
@given(data=st.data())
def test_invalid_sample_weight_raises_like_tf_keras(weight_kind: str, data: st.DataObject) -> None:
    """tf_keras raises InvalidArgumentError (from its Squeeze or Mul op); kldiv raises ValueError naming
    both shapes (the weight's and the per-sample loss')."""
    case = data.draw(kl_cases(weight_kinds=(weight_kind,)), label="case")
    with pytest.raises(TF_ERRORS):
        tf_keras_loss(case.reduction, case.y_true, case.y_pred, case.sample_weight)
    loss = kldiv.KLDivergence(reduction=case.reduction)
    with pytest.raises(ValueError) as info:
        loss(case.y_true, case.y_pred, sample_weight=case.sample_weight)
    assert type(info.value) is ValueError
    message = str(info.value)
    assert str(tuple(case.sample_weight.shape)) in message, message
    assert str(tuple(case.y_pred.shape[:-1])) in message, message


@st.composite
def float16_program_cases(draw: Any) -> Case:
    """float16 inputs on which tf_keras' own float16 program is accurate: every value in [2**-6, 1]."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    values = st.one_of(st.sampled_from((1.0, 0.5, 2.0**-6)), st.floats(2.0**-6, 1.0))
    y_true, y_pred = (
        draw(hnp.arrays(np.float64, shape, elements=values)).astype(np.float16) for _ in range(2)
    )
    kind = draw(st.sampled_from(VALID_WEIGHT_KINDS))
    weight = draw(sample_weights(kind, shape[:-1], shape[0]))
    return Case(draw(st.sampled_from(TF_REDUCTIONS)), y_true, y_pred, weight, kind)


@settings(HYPOTHESIS, max_examples=100)
@given(case=float16_program_cases())
def test_float16_matches_tf_keras_float16_program(case: Case) -> None:
    """float16 in, float16 out; where tf_keras' float16 program is accurate, within its rounding."""
    event(check_against_tf_keras(case))


@st.composite
def rank_mismatch_cases(draw: Any) -> Case:
    """y_true and y_pred whose ranks differ by one, with or without a trailing axis of size 1."""
    dtype = draw(st.sampled_from((np.float32, np.float64)))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4))
    extra = draw(st.sampled_from((1, 1, 1, 2, 3)))  # mostly the squeezable trailing 1
    longer, shorter = (*shape, extra), shape
    if draw(st.booleans()):  # the shorter one may also lose its own last axis instead
        longer, shorter = shape, shape[:-1]
    true_shape, pred_shape = (longer, shorter) if draw(st.booleans()) else (shorter, longer)
    y_true = draw(input_values(true_shape, dtype))
    y_pred = draw(input_values(pred_shape, dtype))
    kind = draw(st.sampled_from(("none", "python_scalar", "scalar_array", "batch")))
    weight = draw(sample_weights(kind, pred_shape[:-1], pred_shape[0] if pred_shape else 1))
    return Case(draw(st.sampled_from(TF_REDUCTIONS)), y_true, y_pred, weight, kind)


@HYPOTHESIS
@given(case=rank_mismatch_cases())
def test_rank_mismatch_matches_tf_keras(case: Case) -> None:
    """tf_keras' y_true/y_pred rank fix-up (squeeze a trailing 1 of the longer one), or its error."""
    event(check_against_tf_keras(case))


@st.composite
def function_cases(draw: Any) -> tuple[np.ndarray, np.ndarray]:
    dtype = draw(st.sampled_from((np.float32, np.float64)))
    true_dtype = draw(st.one_of(st.just(dtype), st.sampled_from(FLOAT_DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5))
    ones = draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)))
    true_shape = tuple(1 if one else d for one, d in zip(ones, shape, strict=True))
    return draw(input_values(true_shape, true_dtype)), draw(input_values(shape, dtype))


@settings(HYPOTHESIS, max_examples=100)
@given(case=function_cases())
def test_kl_divergence_function_matches_tf_keras(case: tuple[np.ndarray, np.ndarray]) -> None:
    """The per-sample function (and its aliases) against ``tf_keras.losses.kl_divergence``."""
    y_true, y_pred = case
    expected = tf_keras.losses.kl_divergence(tf.constant(y_true), tf.constant(y_pred)).numpy()
    magnitude = _abs_kl_terms(tf.constant(y_true.astype(np.float64)), tf.constant(y_pred.astype(np.float64)))
    for function in (kldiv.kl_divergence, kldiv.kld, kldiv.KLD, kldiv.kullback_leibler_divergence):
        actual = function(y_true, y_pred)
        assert isinstance(actual, (np.ndarray, np.generic))
        assert actual.dtype == expected.dtype == y_pred.dtype
        assert_close(actual, expected, magnitude.numpy(), TOLERANCES[y_pred.dtype.type], function.__name__)


# --------------------------------------------------------------------------------------------------
# named edge cases


SEED_TRUE = np.array([[0.0, 1.0], [0.0, 0.0]], dtype=np.float32)
SEED_PRED = np.array([[0.6, 0.4], [0.4, 0.6]], dtype=np.float32)


def test_seed_examples_match_tf_keras() -> None:
    """The five numbers of SPEC §1 (the tf.keras API pages), from tf_keras and kldiv, float32."""
    # (reduction, y_true, y_pred, sample_weight, documented number, one unit of its last printed digit:
    # the API pages truncate rather than round, e.g. 0.36652 is printed 0.366)
    examples = [
        ("auto", np.array([0.4, 0.9, 0.2], np.float32), np.array([0.5, 0.8, 0.12], np.float32), None,
         0.11891246, 1e-8),
        ("auto", SEED_TRUE, SEED_PRED, None, 0.458, 1e-3),
        ("auto", SEED_TRUE, SEED_PRED, np.array([0.8, 0.2], np.float32), 0.366, 1e-3),
        ("sum", SEED_TRUE, SEED_PRED, None, 0.916, 1e-3),
        ("none", SEED_TRUE, SEED_PRED, None, [0.916, -3.08e-06], [1e-3, 1e-8]),
    ]  # fmt: skip
    for reduction, y_true, y_pred, weight, documented, printed in examples:
        expected = tf_keras_loss(reduction, y_true, y_pred, weight)
        actual = kldiv.KLDivergence(reduction=reduction)(y_true, y_pred, sample_weight=weight)
        assert actual.dtype == expected.dtype == np.float32
        assert np.shape(actual) == np.shape(expected) == np.shape(documented)
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-9)  # float32, a few ulp
        for value in (expected, actual):
            assert np.all(np.abs(np.asarray(value, np.float64) - documented) < printed), (value, documented)
    # the per-sample function gives the NONE row too
    per_sample = kldiv.kl_divergence(SEED_TRUE, SEED_PRED)
    assert np.all(np.abs(per_sample - np.array([0.916, -3.08e-06])) < [1e-3, 1e-8]), per_sample


@pytest.mark.parametrize("reduction", TF_REDUCTIONS)
@pytest.mark.parametrize("shape", [(0, 3), (0,), (0, 2, 3), (2, 0, 3), (3, 0)])
def test_empty_batch_is_zero(reduction: str, shape: tuple) -> None:
    """An empty loss reduces to 0 (never NaN), as tf_keras' divide_no_nan does; NONE stays empty."""
    y = np.zeros(shape, np.float32)
    loss_shape = shape[:-1]
    for weight in (None, 2.0, np.ones(loss_shape, np.float32), np.ones(loss_shape[:1], np.float32)):
        expected = tf_keras_loss(reduction, y, y, weight)
        actual = kldiv.KLDivergence(reduction=reduction)(y, y, sample_weight=weight)
        assert actual.dtype == expected.dtype == np.float32
        assert np.shape(actual) == np.shape(expected)
        if reduction == "none":
            np.testing.assert_array_equal(actual, expected)
        else:
            assert np.shape(actual) == ()
            assert float(actual) == float(expected)
            if math.prod(shape) == 0:
                assert float(actual) == 0.0


@pytest.mark.parametrize("int_dtype", [np.int32, np.int64])
def test_integer_y_pred_raises_type_error(int_dtype: Any) -> None:
    """tf_keras cannot clip an integer y_pred with a float epsilon: TypeError; kldiv raises TypeError."""
    y_true = np.array([[0.5, 0.5]], np.float32)
    y_pred = np.array([[1, 0]], int_dtype)
    with pytest.raises(TypeError):
        tf_keras_loss("auto", y_true, y_pred)
    with pytest.raises(TypeError):
        tf_keras.losses.kl_divergence(tf.constant(y_true), tf.constant(y_pred))
    with pytest.raises(TypeError):
        kldiv.KLDivergence()(y_true, y_pred)
    with pytest.raises(TypeError):
        kldiv.kl_divergence(y_true, y_pred)
    # an integer y_true is fine in both: it is cast to y_pred's dtype
    y_int_true = np.array([[0, 1]], int_dtype)
    y_float_pred = np.array([[0.3, 0.7]], np.float32)
    expected = tf_keras_loss("auto", y_int_true, y_float_pred)
    actual = kldiv.KLDivergence()(y_int_true, y_float_pred)
    assert actual.dtype == expected.dtype == np.float32
    np.testing.assert_allclose(actual, expected, rtol=1e-6)


@pytest.mark.parametrize("reduction", ["avg", "SUM", "Sum_Over_Batch_Size", "", "batch", 1, 0.5])
def test_unknown_reduction_raises_value_error(reduction: Any) -> None:
    """An unknown reduction raises ValueError at construction, in tf_keras and in kldiv."""
    with pytest.raises(ValueError):
        tf_keras.losses.KLDivergence(reduction=reduction)
    with pytest.raises(ValueError) as info:
        kldiv.KLDivergence(reduction=reduction)
    assert "reduction" in str(info.value)


@pytest.mark.parametrize("reduction", TF_REDUCTIONS)
@pytest.mark.parametrize("batch", [1, 3])
def test_rank_fixup_y_pred_trailing_one(reduction: str, batch: int) -> None:
    """y_pred [B, 1] with y_true [B]: tf_keras squeezes y_pred (the loss becomes a scalar)."""
    rng = np.random.default_rng(batch)
    y_true = rng.random(batch).astype(np.float32)
    y_pred = rng.random((batch, 1)).astype(np.float32)
    for weight in (None, 0.5, np.array(2.0, np.float32)):
        case = Case(reduction, y_true, y_pred, weight, "named")
        assert check_against_tf_keras(case) == "both computed"
        assert np.shape(kldiv.KLDivergence(reduction=reduction)(y_true, y_pred, sample_weight=weight)) == ()


@pytest.mark.parametrize("reduction", TF_REDUCTIONS)
@pytest.mark.parametrize("batch", [1, 3])
def test_rank_fixup_y_true_trailing_one(reduction: str, batch: int) -> None:
    """y_true [B, 1] with y_pred [B]: tf_keras squeezes y_true (the loss becomes a scalar)."""
    rng = np.random.default_rng(10 + batch)
    y_true = rng.random((batch, 1)).astype(np.float32)
    y_pred = rng.random(batch).astype(np.float32)
    for weight in (None, 0.5, np.array(2.0, np.float32)):
        case = Case(reduction, y_true, y_pred, weight, "named")
        assert check_against_tf_keras(case) == "both computed"
        assert np.shape(kldiv.KLDivergence(reduction=reduction)(y_true, y_pred, sample_weight=weight)) == ()


def test_rank_fixup_with_time_axis() -> None:
    """[B, T, 1] against [B, T] in both orders, with a [B] weight (expanded to [B, 1] by tf_keras)."""
    rng = np.random.default_rng(7)
    longer = rng.random((2, 3, 1)).astype(np.float32)
    shorter = rng.random((2, 3)).astype(np.float32)
    weight = np.array([0.25, 2.0], np.float32)
    for reduction in TF_REDUCTIONS:
        assert check_against_tf_keras(Case(reduction, longer, shorter, weight, "named")) == "both computed"
        assert check_against_tf_keras(Case(reduction, shorter, longer, weight, "named")) == "both computed"


@pytest.mark.parametrize("reduction", TF_REDUCTIONS)
def test_float64_inputs_keep_float64(reduction: str) -> None:
    """float64 in, float64 out, at float64 precision (Python-float weights go through float32 in both)."""
    rng = np.random.default_rng(3)
    y_true = rng.dirichlet(np.ones(4), size=(3, 2))
    y_pred = rng.dirichlet(np.ones(4), size=(3, 2))
    y_true[0, 0, 0] = 0.0
    y_pred[1, 1, 2] = 1e-9
    for weight in (None, 0.1, np.array([0.1, 0.2, 0.3]), rng.random((3, 2)).astype(np.float32)):
        expected = tf_keras_loss(reduction, y_true, y_pred, weight)
        actual = kldiv.KLDivergence(reduction=reduction)(y_true, y_pred, sample_weight=weight)
        assert actual.dtype == expected.dtype == np.float64
        magnitude = _magnitude(reduction, y_true, y_pred, weight)
        assert_close(actual, expected, magnitude, TOLERANCES[np.float64], "float64")
    assert kldiv.kl_divergence(y_true, y_pred).dtype == np.float64


@pytest.mark.parametrize(
    "reduction, name",
    [("auto", "kl_divergence"), ("sum", "my_kl"), ("none", "kl"), ("sum_over_batch_size", "x")],
)
def test_config_round_trip_keys_match_tf_keras(reduction: str, name: str) -> None:
    """get_config/from_config: the keys tf_keras has are there with equal values; nothing is lost.

    tf_keras' config also has ``"fn": "kl_divergence"`` (LossFunctionWrapper under saving v3), an
    implementation detail kldiv does not copy; kldiv adds its option keys (formats, epsilon, axis, ...).
    """
    tf_config = tf_keras.losses.KLDivergence(reduction=reduction, name=name).get_config()
    loss = kldiv.KLDivergence(reduction=reduction, name=name)
    config = loss.get_config()
    shared = {"reduction", "name"}
    assert shared <= set(tf_config) and shared <= set(config)
    assert set(tf_config) - set(config) <= {"fn"}, set(tf_config) - set(config)
    for key in shared:
        assert config[key] == tf_config[key], key
    # the round trip loses nothing and gives an equal, equally behaving loss
    restored = kldiv.KLDivergence.from_config(config)
    assert restored == loss
    assert restored.get_config() == config
    # each library accepts the other's shared keys
    shared_config = {key: tf_config[key] for key in shared}
    assert kldiv.KLDivergence.from_config(dict(shared_config)) == loss
    assert tf_keras.losses.KLDivergence.from_config({k: config[k] for k in shared}).get_config() == tf_config
    np.testing.assert_allclose(
        restored(SEED_TRUE, SEED_PRED), tf_keras_loss(reduction, SEED_TRUE, SEED_PRED), rtol=1e-6, atol=1e-9
    )
