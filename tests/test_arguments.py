"""The call keyword sets (:mod:`kldiv.arguments`): every entry point takes them as one typed set, hands
them on without renaming, and names an unknown keyword instead of ignoring it."""

from __future__ import annotations

import numpy as np
import pytest

import kldiv
from kldiv import arguments

T = np.array([[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]], np.float32)
P = np.array([[0.3, 0.7], [0.6, 0.4], [0.5, 0.5]], np.float32)
MASK = np.array([True, False, True])


def test_keyword_sets_are_unions_of_their_parts():
    assert arguments.names(arguments.CallArguments) == {"mask", "labels", "num_items"}
    assert arguments.names(arguments.TokenArguments) == {"mask", "labels", "num_items", "sample_weight"}
    fused = arguments.names(arguments.FusedArguments)
    assert arguments.names(arguments.TeacherArguments) <= fused
    assert {"epsilon", "beta", "direction", "chunk_size", "memory_budget", "reduction"} <= fused


def test_split_separates_one_set_from_the_rest():
    taken, rest = arguments.split({"mask": 1, "epsilon": 0.0, "labels": 2}, arguments.CallArguments)
    assert taken == {"mask": 1, "labels": 2} and rest == {"epsilon": 0.0}


def test_loss_call_names_an_unknown_keyword():
    loss = kldiv.KLDivergence()
    unexpected = r"A KLDivergence loss call got an unexpected keyword argument 'maks'"
    with pytest.raises(TypeError, match=unexpected + "; expected sample_weight, labels, mask, num_items"):
        loss(T, P, maks=MASK)


def test_functional_form_names_an_unknown_keyword():
    with pytest.raises(TypeError, match="maks"):
        kldiv.kl_divergence(T, P, maks=MASK)
    with pytest.raises(TypeError, match=r"kl_divergence\(\) got an unexpected keyword argument 'num_items'"):
        kldiv.kl_divergence(T, P, num_items=3)  # a per-sample loss has no mean to divide
    with pytest.raises(TypeError, match="num_items"):  # a per-sample loss has no mean to divide
        kldiv.kl_divergence(T, P, num_items=3)


def test_call_arguments_reach_the_reduction_unchanged():
    loss = kldiv.KLDivergence()
    per_sample = kldiv.kl_divergence(T, P)
    np.testing.assert_allclose(loss(T, P, mask=MASK), per_sample[MASK].mean(), rtol=1e-6)
    np.testing.assert_allclose(loss(T, P, mask=MASK, num_items=4), per_sample[MASK].sum() / 4, rtol=1e-6)
    np.testing.assert_allclose(kldiv.kl_divergence(T, P, mask=MASK), np.where(MASK, per_sample, 0))


def test_teacher_form_rules():
    assert arguments.teacher_form({"teacher_logits": 1}) == "teacher_logits"
    with pytest.raises(ValueError, match="exactly one teacher form; received 2"):
        arguments.teacher_form({"teacher_logits": 1, "teacher_hidden": 2, "teacher_weight": 3})
    with pytest.raises(ValueError, match=r"`teacher_weight`: expected a \[V, H_teacher\] tensor"):
        arguments.teacher_form({"teacher_hidden": 2})
    with pytest.raises(ValueError, match="`teacher_topk_values`"):
        arguments.teacher_form({"teacher_topk_indices": 2})


def test_torch_entry_points_name_an_unknown_keyword():
    torch = pytest.importorskip("torch")
    import kldiv.torch

    t, p = torch.tensor(T), torch.tensor(P)
    with pytest.raises(TypeError, match="maks"):
        kldiv.torch.KLDivergence()(t, p, maks=torch.tensor(MASK))
    with pytest.raises(TypeError, match="maks"):
        kldiv.torch.kl_divergence(t, p, maks=torch.tensor(MASK))
    with pytest.raises(
        TypeError, match=r"FusedLinearKLDivergence\.forward\(\) got an unexpected keyword.*teacher_logits"
    ):
        kldiv.torch.FusedLinearKLDivergence()(torch.ones(3, 4), torch.ones(2, 4), teacher_logits=p, maks=1)
    with pytest.raises(TypeError, match="maks"):
        kldiv.torch.chunked_kl_divergence(t, p, maks=1)
    masked = kldiv.torch.chunked_kl_divergence(t.log(), p.log(), mask=torch.tensor(MASK))
    core = kldiv.kl_divergence(T, P)[MASK].mean()
    assert float(masked) == pytest.approx(float(core), rel=1e-5)


def test_jax_fused_takes_the_same_keywords():
    pytest.importorskip("jax")
    import jax.numpy as jnp

    from kldiv.fused.jax import fused_linear_kl_divergence

    hidden = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
    weight = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4)), jnp.float32)
    teacher = jnp.asarray(np.log(T))
    masked = fused_linear_kl_divergence(hidden, weight, teacher_logits=teacher, mask=jnp.asarray(MASK))
    per_token = kldiv.kl_divergence(
        np.asarray(teacher), np.asarray(hidden @ weight.T), y_true_format="logits", from_logits=True
    )
    assert float(masked) == pytest.approx(float(per_token[MASK].mean()), rel=1e-5)
    with pytest.raises(ValueError, match="exactly one teacher form"):
        fused_linear_kl_divergence(hidden, weight)
    with pytest.raises(TypeError, match="maks"):
        fused_linear_kl_divergence(hidden, weight, teacher_logits=teacher, maks=1)
