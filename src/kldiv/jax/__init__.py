"""kldiv for JAX: pure functions over kldiv's core, usable under ``jit``, ``grad``, ``vmap``, ``pmap``
and with sharded inputs.

Every function here is a thin call of :class:`kldiv.KLDivergence` / :class:`kldiv.JSDivergence` on
``jax.numpy`` arrays: no state, no side effects, no host synchronisation. Options are Python values,
fixed when a function is traced (close over them or use ``functools.partial``); arrays (inputs,
``sample_weight``, ``mask``, ``labels``, ``num_items``) may be traced.

* :func:`kl_divergence`, :func:`js_divergence`: per-sample by default (``reduction="none"``), or
  weighted and reduced with any kldiv reduction.
* :func:`make_loss`: an optax-style loss ``loss(predictions, targets, where=None)`` (optax's argument
  order; it returns ``KL(targets ‖ predictions)`` per example, like ``optax.losses.kl_divergence``).
* :func:`make_train_step`: a jitted ``(params, opt_state, inputs, targets) -> (params, opt_state, loss)``
  for an optax ``GradientTransformation``.

Data parallel (``pmap`` / ``shard_map``): give every shard the *global* denominator ``num_items``
(e.g. ``jax.lax.psum(local_count, axis_name)``) and ``psum`` the gradients; that is the gradient of
one big batch. Under ``jit`` with sharded inputs nothing is needed: XLA inserts the collectives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kldiv import losses as _losses
from kldiv._extras import require
from kldiv.fused.jax import fused_linear_js_divergence, fused_linear_kl_divergence

jax = require("jax", "kldiv.jax")

__all__ = [
    "fused_linear_js_divergence",
    "fused_linear_kl_divergence",
    "js_divergence",
    "kl_divergence",
    "make_loss",
    "make_train_step",
]

Array = Any

_DIVERGENCES: dict[str, type[_losses._DivergenceLoss]] = {
    "kl": _losses.KLDivergence,
    "js": _losses.JSDivergence,
}


kl_divergence = _losses.functional(
    _losses.KLDivergence,
    "kl_divergence",
    """KL(y_true ‖ y_pred): per sample with the default ``reduction="none"`` and no weight (then it is
    :func:`kldiv.kl_divergence`), else weighted and reduced as :class:`kldiv.KLDivergence`.

    Example:
        >>> import jax, jax.numpy as jnp, kldiv.jax
        >>> t, p = jnp.array([[0.0, 1.0]]), jnp.array([[0.6, 0.4]])
        >>> print(jax.jit(kldiv.jax.kl_divergence)(t, p))
        [0.9162892]
        >>> print(jax.grad(lambda q: kldiv.jax.kl_divergence(t, q, reduction="sum"))(p))
        [[-1.6666667e-07 -2.5000000e+00]]
    """,
)
kl_divergence.__module__ = __name__

js_divergence = _losses.functional(
    _losses.JSDivergence,
    "js_divergence",
    """Generalized Jensen–Shannon divergence ``JS_β(y_true, y_pred)`` (options as
    :class:`kldiv.JSDivergence`); per sample by default, like :func:`kl_divergence`.""",
)
js_divergence.__module__ = __name__


def make_loss(
    divergence: str = "kl", *, reduction: str | None = "none", **options: Any
) -> Callable[..., Array]:
    """An optax-style loss ``loss(predictions, targets, where=None, sample_weight=None)``.

    The argument order is optax's (predictions first); the value is ``D(targets ‖ predictions)``:
    ``make_loss(y_pred_format="log_probs", epsilon=0)(log_predictions, targets)`` equals
    ``optax.losses.kl_divergence(log_predictions, targets)``. ``where`` is optax's boolean mask over
    the per-example loss (masked examples give 0 and are not counted by mean reductions).

    Args:
        divergence: ``"kl"`` (:class:`kldiv.KLDivergence`) or ``"js"`` (:class:`kldiv.JSDivergence`).
        reduction: ``"none"`` (per example, as optax) or any kldiv reduction.
        **options: kldiv options (``from_logits``, ``temperature``, ``epsilon``, ...).

    Raises:
        ValueError: an unknown divergence, reduction or option (at construction).
    """
    if divergence not in _DIVERGENCES:
        raise ValueError(
            f"Argument `divergence`: expected one of {tuple(_DIVERGENCES)}; received {divergence!r}."
        )
    loss_object = _DIVERGENCES[divergence](reduction=reduction, **options)

    def loss(
        predictions: Array, targets: Array, where: Array | None = None, sample_weight: Array | None = None
    ) -> Array:
        return loss_object(targets, predictions, sample_weight, mask=where)

    loss.__doc__ = f"{type(loss_object).__name__}(targets ‖ predictions), options {loss_object.get_config()}."
    return loss


def make_train_step(
    apply_fn: Callable[[Any, Array], Array],
    optimizer: Any,
    divergence: str = "kl",
    *,
    reduction: str | None = "auto",
    **options: Any,
) -> Callable[..., tuple[Any, Any, Array]]:
    """A jitted optax train step that minimises ``D(targets ‖ apply_fn(params, inputs))``.

    Args:
        apply_fn: ``apply_fn(params, inputs) -> predictions`` (e.g. a Flax ``model.apply``).
        optimizer: an optax ``GradientTransformation`` (anything with ``update(grads, state, params)``).
        divergence, reduction, options: as :func:`make_loss` (default reduction ``"auto"``, a mean).

    Returns:
        ``train_step(params, opt_state, inputs, targets, sample_weight=None)`` returning
        ``(new_params, new_opt_state, loss)``; ``opt_state`` comes from ``optimizer.init(params)``.
    """
    loss = make_loss(divergence, reduction=reduction, **options)

    def objective(params: Any, inputs: Array, targets: Array, sample_weight: Array | None) -> Array:
        return loss(apply_fn(params, inputs), targets, sample_weight=sample_weight)

    @jax.jit
    def train_step(
        params: Any, opt_state: Any, inputs: Array, targets: Array, sample_weight: Array | None = None
    ) -> tuple[Any, Any, Array]:
        value, grads = jax.value_and_grad(objective)(params, inputs, targets, sample_weight)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
        return params, opt_state, value

    return train_step
