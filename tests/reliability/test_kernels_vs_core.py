"""Every kernel gives the core's answer on hostile values: the value, ``y_pred``'s gradient, and where
each is NaN or infinite.

The core (``backend="core"``) is the reference; the Numba kernel (``backend="numba"``) and the Triton
kernel (``backend="triton"``, under Triton's interpreter in a subprocess: this file run as a script)
must equal it through the public API — ``kldiv.torch.KLDivergence`` / ``JSDivergence`` (value and
``y_pred.grad``) and ``kldiv.kl_divergence`` / ``kldiv.js_divergence`` on NumPy arrays — for every
format × direction × ``epsilon ∈ {1e-7, 0}`` × ``T ∈ {1, 2}``, on inputs holding NaN, ±inf, 0,
negatives, values above 1, float32 denormals and huge values, on all-masked rows and on rows of
``-inf`` logits. Equal means: NaN where the core has NaN, the same infinities, float32 tolerance
elsewhere.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kldiv
import kldiv.torch

FORMATS = ("probs", "log_probs", "logits")
KINDS = ({"direction": "forward"}, {"direction": "reverse"}, {"direction": "symmetric"}, {"beta": 0.3})
EPSILONS = (1e-7, 0.0)
TEMPERATURES = (1.0, 2.0)
DENORMAL = 1e-41  # a float32 subnormal
HOSTILE = (math.nan, math.inf, -math.inf, 0.0, -0.25, 1.5, DENORMAL, 3e38, -3e38, 80.0, -80.0)
RTOL, ATOL = 2e-4, 2e-5
SETTINGS = settings(
    max_examples=int(os.environ.get("KLDIV_RELIABILITY_EXAMPLES", "60")), deadline=None, derandomize=True
)


def options_of(kind: dict, true_format: str, pred_format: str, epsilon: float, temperature: float) -> dict:
    return {
        **kind,
        "y_true_format": true_format,
        "y_pred_format": pred_format,
        "epsilon": epsilon,
        "temperature": temperature,
    }


def through_torch(backend: str, t: np.ndarray, p: np.ndarray, options: dict, mask=None):
    """``(per-sample values, y_pred.grad)`` of the torch module with ``reduction="none"``."""
    module = kldiv.torch.JSDivergence if "beta" in options else kldiv.torch.KLDivergence
    loss = module(reduction="none", backend=backend, **options)
    y_pred = torch.tensor(p, requires_grad=True)
    mask = None if mask is None else torch.tensor(mask)
    value = loss(torch.tensor(t), y_pred, mask=mask)
    value.sum().backward()
    return value.detach().double().numpy(), y_pred.grad.double().numpy()


def through_numpy(backend: str, t: np.ndarray, p: np.ndarray, options: dict) -> np.ndarray:
    function = kldiv.js_divergence if "beta" in options else kldiv.kl_divergence
    return np.asarray(function(t, p, backend=backend, **options), dtype=np.float64)


def assert_same(
    got: np.ndarray, want: np.ndarray, truth: np.ndarray, what: str, conditioning: Any = 0.0
) -> None:
    """Same NaN and ±inf entries as the core (``want``); elsewhere float32 tolerance, or no farther
    from the float64 ``truth`` than the core's own float32 result (ml-cross-entropy's rule).

    ``conditioning`` (broadcast against ``got``) is the size of the terms a float32 computation of
    the entry must cancel: ``2⁻²² · conditioning`` more is allowed. Zero unless the caller knows them
    to be large (logits of 1e30, whose gradients are O(1) differences of ~1e30 terms, the rounding
    of each implementation its own)."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN pattern")
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want), err_msg=f"{what}: +inf pattern")
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg=f"{what}: -inf pattern")
    finite = np.isfinite(want)
    slack = np.broadcast_to(2.0**-22 * np.asarray(conditioning, dtype=np.float64), want.shape)[finite]
    got, want, truth = got[finite], want[finite], truth[finite]
    close = np.abs(got - want) <= ATOL + RTOL * np.abs(want) + slack
    no_worse = np.abs(got - truth) <= np.abs(want - truth) + ATOL + RTOL * np.abs(truth)
    np.testing.assert_allclose(
        got[~(close | no_worse)], want[~(close | no_worse)], rtol=RTOL, atol=ATOL, err_msg=what
    )


def check(backend: str, t: np.ndarray, p: np.ndarray, options: dict, mask=None) -> None:
    """Kernel ``backend`` equals the core on ``(t, p)``: torch value and gradient (NumPy too for Numba)."""
    with np.errstate(all="ignore"):
        value, grad = through_torch(backend, t, p, options, mask)
        want_value, want_grad = through_torch("core", t, p, options, mask)
        truth_value, truth_grad = through_torch(
            "core", t.astype(np.float64), p.astype(np.float64), options, mask
        )
        assert_same(value, want_value, truth_value, f"value {options}")
        assert_same(grad, want_grad, truth_grad, f"gradient {options}")
        if backend == "numba" and mask is None:
            numpy_value = through_numpy("numba", t, p, options)
            assert_same(numpy_value, want_value, truth_value, f"numpy value {options}")


def base_inputs(fmt: str, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """float32 rows of one format from random logits."""
    logits = 3.0 * rng.standard_normal(shape)
    log_probs = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
    x = {"probs": np.exp(log_probs), "log_probs": log_probs, "logits": logits}[fmt]
    return x.astype(np.float32)


@st.composite
def hostile_case(draw):
    kind = draw(st.sampled_from(KINDS))
    true_format, pred_format = draw(st.sampled_from(FORMATS)), draw(st.sampled_from(FORMATS))
    epsilon, temperature = draw(st.sampled_from(EPSILONS)), draw(st.sampled_from(TEMPERATURES))
    rows, n = draw(st.integers(1, 3)), draw(st.integers(1, 9))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    t, p = base_inputs(true_format, rng, (rows, n)), base_inputs(pred_format, rng, (rows, n))
    places = st.tuples(
        st.booleans(), st.integers(0, rows - 1), st.integers(0, n - 1), st.sampled_from(HOSTILE)
    )
    for on_true, row, column, value in draw(st.lists(places, max_size=4)):
        (t if on_true else p)[row, column] = value
    return t, p, options_of(kind, true_format, pred_format, epsilon, temperature)


@SETTINGS
@given(case=hostile_case())
def check_hostile_values(backend: str, case) -> None:
    t, p, options = case
    check(backend, t, p, options)


ALL_OPTIONS = [
    options_of(kind, true_format, pred_format, epsilon, temperature)
    for kind, true_format, pred_format, epsilon, temperature in itertools.product(
        KINDS, FORMATS, FORMATS, EPSILONS, TEMPERATURES
    )
]


def every_option(backend: str, t: np.ndarray, p: np.ndarray, mask=None, formats=None, name="") -> None:
    for options in ALL_OPTIONS:
        if formats is None or (options["y_true_format"], options["y_pred_format"]) in formats:
            check(backend, t, p, options, mask)


def _rows(fmt: str, seed: int = 0, shape=(3, 7)) -> np.ndarray:
    return base_inputs(fmt, np.random.default_rng(seed), shape)


def named_cases() -> dict:
    """Named edge cases: ``name -> (t, p, mask, formats)`` (``formats`` None: all nine pairs)."""
    cases = {}
    for value, name in (
        (math.nan, "nan"),
        (math.inf, "inf"),
        (-math.inf, "neg_inf"),
        (0.0, "zero"),
        (-0.25, "negative"),
        (1.5, "above_one"),
        (DENORMAL, "denormal"),
        (3e38, "huge"),
    ):
        for side in ("true", "pred"):
            for fmt in FORMATS:
                t, p = _rows(fmt, 1), _rows(fmt, 2)
                (t if side == "true" else p)[1, 3] = value
                cases[f"{name}_in_{side}_{fmt}"] = (t, p, None, [(fmt, fmt)])
    t, p = _rows("probs", 1), _rows("probs", 2)
    t[0], p[2] = DENORMAL, DENORMAL
    cases["denormal_rows_probs"] = (t, p, None, [("probs", "probs")])
    t, p = _rows("logits", 1), _rows("logits", 2)
    t[0], p[1], t[2], p[2] = -math.inf, -math.inf, -math.inf, -math.inf
    cases["all_neg_inf_logit_rows"] = (t, p, None, [("logits", "logits"), ("log_probs", "logits")])
    t, p = 1e30 * _rows("logits", 1), 1e30 * _rows("logits", 2)
    cases["huge_logits"] = (t.astype(np.float32), p.astype(np.float32), None, [("logits", "logits")])
    # Rows of one large logit repeated (plus small offsets): log_softmax = (u − max) − log Σ, which
    # fast-math reassociation once folded into u − (max + log Σ), losing log Σ beyond 2²⁴.
    t, p = _rows("logits", 1), _rows("logits", 2)
    t[0], p[1] = 1e10, 3e38
    p[2] = 1e30 + p[2] * 1e23
    cases["shifted_huge_logit_rows"] = (t, p, None, [("logits", "logits")])
    t, p = _rows("probs", 1), _rows("probs", 2)
    p[1, 3] = math.nan
    cases["all_masked_rows"] = (t, p, np.zeros(3, dtype=bool), None)
    cases["one_masked_nan_row"] = (t, p, np.array([True, False, True]), None)
    return cases


NAMED = named_cases()


@pytest.mark.parametrize("name", sorted(NAMED))
def test_numba_named_edge_case(name: str) -> None:
    t, p, mask, formats = NAMED[name]
    every_option("numba", t, p, mask, formats, name)


def test_numba_hostile_values() -> None:
    check_hostile_values("numba")


def test_numba_nan_is_not_dropped_above_the_auto_threshold() -> None:
    """The issue's case: 64×1000 probabilities (a kernel with ``backend="auto"``), one NaN."""
    rng = np.random.default_rng(0)
    t = rng.dirichlet(np.ones(1000), 64).astype(np.float32)
    p = rng.dirichlet(np.ones(1000), 64).astype(np.float32)
    p[5, 17] = math.nan
    assert math.isnan(float(kldiv.KLDivergence()(t, p)))
    t[9, 3] = math.nan
    assert math.isnan(float(kldiv.KLDivergence(direction="reverse")(t, p)))
    assert math.isnan(float(kldiv.KLDivergence(temperature=2.0)(t, p)))


def triton_main() -> None:
    """Every check above with ``backend="triton"`` (run with ``TRITON_INTERPRET=1``)."""
    failures = []
    for name, (t, p, mask, formats) in sorted(NAMED.items()):
        try:
            every_option("triton", t, p, mask, formats, name)
        except AssertionError as error:
            failures.append(f"{name}: {str(error)[:600]}")
    try:
        check_hostile_values("triton")
    except AssertionError as error:
        failures.append(f"hypothesis: {str(error)[:1500]}")
    print(json.dumps(failures))


def interpreted_failures(script: str, timeout: int, **env: str) -> list[str]:
    """Run ``script`` (a test file whose ``__main__`` prints a JSON list of failures) under Triton's
    interpreter in a fresh process, with ``src/`` and this folder importable; its failures."""
    here = Path(__file__).resolve().parent
    paths = [str(here.parents[1] / "src"), str(here), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, **env, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    command = [sys.executable, str(Path(script).resolve())]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_triton_interpreter_agrees_with_core() -> None:
    failures = interpreted_failures(__file__, 900, KLDIV_RELIABILITY_EXAMPLES="25")
    assert failures == [], "\n".join(failures[:8])


if __name__ == "__main__":
    triton_main()
