"""The hard-label cross-entropy term of the fused and chunked losses (``weight_hard_loss`` /
``weight_soft_loss``, :mod:`kldiv.fused._torch_hard`) and ``accumulation_dtype``, against float64
materialized references: ``logits = h @ W.T + b``, ``F.cross_entropy`` in float64 plus the core's
divergence — values and every gradient (hidden, weight, bias, the teacher's where it requires one), on
the Numba kernel and the autograd path, dense and sparse teachers, masks and ``ignore_index``; and
Liger-Kernel's own ``LigerFusedLinearJSDLoss`` formula where it is installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kldiv
from kldiv.compat import divergence_for_beta
from kldiv.fused import _torch_chunks as fused_chunks
from kldiv.fused.torch import (
    FusedLinearJSDivergence,
    FusedLinearKLDivergence,
    chunked_kl_divergence,
    topk_teacher,
)
from kldiv.testing import reference as oracle

BT, H, V = 23, 8, 31
KINDS = {
    "forward": (FusedLinearKLDivergence, kldiv.KLDivergence, {"direction": "forward"}),
    "reverse": (FusedLinearKLDivergence, kldiv.KLDivergence, {"direction": "reverse"}),
    "js0.3": (FusedLinearJSDivergence, kldiv.JSDivergence, {"beta": 0.3}),
}
OPTIONS = {"temperature": 1.5, "scale_by_temperature_squared": True}  # T² on the divergence only
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
ERRORS: dict[str, float] = {}
"""Largest |error| against float64 per path (printed by the last test with ``-s``)."""


def data(seed: int = 0, dtype=torch.float64) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(dtype)

    labels = torch.randint(0, V, (BT,), generator=generator)
    labels[torch.rand(BT, generator=generator) < 0.25] = -100
    mask = torch.rand(BT, generator=generator) > 0.2
    return {
        "h": rand(BT, H),
        "w": rand(V, H, scale=0.8),
        "b": rand(V),
        "th": rand(BT, H),
        "tw": rand(V, H, scale=0.8),
        "tb": rand(V),
        "labels": labels,
        "mask": mask,
        "sw": torch.linspace(0.5, 2.0, BT, dtype=torch.float64),
    }


def weighted(value: torch.Tensor) -> torch.Tensor:
    if value.ndim == 0:
        return value
    return (value * torch.linspace(0.5, 2.0, value.numel(), dtype=value.dtype)).sum()


def reduce(per_token: torch.Tensor, keep: torch.Tensor, reduction: str) -> torch.Tensor:
    """kldiv's reductions of a flat per-token loss over the kept tokens (2-D hidden: batch = BT)."""
    kept = torch.where(keep, per_token, torch.zeros_like(per_token))
    if reduction == "none":
        return kept
    if reduction == "sum":
        return kept.sum()
    if reduction == "batchmean":
        return kept.sum() / keep.shape[0]
    return kept.sum() / keep.sum()


def materialized(kind, reduction, t, hard, soft, masking, teacher="hidden", **options):
    """The naive float64 program: logits formed, ``F.cross_entropy`` + the core's divergence."""
    _, reference_cls, settings = KINDS[kind]
    z = t["h"] @ t["w"].T + t["b"]
    teacher_logits = t["th"] @ t["tw"].T + t["tb"] if teacher == "hidden" else t["tl"]
    keep = t["labels"] != -100
    if masking == "mask":
        keep = keep & t["mask"]
    divergence = reference_cls(
        reduction="none",
        y_true_format="logits",
        from_logits=True,
        epsilon=0,
        backend="core",
        **settings,
        **options,
    )(teacher_logits, z)
    ce = F.cross_entropy(z, torch.where(keep, t["labels"], 0), reduction="none")
    return soft * reduce(divergence, keep, reduction) + hard * reduce(ce, keep, reduction), divergence


def leaves(t, names):
    return {n: t[n].detach().clone().requires_grad_(n in names) for n in ("h", "w", "b", "th", "tw", "tb")}


def compare(path, got, want, tolerance=1e-10):
    error = float((got.detach().double() - want.detach()).abs().max())
    ERRORS[path] = max(ERRORS.get(path, 0.0), error)
    scale = max(1.0, float(want.detach().abs().max()))
    assert error <= tolerance * scale, (path, error)


@pytest.mark.parametrize("hard", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("reduction", ["token_mean", "sum", "batchmean", "none"])
@pytest.mark.parametrize("masking", ["ignore_index", "mask"])
@pytest.mark.parametrize("path", ["numba", "autograd"])  # autograd: the teacher requires a gradient
def test_dense_teacher_against_float64(hard, kind, reduction, masking, path):
    t = data()
    names = {"h", "w", "b"} | ({"th", "tw", "tb"} if path == "autograd" else set())
    x, ref = leaves(t, names), leaves(t, names)
    fused_cls = KINDS[kind][0]
    loss = fused_cls(reduction=reduction, chunk_size=5, weight_hard_loss=hard, **KINDS[kind][2], **OPTIONS)
    assert fused_chunks._kernel(loss.options, _inputs(x), torch.float64, x["h"].device) == (
        "numba" if path == "numba" else None
    )
    mask = t["mask"] if masking == "mask" else None
    value = loss(
        x["h"],
        x["w"],
        x["b"],
        teacher_hidden=x["th"],
        teacher_weight=x["tw"],
        teacher_bias=x["tb"],
        labels=t["labels"],
        mask=mask,
    )
    expected, divergence = materialized(kind, reduction, {**t, **ref}, hard, 1.0, masking, **OPTIONS)
    compare(path, value, expected)
    ordered = sorted(names)
    grads = torch.autograd.grad(weighted(value), [x[n] for n in ordered])
    wants = torch.autograd.grad(weighted(expected), [ref[n] for n in ordered])
    for got, want in zip(grads, wants, strict=True):
        compare(path, got, want)
    if kind == "forward":  # the divergence part against the NumPy oracle (kldiv.testing)
        z = (t["h"] @ t["w"].T + t["b"]).numpy()
        tl = (t["th"] @ t["tw"].T + t["tb"]).numpy()
        numpy_kl = oracle.kl_divergence(
            tl / 1.5, z / 1.5, y_true_format="logits", y_pred_format="logits", from_logits=True, epsilon=0.0
        )
        np.testing.assert_allclose(divergence.detach().numpy() / 1.5**2, numpy_kl, rtol=1e-10, atol=1e-12)


def _inputs(x):
    return fused_chunks.Inputs(
        student_hidden=x["h"],
        student_weight=x["w"],
        student_bias=x["b"],
        teacher_hidden=x["th"],
        teacher_weight=x["tw"],
        teacher_bias=x["tb"],
    )


@pytest.mark.parametrize("soft", [0.0, 0.5])
@pytest.mark.parametrize("reduction", ["token_mean", "none"])
def test_soft_weight_and_the_cross_entropy_alone(soft, reduction):
    """``weight_soft_loss`` scales the divergence; at 0 the teacher may be omitted (CE alone)."""
    t = data(1)
    x, ref = leaves(t, {"h", "w", "b"}), leaves(t, {"h", "w", "b"})
    loss = FusedLinearKLDivergence(
        reduction=reduction, chunk_size=4, weight_hard_loss=0.7, weight_soft_loss=soft
    )
    teacher = {"teacher_hidden": x["th"], "teacher_weight": x["tw"], "teacher_bias": x["tb"]} if soft else {}
    value = loss(x["h"], x["w"], x["b"], labels=t["labels"], **teacher)
    expected, _ = materialized("forward", reduction, {**t, **ref}, 0.7, soft, "ignore_index")
    compare("numba", value, expected)
    for got, want in zip(
        torch.autograd.grad(weighted(value), [x["h"], x["w"], x["b"]]),
        torch.autograd.grad(weighted(expected), [ref["h"], ref["w"], ref["b"]]),
        strict=True,
    ):
        compare("numba", got, want)


@pytest.mark.parametrize("topk_format", ["log_probs", "logits"])
@pytest.mark.parametrize("path", ["numba", "autograd"])
def test_sparse_teacher(topk_format, path, monkeypatch):
    """Top-k teacher: the sum of the sparse divergence (weight 0, itself tested against float64) and the
    materialized cross-entropy, values and gradients, on the kernel and the autograd path."""
    t = data(2)
    z_teacher = t["th"] @ t["tw"].T + t["tb"]
    indices, values = topk_teacher(z_teacher, k=6, temperature=1.5)
    if topk_format == "logits":
        values = z_teacher.gather(1, indices.long()).float() / 1.5
    if path == "autograd":
        monkeypatch.setattr(fused_chunks, "_kernel", lambda *args: None)
    results = []
    for hard in (0.0, 0.3):
        x = leaves(t, {"h", "w", "b"})
        loss = FusedLinearKLDivergence(
            chunk_size=5, weight_hard_loss=hard, teacher_topk_format=topk_format, **OPTIONS
        )
        value = loss(
            x["h"],
            x["w"],
            x["b"],
            teacher_topk_indices=indices,
            teacher_topk_values=values,
            labels=t["labels"],
        )
        results.append((value, torch.autograd.grad(value, [x["h"], x["w"], x["b"]])))
    ref = leaves(t, {"h", "w", "b"})
    z = ref["h"] @ ref["w"].T + ref["b"]
    keep = t["labels"] != -100
    ce = F.cross_entropy(z, t["labels"], ignore_index=-100, reduction="sum") / keep.sum()
    ce_grads = torch.autograd.grad(0.3 * ce, [ref["h"], ref["w"], ref["b"]])
    compare(f"sparse-{path}", results[1][0], results[0][0] + 0.3 * ce)
    for got, soft, hard_grad in zip(results[1][1], results[0][1], ce_grads, strict=True):
        compare(f"sparse-{path}", got, soft + hard_grad)


def test_student_softcap_cross_entropy_of_the_mapped_logits():
    t = data(3)
    x, ref = leaves(t, {"h", "w", "b"}), leaves(t, {"h", "w", "b"})
    loss = FusedLinearKLDivergence(chunk_size=5, weight_hard_loss=0.4, student_softcap=2.0)
    value = loss(x["h"], x["w"], x["b"], teacher_hidden=x["th"], teacher_weight=x["tw"], labels=t["labels"])
    z = 2.0 * torch.tanh((ref["h"] @ ref["w"].T + ref["b"]) / 2.0)
    keep = t["labels"] != -100
    kd = kldiv.KLDivergence(reduction="none", y_true_format="logits", from_logits=True, epsilon=0)(
        ref["th"] @ ref["tw"].T, z
    )
    ce = F.cross_entropy(z, t["labels"], ignore_index=-100, reduction="none")
    expected = (kd[keep].sum() + 0.4 * ce[keep].sum()) / keep.sum()
    compare("numba", value, expected)
    for got, want in zip(
        torch.autograd.grad(value, [x["h"], x["w"], x["b"]]),
        torch.autograd.grad(expected, [ref["h"], ref["w"], ref["b"]]),
        strict=True,
    ):
        compare("numba", got, want)


def test_chunked_function_and_sample_weight():
    """The chunked functions take the term too; ``sample_weight`` weights both terms."""
    t = data(4)
    z = (t["h"] @ t["w"].T + t["b"]).requires_grad_()
    tl = (t["th"] @ t["tw"].T).requires_grad_()
    z_ref, tl_ref = z.detach().clone().requires_grad_(), tl.detach().clone().requires_grad_()
    value = chunked_kl_divergence(
        tl, z, labels=t["labels"], sample_weight=t["sw"], weight_hard_loss=0.3, chunk_size=4, **OPTIONS
    )
    keep = t["labels"] != -100
    kd = kldiv.KLDivergence(reduction="none", y_true_format="logits", from_logits=True, epsilon=0, **OPTIONS)(
        tl_ref, z_ref
    )
    ce = F.cross_entropy(z_ref, t["labels"], ignore_index=-100, reduction="none")
    expected = ((kd + 0.3 * ce) * t["sw"])[keep].sum() / keep.sum()
    compare("autograd", value, expected)
    for got, want in zip(
        torch.autograd.grad(value, [z, tl]), torch.autograd.grad(expected, [z_ref, tl_ref]), strict=True
    ):
        compare("autograd", got, want)


def test_return_stats_cross_entropy():
    t = data(5)
    loss = FusedLinearKLDivergence(chunk_size=5, weight_hard_loss=0.3, return_stats=True)
    value, stats = loss(
        t["h"], t["w"], t["b"], teacher_hidden=t["th"], teacher_weight=t["tw"], labels=t["labels"]
    )
    keep = t["labels"] != -100
    ce = F.cross_entropy(t["h"] @ t["w"].T + t["b"], torch.where(keep, t["labels"], 0), reduction="none")
    compare("numba", stats.cross_entropy, torch.where(keep, ce, 0.0))
    plain = FusedLinearKLDivergence(chunk_size=5, weight_hard_loss=0.3)(
        t["h"], t["w"], t["b"], teacher_hidden=t["th"], teacher_weight=t["tw"], labels=t["labels"]
    )
    compare("numba", value, plain, tolerance=1e-14)
    # Without a weight, the statistics still carry the cross-entropy of the labels.
    _, stats = FusedLinearKLDivergence(chunk_size=5, return_stats=True)(
        t["h"], t["w"], t["b"], teacher_hidden=t["th"], teacher_weight=t["tw"], labels=t["labels"]
    )
    compare("numba", stats["cross_entropy"], torch.where(keep, ce, 0.0))


def test_liger_formula():
    """Liger-Kernel's ``LigerFusedLinearJSDLoss`` (its PyTorch code) equals the fused class with the
    same weights, ``"token_mean"`` over the labels' kept tokens."""
    liger = pytest.importorskip("liger_kernel.chunked_loss")
    t = data(6, dtype=torch.float32)
    for beta in (0.5, 0.0, 1.0):
        kind = divergence_for_beta(beta)
        fused_cls = FusedLinearJSDivergence if kind.pop("divergence") == "js" else FusedLinearKLDivergence
        ours = fused_cls(chunk_size=5, temperature=1.7, weight_hard_loss=0.6, weight_soft_loss=0.4, **kind)
        theirs = liger.LigerFusedLinearJSDLoss(
            weight_hard_loss=0.6,
            weight_soft_loss=0.4,
            beta=beta,
            temperature=1.7,
            compiled=False,
            chunk_size=5,
        )
        x, y = leaves(t, {"h", "w", "b"}), leaves(t, {"h", "w", "b"})
        value = ours(
            x["h"], x["w"], x["b"], teacher_hidden=x["th"], teacher_weight=x["tw"], labels=t["labels"]
        )
        want = theirs(y["h"], y["w"], y["th"], y["tw"], t["labels"], y["b"])
        assert abs(float(value.detach()) - float(want.detach())) <= 2e-6 * max(1.0, abs(float(want.detach())))
        for got, expected in zip(
            torch.autograd.grad(value, [x["h"], x["w"], x["b"]]),
            torch.autograd.grad(want, [y["h"], y["w"], y["b"]]),
            strict=True,
        ):
            assert float((got - expected).abs().max()) <= 1e-5 * max(1.0, float(expected.abs().max()))


def test_accumulation_dtype_bfloat16_weights():
    """bfloat16 head: float32 accumulation across chunks is closer to float64 than bfloat16's."""
    generator = torch.Generator().manual_seed(7)
    rows, hidden, vocab = 512, 16, 64
    h = torch.randn(rows, hidden, generator=generator, dtype=torch.float64)
    w = torch.randn(vocab, hidden, generator=generator, dtype=torch.float64) * 0.5
    tl = torch.randn(rows, vocab, generator=generator, dtype=torch.float64) * 2
    labels = torch.randint(0, vocab, (rows,), generator=generator)
    low_h, low_w = h.bfloat16(), w.bfloat16()
    ref_h, ref_w = low_h.double().requires_grad_(), low_w.double().requires_grad_()
    z = ref_h @ ref_w.T
    kd = kldiv.KLDivergence(reduction="none", y_true_format="logits", from_logits=True, epsilon=0)(tl, z)
    expected = kd.sum() + 0.5 * F.cross_entropy(z, labels, reduction="sum")
    _, want_w = torch.autograd.grad(expected, [ref_h, ref_w])
    errors = {}
    for mode in (None, "float32", "weight"):
        x_h, x_w = low_h.clone().requires_grad_(), low_w.clone().requires_grad_()
        loss = FusedLinearKLDivergence(
            reduction="sum", chunk_size=8, weight_hard_loss=0.5, accumulation_dtype=mode
        )
        value = loss(x_h, x_w, teacher_logits=tl.bfloat16(), labels=labels)
        grad_h, grad_w = torch.autograd.grad(value, [x_h, x_w])
        assert grad_w.dtype == torch.bfloat16 and grad_h.dtype == torch.bfloat16
        errors[mode] = float((grad_w.double() - want_w).abs().max())
    ERRORS["bf16 grad W, float32 accumulation"] = errors["float32"]
    ERRORS["bf16 grad W, bfloat16 accumulation"] = errors["weight"]
    assert errors[None] == errors["float32"]
    assert errors["float32"] < errors["weight"] / 2, errors


def test_arguments_are_checked():
    t = data()
    teacher = {"teacher_hidden": t["th"], "teacher_weight": t["tw"]}
    with pytest.raises(ValueError, match=r"`labels`.*received None"):
        FusedLinearKLDivergence(weight_hard_loss=0.5)(t["h"], t["w"], **teacher)
    bad = t["labels"].clone()
    bad[bad >= 0] = V
    with pytest.raises(ValueError, match=f"`labels`.*\\[0, {V}\\).*received {V}"):
        FusedLinearKLDivergence(weight_hard_loss=0.5)(t["h"], t["w"], labels=bad, **teacher)
    with pytest.raises(ValueError, match="`labels`: expected integer"):
        FusedLinearKLDivergence(weight_hard_loss=0.5)(t["h"], t["w"], labels=t["labels"].double(), **teacher)
    for name, value in (
        ("weight_hard_loss", -1.0),
        ("weight_soft_loss", float("nan")),
        ("weight_hard_loss", True),
    ):
        with pytest.raises(ValueError, match=f"`{name}`"):
            FusedLinearKLDivergence(**{name: value})
    with pytest.raises(ValueError, match="`weight_hard_loss`, `weight_soft_loss`"):
        FusedLinearKLDivergence(weight_soft_loss=0.0)
    with pytest.raises(ValueError, match=r"`accumulation_dtype`.*'bfloat8'"):
        FusedLinearKLDivergence(accumulation_dtype="bfloat8")
    with pytest.raises(ValueError, match="teacher form"):  # the divergence needs its teacher
        FusedLinearKLDivergence(weight_hard_loss=0.5)(t["h"], t["w"], labels=t["labels"])


def test_config_and_repr_carry_the_new_options():
    import copy
    import pickle

    loss = FusedLinearKLDivergence(weight_hard_loss=0.25, weight_soft_loss=0.75, accumulation_dtype="float32")
    config = loss.get_config()
    assert config["weight_hard_loss"] == 0.25 and config["accumulation_dtype"] == "float32"
    assert type(loss)(**config).get_config() == config
    assert "weight_hard_loss=0.25" in repr(loss) and "accumulation_dtype='float32'" in repr(loss)
    for clone in (copy.deepcopy(loss), pickle.loads(pickle.dumps(loss))):
        assert clone.get_config() == config


# Triton (interpreter): a few cases of the term through the Triton chunks, in a subprocess.


def test_triton_interpreted():
    if INTERPRETED:
        pytest.skip("already interpreted")
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    here = str(Path(__file__).resolve())
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", here, "-k", "triton_case"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
    assert " passed" in result.stdout, result.stdout[-2000:]


@pytest.mark.skipif(not INTERPRETED, reason="runs under TRITON_INTERPRET=1 in test_triton_interpreted")
@pytest.mark.parametrize(
    ("kind", "reduction", "sparse"),
    [("forward", "token_mean", False), ("js0.3", "none", False), ("reverse", "sum", True)],
)
def test_triton_case(kind, reduction, sparse, monkeypatch):
    from kldiv.kernels import triton as triton_kernels

    launches = []
    launcher = triton_kernels.fused_rows_triton

    def spy(*args, **kwargs):
        launches.append(1)
        return launcher(*args, **kwargs)

    monkeypatch.setitem(fused_chunks.DEVICE_ARRAYS, "cpu", "cuda")
    monkeypatch.setattr(triton_kernels, "fused_rows_triton", spy)
    t = data(8, dtype=torch.float32)
    fused_cls = KINDS[kind][0]
    loss = fused_cls(reduction=reduction, chunk_size=8, weight_hard_loss=0.3, **KINDS[kind][2], **OPTIONS)
    x = leaves(t, {"h", "w", "b"})
    if sparse:
        indices, values = topk_teacher(t["th"] @ t["tw"].T + t["tb"], k=5, temperature=1.5)
        teacher = {"teacher_topk_indices": indices, "teacher_topk_values": values}
    else:
        teacher = {"teacher_hidden": x["th"], "teacher_weight": x["tw"], "teacher_bias": x["tb"]}
    value = loss(x["h"], x["w"], x["b"], labels=t["labels"], **teacher)
    grads = torch.autograd.grad(weighted(value), [x["h"], x["w"], x["b"]])
    assert launches
    # The Numba / autograd path on the same float32 inputs (itself tested against float64 above).
    monkeypatch.setitem(fused_chunks.DEVICE_ARRAYS, "cpu", "torch")
    y = leaves(t, {"h", "w", "b"})
    teacher_y = (
        teacher if sparse else {"teacher_hidden": y["th"], "teacher_weight": y["tw"], "teacher_bias": y["tb"]}
    )
    want = loss(y["h"], y["w"], y["b"], labels=t["labels"], **teacher_y)
    wants = torch.autograd.grad(weighted(want), [y["h"], y["w"], y["b"]])
    compare("triton", value, want, tolerance=2e-6)
    for got, expected in zip(grads, wants, strict=True):
        compare("triton", got, expected, tolerance=2e-6)


def test_report_errors():
    """Prints the largest |error| measured above (``pytest -s``)."""
    for path, error in sorted(ERRORS.items()):
        print(f"largest |error| {path}: {error:.3g}")
