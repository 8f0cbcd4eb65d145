"""The logit maps as kldiv options (``student_softcap``, ``teacher_softcap``, ``student_logit_scale``,
``teacher_logit_scale``): validation, configs, and the core on every namespace against the float64
formula on logits mapped by hand (``c·tanh(s·z / c)``, then the divergence): values, the NaN / inf
pattern and gradients, on hostile rows (-inf slots, logits that saturate the cap, NaN rows)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import kldiv
from kldiv.options import LOGIT_MAP_FIELDS, Options
from kldiv.testing import assert_close, reference

KINDS = [
    (kldiv.KLDivergence, reference.kl_divergence, {"direction": "forward"}),
    (kldiv.KLDivergence, reference.kl_divergence, {"direction": "reverse"}),
    (kldiv.KLDivergence, reference.kl_divergence, {"direction": "symmetric"}),
    (kldiv.JSDivergence, reference.js_divergence, {"beta": 0.3}),
]
MAPS = [
    {"student_softcap": 2.0},
    {"teacher_softcap": 1.5, "student_logit_scale": 0.6},
    {"student_logit_scale": 1.7, "student_softcap": 3.0, "teacher_logit_scale": 0.8, "teacher_softcap": 2.5},
]
LOGITS = {"y_true_format": "logits", "y_pred_format": "logits"}


def by_hand(z: np.ndarray, scale: float | None, cap: float | None) -> np.ndarray:
    """The models' own code in float64: ``z * logit_scale``, then ``tanh(z / cap) * cap`` (-inf kept)."""
    z = np.asarray(z, dtype=np.float64)
    if scale is not None:
        z = z * scale
    if cap is not None:
        z = np.where(z == -np.inf, -np.inf, np.tanh(z / cap) * cap)
    return z


def mapped_inputs(t, p, maps):
    return (
        by_hand(t, maps.get("teacher_logit_scale"), maps.get("teacher_softcap")),
        by_hand(p, maps.get("student_logit_scale"), maps.get("student_softcap")),
    )


def hostile(seed: int = 0, rows: int = 7, vocab: int = 13) -> tuple[np.ndarray, np.ndarray]:
    """Logits with -inf slots (common and student-only), rows of logits ~1e4 (saturating any cap)
    and a NaN row."""
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(rows, vocab)) * 3
    p = rng.normal(size=(rows, vocab)) * 3
    t[1, :4] = p[1, :4] = -np.inf
    p[2, 5] = -np.inf
    t[3] *= 4e3
    p[3] *= 4e3
    p[4, 2] = np.nan
    return t, p


def expected(divergence, kind, t, p, maps, temperature=1.0):
    mt, mp = mapped_inputs(t, p, maps)
    with np.errstate(all="ignore"):  # log_softmax(φ(z) / T): the logits φ(z) / T
        return divergence(mt / temperature, mp / temperature, **LOGITS, epsilon=0.0, **kind)


# --- options ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LOGIT_MAP_FIELDS)
@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan, "2", True])
def test_bad_values_name_the_argument(name, bad):
    with pytest.raises(ValueError, match=rf"`{name}`.*positive finite"):
        kldiv.KLDivergence(**LOGITS, **{name: bad})


@pytest.mark.parametrize("name", LOGIT_MAP_FIELDS)
@pytest.mark.parametrize("fmt", ["probs", "log_probs"])
def test_a_map_needs_logits_on_its_side(name, fmt):
    side = "y_pred_format" if name.startswith("student") else "y_true_format"
    with pytest.raises(ValueError) as info:
        kldiv.KLDivergence(**{**LOGITS, side: fmt}, **{name: 2.0})
    message = str(info.value)
    assert f"`{name}`" in message and f"{side}='logits'" in message and repr(fmt) in message
    assert "2.0" in message


def test_options_hold_the_maps():
    options = Options.create(**LOGITS, student_softcap=30, teacher_logit_scale=2)
    assert options.student_softcap == 30.0 and isinstance(options.student_softcap, float)
    assert options.student_map.softcap == 30.0 and options.student_map.scale is None
    assert options.teacher_map.scale == 2.0 and options.teacher_map.softcap is None
    assert Options.create().student_map.identity and Options.create().teacher_map.identity
    assert options.without_maps() == Options.create(**LOGITS)
    assert kldiv.KLDivergence(from_logits=True, student_softcap=5.0).options.student_map.softcap == 5.0


@pytest.mark.parametrize("maps", MAPS)
@pytest.mark.parametrize("cls", [kldiv.KLDivergence, kldiv.JSDivergence])
def test_config_round_trip(cls, maps):
    loss = cls(**LOGITS, **maps)
    config = loss.get_config()
    assert json.loads(json.dumps(config)) == config
    for name in LOGIT_MAP_FIELDS:
        assert config[name] == maps.get(name)
    restored = cls.from_config(json.loads(json.dumps(config)))
    assert restored == loss and restored.get_config() == config


def test_torch_repr_shows_only_set_maps():
    torch = pytest.importorskip("torch")
    del torch
    import kldiv.torch

    module = kldiv.torch.KLDivergence(**LOGITS, student_softcap=30.0)
    text = repr(module)
    assert "student_softcap=30.0" in text
    assert "teacher_softcap" not in text and "logit_scale" not in text
    rebuilt = kldiv.torch.KLDivergence.from_config(module.get_config())
    assert rebuilt.get_config() == module.get_config()


# --- the core on NumPy, float64 ---------------------------------------------------------------------


@pytest.mark.parametrize("maps", MAPS)
@pytest.mark.parametrize(("cls", "divergence", "kind"), KINDS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_numpy_core_equals_mapped_formula(cls, divergence, kind, maps, temperature):
    t, p = hostile()
    loss = cls(reduction="none", **LOGITS, epsilon=0, temperature=temperature, backend="core", **kind, **maps)
    with np.errstate(all="ignore"):
        got = loss(t, p)
    assert_close(got, expected(divergence, kind, t, p, maps, temperature), rtol=1e-12, atol=1e-12)


def test_a_minus_inf_slot_stays_without_probability():
    """Capped, a -inf logit would become -c and take probability: it stays -inf (0 probability), and the
    forward KL of a teacher with mass there is +inf."""
    t = np.array([[0.0, 1.0, 2.0]])
    p = np.array([[0.0, 1.0, -np.inf]])
    value = kldiv.kl_divergence(t, p, **LOGITS, epsilon=0, student_softcap=1.0, teacher_softcap=1.0)
    assert value[0] == np.inf
    value = kldiv.kl_divergence(p, p, **LOGITS, epsilon=0, student_softcap=1.0, teacher_softcap=1.0)
    assert value[0] == 0.0


# --- the core on torch: gradients --------------------------------------------------------------------


@pytest.mark.parametrize("maps", MAPS)
@pytest.mark.parametrize(("cls", "divergence", "kind"), KINDS)
def test_torch_core_gradients_equal_float64_by_hand(cls, divergence, kind, maps):
    torch = pytest.importorskip("torch")
    t, p = hostile(1)
    p[4, 2] = 0.0  # gradients: no NaN row here (test_nan_rows)
    mask = torch.tensor([True, True, True, True, True, False, True])
    student = torch.tensor(p, requires_grad=True)
    loss = cls(reduction="sum", **LOGITS, epsilon=0, backend="core", temperature=1.5, **kind, **maps)
    value = loss(torch.tensor(t), student, mask=mask)
    (grad,) = torch.autograd.grad(value, student)

    raw = torch.tensor(p, requires_grad=True)
    plain = cls(reduction="sum", **LOGITS, epsilon=0, backend="core", temperature=1.5, **kind)
    scale, cap = maps.get("student_logit_scale"), maps.get("student_softcap")
    z = raw * scale if scale is not None else raw
    z = torch.where(z == -math.inf, -math.inf, torch.tanh(z / cap) * cap) if cap is not None else z
    mapped_t = torch.tensor(mapped_inputs(t, p, maps)[0])
    want = plain(mapped_t, z, mask=mask)
    (want_grad,) = torch.autograd.grad(want, raw)
    assert_close(value, want, rtol=1e-12, atol=1e-12)
    assert_close(grad, want_grad, rtol=1e-10, atol=1e-12)
    assert bool(torch.isfinite(grad).all())
    assert float(grad[5].abs().max()) == 0.0  # the masked row


def test_nan_rows_stay_nan():
    torch = pytest.importorskip("torch")
    t, p = hostile(2)
    student = torch.tensor(p, requires_grad=True)
    loss = kldiv.KLDivergence(reduction="none", **LOGITS, epsilon=0, student_softcap=2.0, backend="core")
    values = loss(torch.tensor(t), student)
    (grad,) = torch.autograd.grad(values.nansum(), student)
    assert bool(torch.isnan(values[4])) and not bool(torch.isnan(values[[0, 1, 2, 3, 5, 6]]).any())
    assert bool(torch.isfinite(grad[[0, 1, 2, 3, 5, 6]]).all())


# --- the core on JAX ---------------------------------------------------------------------------------


@pytest.mark.parametrize("maps", MAPS[1:])
@pytest.mark.parametrize(("cls", "divergence", "kind"), KINDS[::3])
def test_jax_core_value_and_grad(cls, divergence, kind, maps):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    import kldiv.jax

    t, p = hostile(3)
    p[4, 2] = 0.0
    function = kldiv.jax.kl_divergence if "direction" in kind else kldiv.jax.js_divergence
    with jax.enable_x64(True):
        tj, pj = jnp.asarray(t), jnp.asarray(p)

        def total(s):
            return jnp.sum(function(tj, s, **LOGITS, epsilon=0, **kind, **maps))

        value, grad = jax.value_and_grad(total)(pj)
        assert_close(value, np.sum(expected(divergence, kind, t, p, maps)), rtol=1e-12, atol=1e-12)
        assert bool(jnp.isfinite(grad).all())
        # The gradient by central differences of the float64 formula on one finite row.
        row = 0

        def row_value(x):
            q = p.copy()
            q[row] = x
            return float(np.sum(expected(divergence, kind, t, q, maps)[row]))

        numeric = reference.central_difference(row_value, p[row])
        assert_close(grad[row], numeric, rtol=1e-6, atol=1e-8)
