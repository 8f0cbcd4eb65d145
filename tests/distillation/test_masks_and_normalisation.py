"""Masks, ``labels``/``ignore_index``, ``batchmean``/``token_mean`` and ``num_items``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

import kldiv

from . import reference

RNG = np.random.default_rng(3)
TEACHER = RNG.normal(size=(4, 6, 9))
STUDENT = RNG.normal(size=(4, 6, 9))
LABELS = np.where(RNG.random((4, 6)) < 0.3, -100, RNG.integers(0, 9, size=(4, 6)))
KEEP = LABELS != -100
OPTIONS = {"y_true_format": "logits", "from_logits": True, "epsilon": 0}


def per_token_reference() -> np.ndarray:
    return reference.divergence(TEACHER, STUDENT, true_format="logits", pred_format="logits")


def test_mask_equals_slicing():
    masked = kldiv.kl_divergence(TEACHER, STUDENT, mask=KEEP, **OPTIONS)
    sliced = kldiv.kl_divergence(TEACHER[KEEP], STUDENT[KEEP], **OPTIONS)
    assert_allclose(masked[KEEP], sliced, rtol=1e-13)
    assert np.all(masked[~KEEP] == 0)


def test_labels_with_ignore_index_equal_mask():
    by_labels = kldiv.kl_divergence(TEACHER, STUDENT, labels=LABELS, **OPTIONS)
    by_mask = kldiv.kl_divergence(TEACHER, STUDENT, mask=KEEP, **OPTIONS)
    assert_allclose(by_labels, by_mask, rtol=0, atol=0)
    other = np.where(KEEP, LABELS, 7)
    by_other_index = kldiv.kl_divergence(TEACHER, STUDENT, labels=other, ignore_index=7, **OPTIONS)
    assert np.all(by_other_index[other == 7] == 0)


@pytest.mark.parametrize("direction", ["forward", "reverse", "symmetric"])
def test_masked_positions_get_exactly_zero_gradient_even_when_infinite(direction):
    """A masked row with p = 0 < t has an infinite divergence; masking must not turn it into NaN."""
    t = torch.tensor([[0.5, 0.5], [0.2, 0.8]], dtype=torch.float64)
    p = torch.tensor([[0.0, 1.0], [0.3, 0.7]], dtype=torch.float64, requires_grad=True)
    value = kldiv.kl_divergence(t, p, epsilon=0, direction=direction, mask=torch.tensor([False, True]))
    value.sum().backward()
    assert value[0].item() == 0.0
    assert torch.all(p.grad[0] == 0)
    assert torch.isfinite(p.grad).all()


def test_masked_gradient_jax():
    def loss(student):
        return kldiv.KLDivergence(reduction="token_mean", **OPTIONS)(
            jnp.asarray(TEACHER, dtype=jnp.float32), student, labels=jnp.asarray(LABELS)
        )

    grad = np.asarray(jax.grad(loss)(jnp.asarray(STUDENT, dtype=jnp.float32)))
    assert np.all(grad[~KEEP] == 0)
    assert np.all(np.any(grad[KEEP] != 0, axis=-1))


@pytest.mark.parametrize(
    ("reduction", "denominator"),
    [
        ("sum", 1.0),
        ("batchmean", 4.0),
        ("token_mean", float(KEEP.sum())),
        ("sum_over_batch_size", float(KEEP.sum())),  # Keras: a masked mean counts unmasked positions
        ("mean", float(KEEP.sum())),
    ],
)
def test_reductions_with_labels(reduction, denominator):
    expected = np.sum(per_token_reference() * KEEP) / denominator
    loss = kldiv.KLDivergence(reduction=reduction, **OPTIONS)
    assert_allclose(loss(TEACHER, STUDENT, labels=LABELS), expected, rtol=1e-12)


def test_batchmean_without_mask_is_per_leading_axis():
    expected = per_token_reference().sum() / TEACHER.shape[0]
    assert_allclose(
        kldiv.KLDivergence(reduction="batchmean", **OPTIONS)(TEACHER, STUDENT), expected, rtol=1e-12
    )


def test_token_mean_all_masked_is_zero():
    loss = kldiv.KLDivergence(reduction="token_mean", **OPTIONS)
    assert loss(TEACHER, STUDENT, mask=np.zeros((4, 6), dtype=bool)) == 0.0


def test_token_mean_with_float_weights_divides_by_token_count():
    weights = RNG.random((4, 6))
    expected = np.sum(per_token_reference() * weights * KEEP) / KEEP.sum()
    loss = kldiv.KLDivergence(reduction="token_mean", **OPTIONS)
    assert_allclose(loss(TEACHER, STUDENT, sample_weight=weights, labels=LABELS), expected, rtol=1e-12)


@pytest.mark.parametrize("reduction", ["token_mean", "batchmean", "sum_over_batch_size"])
def test_num_items_makes_accumulated_gradients_equal_one_big_batch(reduction):
    teacher = torch.tensor(TEACHER)
    labels = torch.tensor(LABELS)
    loss = kldiv.KLDivergence(reduction=reduction, **OPTIONS)
    student = torch.tensor(STUDENT, requires_grad=True)
    loss(teacher, student, labels=labels).backward()
    one_batch = student.grad.clone()
    denominator = {"token_mean": int(KEEP.sum()), "batchmean": 4, "sum_over_batch_size": int(KEEP.sum())}
    student.grad = None
    for part in (slice(0, 1), slice(1, 4)):  # uneven micro-batches
        loss(teacher[part], student[part], labels=labels[part], num_items=denominator[reduction]).backward()
    assert_allclose(student.grad.numpy(), one_batch.numpy(), rtol=1e-12, atol=1e-15)


def test_num_items_as_tensor():
    loss = kldiv.KLDivergence(reduction="token_mean", **OPTIONS)
    value = loss(torch.tensor(TEACHER), torch.tensor(STUDENT), num_items=torch.tensor(10.0))
    assert_allclose(float(value), per_token_reference().sum() / 10.0, rtol=1e-12)


@pytest.mark.parametrize("reduction", ["sum", "none", None])
def test_num_items_rejected_without_a_denominator(reduction):
    with pytest.raises(ValueError, match="num_items"):
        kldiv.KLDivergence(reduction=reduction)(TEACHER, STUDENT, num_items=3)


def test_mask_of_wrong_shape_names_the_argument():
    with pytest.raises(ValueError, match=r"`mask`.*\(4, 6\).*\(5,\)"):
        kldiv.kl_divergence(TEACHER, STUDENT, mask=np.ones(5, dtype=bool), **OPTIONS)
