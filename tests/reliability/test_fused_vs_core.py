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
import json
import math
import os
from dataclasses import dataclass, replace
from typing import Any

import array_api_compat.torch
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kernels_vs_core import DENORMAL, assert_same, interpreted_failures

import kldiv
from kldiv.core import topk
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
    topk_indices: np.ndarray | None = None  # a sparse teacher: ``teacher`` holds its top-k values
    topk_format: str = "log_probs"

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
    backend, teacher_grad = (PATHS | TRITON_PATHS)[path]
    leaves = case.tensors(torch.float32, teacher_grad)
    arguments = {**options, **backend, "reduction": reduction, "chunk_size": case.chunk_size}
    js = "beta" in options
    if case.fused:
        module_type = FusedLinearJSDivergence if js else FusedLinearKLDivergence
        if case.topk_indices is not None:
            module = module_type(**arguments, teacher_topk_format=case.topk_format)
            teacher = {
                "teacher_topk_indices": torch.tensor(case.topk_indices),
                "teacher_topk_values": leaves["teacher"],
            }
        else:
            module, teacher = module_type(**arguments), {"teacher_logits": leaves["teacher"]}
        value = module(leaves["hidden"], leaves["weight"], leaves["bias"], **teacher, **case.call())
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
    teacher, formats = leaves["teacher"], {"y_true_format": "logits", "from_logits": True}
    if case.topk_indices is not None:
        # The core's coarsened distributions of the whole batch at once (no chunks), log-probabilities.
        teacher, student = topk.sparse_log_probs(
            array_api_compat.torch,
            student,
            torch.tensor(case.topk_indices),
            teacher,
            case.topk_format,
            exclude=lambda s, top: s.scatter(-1, top, -math.inf),
            temperature=options["temperature"],
        )
        formats = {"y_true_format": "log_probs", "y_pred_format": "log_probs"}
        options = {**options, "temperature": 1.0}  # applied by sparse_log_probs
    loss = loss_type(reduction=reduction, backend="core", **formats, **options)
    return _results(loss(teacher, student, **case.call()), leaves)


def conditioning(case: Case, options: dict) -> dict[str, Any]:
    """The size of the terms each gradient's float32 computation cancels (see ``assert_same``).

    A log-probability is as large as the row's largest finite logit ``L`` (over ``T``): the reverse
    KL's and JS's ``∂ℓ/∂b = q (b − a + 1)`` are then ~``L`` and the softmax chain rule cancels them to
    O(1), each implementation rounding ``L``-sized terms its own way; times the largest upstream
    weight (2, ``_weights``). The student's hidden states, weight and bias see a ``[V]`` sum of those
    entries through the matmul. Rows of ordinary logits get a negligible allowance.
    """
    student = case.student if not case.fused else case.hidden @ case.weight.T + case.bias
    rows = np.concatenate([case.teacher.reshape(len(student), -1), student], axis=-1).astype(np.float64)
    finite = np.where(np.isfinite(rows), np.abs(rows), 0.0)
    per_row = 2.0 * finite.max(axis=-1, keepdims=True) / options["temperature"]
    bound = {"grad student": per_row, "grad teacher": per_row}
    if case.fused:
        vocab = student.shape[-1]
        weight = np.where(np.isfinite(case.weight), np.abs(case.weight), 0.0).max(initial=0.0)
        hidden = np.where(np.isfinite(case.hidden), np.abs(case.hidden), 0.0).max(initial=0.0)
        bound["grad hidden"] = per_row * vocab * weight
        bound["grad weight"] = per_row.max(initial=0.0) * len(student) * hidden
        bound["grad bias"] = per_row.max(initial=0.0) * len(student)
    return bound


def check(case: Case, options: dict, reduction: str, paths=PATHS, name: str = "") -> None:
    """Every chunk path in ``paths`` equals the core on ``case`` (value and every gradient)."""
    scales = conditioning(case, options)
    with np.errstate(all="ignore"):
        want = through_core(case, options, reduction, torch.float32)
        truth = through_core(case, options, reduction, torch.float64)
        for path in paths:
            got = through_path(path, case, options, reduction)
            for key, result in got.items():
                what = f"{name} {path} {key} {options} reduction={reduction}"
                assert result.shape == want[key].shape, what
                assert_same(result, want[key], truth[key], what, scales.get(key, 0.0))


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


def topk_cases() -> dict[str, Case]:
    """Named sparse teachers (``teacher_topk_indices`` / ``_values``) for the fused-linear loss, hostile
    values among the top-k values and the student's logits: ``name -> Case``."""
    rng = np.random.default_rng(5)
    hidden = rng.standard_normal((ROWS, HIDDEN)).astype(np.float32)
    weight = rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32)
    bias = rng.standard_normal(VOCAB).astype(np.float32)
    teacher = _logits(1)
    k = 3
    indices = np.argsort(-teacher, axis=-1)[:, :k]
    log_probs = teacher - np.log(np.exp(teacher).sum(-1, keepdims=True))
    top = np.take_along_axis(log_probs, indices, -1).astype(np.float32)

    def case(values=top, idx=indices, topk_format="log_probs", **student) -> Case:
        arrays = {"hidden": hidden, "weight": weight, "bias": bias, **student}
        return Case(teacher=values.copy(), topk_indices=idx, topk_format=topk_format, **arrays)

    cases = {"finite": case(), "finite_logits_format": case(np.take_along_axis(teacher, indices, -1))}
    full = np.argsort(-teacher, axis=-1)
    cases["k_equals_vocab"] = case(np.take_along_axis(log_probs, full, -1).astype(np.float32), full)
    for value, name in ((math.nan, "nan"), (math.inf, "inf"), (-math.inf, "neg_inf")):
        values = top.copy()
        values[1, 2] = value
        cases[f"value_{name}"] = case(values)
        cases[f"value_{name}_logits_format"] = case(values, topk_format="logits")
        b = bias.copy()
        b[indices[2, 0]] = value  # a student logit inside the top-k of row 2 (and a column elsewhere)
        cases[f"student_{name}"] = case(bias=b)
    values = top.copy()
    values[3] = 0.0  # mass 3 > 1: the tail bucket's log(1 − min(1, mass)) is -inf
    cases["teacher_mass_above_one"] = case(values)
    values = top.copy()
    values[0] = -math.inf  # no mass in the top-k: the tail holds it all
    cases["teacher_row_all_neg_inf"] = case(values)
    cases["huge_student"] = case(hidden=1e29 * hidden)
    values = top.copy()
    values[1, 0] = math.nan
    labels = np.array([0, -100, 2, 3, -100, -100])
    cases["masked_hostile_rows_labels"] = case(values, labels=labels)
    cases["all_masked_mask"] = case(values, mask=np.zeros(ROWS, dtype=bool))
    b = bias.copy()
    b[indices[0, 0]] = 200.0  # row 0's tail lies > 80 nats below its top: the tail summed apart
    cases["student_tail_far_below"] = case(bias=b)
    b = bias.copy()
    b[indices[1, 1]] = DENORMAL
    cases["student_denormal"] = case(bias=b, hidden=DENORMAL * hidden)
    same = np.tile(np.arange(k), (ROWS, 1))  # every row's top-k is columns 0..k-1
    b = bias.copy()
    b[k:] = -math.inf  # the student has no mass outside them: its tail bucket is log 0
    cases["student_tail_all_neg_inf"] = case(
        np.take_along_axis(log_probs, same, -1).astype(np.float32), same, bias=b
    )
    repeated = indices.copy()
    repeated[:, 1] = repeated[:, 0]  # a repeated index: its mass counted twice, as take_along_axis does
    cases["repeated_index"] = case(np.take_along_axis(log_probs, repeated, -1).astype(np.float32), repeated)
    cases["repeated_index_logits_format"] = case(
        np.take_along_axis(teacher, repeated, -1).astype(np.float32), repeated, topk_format="logits"
    )
    return cases


CHUNKED = chunked_cases()
FUSED = fused_cases()
TOPK = topk_cases()
# A sparse teacher: the Numba kernels (kldiv.fused._torch_sparse) and autograd through the core (the
# Triton kernels under the interpreter below).
TOPK_PATHS = {"numba": PATHS["numba"], "core": PATHS["core"]}
# "sum" only rescales the rows' coefficients of "auto" (as on the dense kernel path).
TOPK_OPTIONS = [(options, reduction) for options, reduction in ALL_OPTIONS if reduction != "sum"]


@pytest.mark.parametrize("name", sorted(CHUNKED))
def test_chunked_named_edge_case(name: str) -> None:
    every_option(CHUNKED[name], f"chunked {name}")


@pytest.mark.parametrize("name", sorted(FUSED))
def test_fused_linear_named_edge_case(name: str) -> None:
    every_option(FUSED[name], f"fused {name}")


@pytest.mark.parametrize("name", sorted(TOPK))
def test_topk_teacher_named_edge_case(name: str) -> None:
    for options, reduction in TOPK_OPTIONS:
        check(TOPK[name], options, reduction, paths=TOPK_PATHS, name=f"top-k {name}")


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


# The Triton chunk path, under Triton's interpreter in a subprocess (this file run as a script): CPU
# tensors described to the plan as CUDA ones, so that every chunk runs the Triton kernel.
TRITON_PATHS = {"triton": ({"backend": "triton"}, False)}
# Per-token values and a non-uniform upstream gradient (the other reductions only rescale the rows'
# coefficients, as on the Numba path): the interpreter runs about 0.1 s a call.
TRITON_OPTIONS = [(options, reduction) for options, reduction in ALL_OPTIONS if reduction == "none"]
# Top-k: exact mode and no symmetric KL (the sum of the two directions), to keep the interpreter's time.
TRITON_TOPK_OPTIONS = [
    (options, reduction)
    for options, reduction in TRITON_OPTIONS
    if options["epsilon"] is None and options.get("direction") != "symmetric"
]


def triton_main() -> None:
    from kldiv.fused import _torch_chunks

    _torch_chunks.DEVICE_ARRAYS["cpu"] = "cuda"
    failures = []
    for kind, cases in (("chunked", CHUNKED), ("fused", FUSED), ("top-k", TOPK)):
        for name, case in sorted(cases.items()):
            for options, reduction in TRITON_TOPK_OPTIONS if kind == "top-k" else TRITON_OPTIONS:
                try:
                    check(case, options, reduction, paths=TRITON_PATHS, name=f"{kind} {name}")
                except AssertionError as error:
                    failures.append(f"{kind} {name}: {str(error)[:600]}")
                    break
    print(json.dumps(failures))


def test_triton_chunks_agree_with_core() -> None:
    failures = interpreted_failures(__file__, 1200)
    assert failures == [], "\n".join(failures[:8])


if __name__ == "__main__":
    triton_main()
