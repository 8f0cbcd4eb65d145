r"""Divergences between discrete distributions, written once against an array namespace ``xp``.

Notation: ``t`` is the first argument (``y_true``, the target or teacher distribution P) and ``p`` the
second (``y_pred``, the prediction or student distribution Q), both along ``axis``.

Forward Kullback–Leibler divergence, summed over ``axis``:

.. math::  \mathrm{KL}(P \,\|\, Q) = \sum_i t_i \,(\log t_i - \log p_i)

Two modes, chosen by ``epsilon``:

* **Keras mode** (``epsilon > 0``, default ``1e-7`` = Keras ``backend.epsilon()``): every probability is
  clipped to ``[epsilon, 1]`` before use, exactly as ``tf.keras.losses.kl_divergence`` does
  (``sum(t * log(t / p))`` after ``clip``). Values given in log space (``"log_probs"``, ``"logits"``
  after a log-softmax) are clipped to ``[log(epsilon), 0]``, the same rule in log space. The clip is
  a bias: ``KL(p, p)`` is not exactly 0 where ``p`` has entries below ``epsilon``.
* **Exact mode** (``epsilon == 0``): no clip. ``0 · log 0 = 0`` (a zero target contributes nothing),
  ``t > 0, p = 0`` gives ``+inf``. The gradient is finite and correct wherever the value is finite:
  the zero-target entries are masked *before* any ``log`` or division (the "double where" rule), so
  no ``0 · inf`` appears in the backward pass.

Input formats (``y_true_format`` / ``y_pred_format``): ``"probs"`` (probabilities), ``"log_probs"``
(natural-log probabilities) or ``"logits"`` (unnormalised; converted with a stable log-softmax along
``axis``). A probability is never formed just to take its log again.
"""

from __future__ import annotations

import math
from typing import Any

FORMATS = ("probs", "log_probs", "logits")

Array = Any
Namespace = Any


def log_softmax(xp: Namespace, x: Array, axis: int) -> Array:
    r"""Stable :math:`\log \mathrm{softmax}(x) = x - \max x - \log \sum \exp(x - \max x)` along ``axis``.

    A row whose maximum is not finite (all ``-inf``) is shifted by 0 instead, so it gives ``nan``
    only where the math is undefined.
    """
    shift = xp.max(x, axis=axis, keepdims=True)
    shift = xp.where(xp.isfinite(shift), shift, xp.zeros_like(shift))
    shifted = x - shift
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def _log_of(xp: Namespace, x: Array, fmt: str, axis: int) -> Array:
    """``log`` of a distribution given in ``fmt`` (probabilities are passed through ``xp.log``)."""
    if fmt == "logits":
        return log_softmax(xp, x, axis)
    if fmt == "log_probs":
        return x
    return xp.log(x)


def _clip_log(xp: Namespace, log_x: Array, epsilon: float) -> Array:
    """Keras' ``clip(x, epsilon, 1)`` expressed in log space."""
    return xp.clip(log_x, math.log(epsilon), 0.0)


def _keras_forward_kl(
    xp: Namespace,
    t: Array,
    p: Array,
    *,
    true_format: str,
    pred_format: str,
    epsilon: float,
    axis: int,
) -> Array:
    """Keras mode: clip every probability to ``[epsilon, 1]`` (in log space for log inputs)."""
    if true_format == "probs" and pred_format == "probs":
        # The Keras program itself, operation for operation, so float32 results round alike.
        t = xp.clip(t, epsilon, 1.0)
        p = xp.clip(p, epsilon, 1.0)
        return xp.sum(t * xp.log(t / p), axis=axis)
    if true_format == "probs":
        t = xp.clip(t, epsilon, 1.0)
        log_t = xp.log(t)
    else:
        log_t = _clip_log(xp, _log_of(xp, t, true_format, axis), epsilon)
        t = xp.exp(log_t)
    if pred_format == "probs":
        log_p = xp.log(xp.clip(p, epsilon, 1.0))
    else:
        log_p = _clip_log(xp, _log_of(xp, p, pred_format, axis), epsilon)
    return xp.sum(t * (log_t - log_p), axis=axis)


def _exact_forward_kl(
    xp: Namespace, t: Array, p: Array, *, true_format: str, pred_format: str, axis: int
) -> Array:
    """Exact mode: ``0·log 0 = 0``, ``+inf`` where ``t > 0 = p``, NaN-free gradients."""
    if tuple(t.shape) != tuple(p.shape):
        t, p = xp.broadcast_arrays(t, p)
    if true_format == "probs":
        zero = t == 0
        log_t = xp.log(xp.where(zero, xp.ones_like(t), t))
    else:
        log_t = _log_of(xp, t, true_format, axis)
        zero = log_t == -math.inf
        log_t = xp.where(zero, xp.zeros_like(log_t), log_t)
        t = xp.exp(log_t)
    if pred_format == "probs":
        # Masked before the log, so that d log(p)/dp = 1/p is never evaluated at a zero target.
        log_p = xp.log(xp.where(zero, xp.ones_like(p), p))
    else:
        log_p = xp.where(zero, xp.zeros_like(p), _log_of(xp, p, pred_format, axis))
    t = xp.where(zero, xp.zeros_like(t), t)
    return xp.sum(t * (log_t - log_p), axis=axis)


def forward_kl(
    xp: Namespace,
    y_true: Array,
    y_pred: Array,
    *,
    true_format: str = "probs",
    pred_format: str = "probs",
    epsilon: float = 1e-7,
    axis: int = -1,
) -> Array:
    r"""Per-sample forward KL divergence :math:`\sum_i t_i (\log t_i - \log p_i)` along ``axis``.

    Equals the naive program ``sum(t * log(t / p), axis)`` on clipped probabilities in Keras mode
    (``epsilon > 0``) and the mathematical definition with ``0·log 0 = 0`` in exact mode
    (``epsilon == 0``). Inputs must already share a floating dtype and broadcast against each
    other; the result has their broadcast shape without ``axis``.
    """
    if epsilon > 0:
        return _keras_forward_kl(
            xp,
            y_true,
            y_pred,
            true_format=true_format,
            pred_format=pred_format,
            epsilon=epsilon,
            axis=axis,
        )
    return _exact_forward_kl(xp, y_true, y_pred, true_format=true_format, pred_format=pred_format, axis=axis)
