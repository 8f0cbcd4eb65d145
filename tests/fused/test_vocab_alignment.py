"""Teacher and student vocabularies of different sizes: an error naming both, unless ``vocab_alignment``
says how to align them — ``"truncate_teacher"`` (the core on the teacher's first V entries) or
``"pad_student"`` (the core on the student's logits padded with −inf) — on the Numba and autograd
paths, values and every gradient, fused-linear and chunked forms."""

from __future__ import annotations

import math

import pytest
import torch

import kldiv
from kldiv.fused.torch import FusedLinearJSDivergence, FusedLinearKLDivergence, chunked_kl_divergence

BT, H, V, PAD = 11, 6, 23, 5


def tensors(seed: int = 0, teacher_pad_mass: bool = False) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64) * 2

    teacher = rand(BT, V + PAD)
    if not teacher_pad_mass:
        teacher[:, V:] = -math.inf  # a padded vocabulary: the slots hold no probability
    return {"h": rand(BT, H), "w": rand(V, H), "b": rand(V), "teacher": teacher}


def reference(reference_cls, kind, teacher, student_logits):
    loss = reference_cls(y_true_format="logits", from_logits=True, epsilon=0, backend="core", **kind)
    return loss(teacher, student_logits)


def run(fused_cls, kind, alignment, t, backend):
    leaves = [t[n].clone().requires_grad_() for n in ("h", "w", "b")]
    loss = fused_cls(vocab_alignment=alignment, chunk_size=4, backend=backend, **kind)
    value = loss(*leaves, teacher_logits=t["teacher"])
    return value.detach(), torch.autograd.grad(value, leaves)


KINDS = [
    (FusedLinearKLDivergence, kldiv.KLDivergence, {"direction": "forward"}),
    (FusedLinearKLDivergence, kldiv.KLDivergence, {"direction": "reverse"}),
    (FusedLinearJSDivergence, kldiv.JSDivergence, {"beta": 0.4}),
]


@pytest.mark.parametrize(("fused_cls", "reference_cls", "kind"), KINDS, ids=["forward", "reverse", "js"])
@pytest.mark.parametrize("alignment", ["truncate_teacher", "pad_student"])
@pytest.mark.parametrize("backend", ["numba", "core"])
@pytest.mark.parametrize("teacher_pad_mass", [False, True])
def test_alignment_equals_the_core_on_aligned_logits(
    fused_cls, reference_cls, kind, alignment, backend, teacher_pad_mass
):
    t = tensors(teacher_pad_mass=teacher_pad_mass)
    value, grads = run(fused_cls, kind, alignment, t, backend)
    leaves = [t[n].clone().requires_grad_() for n in ("h", "w", "b")]
    student = leaves[0] @ leaves[1].T + leaves[2]
    if alignment == "truncate_teacher":
        expected = reference(reference_cls, kind, t["teacher"][:, :V], student)
    else:
        padded = torch.cat([student, torch.full((BT, PAD), -math.inf, dtype=torch.float64)], -1)
        expected = reference(reference_cls, kind, t["teacher"], padded)
    if alignment == "pad_student" and teacher_pad_mass and kind.get("direction") == "forward":
        assert (
            value == math.inf and float(expected.detach()) == math.inf
        )  # teacher mass where the student has none
        return
    assert torch.isfinite(value)
    torch.testing.assert_close(value, expected.detach(), rtol=1e-11, atol=1e-12)
    for got, want in zip(grads, torch.autograd.grad(expected, leaves), strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)


def test_padded_teacher_slots_make_both_alignments_equal():
    t = tensors()
    truncated = run(FusedLinearKLDivergence, {}, "truncate_teacher", t, "numba")
    padded = run(FusedLinearKLDivergence, {}, "pad_student", t, "numba")
    torch.testing.assert_close(truncated[0], padded[0], rtol=1e-12, atol=0)
    for a, b in zip(truncated[1], padded[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_teacher_hidden_form_and_chunked_form():
    t = tensors(3)
    tw = torch.randn(V + PAD, H, dtype=torch.float64)
    th = torch.randn(BT, H, dtype=torch.float64)
    value = FusedLinearKLDivergence(vocab_alignment="truncate_teacher")(
        t["h"], t["w"], teacher_hidden=th, teacher_weight=tw
    )
    expected = reference(kldiv.KLDivergence, {}, th @ tw[:V].T, t["h"] @ t["w"].T)
    torch.testing.assert_close(value, expected, rtol=1e-11, atol=1e-12)
    student = (t["h"] @ t["w"].T).requires_grad_()
    chunked = chunked_kl_divergence(t["teacher"], student, vocab_alignment="pad_student", chunk_size=3)
    (grad,) = torch.autograd.grad(chunked, student)
    wide = student.detach().clone().requires_grad_()
    padded = torch.cat([wide, torch.full((BT, PAD), -math.inf, dtype=torch.float64)], -1)
    want = reference(kldiv.KLDivergence, {}, t["teacher"], padded)
    torch.testing.assert_close(chunked, want, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(grad, torch.autograd.grad(want, wide)[0], rtol=1e-9, atol=1e-12)
    assert grad.shape == (BT, V)


def test_mismatch_without_alignment_names_both_sizes():
    t = tensors()
    with pytest.raises(ValueError, match=f"vocabulary size {V}; received a teacher of {V + PAD} entries"):
        FusedLinearKLDivergence()(t["h"], t["w"], teacher_logits=t["teacher"])
    with pytest.raises(ValueError, match="`teacher_weight`"):
        FusedLinearKLDivergence()(
            t["h"], t["w"], teacher_hidden=t["h"], teacher_weight=torch.zeros(V + 1, H, dtype=torch.float64)
        )
    with pytest.raises(ValueError, match="vocab_alignment"):
        chunked_kl_divergence(t["teacher"], t["h"] @ t["w"].T)
    with pytest.raises(ValueError, match="`teacher_logits`"):  # a smaller teacher is never aligned
        FusedLinearKLDivergence(vocab_alignment="pad_student")(
            t["h"], t["w"], teacher_logits=t["teacher"][:, : V - 2]
        )
    with pytest.raises(ValueError, match="`vocab_alignment`"):
        FusedLinearKLDivergence(vocab_alignment="pad")


@pytest.mark.parametrize("backend", ["numba", "core"])
def test_pad_student_with_a_soft_cap_keeps_the_padding_at_minus_inf(backend):
    """The cap maps −∞ to −∞ (not −c): a padded slot gets no probability under a Gemma-style cap, so a
    teacher without mass there gives the loss of the unpadded vocabulary."""
    t = tensors(4)
    leaves = [t[n].clone().requires_grad_() for n in ("h", "w", "b")]
    loss = FusedLinearKLDivergence(
        vocab_alignment="pad_student", student_softcap=2.0, chunk_size=4, backend=backend
    )
    value = loss(*leaves, teacher_logits=t["teacher"])
    wide = [t[n].clone().requires_grad_() for n in ("h", "w", "b")]
    capped = torch.tanh((wide[0] @ wide[1].T + wide[2]) / 2.0) * 2.0
    expected = reference(kldiv.KLDivergence, {}, t["teacher"][:, :V], capped)
    torch.testing.assert_close(value.detach(), expected.detach(), rtol=1e-11, atol=1e-12)
    for got, want in zip(
        torch.autograd.grad(value, leaves), torch.autograd.grad(expected, wide), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
