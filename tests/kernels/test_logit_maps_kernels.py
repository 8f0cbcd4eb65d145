"""The logit-map options through the kernels that :func:`kldiv.kernels.dispatch.plan` picks (Numba on CPU;
Triton under its interpreter): the same value, NaN / inf pattern and gradient as the core, and both
against float64 on logits mapped by hand — hostile rows included (-inf slots, logits of ~1e4 that
saturate the cap, a NaN row, masked rows of NaN)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kldiv
from kldiv.kernels import dispatch
from kldiv.testing import assert_close

torch = pytest.importorskip("torch")
pytest.importorskip("numba")

LOGITS = {"y_true_format": "logits", "y_pred_format": "logits"}
KINDS = [{"direction": "forward"}, {"direction": "reverse"}, {"direction": "symmetric"}, {"beta": 0.3}]
MAPS = [
    {"student_softcap": 2.0},
    {"teacher_softcap": 1.5, "student_logit_scale": 0.6},
    {"student_logit_scale": 1.7, "student_softcap": 3.0, "teacher_logit_scale": 0.8, "teacher_softcap": 2.5},
]
TOL = {"float32": {"rtol": 2e-5, "atol": 2e-6}, "float64": {"rtol": 1e-11, "atol": 1e-12}}
LARGEST: dict[str, float] = {}


def hostile(seed: int, rows: int = 9, vocab: int = 37) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(rows, vocab)) * 3
    p = rng.normal(size=(rows, vocab)) * 3
    t[1, :4] = p[1, :4] = -np.inf  # common -inf slots
    p[2, 5] = -np.inf  # a student-only one: +inf forward KL where the teacher has mass
    t[3] *= 4e3  # saturate the caps
    p[3] *= 4e3
    p[4, 2] = np.nan  # a NaN row
    p[6] = np.nan  # a masked NaN row
    mask = np.ones(rows, dtype=bool)
    mask[6] = False
    return t, p, mask


def loss_of(kind, maps, backend, reduction="sum", temperature=1.0):
    cls = kldiv.JSDivergence if "beta" in kind else kldiv.KLDivergence
    return cls(
        reduction=reduction, **LOGITS, epsilon=0, temperature=temperature, backend=backend, **kind, **maps
    )


def value_and_grad(loss, t, p, mask, dtype):
    student = torch.tensor(p, dtype=dtype, requires_grad=True)
    values = loss(torch.tensor(t, dtype=dtype), student, mask=torch.tensor(mask))
    upstream = torch.linspace(0.5, 1.5, values.numel(), dtype=values.dtype).reshape(values.shape)
    (grad,) = torch.autograd.grad(values, student, grad_outputs=upstream)
    return values.detach(), grad


def by_hand_value_and_grad(kind, maps, t, p, mask, temperature):
    """float64: ``c·tanh(s·z / c)`` in torch, then kldiv's core without maps (itself tested against
    kldiv.testing), autograd through both."""

    def mapped(z, side):
        scale, cap = maps.get(f"{side}_logit_scale"), maps.get(f"{side}_softcap")
        z = z * scale if scale is not None else z
        return torch.where(z == -torch.inf, -torch.inf, torch.tanh(z / cap) * cap) if cap is not None else z

    raw = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    loss = loss_of(kind, {}, "core", "none", temperature)
    keep = torch.tensor(mask)[:, None]  # masked rows: the safe constant 0 first, as the core does
    teacher = torch.where(keep, torch.tensor(t, dtype=torch.float64), 0.0)
    values = loss(mapped(teacher, "teacher"), mapped(torch.where(keep, raw, 0.0), "student"))
    values = torch.where(torch.tensor(mask), values, torch.zeros_like(values))
    upstream = torch.linspace(0.5, 1.5, values.numel(), dtype=torch.float64)
    (grad,) = torch.autograd.grad(values, raw, grad_outputs=upstream)
    return values.detach(), grad


def record(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    finite = torch.isfinite(want)
    error = float((got.double()[finite] - want[finite]).abs().max()) if bool(finite.any()) else 0.0
    LARGEST[name] = max(LARGEST.get(name, 0.0), error)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("maps", MAPS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numba_equals_core_and_float64(dtype, kind, maps, temperature):
    t, p, mask = hostile(len(LARGEST))
    torch_dtype = getattr(torch, dtype)
    kernel = value_and_grad(loss_of(kind, maps, "numba", "none", temperature), t, p, mask, torch_dtype)
    core = value_and_grad(loss_of(kind, maps, "core", "none", temperature), t, p, mask, torch_dtype)
    truth = by_hand_value_and_grad(kind, maps, t, p, mask, temperature)
    for got, want in zip(kernel, core, strict=True):  # the same NaN / inf pattern as the core
        assert torch.equal(torch.isnan(got), torch.isnan(want))
        assert torch.equal(torch.isinf(got), torch.isinf(want))
    for got, want in zip(kernel, truth, strict=True):
        assert_close(got, want, **TOL[dtype])
    assert float(kernel[1][6].abs().max()) == 0.0  # the masked NaN row: exactly 0
    record(f"numba {dtype} value", kernel[0], truth[0])
    record(f"numba {dtype} grad", kernel[1], truth[1])


@pytest.mark.parametrize("maps", MAPS)
@pytest.mark.parametrize("kind", KINDS[::3])
def test_numba_reduced_one_node_and_numpy(kind, maps):
    """The one-node path (a mean reduction) and NumPy arrays (values only) through the Numba kernel."""
    t, p, mask = hostile(7)
    p[4, 2] = 0.0
    got = value_and_grad(loss_of(kind, maps, "numba", "auto"), t, p, mask, torch.float64)
    want = value_and_grad(loss_of(kind, maps, "core", "auto"), t, p, mask, torch.float64)
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, **TOL["float64"])
    values = loss_of(kind, maps, "numba", "none")(t, p, mask=mask)
    with np.errstate(all="ignore"):
        expected = loss_of(kind, maps, "core", "none")(t, p, mask=mask)
    assert_close(values, expected, **TOL["float64"])


def test_float16_through_the_numba_kernel():
    t, p, mask = hostile(8)
    p[4, 2] = 0.0
    maps = MAPS[2]
    got = value_and_grad(loss_of(KINDS[0], maps, "numba", "none"), t, p, mask, torch.float16)
    want = value_and_grad(loss_of(KINDS[0], maps, "core", "none"), t, p, mask, torch.float16)
    assert got[1].dtype == torch.float16
    for a, b in zip(got, want, strict=True):
        assert_close(a.float(), b.float(), rtol=2e-3, atol=2e-3)


def test_largest_errors_are_reported():
    """Prints the largest |error| against float64 seen above (run with ``-s``)."""
    for name, error in sorted(LARGEST.items()):
        print(f"logit maps, largest |error| vs float64: {name}: {error:.3g}")


# --- Triton under its interpreter (a subprocess: TRITON_INTERPRET is read at import) ---------------

_SCRIPT = r"""
import json, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from tests.kernels.test_logit_maps_kernels import (
    KINDS, MAPS, hostile, loss_of, value_and_grad, by_hand_value_and_grad,
)
out = []
for kind, maps in ((KINDS[0], MAPS[2]), (KINDS[3], MAPS[0]), (KINDS[2], MAPS[1])):
    t, p, mask = hostile(11)
    kernel = value_and_grad(loss_of(kind, maps, "triton", "none", 1.5), t, p, mask, torch.float32)
    core = value_and_grad(loss_of(kind, maps, "core", "none", 1.5), t, p, mask, torch.float32)
    truth = by_hand_value_and_grad(kind, maps, t, p, mask, 1.5)
    same = all(torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(torch.isinf(a), torch.isinf(b))
               for a, b in zip(kernel, core))
    errors = []
    for a, b in zip(kernel, truth):
        f = torch.isfinite(b)
        errors.append(float((a.double()[f] - b[f]).abs().max() / max(1.0, float(b[f].abs().max()))))
    out.append({"kind": kind, "maps": maps, "same_pattern": same, "errors": errors,
                "masked_zero": float(kernel[1][6].abs().max()) == 0.0})
print(json.dumps(out))
"""


@pytest.mark.skipif(not dispatch.triton_installed(), reason="Triton not installed")
def test_triton_interpreter_equals_core():
    root = Path(__file__).resolve().parents[2]
    source = str(Path(kldiv.__file__).resolve().parents[1])
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join((source, str(root)))}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(root)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    for case in json.loads(done.stdout.strip().splitlines()[-1]):
        assert case["same_pattern"] and case["masked_zero"], case
        assert max(case["errors"]) < 2e-5, case
        print(f"logit maps, Triton (interpreter) float32, largest relative error vs float64: {case}")
