"""kldiv against the peers where conventions agree: PyTorch ``F.kl_div`` (``log_target``), optax,
and the generalized JSD of TRL / Liger-Kernel."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from numpy.testing import assert_allclose

import kldiv

RNG = np.random.default_rng(7)
TEACHER = torch.tensor(RNG.normal(size=(4, 5, 11)) * 2)
STUDENT = torch.tensor(RNG.normal(size=(4, 5, 11)) * 2)


@pytest.mark.parametrize(
    ("torch_reduction", "kldiv_reduction", "extra_divisor"),
    [
        ("sum", "sum", 1.0),
        ("batchmean", "batchmean", 1.0),
        # PyTorch "mean" divides by every element, vocabulary included: kldiv's per-token mean / V.
        ("mean", "sum_over_batch_size", 11.0),
    ],
)
@pytest.mark.parametrize("log_target", [False, True])
def test_torch_kl_div(torch_reduction, kldiv_reduction, extra_divisor, log_target):
    student_log_probs = STUDENT.log_softmax(-1)
    target = TEACHER.log_softmax(-1)
    target = target if log_target else target.exp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # PyTorch warns that its "mean" is not "batchmean"
        expected = F.kl_div(student_log_probs, target, reduction=torch_reduction, log_target=log_target)
    loss = kldiv.KLDivergence(
        reduction=kldiv_reduction,
        y_true_format="log_probs" if log_target else "probs",
        y_pred_format="log_probs",
        epsilon=0,
    )
    assert_allclose(float(loss(target, student_log_probs)) / extra_divisor, float(expected), rtol=1e-12)


def test_torch_kl_div_none_summed_over_vocabulary():
    expected = F.kl_div(STUDENT.log_softmax(-1), TEACHER.log_softmax(-1), reduction="none", log_target=True)
    result = kldiv.kl_divergence(TEACHER, STUDENT, y_true_format="logits", from_logits=True, epsilon=0)
    assert_allclose(result.numpy(), expected.sum(-1).numpy(), rtol=1e-12, atol=1e-14)


def test_torch_kl_div_zero_target_gradient_is_finite_where_torch_is_nan():
    """F.kl_div with probability targets: 0·log 0 gives a NaN gradient w.r.t. the target; kldiv does not."""
    target = torch.tensor([[0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    student = torch.tensor([[0.3, 0.7]], dtype=torch.float64).log()
    F.kl_div(student, target, reduction="sum").backward()
    assert torch.isnan(target.grad).any()
    target.grad = None
    kldiv.kl_divergence(target, student, y_pred_format="log_probs", epsilon=0).sum().backward()
    assert torch.isfinite(target.grad).all()


def test_optax_kl_divergence_with_log_targets():
    log_p, log_q = jnp.asarray(STUDENT.log_softmax(-1).numpy()), jnp.asarray(TEACHER.log_softmax(-1).numpy())
    # optax.kl_divergence_with_log_targets(log_predictions, log_targets) = KL(targets ‖ predictions).
    expected = optax.losses.kl_divergence_with_log_targets(log_p, log_q)
    result = kldiv.kl_divergence(
        log_q, log_p, y_true_format="log_probs", y_pred_format="log_probs", epsilon=0
    )
    assert_allclose(np.asarray(result), np.asarray(expected), rtol=2e-5, atol=1e-6)


def test_optax_kl_divergence_probability_targets():
    log_p = jnp.asarray(STUDENT.log_softmax(-1).numpy())
    targets = jnp.asarray(TEACHER.softmax(-1).numpy())
    expected = optax.losses.kl_divergence(log_p, targets)
    result = kldiv.kl_divergence(targets, log_p, y_pred_format="log_probs", epsilon=0)
    assert_allclose(np.asarray(result), np.asarray(expected), rtol=2e-5, atol=1e-6)


def trl_generalized_jsd(student_logits, teacher_logits, beta, temperature=1.0):
    """TRL ``GKDTrainer.generalized_jsd_loss`` (trl/trainer/gkd_trainer.py), reduction "none",
    for 0 < beta < 1, re-typed from its source::

        student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
        teacher_log_probs = F.log_softmax(teacher_logits / temperature, dim=-1)
        mixture_log_probs = torch.logsumexp(torch.stack([student_log_probs + torch.log(1 - beta),
                                                         teacher_log_probs + torch.log(beta)]), dim=0)
        kl_teacher = F.kl_div(mixture_log_probs, teacher_log_probs, reduction="none", log_target=True)
        kl_student = F.kl_div(mixture_log_probs, student_log_probs, reduction="none", log_target=True)
        jsd = beta * kl_teacher + (1 - beta) * kl_student

    Liger-Kernel's ``LigerJSD`` (``liger_kernel/ops/jsd.py``) computes the same mixture and weights.
    """
    beta = torch.tensor(beta, dtype=student_logits.dtype)
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits / temperature, dim=-1)
    mixture = torch.logsumexp(
        torch.stack([student_log_probs + torch.log(1 - beta), teacher_log_probs + torch.log(beta)]), dim=0
    )
    kl_teacher = F.kl_div(mixture, teacher_log_probs, reduction="none", log_target=True)
    kl_student = F.kl_div(mixture, student_log_probs, reduction="none", log_target=True)
    return beta * kl_teacher + (1 - beta) * kl_student


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_trl_generalized_jsd(beta, temperature):
    expected = trl_generalized_jsd(STUDENT, TEACHER, beta, temperature).sum(-1)
    result = kldiv.js_divergence(
        TEACHER,
        STUDENT,
        beta=beta,
        y_true_format="logits",
        from_logits=True,
        epsilon=0,
        temperature=temperature,
    )
    assert_allclose(result.numpy(), expected.numpy(), rtol=1e-10, atol=1e-13)


def test_trl_token_level_batchmean_is_token_mean():
    """TRL's "batchmean" with labels: ``jsd[labels != -100].sum() / (labels != -100).sum()``."""
    labels = torch.tensor(RNG.integers(-1, 3, size=(4, 5)))
    labels[labels < 0] = -100
    jsd = trl_generalized_jsd(STUDENT, TEACHER, 0.5)
    mask = labels != -100
    expected = jsd[mask].sum() / mask.sum()
    loss = kldiv.JSDivergence(reduction="token_mean", y_true_format="logits", from_logits=True, epsilon=0)
    assert_allclose(float(loss(TEACHER, STUDENT, labels=labels)), float(expected), rtol=1e-12)
