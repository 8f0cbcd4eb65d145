r"""Chunked and fused-linear divergences for JAX: ``lax.scan`` over token chunks, each chunk under
``jax.checkpoint``, so that neither the forward nor the backward pass holds more than one chunk of
``tokens × vocab`` logits. The naive program is the one of :mod:`kldiv.fused.torch`::

    per_token = kldiv.kl_divergence(teacher_logits, student_hidden @ student_weight.T + bias,
                                    y_true_format="logits", from_logits=True, **options)
    loss = reduce(per_token)         # "token_mean" (default), "sum", "batchmean"

Each chunk's divergence is kldiv's core on JAX arrays (the same formula as every other backend);
``jax.grad`` differentiates the scan, recomputing a chunk's logits in the backward pass instead of
storing them. Works under ``jit``; gradients reach the student's hidden states, weight and bias,
and the teacher's hidden states / weight when they are differentiated too. The logit maps
(``student_softcap``, ``teacher_softcap``, ``student_logit_scale``, ``teacher_logit_scale``: kldiv
options, :mod:`kldiv.core.logit_maps`) are applied to each chunk's logits by the core, before the
temperature, and differentiated by ``jax.grad``; a sparse teacher's values are taken as they are.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from kldiv._extras import require

from .. import _validate
from .. import losses as _losses
from ..arguments import (
    ChunkingArguments,
    SupportArguments,
    TeacherArguments,
    TokenArguments,
    split,
    teacher_form,
)
from ..core import chunking
from ..core.reductions import token_weights
from ..options import Options

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..arguments import FusedArguments

jax = require("jax", "kldiv.fused.jax")
jnp = require("jax.numpy", "kldiv.fused.jax")

__all__ = ["fused_linear_js_divergence", "fused_linear_kl_divergence"]

_LOGITS = {"y_true_format": "logits", "y_pred_format": "logits", "from_logits": True}
REDUCTIONS = ("auto", "token_mean", "mean", "sum_over_batch_size", "sum", "batchmean")


def _sparse_log_probs(student_logits, indices, values, topk_format, temperature):
    """Teacher and student over the top-k entries plus the tail bucket
    (:func:`kldiv.core.topk.sparse_log_probs`)."""
    from ..core import topk

    return topk.sparse_log_probs(
        jnp, student_logits, indices, values, topk_format, exclude=_exclude, temperature=temperature
    )


def _exclude(x, top):
    return x.at[jnp.arange(x.shape[0])[:, None], top].set(-jnp.inf)


def _top(x, k):
    return jax.lax.top_k(jax.lax.stop_gradient(x), k)[1]


def _support_log_probs(teacher_logits, student_logits, support, k, temperature):
    """Both dense sides coarsened to the top-k support plus the tail bucket
    (:func:`kldiv.core.topk.support_log_probs`)."""
    from ..core import topk

    teacher, student, _ = topk.support_log_probs(
        jnp, teacher_logits, student_logits, support, k, exclude=_exclude, top=_top, temperature=temperature
    )
    return teacher, student


def _fused(
    student_hidden: jax.Array,
    student_weight: jax.Array,
    student_bias: jax.Array | None,
    keywords: dict[str, Any],
    divergence: str,
) -> jax.Array:
    """The loss of :func:`fused_linear_kl_divergence` (``divergence="kl"``) or its JS form."""
    teacher, keywords = split(keywords, TeacherArguments)
    tokens, keywords = split(keywords, TokenArguments)
    walk, keywords = split(keywords, ChunkingArguments)
    chosen, options = split(keywords, SupportArguments)
    support, k = _validate.support(chosen.get("support", "teacher"), chosen.get("topk"))
    reduction = options.pop("reduction", "auto")
    options = Options.of(divergence, options, fixed=_LOGITS)
    chunk_size = walk.get("chunk_size")
    memory_budget = walk.get("memory_budget", chunking.DEFAULT_MEMORY_BUDGET)
    teacher_topk_format = walk.get("teacher_topk_format", "log_probs")
    if reduction not in REDUCTIONS:
        raise ValueError(f"Argument `reduction`: expected one of {REDUCTIONS}; received {reduction!r}.")
    teacher_form(teacher)
    teacher_weight, teacher_bias = teacher.get("teacher_weight"), teacher.get("teacher_bias")
    batch_size = student_hidden.shape[0]
    hidden = student_hidden.reshape(-1, student_hidden.shape[-1])
    rows, vocab = hidden.shape[0], student_weight.shape[0]
    _validate.support_teacher(support, k, teacher.get("teacher_topk_indices") is not None, vocab)
    accumulate = jnp.float64 if hidden.dtype == jnp.float64 else jnp.float32
    keep, coef = token_weights(
        jnp, options, reduction, tokens, rows=rows, batch_size=batch_size, dtype=accumulate
    )
    size = chunking.rows_per_chunk(
        rows, vocab, memory_budget=memory_budget, chunk_size=chunk_size, bytes_per_element=4
    )
    pad = (-rows) % size
    per_row = {"hidden": hidden, "coef": coef, "keep": keep}
    for key, name in (
        ("logits", "teacher_logits"),
        ("hidden_teacher", "teacher_hidden"),
        ("indices", "teacher_topk_indices"),
        ("values", "teacher_topk_values"),
    ):
        if teacher.get(name) is not None:
            per_row[key] = teacher[name].reshape(rows, -1)
    # Pad to whole chunks (padded rows have keep = False and coef = 0) and stack the chunks.
    per_row = {
        key: jnp.pad(value, [(0, pad)] + [(0, 0)] * (value.ndim - 1)).reshape(-1, size, *value.shape[1:])
        for key, value in per_row.items()
    }
    chunk_options = dataclasses.replace(options, scale_by_temperature_squared=False, backend="core")

    @jax.checkpoint
    def chunk_loss(params, chunk):
        weight, bias, t_weight, t_bias = params
        student = chunk["hidden"] @ weight.T + (0.0 if bias is None else bias)
        chunk_formats = chunk_options
        if "indices" in chunk:
            # The student's logit map first; a sparse teacher's values are final (stored after its map).
            student = options.student_map.apply(jnp, student)
            teacher, student = _sparse_log_probs(
                student, chunk["indices"], chunk["values"], teacher_topk_format, options.temperature
            )
            chunk_formats = dataclasses.replace(
                chunk_options.without_maps(),
                y_true_format="log_probs",
                y_pred_format="log_probs",
                temperature=1.0,
            )
        elif "logits" in chunk:
            teacher = chunk["logits"]
        else:
            teacher = chunk["hidden_teacher"] @ t_weight.T + (0.0 if t_bias is None else t_bias)
        if k is not None:  # a dense teacher on a chosen top-k support, after both logit maps
            teacher = options.teacher_map.apply(jnp, teacher)
            student = options.student_map.apply(jnp, student)
            teacher, student = _support_log_probs(teacher, student, support, k, options.temperature)
            chunk_formats = dataclasses.replace(
                chunk_options.without_maps(),
                y_true_format="log_probs",
                y_pred_format="log_probs",
                temperature=1.0,
            )
        per_token = _losses.per_sample(chunk_formats, teacher, student)
        per_token = jnp.where(chunk["keep"], per_token.astype(accumulate), 0.0)
        return jnp.sum(per_token * chunk["coef"])

    params = (student_weight, student_bias, teacher_weight, teacher_bias)

    def body(total, chunk):
        return total + chunk_loss(params, chunk), None

    total, _ = jax.lax.scan(body, jnp.zeros((), accumulate), per_row)
    return total.astype(options.dtype or hidden.dtype)  # the input dtype, or the `dtype` option


def fused_linear_kl_divergence(
    student_hidden: jax.Array,
    student_weight: jax.Array,
    student_bias: jax.Array | None = None,
    **keywords: Unpack[FusedArguments],
) -> jax.Array:
    """KL(teacher ‖ softmax(student_hidden @ student_weight.T + bias)) reduced over tokens, chunk by
    chunk (see the module docstring). The keywords (:class:`kldiv.arguments.FusedArguments`) are
    those of :class:`kldiv.fused.torch.FusedLinearKLDivergence` and its ``forward`` in one call: one
    teacher form (``teacher_logits=`` | ``teacher_hidden=, teacher_weight=, teacher_bias=`` |
    ``teacher_topk_indices=, teacher_topk_values=``), ``labels``, ``mask``, ``sample_weight``,
    ``num_items``, ``reduction`` (``"auto"``, as every kldiv loss, is the mean over unmasked tokens),
    ``chunk_size``, ``memory_budget``, ``teacher_topk_format``, ``support`` and ``topk`` (a dense teacher
    compared on a top-k support, as the torch losses: :func:`kldiv.core.topk.support_log_probs`) and
    kldiv's options, as
    :class:`kldiv.KLDivergence` (``direction``, ``epsilon`` — ``None``, the default, is exact mode for
    these logits —, ``temperature``, ``scale_by_temperature_squared``, ``ignore_index``, ``dtype``,
    ``student_softcap``, ``teacher_softcap``, ``student_logit_scale``, ``teacher_logit_scale``)."""
    return _fused(student_hidden, student_weight, student_bias, keywords, "kl")


def fused_linear_js_divergence(
    student_hidden: jax.Array,
    student_weight: jax.Array,
    student_bias: jax.Array | None = None,
    **keywords: Unpack[FusedArguments],
) -> jax.Array:
    """:func:`fused_linear_kl_divergence` for ``JS_β`` (``beta`` keyword, default 0.5)."""
    return _fused(student_hidden, student_weight, student_bias, keywords, "js")
