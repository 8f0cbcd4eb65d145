"""``kldiv.compat``: the drop-ins against the real peers, installed here — TRL's ``generalized_jsd_loss``,
Liger-Kernel's ``LigerFusedLinearJSDLoss`` (pure PyTorch) and ``LigerFusedLinearJSD`` (its Triton
kernel, run by Triton's interpreter in a subprocess), torchtune's KD losses (its ``kd_losses.py``
loaded by path: ``import torchtune`` needs a torchao this CPU set does not have) — values and
gradients, every reduction and β endpoint."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kldiv.compat import divergence_for_beta
from kldiv.compat.liger import LigerFusedLinearJSD, LigerFusedLinearJSDLoss
from kldiv.compat.torchtune import (
    ForwardKLLoss,
    ForwardKLWithChunkedOutputLoss,
    ReverseKLLoss,
    ReverseKLWithChunkedOutputLoss,
)
from kldiv.compat.trl import generalized_jsd_loss

B, T, H, V = 3, 6, 8, 37
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def logits(seed: int, *shape: int, dtype=torch.float32, scale: float = 3.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(dtype)


def labels(seed: int = 9) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, V, (B, T), generator=generator)
    y[0, :2] = -100
    y[2, -3:] = -100
    return y


def close(got: torch.Tensor, want: torch.Tensor, tolerance: float = 2e-6) -> None:
    got, want = got.detach().double(), want.detach().double()
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = float(want.abs().max()) if want.numel() else 0.0
    assert float((got - want).abs().max()) <= tolerance * max(1.0, scale)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean", "none"])
@pytest.mark.parametrize("with_labels", [True, False])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_trl_generalized_jsd_loss(beta, reduction, with_labels, temperature):
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    trl_gkd = pytest.importorskip("trl.experimental.gkd")
    teacher = logits(1, B, T, V)
    y = labels() if with_labels else None
    for num_items in (None, 11):
        results = []
        for function in (generalized_jsd_loss, trl_gkd.GKDTrainer.generalized_jsd_loss):
            student = logits(0, B, T, V).requires_grad_()
            value = function(
                student,
                teacher,
                y,
                beta=beta,
                temperature=temperature,
                reduction=reduction,
                num_items_in_batch=num_items,
            )
            weights = torch.linspace(0.5, 2.0, value.numel()).reshape(value.shape)
            (grad,) = torch.autograd.grad((value * weights).sum(), student)
            results.append((value, grad))
        (ours, our_grad), (theirs, their_grad) = results
        close(ours, theirs)
        close(our_grad, their_grad)


def test_beta_outside_the_interval_is_named():
    with pytest.raises(ValueError, match="`beta`"):
        divergence_for_beta(1.5)
    with pytest.raises(ValueError, match="`reduction`"):
        generalized_jsd_loss(logits(0, 2, V), logits(1, 2, V), reduction="token_mean")


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize(("weight_hard_loss", "weight_soft_loss"), [(0.5, 0.5), (0.0, 1.0), (0.8, 0.2)])
def test_liger_fused_linear_jsd_loss(beta, weight_hard_loss, weight_soft_loss):
    """Liger's chunked distillation loss (its own PyTorch code, ``compiled=False``), biases included."""
    liger = pytest.importorskip("liger_kernel.chunked_loss")
    h, th = logits(2, B * T, H, scale=1.0), logits(3, B * T, H + 3, scale=1.0)
    w, tw = logits(4, V, H, scale=1.0), logits(5, V, H + 3, scale=1.0)
    b, tb = logits(6, V, scale=0.5), logits(7, V, scale=0.5)
    y = labels().reshape(-1)
    options = {
        "weight_hard_loss": weight_hard_loss,
        "weight_soft_loss": weight_soft_loss,
        "beta": beta,
        "temperature": 1.7,
    }
    results = []
    for module in (
        LigerFusedLinearJSDLoss(chunk_size=5, return_soft_hard_loss=True, **options),
        liger.LigerFusedLinearJSDLoss(compiled=False, chunk_size=5, return_soft_hard_loss=True, **options),
    ):
        leaves = [x.clone().requires_grad_() for x in (h, w, b)]
        loss, soft, hard = module(leaves[0], leaves[1], th, tw, y, leaves[2], tb)
        results.append(((loss, soft, hard), torch.autograd.grad(loss, leaves)))
    for got, want in zip(results[0][0], results[1][0], strict=True):
        close(got, want)
    for got, want in zip(results[0][1], results[1][1], strict=True):
        close(got, want, tolerance=1e-5)


def test_liger_vocabulary_mismatch_is_refused():
    with pytest.raises(ValueError, match="student 37 and teacher 40"):
        LigerFusedLinearJSD()(logits(0, 4, H), logits(1, V, H), logits(2, 4, H), logits(3, 40, H))


def test_liger_fused_linear_jsd_kernel_interpreted():
    """``LigerFusedLinearJSD`` (Liger's Triton kernel) under ``TRITON_INTERPRET=1`` in a fresh process."""
    if INTERPRETED:
        pytest.skip("already interpreted")
    pytest.importorskip("liger_kernel")
    env = dict(os.environ, TRITON_INTERPRET="1")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-k",
        "liger_kernel_cases",
        "-W",
        "ignore::RuntimeWarning",
        str(Path(__file__).resolve()),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "6 passed" in result.stdout, result.stdout[-2000:]


@pytest.mark.skipif(not INTERPRETED, reason="runs in test_liger_fused_linear_jsd_kernel_interpreted")
@pytest.mark.parametrize("beta", [0.0, 0.4, 1.0])
@pytest.mark.parametrize("with_labels", [True, False])
def test_liger_kernel_cases(beta, with_labels):
    from liger_kernel.transformers import LigerFusedLinearJSD as Liger

    h, th = logits(2, B * T, H, scale=1.0), logits(3, B * T, H, scale=1.0)
    w, tw = logits(4, V, H, scale=1.0), logits(5, V, H, scale=1.0)
    y = labels().reshape(-1) if with_labels else None
    results = []
    for module in (
        LigerFusedLinearJSD(jsd_beta=beta, temperature=1.3),
        Liger(jsd_beta=beta, temperature=1.3),
    ):
        leaves = [h.clone().requires_grad_(), w.clone().requires_grad_()]
        value = module(leaves[0], leaves[1], th, tw, y)
        results.append((value, torch.autograd.grad(value, leaves)))
    close(results[0][0], results[1][0], tolerance=1e-5)
    for got, want in zip(results[0][1], results[1][1], strict=True):
        close(got, want, tolerance=1e-5)


def torchtune_kd_losses():
    spec = importlib.util.find_spec("torchtune")
    if spec is None:
        pytest.skip("torchtune is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "modules" / "loss" / "kd_losses.py"
    module_spec = importlib.util.spec_from_file_location("torchtune_kd_losses", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("ours", "name"), [(ForwardKLLoss, "ForwardKLLoss"), (ReverseKLLoss, "ReverseKLLoss")]
)
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torchtune_kd_losses(ours, name, normalize, dtype):
    peer = getattr(torchtune_kd_losses(), name)()
    teacher = logits(1, B * T, V, dtype=dtype)
    teacher[3, :5] = -torch.inf  # padded vocabulary slots, on both sides: they contribute 0
    y = labels().reshape(-1)
    results = []
    for module in (ours(), peer):
        student = logits(0, B * T, V, dtype=dtype)
        student[3, :5] = -torch.inf
        student.requires_grad_()
        value = module(student, teacher, y, normalize=normalize)
        results.append((value, torch.autograd.grad(value, student)[0]))
    (ours_value, ours_grad), (peer_value, peer_grad) = results
    close(ours_value, peer_value, tolerance=1e-5)
    # torchtune's reverse loss backpropagates 0·(−inf) = NaN over a row with -inf slots; kldiv's
    # gradient is finite everywhere, and equal to torchtune's on every row where torchtune's is.
    finite_rows = torch.isfinite(peer_grad).all(-1)
    assert torch.isfinite(ours_grad).all() and finite_rows.sum() >= B * T - 1
    close(ours_grad[finite_rows], peer_grad[finite_rows], tolerance=1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize(
    ("ours", "name"),
    [
        (ForwardKLWithChunkedOutputLoss, "ForwardKLWithChunkedOutputLoss"),
        (ReverseKLWithChunkedOutputLoss, "ReverseKLWithChunkedOutputLoss"),
    ],
)
def test_torchtune_chunked_output_losses(ours, name):
    """The KD recipe's loss: lists of ``[B, T/n, V]`` chunks and ``[B, T]`` labels."""
    peer = getattr(torchtune_kd_losses(), name)(num_output_chunks=3)
    teacher = logits(1, B, T, V)
    y = labels()
    results = []
    for module in (ours(num_output_chunks=3), peer):
        student = logits(0, B, T, V).requires_grad_()
        value = module(list(student.chunk(3, dim=1)), list(teacher.chunk(3, dim=1)), y)
        results.append((value, torch.autograd.grad(value, student)[0]))
    close(results[0][0], results[1][0], tolerance=1e-5)
    close(results[0][1], results[1][1], tolerance=1e-5)
    empty = ours()([logits(0, B, T, V)], [teacher], torch.full_like(y, -100))
    assert float(empty) == 0.0


def test_torchtune_drops_what_kldiv_counts():
    """The documented difference: the teacher's mass on a ``-inf`` student entry (forward) or the
    student's on a ``-inf`` teacher entry (reverse) — torchtune drops the term, kldiv gives ``+inf``."""
    kd = torchtune_kd_losses()
    y = labels().reshape(-1)
    teacher, student = logits(1, B * T, V), logits(0, B * T, V)
    hidden_student, hidden_teacher = student.clone(), teacher.clone()
    hidden_student[4, 0] = -torch.inf
    hidden_teacher[4, 0] = -torch.inf
    assert torch.isfinite(kd.ForwardKLLoss()(hidden_student, teacher, y))
    assert float(ForwardKLLoss()(hidden_student, teacher, y)) == torch.inf
    assert torch.isfinite(kd.ReverseKLLoss()(student, hidden_teacher, y))
    assert float(ReverseKLLoss()(student, hidden_teacher, y)) == torch.inf


@pytest.mark.parametrize(
    ("module", "shown"),
    [
        (LigerFusedLinearJSD(jsd_beta=0.3), "jsd_beta=0.3"),
        (LigerFusedLinearJSDLoss(beta=0.2, weight_hard_loss=0.3), "weight_hard_loss=0.3"),
        (ForwardKLLoss(ignore_index=-1), "ignore_index=-1"),
        (ReverseKLWithChunkedOutputLoss(num_output_chunks=4), "num_output_chunks=4"),
    ],
    ids=lambda m: type(m).__name__,
)
def test_drop_ins_behave_like_modules(module, shown):
    """``.to()``, ``deepcopy``, ``pickle``, ``state_dict`` and the options in ``repr``."""
    import copy
    import pickle

    assert module.to(torch.float64) is module and module.state_dict() == {}
    assert shown in repr(module)
    for clone in (copy.deepcopy(module), pickle.loads(pickle.dumps(module))):
        assert type(clone) is type(module) and repr(clone) == repr(module)
