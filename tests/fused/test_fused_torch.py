"""Chunked and fused-linear divergences equal the unchunked core: values and every gradient, for
chunk sizes that do and do not divide BT, masks, every teacher form, kernel and autograd paths."""

from __future__ import annotations

import pytest
import torch

import kldiv
from kldiv.fused.torch import (
    FusedLinearJSDivergence,
    FusedLinearKLDivergence,
    chunked_js_divergence,
    chunked_kl_divergence,
)

BT, H, V = 23, 8, 31
KINDS = [
    (FusedLinearKLDivergence, kldiv.KLDivergence, {"direction": "forward"}),
    (FusedLinearKLDivergence, kldiv.KLDivergence, {"direction": "reverse"}),
    (FusedLinearKLDivergence, kldiv.KLDivergence, {"direction": "symmetric"}),
    (FusedLinearJSDivergence, kldiv.JSDivergence, {"beta": 0.3}),
]


def tensors(dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype).requires_grad_()

    labels = torch.randint(-1, 4, (BT,), generator=generator)
    labels[labels < 0] = -100
    return {
        "h": rand(BT, H),
        "w": rand(V, H),
        "b": rand(V),
        "th": rand(BT, H),
        "tw": rand(V, H),
        "tb": rand(V),
        "labels": labels,
    }


def reference(reference_cls, kind, t, student_logits, teacher_logits, reduction, **options):
    loss = reference_cls(
        reduction=reduction,
        y_true_format="logits",
        from_logits=True,
        epsilon=0,
        backend="core",
        **kind,
        **options,
    )
    return loss(teacher_logits, student_logits, labels=t["labels"])


def scalar(value):
    return (
        value if value.ndim == 0 else (value * torch.linspace(0.5, 2, value.numel(), dtype=value.dtype)).sum()
    )


@pytest.mark.parametrize(("fused_cls", "reference_cls", "kind"), KINDS, ids=lambda x: str(x))
@pytest.mark.parametrize("reduction", ["token_mean", "sum", "batchmean", "none"])
@pytest.mark.parametrize("chunk_size", [4, 5, 23, 1000])
@pytest.mark.parametrize("teacher_grad", [False, True])  # True: autograd path, False: Numba kernel path
def test_teacher_hidden_and_weight(fused_cls, reference_cls, kind, reduction, chunk_size, teacher_grad):
    t = tensors()
    for name in ("th", "tw", "tb"):
        t[name].requires_grad_(teacher_grad)
    options = {"temperature": 1.5, "scale_by_temperature_squared": True}
    loss = fused_cls(reduction=reduction, chunk_size=chunk_size, **kind, **options)
    value = loss(
        t["h"],
        t["w"],
        t["b"],
        teacher_hidden=t["th"],
        teacher_weight=t["tw"],
        teacher_bias=t["tb"],
        labels=t["labels"],
    )
    inputs = [t[n] for n in ("h", "w", "b") + (("th", "tw", "tb") if teacher_grad else ())]
    grads = torch.autograd.grad(scalar(value), inputs)
    expected = reference(
        reference_cls,
        kind,
        t,
        t["h"] @ t["w"].T + t["b"],
        t["th"] @ t["tw"].T + t["tb"],
        reduction,
        **options,
    )
    expected_grads = torch.autograd.grad(scalar(expected), inputs)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-12)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(("fused_cls", "reference_cls", "kind"), KINDS, ids=lambda x: str(x))
def test_teacher_logits_and_sample_weight_and_num_items(fused_cls, reference_cls, kind):
    t = tensors()
    teacher_logits = torch.randn(BT, V, dtype=torch.float64)
    weight = torch.rand(BT, dtype=torch.float64)
    value = fused_cls(reduction="token_mean", chunk_size=6, **kind)(
        t["h"], t["w"], teacher_logits=teacher_logits, sample_weight=weight, num_items=7.0, labels=t["labels"]
    )
    expected = reference_cls(
        reduction="token_mean", y_true_format="logits", from_logits=True, epsilon=0, backend="core", **kind
    )(teacher_logits, t["h"] @ t["w"].T, sample_weight=weight, num_items=7.0, labels=t["labels"])
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-12)
    got = torch.autograd.grad(value, [t["h"], t["w"]])
    want = torch.autograd.grad(expected, [t["h"], t["w"]])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_sparse_topk_with_k_equal_v_equals_dense():
    t = tensors()
    teacher_logits = torch.randn(BT, V, dtype=torch.float64)
    order = torch.argsort(teacher_logits, -1, descending=True)
    values = torch.gather(torch.log_softmax(teacher_logits, -1), -1, order)
    loss = FusedLinearKLDivergence(chunk_size=5)
    sparse = loss(t["h"], t["w"], teacher_topk_indices=order, teacher_topk_values=values)
    dense = loss(t["h"], t["w"], teacher_logits=teacher_logits)
    torch.testing.assert_close(sparse, dense, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(sparse, t["w"])[0], torch.autograd.grad(dense, t["w"])[0])


def test_sparse_topk_tail_bucket_is_the_coarsened_divergence():
    """k < V: the teacher's top-k log-probs plus one tail bucket against the student's."""
    t = tensors()
    teacher_logits = torch.randn(BT, V, dtype=torch.float64)
    k = 5
    top = torch.topk(torch.log_softmax(teacher_logits, -1), k, dim=-1)
    value = FusedLinearKLDivergence(reduction="sum", chunk_size=7)(
        t["h"], t["w"], teacher_topk_indices=top.indices, teacher_topk_values=top.values
    )
    student = torch.log_softmax(t["h"] @ t["w"].T, -1)
    student_top = torch.gather(student, -1, top.indices)
    teacher_tail = torch.log1p(-top.values.exp().sum(-1, keepdim=True))
    student_tail = torch.log1p(-student_top.exp().sum(-1, keepdim=True))
    p = torch.cat([top.values, teacher_tail], -1).exp()
    q = torch.cat([student_top, student_tail], -1).exp()
    expected = (p * (p.log() - q.log())).sum()
    torch.testing.assert_close(value, expected, rtol=1e-9, atol=1e-12)


def test_sparse_topk_logits_renormalise_over_k():
    t = tensors()
    indices = torch.sort(torch.stack([torch.randperm(V)[:4] for _ in range(BT)]), -1).values
    teacher_values = torch.randn(BT, 4, dtype=torch.float64)
    value = FusedLinearKLDivergence(reduction="sum", teacher_topk_format="logits")(
        t["h"], t["w"], teacher_topk_indices=indices, teacher_topk_values=teacher_values
    )
    restricted = torch.gather(t["h"] @ t["w"].T, -1, indices)
    expected = kldiv.KLDivergence(reduction="sum", y_true_format="logits", from_logits=True, epsilon=0)(
        teacher_values, restricted
    )
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunked", [chunked_kl_divergence, chunked_js_divergence])
def test_chunked_logits_3d_with_mask(chunked):
    generator = torch.Generator().manual_seed(3)
    teacher = torch.randn(3, 7, V, generator=generator, dtype=torch.float64, requires_grad=True)
    student = torch.randn(3, 7, V, generator=generator, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(3, 7, generator=generator) < 0.7
    value = chunked(teacher, student, reduction="batchmean", chunk_size=4, mask=mask)
    cls = kldiv.KLDivergence if chunked is chunked_kl_divergence else kldiv.JSDivergence
    expected = cls(reduction="batchmean", y_true_format="logits", from_logits=True, epsilon=0)(
        teacher, student, mask=mask
    )
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-12)
    for got, want in zip(
        torch.autograd.grad(value, [teacher, student]),
        torch.autograd.grad(expected, [teacher, student]),
        strict=True,
    ):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_bfloat16_gradients_within_1e_2_of_float64():
    t = tensors()
    low = {n: t[n].detach().to(torch.bfloat16).requires_grad_() for n in ("h", "w")}
    teacher = torch.randn(BT, V, dtype=torch.float64)
    value = FusedLinearKLDivergence(chunk_size=5)(
        low["h"], low["w"], teacher_logits=teacher.to(torch.bfloat16)
    )
    grads = torch.autograd.grad(value, [low["h"], low["w"]])
    assert all(g.dtype == torch.bfloat16 for g in grads)
    exact_inputs = [low[n].detach().double().requires_grad_() for n in ("h", "w")]
    expected = kldiv.KLDivergence(
        reduction="token_mean", y_true_format="logits", from_logits=True, epsilon=0
    )(teacher.to(torch.bfloat16).double(), exact_inputs[0] @ exact_inputs[1].T)
    for got, want in zip(grads, torch.autograd.grad(expected, exact_inputs), strict=True):
        error = (got.double() - want).norm() / want.norm()
        assert error <= 1e-2, error


def test_gradcheck_small():
    t = tensors(seed=5)
    teacher = torch.randn(BT, V, dtype=torch.float64)

    def fn(h, w, b):
        return FusedLinearKLDivergence(chunk_size=6, temperature=2.0)(h, w, b, teacher_logits=teacher)

    assert torch.autograd.gradcheck(fn, (t["h"], t["w"], t["b"]))


def test_bad_arguments_are_named():
    t = tensors()
    with pytest.raises(ValueError, match="exactly one teacher form"):
        FusedLinearKLDivergence()(t["h"], t["w"])
    with pytest.raises(ValueError, match="`student_weight`"):
        FusedLinearKLDivergence()(t["h"], t["w"][:, :3], teacher_logits=torch.zeros(BT, V))
    with pytest.raises(ValueError, match="`reduction`"):
        FusedLinearKLDivergence(reduction="avg")
    with pytest.raises(ValueError, match="`chunk_size`"):
        FusedLinearKLDivergence(chunk_size=0)


def test_second_backward_through_a_retained_graph_and_no_grad_copy():
    """The stored gradients are handed to autograd (no copy into .grad); a second backward through a
    retained graph computes them again and accumulates the same amount."""
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(9, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(9, 11, generator=generator, dtype=torch.float64)
    loss_fn = FusedLinearKLDivergence(reduction="token_mean", chunk_size=4)
    loss = loss_fn(hidden, weight, teacher_logits=teacher)
    (2.0 * loss).backward(retain_graph=True)
    first_hidden, first_weight = hidden.grad.clone(), weight.grad.clone()
    loss.backward()
    torch.testing.assert_close(hidden.grad, 1.5 * first_hidden)
    torch.testing.assert_close(weight.grad, 1.5 * first_weight)
    logits = hidden.detach() @ weight.detach().T
    reference = kldiv.kl_divergence(
        teacher, logits, y_true_format="logits", y_pred_format="logits", epsilon=0.0
    )
    torch.testing.assert_close(loss.detach(), reference.mean())


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_topk_teacher_with_k_equal_v_and_temperature_equals_dense(temperature):
    """``topk_teacher`` stores the teacher's log-probs at the loss's temperature (int32 indices,
    formed chunk by chunk from hidden states); with ``k = V`` the sparse loss equals the dense one
    at that temperature — the student is tempered too — values and gradients."""
    from kldiv.fused.torch import topk_teacher

    t = tensors()
    indices, values = topk_teacher(
        k=V,
        teacher_hidden=t["th"],
        teacher_weight=t["tw"],
        teacher_bias=t["tb"],
        temperature=temperature,
        values_dtype=torch.float64,
        chunk_size=4,
    )
    assert indices.dtype == torch.int32 and values.shape == (BT, V)
    loss = FusedLinearKLDivergence(chunk_size=5, temperature=temperature)
    sparse = loss(t["h"], t["w"], teacher_topk_indices=indices, teacher_topk_values=values)
    dense = loss(t["h"], t["w"], teacher_hidden=t["th"], teacher_weight=t["tw"], teacher_bias=t["tb"])
    torch.testing.assert_close(sparse, dense, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(sparse, t["w"])[0], torch.autograd.grad(dense, t["w"])[0])


def test_topk_teacher_values_and_errors():
    from kldiv.fused.torch import topk_teacher

    generator = torch.Generator().manual_seed(9)
    logits = torch.randn(3, 4, V, generator=generator, dtype=torch.float64)
    indices, values = topk_teacher(
        logits, k=6, temperature=0.7, teacher_softcap=1.5, values_dtype=torch.bfloat16
    )
    expected = torch.topk(torch.log_softmax(torch.tanh(logits / 1.5) * 1.5 / 0.7, -1), 6, dim=-1)
    assert indices.shape == (3, 4, 6) and values.dtype == torch.bfloat16
    torch.testing.assert_close(indices.long(), expected.indices, rtol=0, atol=0)
    torch.testing.assert_close(values.double(), expected.values, rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="`k`"):
        topk_teacher(logits, k=V + 1)
    with pytest.raises(ValueError, match="`k`"):
        topk_teacher(logits, k=0)
    with pytest.raises(ValueError, match="exactly one teacher"):
        topk_teacher(k=3)
    with pytest.raises(ValueError, match="`temperature`"):
        topk_teacher(logits, k=3, temperature=0)


def test_sparse_logits_format_is_tempered_on_both_sides():
    t = tensors()
    indices = torch.sort(torch.stack([torch.randperm(V)[:4] for _ in range(BT)]), -1).values
    teacher_values = torch.randn(BT, 4, dtype=torch.float64)
    value = FusedLinearKLDivergence(reduction="sum", teacher_topk_format="logits", temperature=1.8)(
        t["h"], t["w"], teacher_topk_indices=indices, teacher_topk_values=teacher_values
    )
    restricted = torch.gather(t["h"] @ t["w"].T, -1, indices)
    expected = kldiv.KLDivergence(
        reduction="sum", y_true_format="logits", from_logits=True, epsilon=0, temperature=1.8
    )(teacher_values, restricted)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-12)


def test_sparse_tail_bucket_at_a_temperature_against_float64():
    """k < V, T ≠ 1, log-prob values stored at T: the k + 1 outcome divergence of the teacher's
    tempered distribution and the student's tempered one, written out by hand."""
    t = tensors()
    teacher_logits = torch.randn(BT, V, dtype=torch.float64) * 2
    k, temperature = 6, 2.5
    top = torch.topk(torch.log_softmax(teacher_logits / temperature, -1), k, dim=-1)
    value = FusedLinearKLDivergence(reduction="sum", chunk_size=4, temperature=temperature)(
        t["h"], t["w"], teacher_topk_indices=top.indices, teacher_topk_values=top.values
    )
    student = torch.log_softmax((t["h"] @ t["w"].T) / temperature, -1)
    student_top = torch.gather(student, -1, top.indices)
    p = torch.cat([top.values.exp(), 1 - top.values.exp().sum(-1, keepdim=True)], -1)
    q = torch.cat([student_top.exp(), 1 - student_top.exp().sum(-1, keepdim=True)], -1)
    expected = (p * (p.log() - q.log())).sum()
    torch.testing.assert_close(value, expected, rtol=1e-9, atol=1e-12)
