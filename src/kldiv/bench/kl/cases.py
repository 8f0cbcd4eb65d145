"""Every implementation ``kldiv bench`` times, with the modules each needs, in the order of the tables."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..timing import Case
from . import floors
from .frameworks import jax_jit, keras3_loss, kldiv_jax, optax_kl, tf_keras_loss
from .inputs import Inputs
from .peers import kldiv_loss, numpy_formula, scipy_rel_entr, torch_kl_div

MODES = ("forward", "backward")
MODE_TITLES = {"forward": "forward", "backward": "forward+backward"}
PEERS = ("numpy", "scipy", "torch", "jax", "optax", "tf_keras", "keras")

# What each group needs installed, by module name (kldiv's own needs are added per implementation).
REQUIREMENTS = {
    "floor": ("numba",),
    "kldiv": (),
    "numpy": (),
    "scipy": ("scipy",),
    "torch": ("torch",),
    "jax": ("jax",),
    "optax": ("jax", "optax"),
    "tf_keras": ("tensorflow", "tf_keras"),
    "keras": ("keras",),
}


@dataclasses.dataclass(frozen=True)
class Implementation:
    """One timed program: ``key`` is unique within a ``mode``; ``group`` is "floor", "kldiv" or a peer."""

    key: str
    label: str
    group: str
    mode: str
    build: Callable[[Inputs], Case]

    @property
    def needs(self) -> tuple[str, ...]:
        """The modules it needs installed."""
        needs = REQUIREMENTS[self.group]
        if self.key.startswith("kldiv_fused"):
            needs += ("numba",)
        if self.group == "kldiv" and (self.key.endswith("torch") or self.mode == "backward"):
            needs += ("torch",)
        return needs


def implementations(keras_backend_name: str | None = None) -> list[Implementation]:
    """Every implementation, floors first, then kldiv, then the peers.

    The ratios look up ``floor_read`` / ``floor_rw`` (the floor of the mode) and ``kldiv_fused``
    (NumPy forward, torch forward+backward).
    """
    keras = f"Keras 3 KLDivergence ({keras_backend_name or 'loaded backend'}, eager"
    F, B = "forward", "backward"
    I = Implementation  # noqa: E741
    return [
        I("floor_read", "floor: read both inputs", "floor", F, floors.read),
        I("floor_rw", "floor: read both, write one array", "floor", B, floors.read_write(False)),
        I("floor_rw_new", "floor: read both, write a new array", "floor", B, floors.read_write(True)),
        I("kldiv_fused", "kldiv fused (numba), NumPy", "kldiv", F, kldiv_loss("numba", "numpy", F)),
        I("kldiv_fused_exact", "kldiv fused (numba), exact mode, NumPy", "kldiv", F, fused_exact(F)),
        I("kldiv_core", "kldiv core, NumPy", "kldiv", F, kldiv_loss("core", "numpy", F)),
        I("kldiv_fused_torch", "kldiv fused (numba), torch", "kldiv", F, kldiv_loss("numba", "torch", F)),
        I("kldiv_core_torch", "kldiv core, torch", "kldiv", F, kldiv_loss("core", "torch", F)),
        I(
            "kldiv_fused",
            "kldiv fused (numba), torch backward()",
            "kldiv",
            B,
            kldiv_loss("numba", "torch", B),
        ),
        I(
            "kldiv_fused_exact",
            "kldiv fused (numba), exact mode, torch backward()",
            "kldiv",
            B,
            fused_exact(B),
        ),
        I("kldiv_core", "kldiv core, torch backward()", "kldiv", B, kldiv_loss("core", "torch", B)),
        I("numpy_formula", "NumPy formula (clip as Keras)", "numpy", F, numpy_formula),
        I("scipy_rel_entr", "SciPy rel_entr", "scipy", F, scipy_rel_entr),
        I("torch_kl_div", "PyTorch F.kl_div(p.log(), t)", "torch", F, torch_kl_div("probs", F)),
        I("torch_kl_div_log", "PyTorch F.kl_div (log-probs given)", "torch", F, torch_kl_div("log", F)),
        I("torch_kl_div", "PyTorch autograd, F.kl_div(p.log(), t)", "torch", B, torch_kl_div("probs", B)),
        I("torch_kl_div_log", "PyTorch autograd, F.kl_div (log-probs)", "torch", B, torch_kl_div("log", B)),
        I("jax_jit", "JAX jit(formula)", "jax", F, jax_jit(F)),
        I("jax_jit_clip", "JAX jit(formula), clip as Keras", "jax", F, jax_jit(F, clip=True)),
        I("jax_jit", "JAX jit(value_and_grad(formula))", "jax", B, jax_jit(B)),
        I("jax_jit_clip", "JAX jit(value_and_grad), clip as Keras", "jax", B, jax_jit(B, clip=True)),
        I("kldiv_jax", "kldiv.jax.kl_divergence, jit", "jax", F, kldiv_jax(F)),
        I("kldiv_jax_exact", "kldiv.jax.kl_divergence, jit, exact mode", "jax", F, kldiv_jax(F, 0.0)),
        I("kldiv_jax", "kldiv.jax jit(value_and_grad)", "jax", B, kldiv_jax(B)),
        I("kldiv_jax_exact", "kldiv.jax jit(value_and_grad), exact mode", "jax", B, kldiv_jax(B, 0.0)),
        I("optax", "optax kl_divergence, jit (log-probs given)", "optax", F, optax_kl(F)),
        I("optax", "optax jit(value_and_grad) (log-probs given)", "optax", B, optax_kl(B)),
        I("tf_keras_function", "tf_keras KLDivergence, tf.function", "tf_keras", F, tf_keras_loss(F, True)),
        I("tf_keras_eager", "tf_keras KLDivergence, eager", "tf_keras", F, tf_keras_loss(F, False)),
        I("tf_keras_function", "tf_keras GradientTape, tf.function", "tf_keras", B, tf_keras_loss(B, True)),
        I("tf_keras_eager", "tf_keras GradientTape, eager", "tf_keras", B, tf_keras_loss(B, False)),
        I("keras3", keras + ")", "keras", F, keras3_loss(F)),
        I("keras3", keras + ", gradient)", "keras", B, keras3_loss(B)),
    ]


def fused_exact(mode: str) -> Callable[[Inputs], Case]:
    """kldiv's Numba kernel in exact mode (``epsilon=0``): NumPy forward, torch forward+backward."""
    return kldiv_loss("numba", "numpy" if mode == "forward" else "torch", mode, epsilon=0.0)


def find(key: str, mode: str) -> Implementation:
    """The implementation of ``key`` in ``mode``; ``ValueError`` if there is none."""
    for impl in implementations():
        if impl.key == key and impl.mode == mode:
            return impl
    raise ValueError(f"no implementation {key!r} in mode {mode!r}")
