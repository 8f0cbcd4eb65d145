r"""Float64 reference oracles for the Kullback–Leibler divergence: readable, slow, NumPy only.

Written from the definitions, independently of :mod:`kldiv.core` (no shared code, no array
namespace): every input is converted to a float64 NumPy array first and every formula is the
textbook one, so that the tests compare kldiv with a second program, never with itself.

* **Keras mode** (``epsilon > 0``): ``sum(clip(t) * log(clip(t) / clip(p)))`` over the distribution
  axis, with ``clip`` to ``[epsilon, 1]`` — the program of ``tf.keras.losses.kl_divergence``. Inputs
  given as log-probabilities or logits are turned into probabilities first (``exp``, or ``exp`` of a
  float64 log-softmax), and then clipped the same way.
* **Exact mode** (``epsilon == 0``): the terms of ``scipy.special.rel_entr(t, p)``: ``t * log(t / p)``
  for ``t > 0, p > 0``; ``0`` for ``t == 0, p >= 0``; ``+inf`` for ``t > 0, p == 0``. Inputs in log space
  use the same rule on ``t * (log t - log p)``, without a round trip through probabilities.
* Jensen–Shannon ``JS_β`` (:func:`js_divergence`): entry by entry, ``β t log(t/m) + (1−β) q log(q/m)``.
* Reductions of the per-sample loss ``L`` with a ``sample_weight`` ``w`` (tf_keras and Keras 3 spellings,
  and the distillation denominators), for weights that broadcast against ``L`` as they are.
"""

from __future__ import annotations

import math

import numpy as np

KERAS_EPSILON = 1e-7
FORMATS = ("probs", "log_probs", "logits")


def as_float64(x: object) -> np.ndarray:
    """``x`` (any array type: NumPy, torch, JAX, array-API, lists) as a float64 NumPy array."""
    from . import to_numpy

    return to_numpy(x).astype(np.float64)


def log_softmax(x: object, axis: int = -1) -> np.ndarray:
    r""":math:`x_i - \log \sum_j e^{x_j}` along ``axis`` in float64.

    Max-shifted; a row of all ``-inf`` stays ``-inf``.
    """
    x = as_float64(x)
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    shifted = x - top
    with np.errstate(divide="ignore"):
        return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def to_log_probs(x: object, fmt: str, axis: int = -1) -> np.ndarray:
    """Float64 natural-log probabilities of ``x`` given in format ``fmt`` (``log 0 = -inf``)."""
    x = as_float64(x)
    if fmt == "probs":
        with np.errstate(divide="ignore"):
            return np.log(x)
    if fmt == "log_probs":
        return x
    if fmt == "logits":
        return log_softmax(x, axis)
    raise ValueError(f"unknown format {fmt!r}")


def to_probs(x: object, fmt: str, axis: int = -1) -> np.ndarray:
    """Float64 probabilities of ``x`` given in format ``fmt``."""
    x = as_float64(x)
    return x if fmt == "probs" else np.exp(to_log_probs(x, fmt, axis))


def keras_kl(y_true: object, y_pred: object, *, epsilon: float = KERAS_EPSILON, axis: int = -1) -> np.ndarray:
    """``sum(clip(t) * log(clip(t) / clip(p)), axis)`` on float64 probabilities (tf.keras' program)."""
    t = np.clip(as_float64(y_true), epsilon, 1.0)
    p = np.clip(as_float64(y_pred), epsilon, 1.0)
    t, p = np.broadcast_arrays(t, p)
    return np.sum(t * np.log(t / p), axis=axis)


def rel_entr(t: object, p: object) -> np.ndarray:
    """Elementwise ``scipy.special.rel_entr`` in NumPy.

    ``t log(t/p)`` for ``t, p > 0``; ``0`` at ``t = 0 <= p``; ``inf`` otherwise (``p = 0 < t``, or a
    negative input); NaN for NaN inputs.
    """
    t, p = np.broadcast_arrays(as_float64(t), as_float64(p))
    out = np.full(t.shape, np.inf)
    both = (t > 0) & (p > 0)
    out[both] = t[both] * np.log(t[both] / p[both])
    out[(t == 0) & (p >= 0)] = 0.0
    out[np.isnan(t) | np.isnan(p)] = np.nan
    return out


def rel_entr_log(log_t: np.ndarray, log_p: np.ndarray) -> np.ndarray:
    """``rel_entr`` from log-probabilities ``a = log t``, ``b = log p``.

    ``e^a (a - b)``; ``0`` at ``a = -inf``; ``inf`` at ``b = -inf < a``.
    """
    log_t, log_p = np.broadcast_arrays(as_float64(log_t), as_float64(log_p))
    out = np.full(log_t.shape, np.inf)
    zero_t = log_t == -np.inf
    finite = ~zero_t & (log_p > -np.inf)
    out[finite] = np.exp(log_t[finite]) * (log_t[finite] - log_p[finite])
    out[zero_t] = 0.0
    out[np.isnan(log_t) | np.isnan(log_p)] = np.nan
    return out


def exact_kl(
    y_true: object,
    y_pred: object,
    *,
    y_true_format: str = "probs",
    y_pred_format: str = "probs",
    axis: int = -1,
) -> np.ndarray:
    """Exact KL(P‖Q) per sample along ``axis`` (``0·log 0 = 0``, ``+inf`` where ``q = 0 < p``)."""
    if y_true_format == "probs" and y_pred_format == "probs":
        return np.sum(rel_entr(y_true, y_pred), axis=axis)
    log_t = to_log_probs(y_true, y_true_format, axis)
    log_p = to_log_probs(y_pred, y_pred_format, axis)
    return np.sum(rel_entr_log(log_t, log_p), axis=axis)


def kl_divergence(
    y_true: object,
    y_pred: object,
    *,
    y_true_format: str = "probs",
    y_pred_format: str = "probs",
    from_logits: bool = False,
    epsilon: float = KERAS_EPSILON,
    axis: int = -1,
    direction: str = "forward",
) -> np.ndarray:
    """The per-sample divergence of ``kldiv.kl_divergence`` with these options, in float64.

    ``direction``: ``"forward"`` KL(y_true‖y_pred), ``"reverse"`` KL(y_pred‖y_true), ``"symmetric"``
    their sum.
    """
    if from_logits:
        y_pred_format = "logits"
    if direction == "reverse":
        return kl_divergence(
            y_pred,
            y_true,
            y_true_format=y_pred_format,
            y_pred_format=y_true_format,
            epsilon=epsilon,
            axis=axis,
        )
    if direction == "symmetric":
        options = {"y_true_format": y_true_format, "y_pred_format": y_pred_format, "epsilon": epsilon}
        forward = kl_divergence(y_true, y_pred, axis=axis, **options)
        return forward + kl_divergence(y_true, y_pred, axis=axis, direction="reverse", **options)
    if epsilon == 0:
        return exact_kl(y_true, y_pred, y_true_format=y_true_format, y_pred_format=y_pred_format, axis=axis)
    t = to_probs(y_true, y_true_format, axis)
    p = to_probs(y_pred, y_pred_format, axis)
    return keras_kl(t, p, epsilon=epsilon, axis=axis)


def _js_side(x: object, fmt: str, epsilon: float, temperature: float, axis: int) -> np.ndarray:
    """One argument of :func:`js_divergence` as float64 probabilities, the core's order of steps."""
    x = as_float64(x)
    if fmt == "probs" and temperature == 1.0:
        return np.clip(x, epsilon, 1.0) if epsilon > 0 else x
    log_x = x
    if fmt == "probs":
        with np.errstate(divide="ignore", invalid="ignore"):
            log_x = np.log(np.clip(x, epsilon, 1.0) if epsilon > 0 else x)
    if fmt == "logits" or temperature != 1.0:
        log_x = log_softmax(log_x / temperature, axis)
    probs = np.exp(log_x)
    return np.clip(probs, epsilon, 1.0) if epsilon > 0 else probs


def _x_log_x_over(x: float, m: float) -> float:
    """``x log(x / m)``, 0 where ``x = 0`` (``0 · log 0 = 0``); NaN for NaN or negative ``x``."""
    if x == 0.0:
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(x * np.log(np.float64(x) / m))


def js_divergence(
    y_true: object,
    y_pred: object,
    *,
    beta: float = 0.5,
    y_true_format: str = "probs",
    y_pred_format: str = "probs",
    epsilon: float = KERAS_EPSILON,
    temperature: float = 1.0,
    axis: int = -1,
) -> np.ndarray:
    r"""Float64 :math:`\mathrm{JS}_\beta(P, Q) = \beta\,\mathrm{KL}(P\|M) + (1-\beta)\,\mathrm{KL}(Q\|M)`.

    ``M = β P + (1−β) Q``, per sample along ``axis``, one entry at a time:
    ``β t log(t/m) + (1−β) q log(q/m)`` with ``0 · log 0 = 0`` (so 0 at ``β ∈ {0, 1}``). Each side
    is first turned into probabilities the way ``kldiv.js_divergence`` does: ``log_softmax`` of
    ``log x / T`` for logits or ``T ≠ 1``, and in Keras mode (``epsilon > 0``) clipped to
    ``[epsilon, 1]`` (before the log of probabilities, and after the log-softmax).
    """
    t = _js_side(y_true, y_true_format, epsilon, temperature, axis)
    q = _js_side(y_pred, y_pred_format, epsilon, temperature, axis)
    t, q = (np.moveaxis(x, axis, -1) for x in np.broadcast_arrays(t, q))
    out = np.empty(t.shape[:-1])
    for index in np.ndindex(out.shape):
        total = 0.0
        for t_i, q_i in zip(t[index], q[index], strict=True):
            m_i = beta * t_i + (1.0 - beta) * q_i
            total += beta * _x_log_x_over(t_i, m_i) + (1.0 - beta) * _x_log_x_over(q_i, m_i)
        out[index] = total
    return out


def reduce_weighted(
    losses: object, sample_weight: object = None, reduction: str | None = "auto"
) -> np.ndarray:
    """Weight and reduce a per-sample loss ``L`` (float64), for weights that broadcast against ``L``.

    ``none``/``None``: ``w*L``; ``sum``: ``sum(w*L)``; ``auto``/``sum_over_batch_size``/``mean``/
    ``token_mean``: ``sum(w*L) / size(w*L)`` (0 when empty); ``mean_with_sample_weight``:
    ``sum(w*L) / sum(w)`` (0 when ``sum(w) == 0``); ``batchmean``: ``sum(w*L) / L.shape[0]``.
    """
    weighted = as_float64(losses) * (1.0 if sample_weight is None else as_float64(sample_weight))
    if reduction in ("none", None):
        return weighted
    means = ("auto", "sum_over_batch_size", "mean", "token_mean", "mean_with_sample_weight")
    if reduction not in ("sum", "batchmean", *means):
        raise ValueError(f"unknown reduction {reduction!r}")
    if reduction == "sum":
        return np.sum(weighted)
    if reduction == "batchmean":  # the leading axis, as torch's KLDivLoss (NaN for an empty batch)
        return np.sum(weighted) / np.float64(weighted.shape[0] if weighted.ndim else 1)
    by_weight = reduction == "mean_with_sample_weight" and sample_weight is not None
    denominator = float(np.sum(as_float64(sample_weight))) if by_weight else weighted.size
    # The mean reductions of an empty (or zero-weight) loss are 0, not NaN.
    return np.float64(0.0) if denominator == 0 else np.sum(weighted) / np.float64(denominator)


def central_difference(fn, x: object, step: float = 1e-6) -> np.ndarray:
    """``d fn(x) / dx`` by float64 central differences, for a scalar-valued ``fn`` of a NumPy array."""
    x = as_float64(x)
    grad = np.empty_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += step
        minus[index] -= step
        grad[index] = (float(fn(plus)) - float(fn(minus))) / (2 * step)
    return grad


def keras_gradient(y_true: object, y_pred: object, sample_weight: object = None, *, count: int | None = None):
    """Keras-mode ``d loss / d y_pred`` of ``sum(w*L)/N``: ``-w * clip(t) / p / N``, 0 where ``p`` is clipped.

    ``count`` is ``N`` (the size of the weighted per-sample loss by default); ``sample_weight`` has
    the per-sample loss shape or broadcasts to it.
    """
    t = np.clip(as_float64(y_true), KERAS_EPSILON, 1.0)
    p = as_float64(y_pred)
    t, p = np.broadcast_arrays(t, p)
    weight = np.float64(1.0) if sample_weight is None else as_float64(sample_weight)
    weight = np.broadcast_to(np.asarray(weight)[..., None] if np.ndim(weight) else weight, p.shape)
    count = math.prod(p.shape[:-1]) if count is None else count
    inside = (p >= KERAS_EPSILON) & (p <= 1.0)
    return np.where(inside, -weight * t / np.where(inside, p, 1.0) / count, 0.0)
