"""``return_stats=True`` on the ``kldiv.torch`` losses: every statistic equals its materialized float64
definition (torch float64 formulas written out here, never kldiv) for each input format × direction and
JS, on the core and on the Numba kernel; the loss and its gradient are those of the call without
statistics; masked positions hold 0; the module keeps the setting through copies and configs."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch

import kldiv.torch
from kldiv.torch import _stats

B, T_, V = 3, 5, 37
BETA = 0.3
KINDS = {
    "forward": {"direction": "forward"},
    "reverse": {"direction": "reverse"},
    "symmetric": {"direction": "symmetric"},
    "js": {"beta": BETA},
}
FORMATS = ("probs", "log_probs", "logits")
BACKENDS = ("core", "numba")
NAMES = ("per_token", "student_lse", "teacher_lse", "student_entropy")


# --- the float64 definitions, materialized -------------------------------------------------------


def scaled_rows(x: torch.Tensor, fmt: str, temperature: float) -> torch.Tensor:
    """``s``: ``x / T`` (logits, log-probabilities) or ``log(x) / T`` (probabilities)."""
    return (x.log() if fmt == "probs" else x) / temperature


def normalizes(fmt: str, temperature: float) -> bool:
    return fmt == "logits" or temperature != 1.0


def log_probs(x: torch.Tensor, fmt: str, temperature: float) -> torch.Tensor:
    s = scaled_rows(x, fmt, temperature)
    return s - torch.logsumexp(s, -1, keepdim=True) if normalizes(fmt, temperature) else s


def entropy(log_q: torch.Tensor) -> torch.Tensor:
    q = log_q.exp()
    return -torch.where(q > 0, q * log_q, torch.zeros_like(q)).sum(-1)


def kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    a = log_a.exp()
    return torch.where(a > 0, a * (log_a - log_b), torch.zeros_like(a)).sum(-1)


def divergence(log_p: torch.Tensor, log_q: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "forward":
        return kl(log_p, log_q)
    if kind == "reverse":
        return kl(log_q, log_p)
    if kind == "symmetric":
        return kl(log_p, log_q) + kl(log_q, log_p)
    log_m = torch.logaddexp(log_p + math.log(BETA), log_q + math.log1p(-BETA))
    return BETA * kl(log_p, log_m) + (1 - BETA) * kl(log_q, log_m)


def keras_kl(t: torch.Tensor, p: torch.Tensor, kind: str, epsilon: float = 1e-7) -> torch.Tensor:
    """Keras mode on probabilities at ``T = 1``: both clipped to ``[epsilon, 1]`` first."""
    t, p = t.clamp(epsilon, 1.0), p.clamp(epsilon, 1.0)
    return divergence(t.log(), p.log(), kind)


def expected(y_true, y_pred, true_format, pred_format, kind, temperature, keep, keras=False):
    t, p = y_true.detach().double(), y_pred.detach().double()
    log_p, log_q = log_probs(t, true_format, temperature), log_probs(p, pred_format, temperature)
    found = {
        "per_token": keras_kl(t, p, kind) if keras else divergence(log_p, log_q, kind),
        "student_lse": torch.logsumexp(scaled_rows(p, pred_format, temperature), -1),
        "teacher_lse": torch.logsumexp(scaled_rows(t, true_format, temperature), -1),
        "student_entropy": entropy(log_q),
    }
    return {name: torch.where(keep, value, torch.zeros_like(value)) for name, value in found.items()}


# --- inputs and calls ------------------------------------------------------------------------------


def inputs(true_format: str, pred_format: str, dtype=torch.float64, seed: int = 0, shape=(B, T_, V)):
    generator = torch.Generator().manual_seed(seed)
    convert = {"probs": torch.softmax, "log_probs": torch.log_softmax, "logits": lambda z, dim: z}
    y_true = convert[true_format](2 * torch.randn(shape, generator=generator, dtype=torch.float64), -1)
    y_pred = convert[pred_format](torch.randn(shape, generator=generator, dtype=torch.float64), -1)
    labels = torch.arange(math.prod(shape[:-1])).reshape(shape[:-1]) % 7
    labels[0, 1] = labels[2, 4] = -100
    return y_true.to(dtype), y_pred.to(dtype).requires_grad_(True), labels


def loss_type(kind: str) -> type:
    return kldiv.torch.JSDivergence if kind == "js" else kldiv.torch.KLDivergence


def options(true_format, pred_format, kind, temperature, backend) -> dict:
    return {
        "y_true_format": true_format,
        "y_pred_format": pred_format,
        "temperature": temperature,
        "backend": backend,
        **KINDS[kind],
    }


def assert_stats(stats, want, rtol=1e-10, atol=1e-12):
    assert list(stats) == list(NAMES)
    for name in NAMES:
        assert not stats[name].requires_grad, name
        assert stats[name].shape == want[name].shape, name
        torch.testing.assert_close(stats[name].double(), want[name], rtol=rtol, atol=atol, msg=name)


# --- the statistics equal their definitions ------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("temperature", [1.0, 1.7])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("fmt", FORMATS)
def test_statistics_equal_their_float64_definitions(fmt, kind, temperature, backend):
    y_true, y_pred, labels = inputs(fmt, fmt)
    settings = options(fmt, fmt, kind, temperature, backend)
    keras = fmt == "probs" and temperature == 1.0  # epsilon=None: Keras' clip for two probability inputs
    loss, stats = loss_type(kind)(reduction="token_mean", return_stats=True, **settings)(
        y_true, y_pred, labels=labels
    )
    plain = loss_type(kind)(reduction="token_mean", **settings)(y_true, y_pred, labels=labels)
    torch.testing.assert_close(loss, plain, rtol=0, atol=0)
    (grad,) = torch.autograd.grad(loss, y_pred)
    (plain_grad,) = torch.autograd.grad(plain, y_pred)
    torch.testing.assert_close(grad, plain_grad, rtol=0, atol=0)
    keep = labels != -100
    assert_stats(stats, expected(y_true, y_pred, fmt, fmt, kind, temperature, keep, keras=keras))
    assert float(loss.detach()) == pytest.approx(float(stats.per_token.sum()) / int(keep.sum()), rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("true_format", "pred_format"), [("logits", "probs"), ("probs", "log_probs")])
def test_mixed_formats(true_format, pred_format, backend):
    y_true, y_pred, labels = inputs(true_format, pred_format, seed=1)
    settings = options(true_format, pred_format, "forward", 1.3, backend)
    per_sample, stats = kldiv.torch.kl_divergence(
        y_true, y_pred, labels=labels, return_stats=True, **settings
    )
    keep = labels != -100
    assert_stats(stats, expected(y_true, y_pred, true_format, pred_format, "forward", 1.3, keep))
    torch.testing.assert_close(per_sample, stats.per_token, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unnormalized_rows_report_their_mass_and_exact_mode_statistics(backend):
    """Probabilities taken as they are (T = 1): the "lse" is the log of the row's mass; a zero entry
    counts ``0 log 0 = 0`` in the entropy even in Keras mode (the statistics have no clip)."""
    y_true, y_pred, labels = inputs("probs", "probs", seed=2)
    y_true = (y_true * 0.9).detach()
    with torch.no_grad():
        y_pred[0, 0, 3] = 0.0
    _, stats = kldiv.torch.KLDivergence(return_stats=True, backend=backend)(y_true, y_pred, labels=labels)
    keep = labels != -100
    want = expected(y_true, y_pred, "probs", "probs", "forward", 1.0, keep, keras=True)
    assert_stats(stats, want)
    torch.testing.assert_close(
        stats.teacher_lse[keep], torch.full_like(stats.teacher_lse[keep], math.log(0.9))
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["forward", "js"])
def test_keras_mode_on_logits(kind, backend):
    """An explicit ``epsilon`` on logits: the loss clips, the statistics are the exact ones."""
    y_true, y_pred, labels = inputs("logits", "logits", seed=3)
    y_true = y_true * 8  # peaked rows: the clip acts
    settings = {**options("logits", "logits", kind, 1.0, backend), "epsilon": 1e-7}
    _, stats = loss_type(kind)(reduction="none", return_stats=True, **settings)(y_true, y_pred, labels=labels)
    keep = labels != -100
    per_token = loss_type(kind)(reduction="none", **{**settings, "backend": "core"})(
        y_true, y_pred, labels=labels
    )
    want = expected(y_true, y_pred, "logits", "logits", kind, 1.0, keep)
    want["per_token"] = per_token.detach()
    assert_stats(stats, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_token_is_before_weights_t_squared_and_reduction(backend):
    y_true, y_pred, labels = inputs("logits", "logits", seed=4)
    weight = torch.rand(B, T_, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    settings = {**options("logits", "logits", "reverse", 2.0, backend), "scale_by_temperature_squared": True}
    loss, stats = kldiv.torch.KLDivergence(reduction="sum", return_stats=True, **settings)(
        y_true, y_pred, weight, labels=labels
    )
    torch.testing.assert_close(loss, (weight * stats.per_token * 4.0).sum(), rtol=1e-12, atol=0)
    per_sample, same = kldiv.torch.kl_divergence(y_true, y_pred, labels=labels, return_stats=True, **settings)
    torch.testing.assert_close(per_sample.detach(), same.per_token * 4.0, rtol=1e-15, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("axis", [0, 1])
def test_distribution_axis_and_chunks(axis, backend, monkeypatch):
    """``axis=k`` equals the moved axis; the kernel's pass over the inputs in one-row chunks equals
    one chunk."""
    y_true, y_pred, labels = inputs("logits", "log_probs", seed=5)
    settings = options("logits", "log_probs", "symmetric", 1.5, backend)
    _, last = kldiv.torch.kl_divergence(y_true, y_pred, labels=labels, return_stats=True, **settings)
    moved_true, moved_pred = (torch.movedim(x.detach(), -1, axis) for x in (y_true, y_pred))
    monkeypatch.setattr(_stats, "TEMPORARIES", 1 << 40)  # one row per chunk
    _, moved = kldiv.torch.kl_divergence(
        moved_true, moved_pred.requires_grad_(True), labels=labels, return_stats=True, axis=axis, **settings
    )
    for name in NAMES:
        torch.testing.assert_close(moved[name], last[name], rtol=1e-13, atol=1e-14, msg=name)


@pytest.mark.parametrize("teacher_shape", [(1, V), (V,)])
@pytest.mark.parametrize("epsilon", [0.0, None])
def test_broadcast_teacher(epsilon, teacher_shape):
    """A ``[1, V]`` or ``[V]`` teacher against ``[N, V]`` students (core): each statistic has the
    per-sample shape."""
    generator = torch.Generator().manual_seed(6)
    y_true = torch.softmax(torch.randn(*teacher_shape, generator=generator, dtype=torch.float64), -1)
    y_pred = torch.softmax(torch.randn(4, V, generator=generator, dtype=torch.float64), -1)
    _, stats = kldiv.torch.kl_divergence(y_true, y_pred, return_stats=True, epsilon=epsilon, backend="core")
    want = expected(
        y_true.expand(4, V),
        y_pred,
        "probs",
        "probs",
        "forward",
        1.0,
        torch.ones(4, dtype=torch.bool),
        keras=True,
    )
    assert_stats(stats, want)


def test_low_precision_statistics_are_float32():
    y_true, y_pred, labels = inputs("logits", "logits", dtype=torch.bfloat16, seed=7)
    loss, stats = kldiv.torch.KLDivergence(
        reduction="token_mean", return_stats=True, y_true_format="logits", from_logits=True
    )(y_true, y_pred, labels=labels)
    assert loss.dtype == torch.bfloat16
    assert all(value.dtype == torch.float32 for value in stats.values())
    want = expected(y_true, y_pred, "logits", "logits", "forward", 1.0, labels != -100)
    assert_stats(stats, want, rtol=1e-5, atol=1e-5)


# --- the setting itself ----------------------------------------------------------------------------


def test_bad_return_stats_raises_type_error_naming_it():
    with pytest.raises(TypeError, match=r"`return_stats`.*True or False.*'yes'"):
        kldiv.torch.KLDivergence(return_stats="yes")
    with pytest.raises(TypeError, match="`return_stats`"):
        kldiv.torch.JSDivergence(return_stats=1)
    y_true, y_pred, _ = inputs("probs", "probs")
    with pytest.raises(TypeError, match="`return_stats`"):
        kldiv.torch.js_divergence(y_true, y_pred, return_stats=None)


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "config", "to"])
def test_module_keeps_return_stats(how):
    module = kldiv.torch.KLDivergence(reduction="sum", return_stats=True, epsilon=0)
    assert repr(module) == "KLDivergence(reduction='sum', epsilon=0.0, return_stats=True)"
    assert "return_stats" not in repr(kldiv.torch.KLDivergence())
    other = {
        "deepcopy": copy.deepcopy,
        "pickle": lambda m: pickle.loads(pickle.dumps(m)),
        "config": lambda m: type(m).from_config(m.get_config()),
        "to": lambda m: m.to(torch.float64),
    }[how](module)
    assert other.return_stats is True and other.get_config() == module.get_config()
    assert other.state_dict() == {}
    y_true, y_pred, _ = inputs("probs", "probs")
    value, stats = other(y_true, y_pred)
    want_value, want = module(y_true, y_pred)
    torch.testing.assert_close(value, want_value, rtol=0, atol=0)
    for name in NAMES:
        torch.testing.assert_close(stats[name], want[name], rtol=0, atol=0)
