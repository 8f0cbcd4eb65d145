"""``support=`` / ``topk=``: a dense teacher compared with the student on the teacher's, the student's or
the union top-k support, both sides coarsened to it plus a tail bucket. Values and every gradient
against a float64 reference materialized by hand (a membership mask over the vocabulary, the tail as
a sum of the excluded probabilities), the divergence properties of the coarsening, the statistics on
the support, and the argument errors."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

from kldiv.fused.torch import (
    FusedLinearJSDivergence,
    FusedLinearKLDivergence,
    chunked_js_divergence,
    chunked_kl_divergence,
    topk_teacher,
)

BT, H, V, K = 13, 6, 29, 5
T = 1.7
SUPPORTS = ("teacher", "student", "union")
KINDS = {
    "forward": {"direction": "forward"},
    "reverse": {"direction": "reverse"},
    "symmetric": {"direction": "symmetric"},
    "js": {"beta": 0.3},
}


def tensors(seed: int = 0, scale: float = 1.0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).requires_grad_()

    mask = torch.ones(BT, dtype=torch.bool)
    mask[[2, 7, 8]] = False
    return {
        "h": rand(BT, H),
        "w": rand(V, H),
        "b": rand(V),
        "th": rand(BT, H),
        "tw": rand(V, H),
        "mask": mask,
    }


# --- the float64 reference, by hand ------------------------------------------------------------------


def members(teacher: torch.Tensor, student: torch.Tensor, support: str, k: int) -> torch.Tensor:
    """``[rows, V]`` bool: which entries form the support (from NumPy's argsort, not torch.topk)."""
    member = np.zeros(teacher.shape, dtype=bool)
    rows = np.arange(teacher.shape[0])[:, None]
    if support in ("teacher", "union"):
        member[rows, np.argsort(-teacher.detach().numpy(), axis=-1)[:, :k]] = True
    if support in ("student", "union"):
        member[rows, np.argsort(-student.detach().numpy(), axis=-1)[:, :k]] = True
    return torch.from_numpy(member)


def coarsened(logits: torch.Tensor, member: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities on ``[rows, V + 1]`` outcomes: ``p_i`` on the support (0 elsewhere), then the tail
    ``Σ_{j ∉ S} p_j``; and where they count (the support, and a tail that holds entries)."""
    p = torch.softmax(logits / T, -1)
    inside = torch.where(member, p, torch.zeros_like(p))
    tail = torch.where(member, torch.zeros_like(p), p).sum(-1, keepdim=True)
    counts = torch.cat([member, (~member).any(-1, keepdim=True)], -1)
    return torch.cat([inside, tail], -1), counts


def kl_terms(a: torch.Tensor, b: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    one = torch.ones_like(a)
    a, b = torch.where(counts, a, one), torch.where(counts, b, one)
    return torch.where(counts, a * (a.log() - b.log()), torch.zeros_like(a)).sum(-1)


def reference_per_token(teacher_logits, student_logits, support, k, kind):
    """The coarsened divergence of each token in float64 (``k = None``: dense)."""
    if k is None:
        member = torch.ones(teacher_logits.shape, dtype=torch.bool)
    else:
        member = members(teacher_logits, student_logits, support, k)
    p, counts = coarsened(teacher_logits, member)
    q, _ = coarsened(student_logits, member)
    if "beta" in kind:
        beta = kind["beta"]
        m = beta * p + (1 - beta) * q
        return beta * kl_terms(p, m, counts) + (1 - beta) * kl_terms(q, m, counts)
    direction = kind["direction"]
    forward, reverse = kl_terms(p, q, counts), kl_terms(q, p, counts)
    return {"forward": forward, "reverse": reverse, "symmetric": forward + reverse}[direction]


def reduce(per_token: torch.Tensor, mask: torch.Tensor | None, reduction: str) -> torch.Tensor:
    kept = torch.ones_like(per_token, dtype=torch.bool) if mask is None else mask
    per_token = torch.where(kept, per_token, torch.zeros_like(per_token)) * T**2
    if reduction == "none":
        return per_token
    if reduction == "sum":
        return per_token.sum()
    return per_token.sum() / kept.sum()


def fused_class(kind):
    return FusedLinearJSDivergence if "beta" in kind else FusedLinearKLDivergence


OPTIONS = {"temperature": T, "scale_by_temperature_squared": True}
LARGEST = {}  # the largest |error| of each path against float64, printed at the end (-s)


def record(path: str, got: torch.Tensor, want: torch.Tensor) -> None:
    error = (got.double() - want.double()).abs().max().item()
    LARGEST[path] = max(LARGEST.get(path, 0.0), error)


def compare(path, got, want, rtol, atol):
    record(path, got, want)
    torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol)


# --- values and gradients ----------------------------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True], ids=["all", "mask"])
@pytest.mark.parametrize("reduction", ["token_mean", "sum", "none"])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("support", SUPPORTS)
def test_fused_value_and_gradients_against_float64(support, kind, reduction, masked):
    """Teacher hidden states with a head that requires a gradient, student head with a bias, chunks of
    4 tokens: the value and the gradients of h, w, b, teacher hidden and teacher weight."""
    t = tensors()
    mask = t["mask"] if masked else None
    options = dict(OPTIONS, **KINDS[kind])
    loss_fn = fused_class(options)(reduction, chunk_size=4, support=support, topk=K, **options)
    leaves = [t[n] for n in ("h", "w", "b", "th", "tw")]
    got = loss_fn(t["h"], t["w"], t["b"], teacher_hidden=t["th"], teacher_weight=t["tw"], mask=mask)
    student, teacher = t["h"] @ t["w"].T + t["b"], t["th"] @ t["tw"].T
    want = reduce(reference_per_token(teacher, student, support, K, options), mask, reduction)
    compare("fused float64 value", got, want, 1e-12, 1e-13)
    upstream = torch.linspace(0.5, 1.5, BT, dtype=torch.float64) if reduction == "none" else None
    got_grads = torch.autograd.grad(got, leaves, upstream)
    want_grads = torch.autograd.grad(want, leaves, upstream)
    for name, g, w in zip(("h", "w", "b", "th", "tw"), got_grads, want_grads, strict=True):
        compare("fused float64 gradient", g, w, 1e-11, 1e-13)
        assert torch.isfinite(g).all(), name


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("support", SUPPORTS)
def test_chunked_logits_value_and_both_gradients(support, kind):
    """``chunked_*_divergence`` with ``support``: gradients reach both logits (the teacher's requires one)."""
    generator = torch.Generator().manual_seed(3)
    teacher = (torch.randn(2, 7, V, generator=generator, dtype=torch.float64) * 2).requires_grad_()
    student = (torch.randn(2, 7, V, generator=generator, dtype=torch.float64) * 2).requires_grad_()
    options = dict(OPTIONS, **KINDS[kind])
    chunked = chunked_js_divergence if "beta" in options else chunked_kl_divergence
    got = chunked(teacher, student, reduction="batchmean", chunk_size=3, support=support, topk=K, **options)
    per_token = reference_per_token(teacher.reshape(-1, V), student.reshape(-1, V), support, K, options)
    want = per_token.sum() * T**2 / 2
    compare("chunked float64 value", got, want, 1e-12, 1e-13)
    for g, w in zip(
        torch.autograd.grad(got, [teacher, student]),
        torch.autograd.grad(want, [teacher, student]),
        strict=True,
    ):
        compare("chunked float64 gradient", g, w, 1e-11, 1e-13)


@pytest.mark.parametrize("support", SUPPORTS)
def test_float32_against_float64(support):
    """float32 inputs on each support: value and gradients within float32 rounding of float64."""
    t = tensors(seed=5, scale=1.5)
    for kind in KINDS:
        options = dict(OPTIONS, **KINDS[kind])
        leaves32 = [t[n].detach().float().requires_grad_() for n in ("h", "w", "th", "tw")]
        h, w, th, tw = leaves32
        got = fused_class(options)(chunk_size=5, support=support, topk=K, **options)(
            h, w, teacher_hidden=th, teacher_weight=tw, mask=t["mask"]
        )
        leaves64 = [x.detach().double().requires_grad_() for x in leaves32]
        h, w, th, tw = leaves64
        want = reduce(reference_per_token(th @ tw.T, h @ w.T, support, K, options), t["mask"], "token_mean")
        compare("fused float32 value", got, want, 2e-5, 2e-6)
        for g, ref in zip(
            torch.autograd.grad(got, leaves32), torch.autograd.grad(want, leaves64), strict=True
        ):
            compare("fused float32 gradient", g, ref, 2e-4, 2e-5)


# --- properties -----------------------------------------------------------------------------------------


def per_token_values(teacher, student, support, k, kind, **extra):
    chunked = chunked_js_divergence if "beta" in kind else chunked_kl_divergence
    return chunked(teacher, student, reduction="none", support=support, topk=k, **kind, **extra)


@pytest.mark.parametrize("kind", list(KINDS))
def test_nonnegative_zero_at_equality_and_ordered_by_refinement(kind):
    """On random rows (wide logit scales): every support gives a value ≥ 0 (float64 rounding aside: no
    clamp); 0 when teacher == student; dense ≥ union ≥ teacher, student (the union's partition refines
    each top-k partition, and coarsening never increases an f-divergence)."""
    options = KINDS[kind]
    generator = torch.Generator().manual_seed(11)
    for scale in (0.1, 1.0, 5.0, 20.0):
        teacher = torch.randn(64, V, generator=generator, dtype=torch.float64) * scale
        student = torch.randn(64, V, generator=generator, dtype=torch.float64) * scale
        values = {s: per_token_values(teacher, student, s, K, options) for s in SUPPORTS}
        dense = per_token_values(teacher, student, "teacher", None, options)
        slack = 1e-12 * (1 + dense.abs())
        for support, value in values.items():
            assert (value >= -1e-15).all(), (support, scale, value.min())
            assert (value <= dense + slack).all(), (support, scale)
            same = per_token_values(student, student, support, K, options)
            if "beta" in options:
                assert same.abs().max() < 1e-15
            else:
                assert (same == 0).all(), support
        assert (values["union"] >= values["teacher"] - slack).all()
        assert (values["union"] >= values["student"] - slack).all()


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("support", SUPPORTS)
def test_k_equal_v_equals_dense(support, kind):
    t = tensors(seed=2)
    options = dict(OPTIONS, **KINDS[kind])
    cls = fused_class(options)
    leaves = [t["h"], t["w"], t["th"], t["tw"]]

    def run(**extra):
        return cls(chunk_size=6, **options, **extra)(
            t["h"], t["w"], teacher_hidden=t["th"], teacher_weight=t["tw"], mask=t["mask"]
        )

    got, dense = run(support=support, topk=V), run()
    torch.testing.assert_close(got, dense, rtol=1e-13, atol=1e-15)
    for g, w in zip(torch.autograd.grad(got, leaves), torch.autograd.grad(dense, leaves), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-15)


def test_teacher_support_of_a_dense_teacher_equals_its_stored_top_k():
    """``support="teacher", topk=k`` on teacher logits equals the stored top-k teacher
    (``topk_teacher`` + the tail bucket ``1 − Σ``) in float64."""
    t = tensors(seed=4)
    teacher = (t["th"] @ t["tw"].T).detach()
    loss_fn = FusedLinearKLDivergence(temperature=T, direction="reverse", support="teacher", topk=K)
    live = loss_fn(t["h"], t["w"], teacher_logits=teacher)
    indices, values = topk_teacher(teacher, k=K, temperature=T, values_dtype=torch.float64)
    stored = FusedLinearKLDivergence(temperature=T, direction="reverse", backend="core")(
        t["h"], t["w"], teacher_topk_indices=indices, teacher_topk_values=values
    )
    torch.testing.assert_close(live, stored, rtol=1e-12, atol=1e-14)


def test_union_holds_both_top_k_sets_once():
    """The core's union support: each row's entries of nonzero probability are exactly the union of both
    top-k sets (no entry twice), and the tail holds the rest."""
    import array_api_compat.torch as xp

    from kldiv.core.topk import support_log_probs
    from kldiv.fused._torch_support import _exclude, _top

    generator = torch.Generator().manual_seed(7)
    teacher = torch.randn(50, V, generator=generator, dtype=torch.float64)
    student = teacher + torch.randn(50, V, generator=generator, dtype=torch.float64)  # partly overlapping
    coarse_t, coarse_s, overlap = support_log_probs(
        xp, teacher, student, "union", K, exclude=_exclude, top=_top, temperature=1.0
    )
    indices = torch.cat([_top(teacher, K), _top(student, K)], -1)  # the order the core concatenates
    member = members(teacher, student, "union", K)
    for row in range(50):
        kept = indices[row][coarse_t[row, :-1] > -torch.inf]
        assert sorted(kept.tolist()) == sorted(set(member[row].nonzero().flatten().tolist()))
        assert overlap[row] * K == 2 * K - len(kept)
    p = torch.log_softmax(teacher, -1)
    torch.testing.assert_close(coarse_t[:, -1], torch.where(member, -torch.inf, p).logsumexp(-1))
    assert ((coarse_s[:, :-1] > -torch.inf) == (coarse_t[:, :-1] > -torch.inf)).all()
    assert overlap.min() < 1 and overlap.max() > 0


# --- statistics ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("support", SUPPORTS)
def test_statistics_on_the_support(support):
    t = tensors(seed=6)
    options = dict(OPTIONS, direction="reverse", student_softcap=4.0)
    loss, stats = FusedLinearKLDivergence(
        chunk_size=4, support=support, topk=K, return_stats=True, **options
    )(t["h"], t["w"], teacher_hidden=t["th"], teacher_weight=t["tw"], mask=t["mask"])
    plain = FusedLinearKLDivergence(chunk_size=4, support=support, topk=K, **options)(
        t["h"], t["w"], teacher_hidden=t["th"], teacher_weight=t["tw"], mask=t["mask"]
    )
    torch.testing.assert_close(loss, plain, rtol=0, atol=0)
    student = (torch.tanh((t["h"] @ t["w"].T) / 4.0) * 4.0).detach()
    teacher = (t["th"] @ t["tw"].T).detach()
    member = members(teacher, student, support, K)
    p, q = torch.softmax(teacher / T, -1), torch.softmax(student / T, -1)
    own_t, own_s = members(teacher, student, "teacher", K), members(teacher, student, "student", K)
    kept = t["mask"]
    zero = torch.zeros(BT, dtype=torch.float64)
    expected = {
        "per_token": reference_per_token(teacher, student, support, K, {"direction": "reverse"}),
        "student_lse": torch.logsumexp(student / T, -1),
        "teacher_lse": torch.logsumexp(teacher / T, -1),
        "student_entropy": -(q * q.log()).sum(-1),
        "teacher_mass": (p * member).sum(-1),
        "student_mass": (q * member).sum(-1),
        "topk_overlap": (own_t & own_s).sum(-1).double() / K,
    }
    assert set(stats) == set(expected)
    for name, want in expected.items():
        assert not stats[name].requires_grad, name
        torch.testing.assert_close(
            stats[name], torch.where(kept, want, zero), rtol=1e-11, atol=1e-12, msg=name
        )


# --- settings and errors ---------------------------------------------------------------------------------


def test_settings_round_trip_and_show_in_repr():
    loss_fn = FusedLinearKLDivergence(direction="reverse", support="student", topk=64)
    assert loss_fn.get_config()["support"] == "student" and loss_fn.get_config()["topk"] == 64
    assert type(loss_fn)(**loss_fn.get_config()).get_config() == loss_fn.get_config()
    assert "support='student'" in repr(loss_fn) and "topk=64" in repr(loss_fn)
    for clone in (copy.deepcopy(loss_fn), pickle.loads(pickle.dumps(loss_fn))):
        assert clone.get_config() == loss_fn.get_config()


def test_errors():
    t = tensors()
    with pytest.raises(ValueError, match=r"`support`.*received 'middle'"):
        FusedLinearKLDivergence(support="middle", topk=3)
    with pytest.raises(ValueError, match=r"`support`.*needs `topk=k`"):
        FusedLinearKLDivergence(support="student")
    for bad in (0, -2, True, 2.0, "5"):
        with pytest.raises(ValueError, match="`topk`"):
            FusedLinearKLDivergence(support="union", topk=bad)
    indices, values = topk_teacher(t["th"] @ t["tw"].T, k=K, values_dtype=torch.float64)
    for support in ("student", "union"):
        with pytest.raises(ValueError, match="`support`: expected 'teacher' with a stored top-k teacher"):
            FusedLinearKLDivergence(support=support, topk=K)(
                t["h"], t["w"], teacher_topk_indices=indices, teacher_topk_values=values
            )
    with pytest.raises(ValueError, match="`topk`: expected None with a stored top-k teacher"):
        FusedLinearKLDivergence(topk=K)(
            t["h"], t["w"], teacher_topk_indices=indices, teacher_topk_values=values
        )
    with pytest.raises(ValueError, match=f"`topk`: expected at most the vocabulary size {V}"):
        FusedLinearKLDivergence(support="student", topk=V + 1)(
            t["h"], t["w"], teacher_logits=t["th"] @ t["tw"].T
        )
    with pytest.raises(ValueError, match="`topk`"):
        chunked_kl_divergence(t["th"] @ t["tw"].T, t["h"] @ t["w"].T, support="union", topk=V + 1)
    with pytest.raises(ValueError, match=r"`backend`.*top-k support"):
        FusedLinearKLDivergence(support="student", topk=K, backend="numba")(
            t["h"], t["w"], teacher_logits=(t["th"] @ t["tw"].T).detach()
        )


# --- JAX (kldiv.fused.jax: the same core function under jit) ------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("support", SUPPORTS)
def test_jax_support_against_float64(support, kind):
    jax, jnp = pytest.importorskip("jax"), pytest.importorskip("jax.numpy")
    from kldiv.fused.jax import fused_linear_js_divergence, fused_linear_kl_divergence

    t = tensors(seed=8)
    options = {"temperature": T, "scale_by_temperature_squared": True, **KINDS[kind]}
    fused = fused_linear_js_divergence if "beta" in options else fused_linear_kl_divergence
    names = ("h", "w", "b", "th", "tw")
    arrays = [jnp.asarray(t[n].detach().numpy(), dtype=jnp.float32) for n in names]
    mask = jnp.asarray(t["mask"].numpy())

    def loss(h, w, b, th, tw):
        return fused(
            h,
            w,
            b,
            teacher_hidden=th,
            teacher_weight=tw,
            mask=mask,
            chunk_size=4,
            support=support,
            topk=K,
            **options,
        )

    value, grads = jax.jit(jax.value_and_grad(loss, argnums=range(5)))(*arrays)
    leaves = [torch.from_numpy(np.asarray(a, dtype=np.float64)).requires_grad_() for a in arrays]
    h, w, b, th, tw = leaves
    want = reduce(reference_per_token(th @ tw.T, h @ w.T + b, support, K, options), t["mask"], "token_mean")
    np.testing.assert_allclose(float(value), want.item(), rtol=2e-5, atol=2e-6)
    for got, ref in zip(grads, torch.autograd.grad(want, leaves), strict=True):
        np.testing.assert_allclose(np.asarray(got), ref.numpy(), rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("support", ["student", "union"])
def test_jax_support_with_soft_caps(support):
    """The logit maps apply before the support is chosen and coarsened (as in the torch losses)."""
    jax, jnp = pytest.importorskip("jax"), pytest.importorskip("jax.numpy")
    from kldiv.fused.jax import fused_linear_kl_divergence

    t = tensors(seed=9)
    caps = {"student_softcap": 2.0, "teacher_softcap": 1.5, "teacher_logit_scale": 1.3}
    options = {"direction": "reverse", "temperature": T, "scale_by_temperature_squared": True}

    def loss(h, w, b, th, tw):
        return fused_linear_kl_divergence(
            h,
            w,
            b,
            teacher_hidden=th,
            teacher_weight=tw,
            chunk_size=4,
            support=support,
            topk=K,
            **options,
            **caps,
        )

    with jax.enable_x64(True):
        arrays = [jnp.asarray(t[n].detach().numpy(), dtype=jnp.float64) for n in ("h", "w", "b", "th", "tw")]
        value, grads = jax.value_and_grad(loss, argnums=range(3))(*arrays)
    h, w, b, th, tw = (t[n].detach().double().requires_grad_() for n in ("h", "w", "b", "th", "tw"))
    student = 2.0 * torch.tanh((h @ w.T + b) / 2.0)
    teacher = 1.5 * torch.tanh(1.3 * (th @ tw.T) / 1.5)
    want = reduce(reference_per_token(teacher, student, support, K, options), None, "token_mean")
    np.testing.assert_allclose(float(value), want.item(), rtol=1e-10)
    for got, ref in zip(grads, torch.autograd.grad(want, (h, w, b)), strict=True):
        np.testing.assert_allclose(np.asarray(got), ref.numpy(), rtol=1e-8, atol=1e-12)


def test_jax_support_errors():
    jnp = pytest.importorskip("jax.numpy")
    from kldiv.fused.jax import fused_linear_kl_divergence

    t = tensors()
    h, w = (jnp.asarray(t[n].detach().numpy()) for n in ("h", "w"))
    indices, values = jnp.zeros((13, K), jnp.int32), jnp.full((13, K), -3.0)
    with pytest.raises(ValueError, match="`support`: expected 'teacher' with a stored top-k teacher"):
        fused_linear_kl_divergence(
            h, w, teacher_topk_indices=indices, teacher_topk_values=values, support="student", topk=K
        )
    with pytest.raises(ValueError, match="needs `topk=k`"):
        fused_linear_kl_divergence(h, w, teacher_logits=h @ w.T, support="union")


def test_zz_report_largest_errors():
    """Prints the largest |error| of each path against float64 measured above (run with -s)."""
    for path, error in sorted(LARGEST.items()):
        print(f"largest |error| vs float64, {path}: {error:.3g}")
