"""Logit maps in the JAX fused-linear losses (``student_softcap``, ``teacher_softcap``,
``student_logit_scale``, ``teacher_logit_scale``, as the PyTorch fused losses take them): float64
values against the formula on logits mapped by hand (:mod:`kldiv.testing`), and every gradient
against ``jax.grad`` of the materialized program (map by hand, then kldiv's core without maps)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kldiv
from kldiv.fused.jax import fused_linear_js_divergence, fused_linear_kl_divergence
from kldiv.testing import assert_close, reference

BT, H, V = 21, 6, 17
MAPS = [
    {"student_softcap": 1.5},
    {"student_logit_scale": 1.7, "student_softcap": 2.0, "teacher_logit_scale": 0.8, "teacher_softcap": 2.5},
]
KINDS = [{"direction": "forward"}, {"direction": "reverse"}, {"beta": 0.3}]
TOL = {"rtol": 1e-11, "atol": 1e-12}


def arrays():
    rng = np.random.default_rng(0)
    shapes = {"h": (BT, H), "w": (V, H), "b": (V,), "th": (BT, H), "tw": (V, H)}
    out = {name: rng.normal(size=shape) * 1.5 for name, shape in shapes.items()}
    out["h"][3] *= 60.0  # logits that saturate the caps
    labels = np.where(rng.random(BT) < 0.3, -100, 1)
    return out, labels


def by_hand(xp, z, maps, side):
    scale, cap = maps.get(f"{side}_logit_scale"), maps.get(f"{side}_softcap")
    z = z * scale if scale is not None else z
    return xp.tanh(z / cap) * cap if cap is not None else z


@pytest.mark.parametrize("maps", MAPS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("teacher_form", ["hidden", "logits"])
def test_value_and_gradients(kind, maps, teacher_form):
    data, labels = arrays()
    js = "beta" in kind
    fused = fused_linear_js_divergence if js else fused_linear_kl_divergence
    options = {"temperature": 1.5, **kind, **maps}
    with jax.enable_x64(True):
        h, w, b, th, tw = (jnp.asarray(data[n]) for n in ("h", "w", "b", "th", "tw"))
        keep = jnp.asarray(labels != -100)

        def teacher_keywords(th, tw):
            if teacher_form == "hidden":
                return {"teacher_hidden": th, "teacher_weight": tw}
            return {"teacher_logits": th @ tw.T}

        def fused_loss(h, w, b, th, tw):
            keywords = teacher_keywords(th, tw)
            return fused(
                h, w, b, labels=jnp.asarray(labels), chunk_size=5, reduction="sum", **keywords, **options
            )

        cls = kldiv.JSDivergence if js else kldiv.KLDivergence
        plain = cls(
            reduction="sum", y_true_format="logits", from_logits=True, epsilon=0, temperature=1.5, **kind
        )

        def naive(h, w, b, th, tw):
            teacher = by_hand(jnp, th @ tw.T, maps, "teacher")
            return plain(teacher, by_hand(jnp, h @ w.T + b, maps, "student"), mask=keep)

        argnums = (0, 1, 2) if teacher_form == "logits" else (0, 1, 2, 3, 4)
        value, grads = jax.jit(jax.value_and_grad(fused_loss, argnums=argnums))(h, w, b, th, tw)
        want, want_grads = jax.value_and_grad(naive, argnums=argnums)(h, w, b, th, tw)
        assert_close(value, want, **TOL)
        for got, expected in zip(grads, want_grads, strict=True):
            assert_close(got, expected, rtol=1e-10, atol=1e-11)

        # The value against the float64 formula of kldiv.testing on the mapped logits.
        student = by_hand(np, data["h"] @ data["w"].T + data["b"], maps, "student") / 1.5
        teacher = by_hand(np, data["th"] @ data["tw"].T, maps, "teacher") / 1.5
        formats = {"y_true_format": "logits", "y_pred_format": "logits", "epsilon": 0.0}
        if js:
            per_token = reference.js_divergence(teacher, student, beta=kind["beta"], **formats)
        else:
            per_token = reference.kl_divergence(teacher, student, direction=kind["direction"], **formats)
        assert_close(value, np.sum(per_token[labels != -100]), rtol=1e-10, atol=1e-12)


def test_sparse_teacher_maps_the_student_only():
    """A stored top-k teacher's values are final: only the student's map applies (as in PyTorch)."""
    data, _ = arrays()
    maps = {"student_softcap": 2.0, "student_logit_scale": 1.3}
    with jax.enable_x64(True):
        h, w, b = (jnp.asarray(data[n]) for n in ("h", "w", "b"))
        teacher = jnp.asarray(data["th"] @ data["tw"].T)
        top = jax.lax.top_k(jax.nn.log_softmax(teacher, -1), 5)
        indices, values = top[1], top[0]

        def fused_loss(h, w, b, **extra):
            return fused_linear_kl_divergence(
                h, w, b, teacher_topk_indices=indices, teacher_topk_values=values, reduction="sum", **extra
            )

        value, grads = jax.value_and_grad(lambda *a: fused_loss(*a, **maps), argnums=(0, 1, 2))(h, w, b)

        def mapped_by_hand(h, w, b):
            # the same sparse loss on a student whose head applies the map: fold it into the logits
            student = by_hand(jnp, h @ w.T + b, maps, "student")
            eye = jnp.eye(V)
            return fused_linear_kl_divergence(
                student, eye, teacher_topk_indices=indices, teacher_topk_values=values, reduction="sum"
            )

        want, want_grads = jax.value_and_grad(mapped_by_hand, argnums=(0, 1, 2))(h, w, b)
        assert_close(value, want, **TOL)
        for got, expected in zip(grads, want_grads, strict=True):
            assert_close(got, expected, rtol=1e-10, atol=1e-11)


def test_a_map_on_a_fixed_logits_side_is_accepted_and_bad_values_raise():
    data, _ = arrays()
    h, w = jnp.asarray(data["h"], jnp.float32), jnp.asarray(data["w"], jnp.float32)
    with pytest.raises(ValueError, match="`teacher_softcap`"):
        fused_linear_kl_divergence(h, w, teacher_logits=h @ w.T, teacher_softcap=-1.0)
