"""The Triton-chunked fused linear + divergence equals the unchunked core in float64.

The chunks of CUDA tensors are computed by the Triton kernel (value and gradient w.r.t. the chunk's
logits in one launch, written over the logits buffer). Without a GPU, Triton's interpreter runs the
same kernel on CPU tensors: ``test_interpreted`` runs this file again in a subprocess with
``TRITON_INTERPRET=1`` (set before Triton is imported) and CPU tensors described to the plan as
CUDA ones (``kldiv.fused._torch_chunks.DEVICE_ARRAYS``);
the cases below run only there. Sizes are tiny (the interpreter runs each row in Python).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kldiv
from kldiv.fused import _torch_chunks as fused_chunks
from kldiv.fused.torch import FusedLinearJSDivergence, FusedLinearKLDivergence, chunked_kl_divergence

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
interpreted_only = pytest.mark.skipif(
    not INTERPRETED, reason="runs under TRITON_INTERPRET=1 in the subprocess of test_interpreted"
)

BT, H, V = 13, 8, 37
KINDS = [
    (FusedLinearKLDivergence, kldiv.KLDivergence, {"direction": "forward"}),
    (FusedLinearKLDivergence, kldiv.KLDivergence, {"direction": "reverse"}),
    (FusedLinearKLDivergence, kldiv.KLDivergence, {"direction": "symmetric"}),
    (FusedLinearJSDivergence, kldiv.JSDivergence, {"beta": 0.3}),
]
KIND_IDS = ["forward", "reverse", "symmetric", "js0.3"]
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2}
"""Relative error (norm of the difference / norm of the float64 truth) allowed per input dtype."""


def test_interpreted():
    """This file under ``TRITON_INTERPRET=1`` in a fresh process (the interpreter is chosen when
    Triton compiles a kernel, so it cannot be switched on inside this process)."""
    if INTERPRETED:
        pytest.skip("already interpreted")
    env = dict(os.environ, TRITON_INTERPRET="1")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__).resolve())]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
    assert " passed" in result.stdout and "skipped" in result.stdout, result.stdout[-2000:]


@pytest.fixture
def triton_chunks(monkeypatch):
    """Force the Triton kernel on CPU tensors and record its launches."""
    from kldiv.kernels import triton as triton_kernels

    launches = []
    launcher = triton_kernels.fused_rows_triton

    def spy(y_true, y_pred, *args, out=None, want_grad, **kwargs):
        in_place = out is not None and out.data_ptr() == y_pred.data_ptr()
        launches.append({"dtype": y_pred.dtype, "want_grad": want_grad, "in_place": in_place})
        return launcher(y_true, y_pred, *args, out=out, want_grad=want_grad, **kwargs)

    monkeypatch.setitem(fused_chunks.DEVICE_ARRAYS, "cpu", "cuda")
    monkeypatch.setattr(triton_kernels, "fused_rows_triton", spy)
    return launches


def _tensors(dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(dtype)

    labels = torch.randint(-1, 4, (BT,), generator=generator)
    labels[labels < 0] = -100
    return {
        "h": rand(BT, H),
        "w": rand(V, H, scale=0.7),
        "b": rand(V),
        "th": rand(BT, H),
        "tw": rand(V, H, scale=0.7),
        "tb": rand(V),
        "tl": rand(BT, V, scale=2.0),
        "labels": labels,
    }


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).norm() / want.norm().clamp(min=1e-30))


def _weighted(value: torch.Tensor) -> torch.Tensor:
    if value.ndim == 0:
        return value
    return (value * torch.linspace(0.5, 2.0, value.numel(), dtype=value.dtype)).sum()


def _check(fused_cls, reference_cls, kind, dtype, teacher, reduction, chunk_size, options, grad_names):
    """Fused (Triton chunks) in ``dtype`` vs the core on the same values in float64; returns the
    relative errors of the value and of each gradient."""
    t = _tensors(dtype)
    low = {n: t[n].clone().requires_grad_(n in grad_names) for n in ("h", "w", "b", "th", "tw", "tb", "tl")}
    wide = {n: x.detach().double().requires_grad_(n in grad_names) for n, x in low.items()}
    teacher_args = {
        "hidden": lambda x: {"teacher_hidden": x["th"], "teacher_weight": x["tw"], "teacher_bias": x["tb"]},
        "logits": lambda x: {"teacher_logits": x["tl"]},
    }[teacher]
    loss = fused_cls(reduction=reduction, chunk_size=chunk_size, **kind, **options)
    value = loss(low["h"], low["w"], low["b"], labels=t["labels"], **teacher_args(low))
    names = sorted(grad_names)
    grads = torch.autograd.grad(_weighted(value), [low[n] for n in names])

    teacher_logits = wide["tl"] if teacher == "logits" else wide["th"] @ wide["tw"].T + wide["tb"]
    reference = reference_cls(
        reduction=reduction,
        y_true_format="logits",
        from_logits=True,
        epsilon=0,
        backend="core",
        **kind,
        **options,
    )
    expected = reference(teacher_logits, wide["h"] @ wide["w"].T + wide["b"], labels=t["labels"])
    expected_grads = torch.autograd.grad(_weighted(expected), [wide[n] for n in names])
    errors = {"value": _relative_error(value.detach().float(), expected.detach())}
    for name, got, want in zip(names, grads, expected_grads, strict=True):
        assert got.dtype == dtype, (name, got.dtype)
        errors[name] = _relative_error(got, want)
    return errors


@interpreted_only
@pytest.mark.parametrize(("fused_cls", "reference_cls", "kind"), KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("teacher", ["logits", "hidden"])
@pytest.mark.parametrize(
    ("reduction", "chunk_size", "options"),
    [
        ("token_mean", 4, {}),  # 4 does not divide 13
        ("sum", 13, {"temperature": 1.7, "scale_by_temperature_squared": True}),
        ("none", 5, {"temperature": 0.6}),
    ],
    ids=["token_mean-4", "sum-13-T1.7", "none-5-T0.6"],
)
def test_float32_chunks_equal_the_core(
    triton_chunks, fused_cls, reference_cls, kind, teacher, reduction, chunk_size, options
):
    errors = _check(
        fused_cls,
        reference_cls,
        kind,
        torch.float32,
        teacher,
        reduction,
        chunk_size,
        options,
        {"h", "w", "b"},
    )
    assert max(errors.values()) <= TOLERANCE[torch.float32], errors
    assert all(launch["in_place"] == launch["want_grad"] for launch in triton_chunks)
    assert len(triton_chunks) == -(-BT // chunk_size) * (2 if reduction == "none" else 1)


@interpreted_only
@pytest.mark.parametrize(("fused_cls", "reference_cls", "kind"), KINDS, ids=KIND_IDS)
def test_bfloat16_chunks_stay_bfloat16(triton_chunks, fused_cls, reference_cls, kind):
    """The kernel reads the bfloat16 logits as they are (no float32 copy) and accumulates in float32;
    the parameter gradients come back in bfloat16 within 1e-2 of float64."""
    options = {"temperature": 1.3}
    errors = _check(
        fused_cls, reference_cls, kind, torch.bfloat16, "hidden", "token_mean", 5, options, {"h", "w", "b"}
    )
    assert max(errors.values()) <= TOLERANCE[torch.bfloat16], errors
    assert triton_chunks and all(
        launch["dtype"] == torch.bfloat16 and launch["in_place"] for launch in triton_chunks
    )


@interpreted_only
def test_teacher_gradients_use_the_core(triton_chunks):
    """A teacher that needs a gradient: the kernels give only the student's, so the chunks go
    through autograd of the core (no launch), and every gradient still equals the unchunked core."""
    errors = _check(
        *KINDS[0], torch.float32, "hidden", "token_mean", 4, {}, {"h", "w", "b", "th", "tw", "tb"}
    )
    assert max(errors.values()) <= TOLERANCE[torch.float32], errors
    assert triton_chunks == []


@interpreted_only
def test_chunked_logits_keep_the_callers_logits(triton_chunks):
    """``chunked_kl_divergence``: the gradient goes to a buffer, never over the caller's logits."""
    generator = torch.Generator().manual_seed(4)
    teacher = torch.randn(2, 7, V, generator=generator)
    student = torch.randn(2, 7, V, generator=generator, requires_grad=True)
    before = student.detach().clone()
    mask = torch.rand(2, 7, generator=generator) < 0.7
    value = chunked_kl_divergence(teacher, student, reduction="batchmean", chunk_size=3, mask=mask)
    (grad,) = torch.autograd.grad(value, student)
    value = value.detach()
    torch.testing.assert_close(student.detach(), before, rtol=0, atol=0)
    wide = student.detach().double().requires_grad_()
    expected = kldiv.KLDivergence(reduction="batchmean", y_true_format="logits", from_logits=True, epsilon=0)(
        teacher.double(), wide, mask=mask
    )
    (expected_grad,) = torch.autograd.grad(expected, wide)
    assert abs(value.item() - expected.item()) <= 1e-5 * abs(expected.item())
    assert _relative_error(grad, expected_grad) <= TOLERANCE[torch.float32]
    assert triton_chunks and not any(launch["in_place"] for launch in triton_chunks)


@interpreted_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_launcher_in_place_equals_a_new_buffer(dtype):
    """``out=y_pred``: the gradient written over the logits equals the one written to a new tensor."""
    from kldiv.kernels.triton import fused_rows_triton

    generator = torch.Generator().manual_seed(5)
    t = torch.randn(6, 300, generator=generator).to(dtype)
    p = torch.randn(6, 300, generator=generator).to(dtype)
    coef = torch.linspace(0.5, 2.0, 6)
    keep = torch.tensor([True, False, True, True, False, True])
    for kind in ({"direction": "reverse", "beta": None}, {"direction": "forward", "beta": 0.4}):
        options = {"true_format": "logits", "pred_format": "logits", "epsilon": 0.0, "temperature": 1.5}
        values, grad = fused_rows_triton(t, p, coef, keep, want_grad=True, **kind, **options)
        buffer = p.clone()
        in_place_values, in_place = fused_rows_triton(
            t, buffer, coef, keep, want_grad=True, out=buffer, **kind, **options
        )
        assert in_place.data_ptr() == buffer.data_ptr()
        torch.testing.assert_close(in_place_values, values, rtol=0, atol=0)
        torch.testing.assert_close(in_place, grad, rtol=0, atol=0)


@interpreted_only
def test_losses_hand_bfloat16_to_triton_unwidened(monkeypatch):
    """``kldiv.KLDivergence(backend="triton")`` on bfloat16 tensors: the kernel reads bfloat16 (no
    float32 copy of the inputs), the per-sample values are float32, the loss is returned in bfloat16
    and equals the core's within bfloat16 rounding; the gradient is bfloat16."""
    from kldiv.kernels import triton as triton_kernels

    seen = []
    launcher = triton_kernels.fused_rows_triton

    def spy(y_true, y_pred, *args, **kwargs):
        seen.append(y_pred.dtype)
        return launcher(y_true, y_pred, *args, **kwargs)

    monkeypatch.setattr(triton_kernels, "fused_rows_triton", spy)
    generator = torch.Generator().manual_seed(6)
    t = torch.randn(4, 3, 41, generator=generator).to(torch.bfloat16)
    p = torch.randn(4, 3, 41, generator=generator).to(torch.bfloat16)
    results = {}
    for backend in ("triton", "core"):
        leaf = p.clone().requires_grad_()
        loss = kldiv.KLDivergence(
            reduction="batchmean",
            y_true_format="logits",
            y_pred_format="logits",
            epsilon=0.0,
            backend=backend,
        )
        value = loss(t, leaf)
        value.backward()
        results[backend] = (value.detach(), leaf.grad)
    assert seen == [torch.bfloat16]
    (value, grad), (core_value, core_grad) = results["triton"], results["core"]
    assert value.dtype == grad.dtype == torch.bfloat16
    torch.testing.assert_close(value.float(), core_value.float(), rtol=1e-2, atol=1e-3)
    assert _relative_error(grad, core_grad.double()) <= 1e-2


@interpreted_only
@pytest.mark.parametrize("teacher", ["logits", "hidden"])
def test_soft_cap_and_scale_in_triton_chunks(triton_chunks, teacher):
    """``student_softcap`` / ``student_logit_scale`` / ``teacher_softcap`` in the Triton chunks: the
    kernel reads the capped logits, the chain rule's factor reaches every gradient; equal to the
    float64 core on logits capped by hand."""
    t = _tensors(torch.float32, seed=3)
    maps = {"student_softcap": 2.0, "student_logit_scale": 1.4, "teacher_softcap": 1.5}
    low = {n: t[n].clone().requires_grad_(n in ("h", "w", "b")) for n in ("h", "w", "b", "th", "tw", "tl")}
    wide = {n: x.detach().double().requires_grad_(n in ("h", "w", "b")) for n, x in low.items()}
    teacher_args = (
        {"teacher_hidden": low["th"], "teacher_weight": low["tw"]}
        if teacher == "hidden"
        else {"teacher_logits": low["tl"]}
    )
    loss = FusedLinearKLDivergence(chunk_size=4, temperature=1.2, **maps)
    value = loss(low["h"], low["w"], low["b"], labels=t["labels"], **teacher_args)
    grads = torch.autograd.grad(value, [low["h"], low["w"], low["b"]])

    def cap(z, c):
        return torch.tanh(z / c) * c

    teacher_logits = wide["tl"] if teacher == "logits" else wide["th"] @ wide["tw"].T
    student_logits = cap((wide["h"] @ wide["w"].T + wide["b"]) * 1.4, 2.0)
    reference = kldiv.KLDivergence(
        y_true_format="logits", from_logits=True, epsilon=0, backend="core", temperature=1.2
    )
    expected = reference(cap(teacher_logits, 1.5), student_logits, labels=t["labels"])
    expected_grads = torch.autograd.grad(expected, [wide["h"], wide["w"], wide["b"]])
    assert abs(value.item() - expected.item()) <= 1e-5 * abs(expected.item())
    for got, want in zip(grads, expected_grads, strict=True):
        assert _relative_error(got, want) <= TOLERANCE[torch.float32]
    assert len(triton_chunks) == -(-BT // 4) and all(launch["in_place"] for launch in triton_chunks)
