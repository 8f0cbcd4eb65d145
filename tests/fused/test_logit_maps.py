"""Logit scale and soft cap inside the chunked and fused-linear losses: every path (Numba kernel,
autograd through the core) equals the float64 core on the capped logits formed by hand — values,
every gradient, masked rows of NaN — and the formula itself equals its definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import kldiv
from kldiv.core.logit_maps import LogitMap
from kldiv.fused import _torch_chunks as fused_chunks
from kldiv.fused.torch import FusedLinearJSDivergence, FusedLinearKLDivergence, chunked_kl_divergence

BT, H, V = 19, 8, 29
KINDS = [
    (FusedLinearKLDivergence, kldiv.KLDivergence, {"direction": "forward"}),
    (FusedLinearKLDivergence, kldiv.KLDivergence, {"direction": "reverse"}),
    (FusedLinearJSDivergence, kldiv.JSDivergence, {"beta": 0.3}),
]
MAPS = [
    {"student_softcap": 2.0},
    {"student_logit_scale": 0.6, "teacher_softcap": 1.5},
    {"student_logit_scale": 1.7, "student_softcap": 3.0, "teacher_logit_scale": 0.8, "teacher_softcap": 2.5},
]


def by_hand(z: torch.Tensor, scale: float | None, cap: float | None) -> torch.Tensor:
    """The models' own code: ``logits * logit_scale`` (Cohere), then ``tanh(logits / cap) * cap`` (Gemma)."""
    if scale is not None:
        z = z * scale
    if cap is not None:
        z = torch.tanh(z / cap) * cap
    return z


@pytest.fixture
def paths(monkeypatch):
    """Record which chunk path ran."""
    seen = []
    for key, compute in list(fused_chunks._COMPUTE.items()):

        def spy(*args, _compute=compute, _key=key, **kwargs):
            seen.append(_key)
            return _compute(*args, **kwargs)

        monkeypatch.setitem(fused_chunks._COMPUTE, key, spy)
    return seen


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64) * scale

    labels = torch.randint(-1, 4, (BT,), generator=generator)
    labels[labels < 0] = -100
    return {
        "h": rand(BT, H),
        "w": rand(V, H, scale=1.5),
        "b": rand(V),
        "th": rand(BT, H),
        "tw": rand(V, H, scale=1.5),
        "labels": labels,
    }


def test_logit_map_is_its_formula_and_derivative():
    z = torch.linspace(-40, 40, 101, dtype=torch.float64, requires_grad=True)
    for scale, cap in [(None, None), (0.5, None), (None, 30.0), (2.0, 5.0)]:
        logit_map = LogitMap(scale, cap)
        mapped = logit_map.apply(torch, z)
        expected = z.detach().numpy() * (scale or 1.0)
        if cap is not None:
            expected = cap * np.tanh(expected / cap)
        np.testing.assert_allclose(mapped.detach().numpy(), expected, rtol=1e-15, atol=1e-13)
        (grad,) = torch.autograd.grad(mapped.sum(), z)
        derivative = logit_map.derivative(torch, mapped.detach())
        np.testing.assert_allclose(
            np.broadcast_to(np.asarray(derivative), (101,)), grad.numpy(), rtol=1e-12, atol=1e-12
        )
    assert LogitMap().identity and LogitMap(1.0).identity and not LogitMap(None, 30.0).identity


@pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan, True, "30"])
def test_bad_caps_and_scales_are_named(bad):
    with pytest.raises(ValueError, match="student_softcap"):
        FusedLinearKLDivergence(student_softcap=bad)
    with pytest.raises(ValueError, match="teacher_logit_scale"):
        FusedLinearKLDivergence(teacher_logit_scale=bad)


@pytest.mark.parametrize(("fused_cls", "reference_cls", "kind"), KINDS, ids=["forward", "reverse", "js0.3"])
@pytest.mark.parametrize("maps", MAPS, ids=["cap", "scale+teacher-cap", "both-sides"])
@pytest.mark.parametrize("teacher", ["hidden", "logits"])
@pytest.mark.parametrize("path", ["numba", None])
def test_fused_with_maps_equals_the_core_on_mapped_logits(
    paths, fused_cls, reference_cls, kind, maps, teacher, path
):
    t = _tensors()
    grads_of = ["h", "w", "b"] + (["th"] if path is None and teacher == "hidden" else [])
    leaves = {n: t[n].clone().requires_grad_(n in grads_of) for n in ("h", "w", "b", "th", "tw")}
    teacher_raw = leaves["th"] @ leaves["tw"].T
    teacher_args = (
        {"teacher_hidden": leaves["th"], "teacher_weight": leaves["tw"]}
        if teacher == "hidden"
        else {"teacher_logits": teacher_raw.detach()}
    )
    backend = "numba" if path == "numba" else "core"
    loss = fused_cls(chunk_size=5, temperature=1.3, backend=backend, **kind, **maps)
    value = loss(leaves["h"], leaves["w"], leaves["b"], labels=t["labels"], **teacher_args)
    got = torch.autograd.grad(value, [leaves[n] for n in grads_of])
    assert set(paths) == {path}, paths

    wide = {n: t[n].clone().requires_grad_(n in grads_of) for n in ("h", "w", "b", "th", "tw")}
    student_logits = by_hand(
        wide["h"] @ wide["w"].T + wide["b"], maps.get("student_logit_scale"), maps.get("student_softcap")
    )
    teacher_logits = wide["th"] @ wide["tw"].T
    if teacher == "logits":
        teacher_logits = teacher_logits.detach()
    teacher_logits = by_hand(teacher_logits, maps.get("teacher_logit_scale"), maps.get("teacher_softcap"))
    reference = reference_cls(
        y_true_format="logits", from_logits=True, epsilon=0, backend="core", temperature=1.3, **kind
    )
    expected = reference(teacher_logits, student_logits, labels=t["labels"])
    want = torch.autograd.grad(expected, [wide[n] for n in grads_of])
    value, expected = value.detach(), expected.detach()
    assert abs(float(value) - float(expected)) <= 1e-12 * max(1.0, abs(float(expected)))
    for name, g, w in zip(grads_of, got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12, msg=name)


def test_masked_rows_of_nan_and_inf_stay_out_with_a_cap():
    """Masked tokens whose logits are NaN or inf (student or teacher): the loss and the gradient are
    finite, the masked rows' gradient is exactly 0 (``0·φ'(NaN)`` would be NaN), and the Numba and
    autograd paths agree."""
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(BT, V, generator=generator, dtype=torch.float64) * 3
    student = torch.randn(BT, V, generator=generator, dtype=torch.float64) * 3
    student[3] = math.nan
    student[5, 2] = math.inf
    teacher[7] = -math.inf
    teacher[8, 1] = math.nan
    mask = torch.ones(BT, dtype=torch.bool)
    mask[[3, 5, 7, 8]] = False
    results = {}
    for backend in ("numba", "core"):
        leaf = student.clone().requires_grad_()
        value = chunked_kl_divergence(
            teacher,
            leaf,
            mask=mask,
            chunk_size=4,
            student_softcap=2.0,
            student_logit_scale=1.5,
            teacher_softcap=2.0,
            backend=backend,
        )
        (grad,) = torch.autograd.grad(value, leaf)
        assert torch.isfinite(value) and torch.isfinite(grad).all(), backend
        assert torch.equal(grad[~mask], torch.zeros(4, V, dtype=torch.float64)), backend
        results[backend] = (value.detach(), grad)
    for a, b in zip(results["numba"], results["core"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_chunked_logits_with_a_cap_keep_the_callers_logits():
    generator = torch.Generator().manual_seed(2)
    teacher = torch.randn(2, 7, V, generator=generator, dtype=torch.float64) * 4
    student = (torch.randn(2, 7, V, generator=generator, dtype=torch.float64) * 4).requires_grad_()
    before = student.detach().clone()
    value = chunked_kl_divergence(teacher, student, chunk_size=3, student_softcap=3.0, teacher_softcap=3.0)
    (grad,) = torch.autograd.grad(value, student)
    assert torch.equal(student.detach(), before)
    wide = student.detach().clone().requires_grad_()
    reference = kldiv.KLDivergence(y_true_format="logits", from_logits=True, epsilon=0, backend="core")
    expected = reference(by_hand(teacher, None, 3.0), by_hand(wide, None, 3.0))
    (want,) = torch.autograd.grad(expected, wide)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-13)


def test_maps_are_in_the_config_and_repr():
    loss = FusedLinearKLDivergence(student_softcap=30, teacher_logit_scale=0.25)
    config = loss.get_config()
    assert config["student_softcap"] == 30.0 and config["teacher_logit_scale"] == 0.25
    assert type(loss)(**config).get_config() == config
    assert "student_softcap=30.0" in repr(loss)


def test_minus_infinity_stays_minus_infinity_with_zero_derivative():
    """A masked / padded slot (−∞) keeps no probability through the cap (Unsloth #10616: a cap made such
    slots finite) and passes no gradient, in both the autograd form and the derivative."""
    z = torch.tensor([-math.inf, -50.0, 0.0, 3.0], dtype=torch.float64, requires_grad=True)
    logit_map = LogitMap(1.5, 4.0)
    mapped = logit_map.apply(torch, z)
    assert mapped[0] == -math.inf and torch.isfinite(mapped[1:]).all()
    (grad,) = torch.autograd.grad(mapped.sum(), z)
    assert grad[0] == 0 and torch.isfinite(grad).all()
    torch.testing.assert_close(logit_map.derivative(torch, mapped.detach()), grad, rtol=1e-12, atol=0)
