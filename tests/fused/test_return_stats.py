"""``return_stats=True``: the per-token statistics of the fused-linear and chunked losses equal their
materialized float64 definitions (after the logit maps, at the temperature), on the Numba and autograd
paths, dense and top-k teachers; the loss and its gradients are those of the call without statistics."""

from __future__ import annotations

import pytest
import torch

import kldiv
from kldiv.fused.torch import FusedLinearJSDivergence, FusedLinearKLDivergence, chunked_kl_divergence

BT, H, V, K = 13, 6, 29, 5
T = 1.6


def tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64) * 2

    mask = torch.ones(BT, dtype=torch.bool)
    mask[[2, 7]] = False
    return {"h": rand(BT, H), "w": rand(V, H), "teacher": rand(BT, V), "mask": mask}


def entropy(logits: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(logits / T, -1)
    return -(p * torch.log_softmax(logits / T, -1)).sum(-1)


def zero_masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, x, torch.zeros_like(x))


@pytest.mark.parametrize("backend", ["numba", "core"])
@pytest.mark.parametrize(
    ("fused_cls", "reference", "kind"),
    [
        (FusedLinearKLDivergence, kldiv.kl_divergence, {"direction": "reverse"}),
        (FusedLinearJSDivergence, kldiv.js_divergence, {"beta": 0.3}),
    ],
    ids=["reverse", "js"],
)
def test_dense_statistics_equal_their_definitions(backend, fused_cls, reference, kind):
    t = tensors()
    leaves = [t["h"].clone().requires_grad_(), t["w"].clone().requires_grad_()]
    options = {"temperature": T, "chunk_size": 4, "backend": backend, "student_softcap": 3.0, **kind}
    loss, stats = fused_cls(return_stats=True, **options)(
        *leaves, teacher_logits=t["teacher"], mask=t["mask"]
    )
    plain = fused_cls(**options)(*leaves, teacher_logits=t["teacher"], mask=t["mask"])
    torch.testing.assert_close(loss, plain, rtol=0, atol=0)
    for got, want in zip(torch.autograd.grad(loss, leaves), torch.autograd.grad(plain, leaves), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    student = torch.tanh((t["h"] @ t["w"].T) / 3.0) * 3.0
    per_token = reference(
        t["teacher"],
        student,
        y_true_format="logits",
        y_pred_format="logits",
        epsilon=0,
        temperature=T,
        backend="core",
        **kind,
    )
    expected = {
        "per_token": per_token,
        "student_lse": torch.logsumexp(student / T, -1),
        "teacher_lse": torch.logsumexp(t["teacher"] / T, -1),
        "student_entropy": entropy(student),
    }
    assert set(stats) == set(expected)
    for name, want in expected.items():
        assert not stats[name].requires_grad and stats[name].shape == (BT,), name
        torch.testing.assert_close(
            stats[name], zero_masked(want, t["mask"]), rtol=1e-11, atol=1e-12, msg=name
        )


@pytest.mark.parametrize("topk_format", ["log_probs", "logits"])
def test_sparse_statistics_equal_their_definitions(topk_format):
    t = tensors(1)
    log_probs = torch.log_softmax(t["teacher"] / T, -1)
    top = torch.topk(log_probs if topk_format == "log_probs" else t["teacher"], K, dim=-1)
    loss, stats = FusedLinearKLDivergence(return_stats=True, temperature=T, teacher_topk_format=topk_format)(
        t["h"], t["w"], teacher_topk_indices=top.indices, teacher_topk_values=top.values, mask=t["mask"]
    )
    student = t["h"] @ t["w"].T
    q = torch.softmax(student / T, -1)
    own = torch.topk(student, K, dim=-1).indices
    overlap = torch.tensor(
        [len(set(a.tolist()) & set(b.tolist())) / K for a, b in zip(own, top.indices, strict=True)],
        dtype=torch.float64,
    )
    expected = {
        "student_lse": torch.logsumexp(student / T, -1),
        "student_entropy": entropy(student),
        "teacher_mass": top.values.exp().sum(-1)
        if topk_format == "log_probs"
        else torch.ones(BT, dtype=torch.float64),
        "student_mass": q.gather(-1, top.indices).sum(-1),
        "topk_overlap": overlap,
    }
    assert set(stats) == {"per_token", *expected}
    for name, want in expected.items():
        torch.testing.assert_close(
            stats[name], zero_masked(want, t["mask"]), rtol=1e-11, atol=1e-12, msg=name
        )
    assert float(stats["per_token"].sum()) == pytest.approx(float(loss) * int(t["mask"].sum()), rel=1e-12)


def test_chunked_statistics_keep_the_leading_shape():
    generator = torch.Generator().manual_seed(2)
    teacher = torch.randn(2, 5, V, generator=generator, dtype=torch.float64)
    student = torch.randn(2, 5, V, generator=generator, dtype=torch.float64, requires_grad=True)
    loss, stats = chunked_kl_divergence(teacher, student, return_stats=True, chunk_size=3, temperature=T)
    assert all(value.shape == (2, 5) for value in stats.values())
    assert stats.per_token is stats["per_token"]  # SPEC §6: stats.per_token
    with pytest.raises(AttributeError, match="teacher_mass"):
        stats.teacher_mass  # dense teacher: not recorded
    torch.testing.assert_close(stats["teacher_lse"], torch.logsumexp(teacher / T, -1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss, stats["per_token"].mean(), rtol=1e-12, atol=0)
    with pytest.raises(TypeError, match="`return_stats`"):
        FusedLinearKLDivergence(return_stats="yes")
