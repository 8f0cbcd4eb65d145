"""The chunked and fused-linear losses give the core's answer on hostile values: the value, every
gradient (student logits, hidden states, weight, bias, and the teacher's logits when they need one),
and where each is NaN or infinite.

``kldiv.torch.chunked_kl_divergence`` / ``chunked_js_divergence`` (hostile logits given directly) and
``kldiv.torch.FusedLinearKLDivergence`` / ``FusedLinearJSDivergence`` (hidden states, weight and bias
built so that the logits they form hold the hostile values) run through each chunk path of
:mod:`kldiv.fused._torch_chunks` — the Numba kernel (``backend="numba"``), autograd through the core
(``backend="core"``) and autograd because the teacher needs a gradient — and must equal
``kldiv.KLDivergence`` / ``kldiv.JSDivergence`` (``y_true_format="logits"``, ``from_logits=True``,
``backend="core"``) on the materialised logits ``hidden @ weight.T + bias``, differentiated by autograd,
for every direction and JS, ``epsilon ∈ {None (exact), 1e-7}``, ``T ∈ {1, 2}`` and the reductions
``"auto"``, ``"sum"``, ``"none"`` (with a non-uniform upstream gradient). Inputs hold NaN, ±inf, rows
of ``-inf``, logits of ±1e30 and 1e4, denormal-scale values, rows masked by ``labels=-100`` or
``mask`` (holding NaN or inf) and batches masked entirely. Equal is the rule of
``test_kernels_vs_core.py``: the same NaN and ±inf entries, float32 tolerance elsewhere (or no farther
from the float64 result than the core's own float32 result).
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kernels_vs_core import DENORMAL, assert_same

import kldiv
from kldiv.torch import (
    FusedLinearJSDivergence,
    FusedLinearKLDivergence,
    chunked_js_divergence,
    chunked_kl_divergence,
)

KINDS = ({"direction": "forward"}, {"direction": "reverse"}, {"direction": "symmetric"}, {"beta": 0.3})
EPSILONS = (None, 1e-7)
TEMPERATURES = (1.0, 2.0)
REDUCTIONS = ("auto", "sum", "none")
ALL_OPTIONS = [
    ({**kind, "epsilon": epsilon, "temperature": temperature}, reduction)
    for kind, epsilon, temperature, reduction in itertools.product(KINDS, EPSILONS, TEMPERATURES, REDUCTIONS)
]
PATHS = {  # chunk path -> (module options, the teacher needs a gradient)
    "numba": ({"backend": "numba"}, False),
    "core": ({"backend": "core"}, False),
    "teacher_grad": ({}, True),  # backend="auto": autograd through the core, as the teacher needs one
}
ROWS, VOCAB, HIDDEN, CHUNK = 6, 7, 4, 4  # two chunks, the second one shorter
HOSTILE_LOGITS = (math.nan, math.inf, -math.inf, 1e30, -1e30, 1e4, -1e4, DENORMAL, 0.0)
SETTINGS = settings(
    max_examples=int(os.environ.get("KLDIV_RELIABILITY_EXAMPLES", "40")), deadline=None, derandomize=True
)


@dataclass(frozen=True)
class Case:
    """float32 NumPy inputs: ``teacher`` logits and either ``student`` logits (chunked) or
    ``hidden`` / ``weight`` / ``bias`` (fused-linear)."""

    teacher: np.ndarray
    student: np.ndarray | None = None
    hidden: np.ndarray | None = None
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    labels: np.ndarray | None = None
    mask: np.ndarray | None = None
    chunk_size: int = CHUNK

    @property
    def fused(self) -> bool:
        return self.hidden is not None

    def tensors(self, dtype: torch.dtype, teacher_grad: bool) -> dict[str, torch.Tensor]:
        """The differentiable inputs as leaves of ``dtype`` (the teacher requires a gradient when asked)."""
        names = ("hidden", "weight", "bias") if self.fused else ("student",)
        leaves = {n: torch.tensor(getattr(self, n), dtype=dtype, requires_grad=True) for n in names}
        leaves["teacher"] = torch.tensor(self.teacher, dtype=dtype, requires_grad=teacher_grad)
        return leaves

    def call(self) -> dict[str, torch.Tensor | None]:
        return {
            "labels": None if self.labels is None else torch.tensor(self.labels),
            "mask": None if self.mask is None else torch.tensor(self.mask),
        }


def _weights(n: int, dtype: torch.dtype) -> torch.Tensor:
    """A non-uniform upstream gradient for ``reduction="none"``."""
    return torch.linspace(0.5, 2.0, n, dtype=dtype)


def _results(value: torch.Tensor, leaves: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The value and the gradient of each leaf that requires one, as float64 NumPy arrays."""
    scalar = value if value.ndim == 0 else (value * _weights(value.numel(), value.dtype)).sum()
    wanted = {name: leaf for name, leaf in leaves.items() if leaf.requires_grad}
    grads = torch.autograd.grad(scalar, list(wanted.values()))
    out = {"value": value.detach().double().numpy()}
    out.update({f"grad {name}": g.double().numpy() for name, g in zip(wanted, grads, strict=True)})
    return out


def through_path(path: str, case: Case, options: dict, reduction: str) -> dict[str, np.ndarray]:
    """The chunked (or fused-linear) loss of ``case`` through chunk path ``path``."""
    backend, teacher_grad = PATHS[path]
    leaves = case.tensors(torch.float32, teacher_grad)
    arguments = {**options, **backend, "reduction": reduction, "chunk_size": case.chunk_size}
    js = "beta" in options
    if case.fused:
        module = (FusedLinearJSDivergence if js else FusedLinearKLDivergence)(**arguments)
        value = module(
            leaves["hidden"],
            leaves["weight"],
            leaves["bias"],
            teacher_logits=leaves["teacher"],
            **case.call(),
        )
    else:
        function = chunked_js_divergence if js else chunked_kl_divergence
        value = function(leaves["teacher"], leaves["student"], **arguments, **case.call())
    return _results(value, leaves)


def through_core(case: Case, options: dict, reduction: str, dtype: torch.dtype) -> dict[str, np.ndarray]:
    """``kldiv.KLDivergence`` / ``JSDivergence`` (``backend="core"``) on the materialised logits, by
    autograd; every leaf (the teacher too) gets its gradient."""
    leaves = case.tensors(dtype, teacher_grad=True)
    if case.fused:
        student = torch.nn.functional.linear(leaves["hidden"], leaves["weight"], leaves["bias"])
    else:
        student = leaves["student"]
    loss_type = kldiv.JSDivergence if "beta" in options else kldiv.KLDivergence
    loss = loss_type(reduction=reduction, y_true_format="logits", from_logits=True, backend="core", **options)
    return _results(loss(leaves["teacher"], student, **case.call()), leaves)


# Symmetric KL through the Numba kernel on logits of size ≥ 1e15: the forward and reverse
# gradients w.r.t. the log-probabilities (the reverse one ~|b − a| ~ 1e30 at the student's top entry)
# are summed before the log-softmax chain rule and cancel there to O(1), below the float64 ulp of
# 1e30; the core's autograd takes the chain rule of each direction apart and keeps the O(1) part.
# (Teacher [1e30, -0.4], student [-inf, 0.3]: the core's ∂/∂u₁ = 1, the kernel's 0.) The kernel's
# formula, not the chunk engine: the exclusion CANCELLING of test_kernels_vs_core.py.
CANCELLING_LOGIT = 1e15


def _cancels(case: Case, options: dict) -> bool:
    if options.get("direction") != "symmetric":
        return False
    student = case.student if not case.fused else case.hidden @ case.weight.T + case.bias
    logits = np.concatenate([case.teacher.ravel(), student.ravel()])
    return bool(np.any(np.abs(logits[np.isfinite(logits)]) >= CANCELLING_LOGIT))


def check(case: Case, options: dict, reduction: str, paths=PATHS, name: str = "") -> None:
    """Every chunk path in ``paths`` equals the core on ``case`` (value and every gradient)."""
    with np.errstate(all="ignore"):
        want = through_core(case, options, reduction, torch.float32)
        truth = through_core(case, options, reduction, torch.float64)
        for path in paths:
            if path == "numba" and _cancels(case, options):
                continue
            got = through_path(path, case, options, reduction)
            for key, result in got.items():
                what = f"{name} {path} {key} {options} reduction={reduction}"
                assert result.shape == want[key].shape, what
                assert_same(result, want[key], truth[key], what)


def every_option(case: Case, name: str) -> None:
    for options, reduction in ALL_OPTIONS:
        check(case, options, reduction, name=name)


def _logits(seed: int, shape=(ROWS, VOCAB), scale: float = 3.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def chunked_cases() -> dict[str, Case]:
    """Named hostile logits for ``chunked_*``: ``name -> Case``."""
    cases = {}
    for value, name in ((math.nan, "nan"), (math.inf, "inf"), (-math.inf, "neg_inf"), (1e30, "huge_entry")):
        for side in ("teacher", "student"):
            t, s = _logits(1), _logits(2)
            (t if side == "teacher" else s)[1, 3] = value
            cases[f"{name}_in_{side}"] = Case(teacher=t, student=s)
    t, s = _logits(1), _logits(2)
    t[1, 3] = s[1, 3] = -math.inf
    t[2, :3] = -math.inf
    s[4, 5:] = -math.inf
    cases["neg_inf_entries"] = Case(teacher=t, student=s)
    t, s = _logits(1), _logits(2)
    t[0], s[1], t[2], s[2] = -math.inf, -math.inf, -math.inf, -math.inf
    cases["all_neg_inf_rows"] = Case(teacher=t, student=s)
    cases["huge_logits"] = Case(teacher=_logits(1, scale=1e30), student=_logits(2, scale=1e30))
    t, s = _logits(1), _logits(2)
    t[3, 2], s[3, 4], s[5, 0] = -1e30, 1e30, -1e30
    cases["huge_entries"] = Case(teacher=t, student=s)
    cases["large_logits_1e4"] = Case(teacher=_logits(1, scale=1e4), student=_logits(2, scale=1e4))
    cases["denormal_logits"] = Case(teacher=_logits(1, scale=DENORMAL), student=_logits(2, scale=DENORMAL))
    t, s = _logits(1), _logits(2)
    s[1, 3], t[4, 2], s[4, 0], t[5] = math.nan, math.inf, -math.inf, -math.inf
    labels = np.array([0, -100, 2, 3, -100, -100])
    cases["masked_hostile_rows_labels"] = Case(teacher=t, student=s, labels=labels)
    cases["masked_hostile_rows_mask"] = Case(teacher=t, student=s, mask=labels != -100)
    cases["all_masked_labels"] = Case(teacher=t, student=s, labels=np.full(ROWS, -100))
    cases["all_masked_mask"] = Case(teacher=t, student=s, mask=np.zeros(ROWS, dtype=bool))
    cases["one_chunk_per_row"] = replace(cases["masked_hostile_rows_labels"], chunk_size=1)
    return cases


def fused_cases() -> dict[str, Case]:
    """Named hidden / weight / bias whose logits are hostile: ``name -> Case``."""

    def parts(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        hidden = rng.standard_normal((ROWS, HIDDEN)).astype(np.float32)
        weight = rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32)
        bias = rng.standard_normal(VOCAB).astype(np.float32)
        return hidden, weight, bias, _logits(1)

    cases = {}
    h, w, b, t = parts()
    cases["finite"] = Case(teacher=t, hidden=h, weight=w, bias=b)
    for value, name in ((math.nan, "nan"), (math.inf, "inf"), (-math.inf, "neg_inf")):
        h, w, b, t = parts()
        b[3] = value  # a column of the student's logits
        cases[f"bias_{name}"] = Case(teacher=t, hidden=h, weight=w, bias=b)
        h, w, b, t = parts()
        h[:, 0] = np.abs(h[:, 0]) + 0.5  # so that weight[2, 0] = ±inf gives the column ±inf, not NaN
        w[2, 0] = value
        cases[f"weight_row_{name}"] = Case(teacher=t, hidden=h, weight=w, bias=b)
    h, w, b, t = parts()
    h[1] = math.nan
    cases["hidden_row_nan"] = Case(teacher=t, hidden=h, weight=w, bias=b)
    h, w, b, t = parts()
    w[:, 0] = np.abs(w[:, 0]) + 0.5
    h[1, 0] = -math.inf  # student row 1: every logit -inf
    cases["student_row_all_neg_inf"] = Case(teacher=t, hidden=h, weight=w, bias=b)
    h, w, b, t = parts()
    t[1, 3], t[2], t[4, 5], t[5, 0] = math.nan, -math.inf, math.inf, -math.inf
    cases["hostile_teacher"] = Case(teacher=t, hidden=h, weight=w, bias=b)
    h, w, b, t = parts()
    cases["huge_logits"] = Case(teacher=1e30 * t, hidden=1e29 * h, weight=w, bias=b)
    cases["large_logits_1e4"] = Case(teacher=1e4 * t, hidden=3e3 * h, weight=w, bias=b)
    cases["denormal_scale"] = Case(
        teacher=DENORMAL * t, hidden=np.float32(1e-20) * h, weight=1e-20 * w, bias=0 * b
    )
    h, w, b, t = parts()
    h[1], h[4, 0], t[5] = math.nan, math.inf, -math.inf
    labels = np.array([0, -100, 2, 3, -100, -100])
    cases["masked_hostile_rows_labels"] = Case(teacher=t, hidden=h, weight=w, bias=b, labels=labels)
    cases["masked_hostile_rows_mask"] = Case(teacher=t, hidden=h, weight=w, bias=b, mask=labels != -100)
    h, w, b, t = parts()
    b[3] = math.nan
    cases["all_masked_nan_bias"] = Case(teacher=t, hidden=h, weight=w, bias=b, labels=np.full(ROWS, -100))
    h, w, b, t = parts()
    w[2] = math.nan
    cases["all_masked_nan_weight_row"] = Case(
        teacher=t, hidden=h, weight=w, bias=b, mask=np.zeros(ROWS, dtype=bool)
    )
    return {name: replace(case, teacher=case.teacher.astype(np.float32)) for name, case in cases.items()}


CHUNKED = chunked_cases()
FUSED = fused_cases()


@pytest.mark.parametrize("name", sorted(CHUNKED))
def test_chunked_named_edge_case(name: str) -> None:
    every_option(CHUNKED[name], f"chunked {name}")


@pytest.mark.parametrize("name", sorted(FUSED))
def test_fused_linear_named_edge_case(name: str) -> None:
    every_option(FUSED[name], f"fused {name}")


@st.composite
def hostile_case(draw, fused: bool):
    """Random logits (or hidden / weight / bias) with up to four hostile entries, random masks."""
    options, reduction = draw(st.sampled_from(ALL_OPTIONS))
    rows, vocab = draw(st.integers(1, 5)), draw(st.integers(2, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    teacher = (3 * rng.standard_normal((rows, vocab))).astype(np.float32)
    if fused:
        arrays = {
            "hidden": rng.standard_normal((rows, HIDDEN)).astype(np.float32),
            "weight": rng.standard_normal((vocab, HIDDEN)).astype(np.float32),
            "bias": rng.standard_normal(vocab).astype(np.float32),
        }
    else:
        arrays = {"student": (3 * rng.standard_normal((rows, vocab))).astype(np.float32)}
    arrays["teacher"] = teacher
    places = st.tuples(
        st.sampled_from(sorted(arrays)), st.integers(0, 10**6), st.sampled_from(HOSTILE_LOGITS)
    )
    for name, index, value in draw(st.lists(places, max_size=4)):
        flat = arrays[name].reshape(-1)
        flat[index % flat.size] = value
    kept = np.array(draw(st.lists(st.booleans(), min_size=rows, max_size=rows)))
    masking = draw(st.sampled_from(("none", "labels", "mask")))
    if masking == "labels":
        arrays["labels"] = np.where(kept, 1, -100)
    elif masking == "mask":
        arrays["mask"] = kept
    case = Case(**arrays, chunk_size=draw(st.integers(1, 4)))
    return case, options, reduction


@SETTINGS
@given(case=hostile_case(fused=False))
def test_chunked_hostile_values(case) -> None:
    check(*case, name="chunked hypothesis")


@SETTINGS
@given(case=hostile_case(fused=True))
def test_fused_linear_hostile_values(case) -> None:
    check(*case, name="fused hypothesis")
