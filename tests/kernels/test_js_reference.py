"""JS_β of the core, the Numba kernel and the Triton kernel against the float64 oracle.

``kldiv.testing.reference.js_divergence`` is written entry by entry from the definition (no shared
code with kldiv); every format, both modes (Keras ``epsilon = 1e-7`` and exact ``epsilon = 0``, with
zero probabilities), ``T ∈ {1, 2}`` and two ``β``. The Triton kernel runs under Triton's interpreter
in a subprocess (this file run as a script; ``TRITON_INTERPRET`` is read when triton is imported).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.special

import kldiv
from kldiv.testing import reference

FORMATS = ("probs", "log_probs", "logits")
CASES = [
    {"true_format": f, "pred_format": g, "epsilon": e, "temperature": t, "beta": b}
    for (f, g), e, t, b in itertools.product(
        [(f, f) for f in FORMATS] + [("logits", "probs")], (1e-7, 0.0), (1.0, 2.0), (0.3, 0.5)
    )
]


def inputs(fmt: str, seed: int, dtype: str = "float64") -> np.ndarray:
    """``[5, 37]`` rows of one format, about a third of the probabilities exactly 0."""
    rng = np.random.default_rng(seed)
    logits = 2.0 * rng.standard_normal((5, 37))
    log_probs = scipy.special.log_softmax(np.where(rng.random((5, 37)) < 0.3, -np.inf, logits), axis=-1)
    log_probs[:, 0] = np.maximum(log_probs[:, 0], -5.0)  # no row without mass
    log_probs = scipy.special.log_softmax(log_probs, axis=-1)
    x = {"probs": np.exp(log_probs), "log_probs": log_probs, "logits": log_probs + 3.0}[fmt]
    return x.astype(dtype)


def options(case: dict) -> dict:
    return {
        "y_true_format": case["true_format"],
        "y_pred_format": case["pred_format"],
        "epsilon": case["epsilon"],
        "temperature": case["temperature"],
        "beta": case["beta"],
    }


def oracle(case: dict, dtype: str) -> np.ndarray:
    t, p = inputs(case["true_format"], 1, dtype), inputs(case["pred_format"], 2, dtype)
    return reference.js_divergence(t, p, **options(case))


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("backend", ["core", "numba"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_js_equals_the_float64_oracle(case: dict, backend: str, dtype: str) -> None:
    t, p = inputs(case["true_format"], 1, dtype), inputs(case["pred_format"], 2, dtype)
    got = kldiv.js_divergence(t, p, backend=backend, **options(case))
    want = oracle(case, dtype)
    tolerance = 1e-12 if dtype == "float64" else 2e-6
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tolerance, atol=tolerance)


def _triton_values() -> list[list[float]]:
    """The Triton kernel's per-row JS_β for every case (run in the subprocess)."""
    import torch

    values = []
    for case in CASES:
        t, p = (
            torch.from_numpy(inputs(case[side], seed, "float32"))
            for side, seed in (("true_format", 1), ("pred_format", 2))
        )
        value = kldiv.js_divergence(t, p, backend="triton", **options(case))
        values.append(value.double().tolist())
    return values


def test_triton_js_equals_the_float64_oracle() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(values) == len(CASES)
    for case, got in zip(CASES, values, strict=True):
        np.testing.assert_allclose(got, oracle(case, "float32"), rtol=2e-6, atol=2e-6, err_msg=str(case))


if __name__ == "__main__":
    print(json.dumps(_triton_values()))
