"""Every bad input gets a clear error (or, where Keras returns a value, a warning) naming its argument."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import kldiv
import kldiv.torch

GOOD = [[0.4, 0.6], [0.5, 0.5]]

BAD_INPUTS = [
    ("None", None, TypeError, "an array or a (nested) list of numbers", "None"),
    ("string", "0.4, 0.6", TypeError, "an array or a (nested) list of numbers", "'0.4, 0.6'"),
    ("dict", {"p": [0.4, 0.6]}, TypeError, "an array or a (nested) list of numbers", "{'p'"),
    ("set", {0.4, 0.6}, TypeError, "an array or a (nested) list of numbers", "0.4"),
    ("ragged", [[0.4, 0.6], [1.0]], ValueError, "rectangular", "[[0.4, 0.6], [1.0]]"),
    ("strings", [["a", "b"], ["c", "d"]], TypeError, "list of numbers", "'a'"),
    ("object", np.array([[0.4, None], [0.5, 0.5]], dtype=object), TypeError, "real numbers", "object"),
    ("complex", np.array([[0.4 + 1j, 0.6], [0.5, 0.5]]), TypeError, "real numbers", "complex128"),
    ("complex torch", torch.tensor([[0.4 + 1j, 0.6], [0.5, 0.5]]), TypeError, "real numbers", "complex64"),
    (
        "datetime",
        np.array([["2020-01-01", "2020-01-02"]] * 2, dtype="datetime64[D]"),
        TypeError,
        "real",
        "date",
    ),
]


@pytest.mark.parametrize("argument", ["y_true", "y_pred"])
@pytest.mark.parametrize(
    ("case", "value", "error", "expected", "received"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_names_its_argument(argument, case, value, error, expected, received):
    inputs = {"y_true": GOOD, "y_pred": GOOD, argument: value}
    for call in (kldiv.KLDivergence(), kldiv.kl_divergence, kldiv.JSDivergence()):
        with pytest.raises(error) as info:
            call(inputs["y_true"], inputs["y_pred"])
        message = str(info.value)
        assert message.startswith(f"Argument `{argument}`: expected"), message
        assert expected in message and received in message, message


def test_scalar_inputs_say_a_distribution_axis_is_needed():
    with pytest.raises(ValueError, match=r"Argument `y_pred`: expected an array with a distribution axis"):
        kldiv.KLDivergence()(0.5, 0.5)


def test_size_one_distribution_axis_warns_and_keeps_the_keras_value():
    """Keras returns t·log(t/p) per one-outcome 'distribution'; kldiv returns the same and warns."""
    t, p = np.array([[0.4], [0.6]], np.float32), np.array([[0.5], [0.5]], np.float32)
    with pytest.warns(UserWarning, match=r"`y_pred`: the distribution axis \(axis=-1\) has size 1"):
        value = kldiv.KLDivergence(reduction="none")(t, p)
    np.testing.assert_allclose(value, (t * np.log(t / p))[:, 0], rtol=1e-6)


COUNTS = np.array([[3.0, 5.0, 2.0], [1.0, 1.0, 8.0]], np.float32)
PROBS = np.array([[0.3, 0.5, 0.2], [0.1, 0.1, 0.8]], np.float32)
OUTSIDE = r"probabilities outside \[0, 1\]"


def _large(outside_row: int | None, rows: int = 64, n: int = 1000, value: float = 2.0) -> np.ndarray:
    """Probabilities big enough for the kernel (``backend="auto"``), one entry set to ``value``."""
    x = np.random.default_rng(rows).dirichlet(np.ones(n), rows).astype(np.float32)
    if outside_row is not None:
        x[outside_row, 7] = value
    return x


@pytest.mark.parametrize("backend", ["core", "numba", "auto"])
@pytest.mark.parametrize("value", [2.0, -0.25])
@pytest.mark.parametrize("side", ["y_true", "y_pred"])
def test_probabilities_outside_the_unit_interval_warn_on_every_path(backend, value, side):
    """Keras' clip is kept (the value equals Keras'), with a warning naming the argument."""
    inside = _large(None)
    outside = _large(5, value=value)
    t, p = (outside, inside) if side == "y_true" else (inside, outside)
    for direction in ("forward", "reverse"):
        loss = kldiv.KLDivergence(backend=backend, direction=direction)
        with pytest.warns(UserWarning, match=rf"Argument `{side}`: {OUTSIDE}; Keras' rule clips them"):
            value_given = float(loss(t, p))
        clipped = float(loss(np.clip(t, 1e-7, 1), np.clip(p, 1e-7, 1)))
        assert value_given == pytest.approx(clipped, rel=1e-6)


def test_outside_values_warn_once_naming_both_arguments_and_exact_mode_says_so():
    with pytest.warns(UserWarning, match=rf"Arguments `y_true` and `y_pred`: {OUTSIDE}; exact mode"):
        kldiv.kl_divergence(COUNTS, COUNTS + 1, epsilon=0)
    with pytest.warns(UserWarning, match="--normalize"):
        kldiv.KLDivergence()(COUNTS, PROBS)


@pytest.mark.parametrize("backend", ["core", "numba"])
def test_masked_rows_and_other_formats_do_not_warn(backend):
    t = _large(5)
    keep = np.ones(64, dtype=bool)
    keep[5] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kldiv.KLDivergence(backend=backend)(t, _large(None), mask=keep)
        kldiv.KLDivergence(backend=backend, y_true_format="logits")(t * 40.0, _large(None))
        kldiv.KLDivergence(backend=backend, y_pred_format="log_probs")(_large(None), np.log(_large(None)))


def test_validate_raises_instead_of_warning():
    with pytest.raises(ValueError, match=r"`y_true`: expected probabilities in \[0, 1\]"):
        kldiv.KLDivergence(validate=True)(COUNTS, PROBS)


def test_framework_tensors_are_not_inspected():
    """Looking would wait for the tensor's device: documented, and ``validate=True`` is the check."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kldiv.torch.KLDivergence()(torch.tensor(COUNTS), torch.tensor(PROBS))


def test_valid_inputs_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(kldiv.KLDivergence()([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]])) == pytest.approx(
            0.45814, abs=1e-5
        )


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_js_endpoints_warn_with_the_direction_spelling(beta):
    for make in (
        lambda: kldiv.JSDivergence(beta=beta),
        lambda: kldiv.torch.FusedLinearJSDivergence(beta=beta),
    ):
        with pytest.warns(UserWarning, match=r"`beta`.*direction='forward' / 'reverse'"):
            make()
    with pytest.warns(UserWarning, match=r"`beta`"):
        assert float(kldiv.js_divergence([[0.9, 0.1]], [[0.1, 0.9]], beta=beta)[0]) == 0.0


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: kldiv.KLDivergence(beta=0.3), "beta"),
        (lambda: kldiv.JSDivergence(direction="reverse"), "direction"),
        (lambda: kldiv.torch.FusedLinearKLDivergence(y_true_format="probs"), "y_true_format"),
        (lambda: kldiv.torch.FusedLinearKLDivergence(beta=0.5), "beta"),
    ],
)
def test_options_a_loss_does_not_take_are_refused(make, argument):
    with pytest.raises(TypeError, match=rf"Argument `{argument}`: expected no `{argument}`"):
        make()


def test_teacher_logits_passed_positionally_to_the_fused_loss():
    hidden, weight, teacher = torch.randn(4, 3), torch.randn(5, 3), torch.randn(4, 5)
    with pytest.raises(TypeError, match=r"Argument `student_bias`: expected a \[V\] bias.*teacher_logits="):
        kldiv.torch.FusedLinearKLDivergence()(hidden, weight, teacher)


@pytest.mark.parametrize(("argument", "shape"), [("labels", (3,)), ("mask", (5,)), ("sample_weight", (2,))])
def test_fused_token_arguments_of_another_length(argument, shape):
    hidden, weight, teacher = torch.randn(4, 3), torch.randn(5, 3), torch.randn(4, 5)
    value = torch.ones(shape, dtype=torch.bool if argument == "mask" else torch.float32)
    with pytest.raises(ValueError, match=rf"Argument `{argument}`: expected 4 tokens"):
        kldiv.torch.FusedLinearKLDivergence()(hidden, weight, teacher_logits=teacher, **{argument: value})


@pytest.mark.parametrize(
    ("module", "blocked", "hint"),
    [
        ("kldiv.jax", "jax", 'pip install "kldiv[jax]"'),
        ("kldiv.fused.jax", "jax", 'pip install "kldiv[jax]"'),
        ("kldiv.keras", "keras", 'pip install "kldiv[keras]"'),
        ("kldiv.tf_keras", "tensorflow", 'pip install "kldiv[tf]"'),
        ("kldiv.torch", "torch", 'pip install "kldiv[torch]"'),
        ("kldiv.distributed.torch", "torch", 'pip install "kldiv[torch]"'),
    ],
)
def test_missing_framework_gets_an_install_hint(module, blocked, hint):
    """A fresh interpreter in which ``blocked`` cannot be imported (``sys.modules[name] = None``)."""
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        f"try:\n    import {module}\nexcept ModuleNotFoundError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert hint in result.stdout and "needs" in result.stdout, result.stdout
