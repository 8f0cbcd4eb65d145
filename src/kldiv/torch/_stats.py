r"""Per-sample statistics of a :mod:`kldiv.torch` loss call (``return_stats=True``).

The same names and definitions as the fused path's (:mod:`kldiv.fused._torch_stats`), for every input
format, one value per distribution: shape = the per-sample loss shape (the broadcast input shape
without ``axis``). ``y_true`` is the teacher P, ``y_pred`` the student Q, in every ``direction``.
Detached, in the compute dtype (float32 for float16 / bfloat16 inputs), exactly 0 at masked positions
(``mask`` / ``labels == ignore_index``), as the fused path's masked tokens.

Each row ``x`` of an input becomes the row of log-values ``s`` the formula works with, at the loss's
temperature ``T``: :math:`s = x / T` for ``"logits"`` and ``"log_probs"``, :math:`s = \log(x) / T` for
``"probs"``. The formula normalizes ``s`` with a log-softmax for logits and for every format at
``T ≠ 1``; it takes probabilities and log-probabilities at ``T = 1`` as they are (no renormalization).

* ``per_token``: the per-sample divergence of the loss (:func:`kldiv.kl_divergence` /
  :func:`kldiv.js_divergence` with the loss's options, ``epsilon`` included) before ``sample_weight``,
  ``T²`` and the reduction;
* ``teacher_lse``, ``student_lse``: :math:`\operatorname{lse}(s) = \log\sum_i e^{s_i}` of each side — for
  logits the log-partition function :math:`\log\sum_i e^{z_i / T}` (the fused path's), for
  probabilities at ``T ≠ 1`` :math:`\log\sum_i x_i^{1/T}`; for a row taken as it is (probabilities or
  log-probabilities at ``T = 1``) the log of its total mass :math:`\log\sum_i x_i` /
  :math:`\log\sum_i e^{x_i}`, 0 for a normalized row (a normalization check)
  (:meth:`kldiv.core.divergences.Distribution.log_normalizer`);
* ``student_entropy``: :math:`H(Q) = -\sum_i q_i \log q_i` (``0 \log 0 = 0``) of the student's
  distribution as the formula forms it: :math:`\log q = s - \operatorname{lse}(s)` where it normalizes,
  else :math:`\log q = s` (:func:`kldiv.core.divergences.entropy`).

The statistics are exact-mode quantities: Keras mode's clip (``epsilon > 0``) is a rule of the loss, not
of the statistics, as on the fused path (whose logits have no clip by default).

Where they come from (no ``[N, V]`` array outlives the call):

* core, exact mode (``epsilon=0``, the default as soon as an input is logits or log-probabilities):
  from the loss's own :class:`~kldiv.core.divergences.Distribution` objects — the log-sum-exps are the
  ``M + log S`` its log-softmax already computed (no pass over the vocabulary), the row mass of an
  unnormalized row and the entropy take one pass each (``[N, V]`` temporaries under ``no_grad``, freed
  at once, as the loss's own temporaries are);
* a kernel (Numba, Triton): ``per_token`` is the kernel's own per-sample output; the log-sum-exps and
  the entropy are derived from the inputs in a second, no-grad pass over them, chunked over the rows
  (:func:`kldiv.core.chunking.rows_per_chunk`): the :data:`TEMPORARIES` ``[c, V]`` temporaries of a
  chunk take at most the bytes of one input array (and at most
  :data:`kldiv.core.chunking.DEFAULT_MEMORY_BUDGET`), freed before the next chunk — the kernels return
  neither quantity, and the core would form several ``[N, V]`` temporaries for them;
* core, Keras mode: the loss's distributions are clipped, so the statistics take the kernel's pass.
"""

from __future__ import annotations

import math
from typing import Any

from .._extras import require
from ..core import chunking
from ..core.divergences import Distribution, entropy
from ..core.logit_maps import IDENTITY
from ..fused._torch_stats import DENSE, Stats

torch = require("torch", "kldiv.torch")

Array = Any

TEMPORARIES = 6
"""``[c, V]`` temporaries of one chunk of the statistics' pass: the scaled row, its shift, the
exponentials, the log-probabilities, the probabilities and the entropy's terms."""


class Collector:
    """The statistics of one loss call, filled by :mod:`kldiv._evaluate` and read by :meth:`result`."""

    def __init__(self) -> None:
        self.found: dict[str, Array] = {}

    def from_distributions(self, prepared: Any, p: Distribution, q: Distribution) -> None:
        """``teacher_lse``, ``student_lse``, ``student_entropy`` of the loss's own (exact-mode)
        distributions P and Q."""
        axis = prepared.axis
        with torch.no_grad():
            self._store(prepared, "teacher_lse", p.log_normalizer(axis))
            self._store(prepared, "student_lse", q.log_normalizer(axis))
            self._store(prepared, "student_entropy", entropy(prepared.xp, q, axis))

    def from_inputs(self, options: Any, prepared: Any) -> None:
        """The same three statistics from the prepared inputs, in chunks of rows (kernel paths,
        Keras mode)."""
        rank = len(prepared.loss_shape) + 1
        with torch.no_grad():
            for side, x, fmt, logit_map in (
                ("teacher", prepared.y_true, options.y_true_format, options.teacher_map),
                ("student", prepared.y_pred, options.y_pred_format, options.student_map),
            ):
                if x.ndim < rank:  # an input that broadcasts with fewer axes: leading 1s
                    x = prepared.xp.reshape(x, (1,) * (rank - x.ndim) + tuple(x.shape))
                found = _chunked(
                    prepared, x, fmt, options.temperature, with_entropy=side == "student", logit_map=logit_map
                )
                for name, value in found.items():
                    self._store(prepared, f"{side}_{name}", value)

    def per_token(self, prepared: Any, values: Array) -> None:
        """The per-sample divergence before ``sample_weight``, ``T²`` and the reduction."""
        with torch.no_grad():
            self._store(prepared, "per_token", values)

    def _store(self, prepared: Any, name: str, value: Array) -> None:
        """``value`` detached, in the compute dtype, of the per-sample loss shape, 0 where masked."""
        xp = prepared.xp
        if hasattr(value, "detach"):
            value = value.detach()
        if value.dtype != prepared.compute_dtype:
            value = xp.astype(value, prepared.compute_dtype)
        if tuple(value.shape) != tuple(prepared.loss_shape):
            value = xp.asarray(xp.broadcast_to(value, prepared.loss_shape), copy=True)
        if prepared.keep is not None:
            value = xp.where(prepared.keep, value, xp.zeros_like(value))
        self.found[name] = value

    def result(self) -> Stats:
        """The statistics by name (:class:`kldiv.fused._torch_stats.Stats`), in the fused path's order."""
        return Stats((name, self.found[name]) for name in DENSE)


def _chunked(
    prepared: Any, x: Array, fmt: str, temperature: float, with_entropy: bool, logit_map: Any = IDENTITY
) -> dict[str, Array]:
    """``{"lse": ..., "entropy": ...}`` of each distribution of ``x`` along ``prepared.axis`` (exact
    mode), over chunks of the first other axis of ``x``; ``with_entropy=False``: the log-sum-exp alone.
    ``logit_map``: the side's soft cap / logit scale, applied to each chunk of logits first."""
    xp, axis, dtype = prepared.xp, prepared.axis, prepared.compute_dtype
    pieces = [x]
    if x.ndim > 1:
        dim = 1 if axis == 0 else 0  # the chunked axis of x: axis 0 of the per-sample shape
        rows, itemsize = x.shape[dim], max(4, x.dtype.itemsize)
        size = chunking.rows_per_chunk(
            rows,
            math.prod(x.shape) // rows if rows else 0,  # elements per chunked row
            memory_budget=min(chunking.DEFAULT_MEMORY_BUDGET, math.prod(x.shape) * itemsize),
            bytes_per_element=itemsize,
            temporaries=TEMPORARIES,
        )
        before = (slice(None),) * dim
        pieces = [x[(*before, slice(start, stop))] for start, stop in chunking.chunks(rows, size)] or [x]
    found: dict[str, list[Array]] = {"lse": [], "entropy": []}
    for piece in pieces:
        piece = piece if piece.dtype == dtype else xp.astype(piece, dtype)
        if not logit_map.identity:
            piece = logit_map.apply(xp, piece)
        distribution = Distribution(xp, piece, fmt, axis=axis, epsilon=0.0, temperature=temperature)
        found["lse"].append(distribution.log_normalizer(axis))
        if with_entropy:
            found["entropy"].append(entropy(xp, distribution, axis))
    return {
        name: values[0] if len(values) == 1 else xp.concat(values, axis=0)
        for name, values in found.items()
        if values
    }
