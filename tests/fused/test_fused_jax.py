"""JAX fused linear + divergence equals the unchunked core (float32), under jit, every teacher form."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kldiv
from kldiv.fused.jax import fused_linear_js_divergence, fused_linear_kl_divergence

BT, H, V = 23, 8, 31
RNG = np.random.default_rng(0)
ARRAYS = {
    name: jnp.asarray(RNG.normal(size=shape) * 0.7, dtype=jnp.float32)
    for name, shape in {"h": (BT, H), "w": (V, H), "b": (V,), "th": (BT, H), "tw": (V, H)}.items()
}
LABELS = jnp.asarray(np.where(RNG.random(BT) < 0.3, -100, 1))
# float32 rounding of sums over 31-entry rows and 23 tokens, differently associated.
TOL = {"rtol": 2e-5, "atol": 2e-6}


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


@pytest.mark.parametrize("reduction", ["token_mean", "sum", "batchmean"])
@pytest.mark.parametrize("kind", [{"direction": "forward"}, {"direction": "symmetric"}, {"beta": 0.4}])
@pytest.mark.parametrize("chunk_size", [5, 23])
def test_teacher_hidden_value_and_all_gradients(reduction, kind, chunk_size):
    js = "beta" in kind
    fused = fused_linear_js_divergence if js else fused_linear_kl_divergence
    reference_cls = kldiv.JSDivergence if js else kldiv.KLDivergence
    options = {"temperature": 1.5, "scale_by_temperature_squared": True, **kind}

    def fused_loss(h, w, b, th, tw):
        return fused(
            h,
            w,
            b,
            teacher_hidden=th,
            teacher_weight=tw,
            labels=LABELS,
            reduction=reduction,
            chunk_size=chunk_size,
            **options,
        )

    def reference_loss(h, w, b, th, tw):
        loss = reference_cls(
            reduction=reduction, y_true_format="logits", from_logits=True, epsilon=0, **options
        )
        return loss(th @ tw.T, h @ w.T + b, labels=LABELS)

    args = tuple(ARRAYS[n] for n in ("h", "w", "b", "th", "tw"))
    value, grads = jax.jit(jax.value_and_grad(fused_loss, argnums=range(5)))(*args)
    expected, expected_grads = jax.value_and_grad(reference_loss, argnums=range(5))(*args)
    close(value, expected)
    for got, want in zip(grads, expected_grads, strict=True):
        close(got, want)


def test_teacher_logits_weights_and_num_items():
    teacher = jnp.asarray(RNG.normal(size=(BT, V)), dtype=jnp.float32)
    weight = jnp.asarray(RNG.random(BT), dtype=jnp.float32)
    value = fused_linear_kl_divergence(
        ARRAYS["h"], ARRAYS["w"], teacher_logits=teacher, sample_weight=weight, num_items=9.0, chunk_size=4
    )
    expected = kldiv.KLDivergence(
        reduction="token_mean", y_true_format="logits", from_logits=True, epsilon=0
    )(teacher, ARRAYS["h"] @ ARRAYS["w"].T, sample_weight=weight, num_items=9.0)
    close(value, expected)


def test_sparse_topk_k_equals_v_is_dense():
    teacher = jnp.asarray(RNG.normal(size=(BT, V)), dtype=jnp.float32)
    order = jnp.argsort(-teacher, axis=-1)
    values = jnp.take_along_axis(jax.nn.log_softmax(teacher), order, axis=-1)
    sparse = fused_linear_kl_divergence(
        ARRAYS["h"], ARRAYS["w"], teacher_topk_indices=order, teacher_topk_values=values, chunk_size=6
    )
    close(sparse, fused_linear_kl_divergence(ARRAYS["h"], ARRAYS["w"], teacher_logits=teacher))


def test_one_teacher_form_required():
    with pytest.raises(ValueError, match="exactly one teacher form"):
        fused_linear_kl_divergence(ARRAYS["h"], ARRAYS["w"])


def test_sparse_topk_with_temperature_tempers_the_student():
    """Log-probs stored at temperature T (k = V) equal the dense loss at T: the student is tempered."""
    teacher = jnp.asarray(RNG.normal(size=(BT, V)), dtype=jnp.float32)
    order = jnp.argsort(-teacher, axis=-1)
    values = jnp.take_along_axis(jax.nn.log_softmax(teacher / 2.0), order, axis=-1)
    sparse = fused_linear_kl_divergence(
        ARRAYS["h"], ARRAYS["w"], teacher_topk_indices=order, teacher_topk_values=values, temperature=2.0
    )
    close(
        sparse, fused_linear_kl_divergence(ARRAYS["h"], ARRAYS["w"], teacher_logits=teacher, temperature=2.0)
    )
