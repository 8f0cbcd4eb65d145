"""JAX, optax, tf_keras and Keras 3: builders of the :class:`~kldiv.bench.timing.Case` to time, as in
:mod:`kldiv.bench.kl.peers`; each result is synchronised (``block_until_ready``, ``.numpy()``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..timing import Case
from .inputs import Inputs
from .peers import EPSILON, torch_case


def _sync_jax(value: Any) -> Any:
    import jax

    return jax.block_until_ready(value)


def _jax_formula(t: Any, p: Any) -> Any:
    import jax.numpy as jnp

    return jnp.mean(jnp.sum(t * jnp.log(t / p), axis=-1))


def _jax_formula_clipped(t: Any, p: Any) -> Any:
    """The formula with Keras' clip. XLA's CPU code for ``clip`` (``min``/``max`` with NaN rules)
    does not vectorize: several times slower than the plain formula, hence both are measured."""
    import jax.numpy as jnp

    return _jax_formula(jnp.clip(t, EPSILON, 1.0), jnp.clip(p, EPSILON, 1.0))


def jax_jit(mode: str, clip: bool = False) -> Callable[[Inputs], Case]:
    """``jax.jit`` of the formula, or of its ``jax.value_and_grad`` w.r.t. ``p``."""

    def build(inputs: Inputs) -> Case:
        import jax

        t, p = inputs.jax("t"), inputs.jax("p")
        formula = _jax_formula_clipped if clip else _jax_formula
        f = jax.jit(formula if mode == "forward" else jax.value_and_grad(formula, argnums=1))
        return Case(lambda: _sync_jax(f(t, p)))

    return build


def kldiv_jax(mode: str, epsilon: float | None = None) -> Callable[[Inputs], Case]:
    """``jax.jit`` of ``kldiv.jax.kl_divergence(t, p, reduction="sum_over_batch_size")`` (or its
    ``value_and_grad`` w.r.t. ``p``); ``epsilon=0.0``: exact mode."""

    def build(inputs: Inputs) -> Case:
        import jax

        import kldiv.jax

        def loss(t: Any, p: Any) -> Any:
            return kldiv.jax.kl_divergence(t, p, reduction="sum_over_batch_size", epsilon=epsilon)

        t, p = inputs.jax("t"), inputs.jax("p")
        f = jax.jit(loss if mode == "forward" else jax.value_and_grad(loss, argnums=1))
        return Case(lambda: _sync_jax(f(t, p)))

    return build


def optax_kl(mode: str) -> Callable[[Inputs], Case]:
    """``jax.jit`` of ``optax.losses.kl_divergence(log_p, t).mean()`` (or its value and gradient)."""

    def build(inputs: Inputs) -> Case:
        import jax
        import optax

        def mean_kl(log_p: Any, t: Any) -> Any:
            return optax.losses.kl_divergence(log_p, t).mean()

        log_p, t = inputs.jax("log_p"), inputs.jax("t")
        f = jax.jit(mean_kl if mode == "forward" else jax.value_and_grad(mean_kl))
        return Case(lambda: _sync_jax(f(log_p, t)))

    return build


def tf_keras_loss(mode: str, compiled: bool) -> Callable[[Inputs], Case]:
    """``tf_keras.losses.KLDivergence()``, eager or in ``tf.function`` (``GradientTape`` for backward)."""

    def build(inputs: Inputs) -> Case:
        import tensorflow as tf
        import tf_keras

        loss = tf_keras.losses.KLDivergence()
        t, p = inputs.tf("t"), inputs.tf("p")
        step = _tf_step(loss, mode)
        step = tf.function(step) if compiled else step
        return Case(lambda: _tf_sync(step(t, p)))

    return build


def _tf_step(loss: Callable[[Any, Any], Any], mode: str) -> Callable[[Any, Any], Any]:
    import tensorflow as tf

    if mode == "forward":
        return loss

    def value_and_grad(t: Any, p: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(p)
            value = loss(t, p)
        return value, tape.gradient(value, p)

    return value_and_grad


def _tf_sync(result: Any) -> Any:
    value = result[0] if isinstance(result, tuple) else result
    value.numpy()
    return result


def keras_backend() -> str:
    """The backend of Keras 3 in this process (imports Keras)."""
    import keras

    return keras.backend.backend()


def keras3_loss(mode: str) -> Callable[[Inputs], Case]:
    """``keras.losses.KLDivergence()`` eager, on the backend loaded in this process."""

    def build(inputs: Inputs) -> Case:
        import keras

        backend = keras.backend.backend()
        loss = keras.losses.KLDivergence()
        if backend == "tensorflow":
            t, p = inputs.tf("t"), inputs.tf("p")
            step = _tf_step(loss, mode)
            return Case(lambda: _tf_sync(step(t, p)))
        if backend == "jax":
            import jax

            t, p = inputs.jax("t"), inputs.jax("p")
            if mode == "forward":
                return Case(lambda: _sync_jax(loss(t, p)))
            value_and_grad = jax.value_and_grad(lambda q: loss(t, q))
            return Case(lambda: _sync_jax(value_and_grad(p)))
        if backend == "torch":
            return torch_case(loss, inputs, mode)
        if mode == "forward":
            return Case(lambda: loss(inputs.t, inputs.p))
        raise NotImplementedError(f"no gradient on the Keras {backend!r} backend")

    return build
