r"""Divergences between discrete distributions, written once against an array namespace ``xp``.

Notation: ``t`` is the first argument (``y_true``: the target or teacher distribution P) and ``p``
the second (``y_pred``: the prediction or student distribution Q), both along ``axis``.

.. math::

    \mathrm{KL}(P \,\|\, Q) &= \sum_i t_i (\log t_i - \log p_i)               && \text{forward}\\
    \mathrm{KL}(Q \,\|\, P) &= \sum_i p_i (\log p_i - \log t_i)               && \text{reverse}\\
    \mathrm{KL}(P \,\|\, Q) &+ \mathrm{KL}(Q \,\|\, P)                         && \text{symmetric}\\
    \mathrm{JS}_\beta(P, Q) &= \beta\,\mathrm{KL}(P \,\|\, M) + (1-\beta)\,\mathrm{KL}(Q \,\|\, M),
        \quad M = \beta P + (1-\beta) Q                                          && \text{Jensen–Shannon}

``JS_β`` is 0 at ``β = 0`` and ``β = 1`` (then ``M`` equals one of the two); its limits are the scaled
KL divergences: ``JS_β / β → KL(P‖Q)`` as ``β → 0`` and ``JS_β / (1 − β) → KL(Q‖P)`` as ``β → 1``.
``β = 1/2`` is the classic Jensen–Shannon divergence (at most ``log 2``). TRL's
``generalized_jsd_loss`` and Liger-Kernel's JSD use the same mixture and weights for ``0 < β < 1``
but return the *unscaled* forward / reverse KL at the endpoints; kldiv keeps the formula continuous
(use ``direction="forward"`` / ``"reverse"`` for those).

Two modes, chosen by ``epsilon``:

* **Keras mode** (``epsilon > 0``, default ``1e-7`` = Keras ``backend.epsilon()``): every probability
  is clipped to ``[epsilon, 1]`` first, exactly as ``tf.keras.losses.kl_divergence`` does
  (``sum(t * log(t / p))`` after ``clip``). Values given in log space (``"log_probs"``, or
  ``"logits"`` after a log-softmax) are clipped to ``[log(epsilon), 0]``, the same rule in log space.
  The clip is a bias: ``KL(p, p)`` is not exactly 0 where ``p`` has entries below ``epsilon``.
* **Exact mode** (``epsilon == 0``): no clip. ``0 · log 0 = 0`` (a zero-probability entry of the
  distribution in front of the log contributes nothing); ``t > 0, p = 0`` gives ``+inf``. Gradients
  are finite and correct wherever the value is finite: zero entries are masked *before* any ``log``
  (the "double where" rule), so no ``0 · inf`` appears in the backward pass.

Input formats: ``"probs"`` (probabilities), ``"log_probs"`` (natural-log probabilities) or
``"logits"`` (unnormalised, converted with a stable log-softmax along ``axis``). A probability is
never formed just to take its log again. ``temperature`` ``T`` divides the log-probabilities or
logits of both inputs, which are then renormalised: ``log_softmax(log x / T)``. A side given as
logits may first go through its model's logit map ``φ`` (:mod:`kldiv.core.logit_maps`: soft cap,
logit scale): ``log_softmax(φ(z) / T)``, the gradient through ``φ`` by the namespace's autodiff.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from . import grads
from .logit_maps import IDENTITY, LogitMap

FORMATS = ("probs", "log_probs", "logits")
DIRECTIONS = ("forward", "reverse", "symmetric")

Array = Any
Namespace = Any


def _identity(x: Array) -> Array:
    return x


def _shifted(xp: Namespace, x: Array, axis: int, all_max: Callable[[Array], Array]) -> tuple[Array, Array]:
    """``(M, x − M)`` with ``M = all_max(max x)`` along ``axis`` (kept as 1), 0 where not finite.

    An empty shard has ``max = -inf`` (no entries).
    """
    if x.shape[axis] == 0:
        top = xp.full_like(xp.sum(x, axis=axis, keepdims=True), -math.inf)
    else:
        top = xp.max(x, axis=axis, keepdims=True)
    top = all_max(top)
    top = xp.where(xp.isfinite(top), top, xp.zeros_like(top))
    return top, x - top


def log_softmax(
    xp: Namespace,
    x: Array,
    axis: int,
    *,
    all_max: Callable[[Array], Array] = _identity,
    all_sum: Callable[[Array], Array] = _identity,
) -> Array:
    r""":math:`x - M - \log S`, :math:`M = \max x`, :math:`S = \sum \exp(x - M)` along ``axis`` (stable).

    A row whose maximum is not finite (all ``-inf``) is shifted by 0 instead. ``all_max`` and
    ``all_sum`` reduce ``M`` and ``S`` (shape ``x`` with ``axis`` kept as 1) over the participants
    that each hold a shard of the axis (vocabulary parallelism, :mod:`kldiv.distributed._vocab`);
    by default there is one participant.
    """
    _, shifted, log_total = _normalized(xp, x, axis, all_max, all_sum)
    return shifted - log_total


def _normalized(
    xp: Namespace,
    x: Array,
    axis: int,
    all_max: Callable[[Array], Array] = _identity,
    all_sum: Callable[[Array], Array] = _identity,
) -> tuple[Array, Array, Array]:
    r"""The parts of :func:`log_softmax`: ``(M, x − M, log S)`` (``M`` and ``log S`` kept as 1);
    :math:`M + \log S` is the row's log-sum-exp."""
    top, shifted = _shifted(xp, x, axis, all_max)
    return top, shifted, xp.log(all_sum(xp.sum(xp.exp(shifted), axis=axis, keepdims=True)))


def logsumexp(xp: Namespace, x: Array, axis: int) -> Array:
    r""":math:`M + \log \sum \exp(x - M)` along ``axis``, kept as 1 (``-inf`` for a row of ``-inf``)."""
    top, shifted = _shifted(xp, x, axis, _identity)
    return top + xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


CLIPS: dict[str, Callable[[Array, float, float], Array]] = {}
"""Implementations of :func:`clip`'s rule for one namespace (by its ``__name__``) where a
framework's compiler needs another form of it (``jax.numpy``: :mod:`kldiv._jax_clip`)."""


def clip(xp: Namespace, x: Array, low: float, high: float) -> Array:
    """Keras' clip to ``[low, high]`` (a NaN stays NaN) with the gradient of ``torch.clamp``: 1 inside
    the closed interval, 0 outside it *and at NaN*.

    ``xp.clip`` would leave the gradient at NaN to the framework: ``torch.clamp`` passes 0, JAX's
    ``clip`` (a ``minimum`` of a ``maximum``) passes the NaN cotangent on, which the log-softmax's
    backward then spreads over the row. One rule here for every namespace (and the kernels, which
    follow ``torch.clamp``); a namespace in :data:`CLIPS` computes the same rule its own way."""
    special = CLIPS.get(getattr(xp, "__name__", ""))
    if special is not None:
        return special(x, low, high)
    inside = (x >= low) & (x <= high)
    nan = xp.full_like(x, math.nan)
    outside = xp.where(x < low, xp.full_like(x, low), xp.where(x > high, xp.full_like(x, high), nan))
    return xp.where(inside, x, outside)


def _where(xp: Namespace, mask: Array | None, value: float, x: Array) -> Array:
    """``where(mask, value, x)``; ``x`` itself when there is no mask."""
    if mask is None:
        return x
    return xp.where(mask, xp.full_like(x, value), x)


class Distribution:
    """One argument of a divergence, in the format it came in, after temperature and Keras clip.

    Exact mode keeps zeros (``log 0 = -inf``) and hands out logs and probabilities *masked* by the
    caller's zero mask, so that no ``log`` or division is ever evaluated at a masked zero. A side
    given as probabilities at ``T = 1`` is held as ``given`` and clipped on first use of :attr:`probs`
    (a namespace's own forward KL, :data:`KERAS_FORWARD_KL`, takes ``given`` and clips it itself).
    """

    __slots__ = ("_probs", "epsilon", "given", "log_probs", "normalizer", "xp")

    def __init__(
        self, xp: Namespace, x: Array, fmt: str, *, axis: int, epsilon: float, temperature: float
    ) -> None:
        self.xp, self.epsilon = xp, epsilon
        self._probs: Array | None = None
        self.log_probs: Array | None = None
        self.normalizer: tuple[Array, Array] | None = None  # (M, log S) of a row it normalized
        self.given: Array | None = None  # probabilities as given, before Keras' clip (T = 1 only)
        if fmt == "probs" and temperature == 1.0:
            self.given = x
            return
        log_x = x
        if fmt == "probs":
            log_x = xp.log(clip(xp, x, epsilon, 1.0) if epsilon > 0 else x)
        if temperature != 1.0:
            log_x = log_x / temperature
        if fmt == "logits" or temperature != 1.0:
            top, shifted, log_total = _normalized(xp, log_x, axis)  # log_softmax, keeping its parts
            self.normalizer = (top, log_total)
            log_x = shifted - log_total
        self.log_probs = clip(xp, log_x, math.log(epsilon), 0.0) if epsilon > 0 else log_x

    @property
    def probs(self) -> Array | None:
        """The probabilities after Keras' clip (``given`` itself in exact mode), clipped on first use;
        None for a side held as log-probabilities."""
        if self._probs is None and self.given is not None:
            self._probs = clip(self.xp, self.given, self.epsilon, 1.0) if self.epsilon > 0 else self.given
        return self._probs

    def log_normalizer(self, axis: int) -> Array:
        r"""The row's log-sum-exp along ``axis`` (removed): :math:`M + \log S` of the log-softmax that
        normalized it (logits, or any format at ``T ≠ 1``: :math:`\log\sum_i e^{s_i}` of the row
        ``s`` it normalized), else — a row of probabilities or log-probabilities taken as it is —
        the log of its total mass, :math:`\log\sum_i p_i` (0 for a normalized row)."""
        xp = self.xp
        if self.normalizer is not None:
            top, log_total = self.normalizer
            return xp.squeeze(top + log_total, axis=axis)
        if self.given is not None:
            return xp.log(xp.sum(self.probs, axis=axis))
        return xp.squeeze(logsumexp(xp, self.log_probs, axis), axis=axis)

    def zeros(self) -> Array | None:
        """Where the probability is exactly 0 (exact mode only; Keras mode has none)."""
        if self.epsilon > 0:
            return None
        return self.probs == 0 if self.given is not None else self.log_probs == -math.inf

    def log(self, masked: Array | None) -> Array:
        """``log`` of the probabilities, 0 where ``masked`` (computed from a safe argument)."""
        if self.given is not None:
            return self.xp.log(_where(self.xp, masked, 1.0, self.probs))
        return _where(self.xp, masked, 0.0, self.log_probs)

    def prob(self, masked: Array | None) -> Array:
        """The probabilities, 0 where ``masked``."""
        probs = self.probs if self.given is not None else self.xp.exp(self.log_probs)
        return _where(self.xp, masked, 0.0, probs)


def _total(xp: Namespace, terms: Array, axis: int | None) -> Array:
    """The divergence from its per-entry terms: their sum along ``axis``, or the terms (``axis=None``)."""
    return terms if axis is None else xp.sum(terms, axis=axis)


EXACT_FORWARD_KL: dict[str, Callable[[Array, Array, int, Callable[[Array, Array], Array]], Array]] = {}
"""Exact mode's forward KL of two probability arrays for one namespace (by its ``__name__``) where a
framework's compiler needs another form of it (``jax.numpy``: :mod:`kldiv._jax_exact`). Called as
``special(t, p, axis, reference)``; ``reference(t, p)`` is the core's own program, which the special
must equal (values, NaN/inf pattern, gradient) and may fall back to."""


KERAS_FORWARD_KL: dict[str, Callable[[Array, Array, float, int], Array | None]] = {}
"""Keras mode's forward KL of two probability arrays *as given* (before the clip) for one namespace
where a framework's compiler needs another form of it (``jax.numpy``: :mod:`kldiv._jax_keras`).
Called as ``special(t, p, epsilon, axis)``; it must equal the core's program :func:`_keras_kl`
(values to rounding, NaN/inf pattern, gradient), or return None for inputs it does not serve."""


def kl(xp: Namespace, a: Distribution, b: Distribution, axis: int | None) -> Array:
    r""":math:`\mathrm{KL}(A \,\|\, B) = \sum_i a_i (\log a_i - \log b_i)` along ``axis``
    (``axis=None``: the terms)."""
    if a.given is not None and b.given is not None:
        if a.epsilon > 0:
            special = KERAS_FORWARD_KL.get(getattr(xp, "__name__", ""))
            rows = None if special is None or axis is None else special(a.given, b.given, a.epsilon, axis)
            return _keras_kl(xp, a, b, axis) if rows is None else rows
        special = EXACT_FORWARD_KL.get(getattr(xp, "__name__", ""))
        if special is not None and axis is not None:
            return special(a.probs, b.probs, axis, _exact_probs_program(xp, axis))
    return _masked_kl(xp, a, b, axis)


def _keras_kl(xp: Namespace, a: Distribution, b: Distribution, axis: int | None) -> Array:
    """Keras mode's KL of probabilities: the Keras program itself, operation for operation, so float32
    results round alike."""
    return _total(xp, a.probs * xp.log(a.probs / b.probs), axis)


def _masked_kl(xp: Namespace, a: Distribution, b: Distribution, axis: int | None) -> Array:
    """Exact mode's KL (and Keras mode's of log-probabilities): ``0 · log 0 = 0`` by the zero mask."""
    zero = a.zeros()
    return _total(xp, grads.forward_term(a.prob(zero), a.log(zero), b.log(zero)), axis)


@functools.cache
def _exact_probs_program(xp: Namespace, axis: int) -> Callable[[Array, Array], Array]:
    """:func:`_masked_kl` of two probability arrays in exact mode, as one function of the arrays (one
    object per namespace and axis, so a compiler can take it as a static argument)."""

    def program(t: Array, p: Array) -> Array:
        a = Distribution(xp, t, "probs", axis=axis, epsilon=0.0, temperature=1.0)
        b = Distribution(xp, p, "probs", axis=axis, epsilon=0.0, temperature=1.0)
        return _masked_kl(xp, a, b, axis)

    return program


def entropy(xp: Namespace, a: Distribution, axis: int | None) -> Array:
    r""":math:`H(A) = -\sum_i a_i \log a_i` along ``axis`` (``0 \log 0 = 0``; ``axis=None``: the terms)."""
    zero = a.zeros()
    return _total(xp, -(a.prob(zero) * a.log(zero)), axis)


def js(xp: Namespace, a: Distribution, b: Distribution, beta: float, axis: int | None) -> Array:
    r""":math:`\beta\,\mathrm{KL}(A\|M) + (1-\beta)\,\mathrm{KL}(B\|M)`, :math:`M = \beta A + (1-\beta) B`.

    ``log M`` is :func:`kldiv.core.grads.js_log_mixture` (a ``logaddexp`` of the two log-probabilities,
    never a log of a sum of probabilities, with exact mode's zeros masked) and each entry is
    :func:`kldiv.core.grads.js_term`: the formulas the kernels compile.
    """
    if beta in (0.0, 1.0):
        # M equals one of the two distributions: exactly 0 (NaN inputs stay NaN), still connected
        # to both inputs' autograd graphs with a zero gradient.
        log_a, log_b = a.log(a.zeros()), b.log(b.zeros())
        zero = xp.where(xp.isnan(log_a), log_a, xp.zeros_like(log_a))
        return _total(xp, zero + xp.where(xp.isnan(log_b), log_b, xp.zeros_like(log_b)), axis)
    zero_a, zero_b = a.zeros(), b.zeros()
    log_a, log_b = a.log(zero_a), b.log(zero_b)
    formulas = grads.array_formulas(xp, log_a, log_b)
    log_m = formulas.js_log_mixture(log_a, log_b, zero_a, zero_b, math.log(beta), math.log1p(-beta))
    return _total(xp, formulas.js_term(a.prob(zero_a), b.prob(zero_b), log_a, log_b, log_m, beta), axis)


def divergence(
    xp: Namespace,
    y_true: Array,
    y_pred: Array,
    *,
    true_format: str = "probs",
    pred_format: str = "probs",
    epsilon: float = 1e-7,
    axis: int = -1,
    direction: str = "forward",
    beta: float | None = None,
    temperature: float = 1.0,
    elementwise: bool = False,
    true_map: LogitMap = IDENTITY,
    pred_map: LogitMap = IDENTITY,
) -> Array:
    """Per-sample divergence of ``y_true`` (P) and ``y_pred`` (Q) along ``axis``
    (``elementwise=True``: the per-entry terms whose sum along ``axis`` it is, in the inputs' shape).

    ``beta=None`` selects a KL divergence by ``direction`` (``"forward"`` KL(P‖Q), ``"reverse"``
    KL(Q‖P), ``"symmetric"`` their sum); a ``beta`` in ``[0, 1]`` selects ``JS_β(P, Q)``. Inputs must
    share a floating dtype and broadcast together; the result has their broadcast shape without
    ``axis``. With the defaults this is the Keras program ``sum(t * log(t / p), axis)`` on clipped
    probabilities. ``true_map`` / ``pred_map``: the logit map of a side given as ``"logits"``, applied
    to it first (:class:`kldiv.core.logit_maps.LogitMap`; the identity by default).
    """
    p, q = distributions(
        xp,
        y_true,
        y_pred,
        true_format=true_format,
        pred_format=pred_format,
        epsilon=epsilon,
        axis=axis,
        temperature=temperature,
        true_map=true_map,
        pred_map=pred_map,
    )
    return divergence_of(xp, p, q, axis=axis, direction=direction, beta=beta, elementwise=elementwise)


def distributions(
    xp: Namespace,
    y_true: Array,
    y_pred: Array,
    *,
    true_format: str,
    pred_format: str,
    epsilon: float,
    axis: int,
    temperature: float,
    true_map: LogitMap = IDENTITY,
    pred_map: LogitMap = IDENTITY,
) -> tuple[Distribution, Distribution]:
    """The two arguments of :func:`divergence` as :class:`Distribution` objects (P, Q), after the
    logit maps of the sides given as ``"logits"``."""
    for argument, logit_map, fmt in (
        ("true_map", true_map, true_format),
        ("pred_map", pred_map, pred_format),
    ):
        if not logit_map.identity and fmt != "logits":
            raise ValueError(
                f"Argument `{argument}`: expected the identity for a side in {fmt!r}; received {logit_map}."
            )
    if not true_map.identity:
        y_true = true_map.apply(xp, y_true)
    if not pred_map.identity:
        y_pred = pred_map.apply(xp, y_pred)
    if epsilon == 0 and tuple(y_true.shape) != tuple(y_pred.shape):
        y_true, y_pred = xp.broadcast_arrays(y_true, y_pred)
    p = Distribution(xp, y_true, true_format, axis=axis, epsilon=epsilon, temperature=temperature)
    q = Distribution(xp, y_pred, pred_format, axis=axis, epsilon=epsilon, temperature=temperature)
    return p, q


def divergence_of(
    xp: Namespace,
    p: Distribution,
    q: Distribution,
    *,
    axis: int,
    direction: str = "forward",
    beta: float | None = None,
    elementwise: bool = False,
) -> Array:
    """:func:`divergence` of two :class:`Distribution` objects (from :func:`distributions`)."""
    total = None if elementwise else axis
    if beta is not None:
        return js(xp, p, q, beta, total)
    if direction == "forward":
        return kl(xp, p, q, total)
    if direction == "reverse":
        return kl(xp, q, p, total)
    return kl(xp, p, q, total) + kl(xp, q, p, total)
