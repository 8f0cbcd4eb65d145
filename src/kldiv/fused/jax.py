r"""Chunked and fused-linear divergences for JAX: ``lax.scan`` over token chunks, each chunk under
``jax.checkpoint``, so that neither the forward nor the backward pass holds more than one chunk of
``tokens × vocab`` logits. The naive program is the one of :mod:`kldiv.fused.torch`::

    per_token = kldiv.kl_divergence(teacher_logits, student_hidden @ student_weight.T + bias,
                                    y_true_format="logits", from_logits=True, **options)
    loss = reduce(per_token)         # "token_mean" (default), "sum", "batchmean"

Each chunk's divergence is kldiv's core on JAX arrays (the same formula as every other backend);
``jax.grad`` differentiates the scan, recomputing a chunk's logits in the backward pass instead of
storing them. Works under ``jit``; gradients reach the student's hidden states, weight and bias,
and the teacher's hidden states / weight when they are differentiated too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kldiv._extras import require

from .. import losses as _losses
from ..core import chunking
from ..core.reductions import token_weights
from ..options import Options

jax = require("jax", "kldiv.fused.jax")
jnp = require("jax.numpy", "kldiv.fused.jax")

__all__ = ["fused_linear_js_divergence", "fused_linear_kl_divergence"]

_LOGITS = {"y_true_format": "logits", "y_pred_format": "logits", "from_logits": True}
REDUCTIONS = ("auto", "token_mean", "mean", "sum_over_batch_size", "sum", "batchmean")


def _sparse_log_probs(student_logits, indices, values, topk_format):
    """Teacher and student over the top-k entries plus the tail bucket
    (:func:`kldiv.core.topk.sparse_log_probs`)."""
    from ..core import topk

    def exclude(student, top):
        return student.at[jnp.arange(student.shape[0])[:, None], top].set(-jnp.inf)

    return topk.sparse_log_probs(jnp, student_logits, indices, values, topk_format, exclude=exclude)


def _fused(
    student_hidden: jax.Array,
    student_weight: jax.Array,
    student_bias: jax.Array | None,
    *,
    teacher_logits: jax.Array | None,
    teacher_hidden: jax.Array | None,
    teacher_weight: jax.Array | None,
    teacher_bias: jax.Array | None,
    teacher_topk_indices: jax.Array | None,
    teacher_topk_values: jax.Array | None,
    teacher_topk_format: str,
    reduction: str,
    labels: jax.Array | None,
    mask: jax.Array | None,
    sample_weight: Any,
    num_items: Any,
    chunk_size: int | None,
    memory_budget: int,
    options: Options,
) -> jax.Array:
    if reduction not in REDUCTIONS:
        raise ValueError(f"Argument `reduction`: expected one of {REDUCTIONS}; received {reduction!r}.")
    forms = [teacher_logits is not None, teacher_hidden is not None, teacher_topk_indices is not None]
    if sum(forms) != 1:
        raise ValueError(
            "Arguments `teacher_logits` / `teacher_hidden` / `teacher_topk_indices`: expected exactly one "
            f"teacher form; received {sum(forms)}."
        )
    batch_size = student_hidden.shape[0]
    hidden = student_hidden.reshape(-1, student_hidden.shape[-1])
    rows, vocab = hidden.shape[0], student_weight.shape[0]
    accumulate = jnp.float64 if hidden.dtype == jnp.float64 else jnp.float32
    keep, coef = token_weights(
        jnp,
        reduction,
        rows,
        labels=labels,
        mask=mask,
        ignore_index=options.ignore_index,
        sample_weight=sample_weight,
        num_items=num_items,
        batch_size=batch_size,
        scale=options.loss_scale,
        dtype=accumulate,
    )
    size = chunking.rows_per_chunk(
        rows, vocab, memory_budget=memory_budget, chunk_size=chunk_size, bytes_per_element=4
    )
    pad = (-rows) % size
    per_row = {"hidden": hidden, "coef": coef, "keep": keep}
    for key, value in (
        ("logits", teacher_logits),
        ("hidden_teacher", teacher_hidden),
        ("indices", teacher_topk_indices),
        ("values", teacher_topk_values),
    ):
        if value is not None:
            per_row[key] = value.reshape(rows, -1)
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
            teacher, student = _sparse_log_probs(
                student, chunk["indices"], chunk["values"], teacher_topk_format
            )
            chunk_formats = dataclasses.replace(
                chunk_options, y_true_format="log_probs", y_pred_format="log_probs", temperature=1.0
            )
        elif "logits" in chunk:
            teacher = chunk["logits"]
        else:
            teacher = chunk["hidden_teacher"] @ t_weight.T + (0.0 if t_bias is None else t_bias)
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
    *,
    teacher_logits: jax.Array | None = None,
    teacher_hidden: jax.Array | None = None,
    teacher_weight: jax.Array | None = None,
    teacher_bias: jax.Array | None = None,
    teacher_topk_indices: jax.Array | None = None,
    teacher_topk_values: jax.Array | None = None,
    teacher_topk_format: str = "log_probs",
    reduction: str = "auto",
    labels: jax.Array | None = None,
    mask: jax.Array | None = None,
    sample_weight: Any = None,
    num_items: Any = None,
    chunk_size: int | None = None,
    memory_budget: int = chunking.DEFAULT_MEMORY_BUDGET,
    **options: Any,
) -> jax.Array:
    """KL(teacher ‖ softmax(student_hidden @ student_weight.T + bias)) reduced over tokens, chunk by
    chunk (see the module docstring). ``reduction="auto"`` (as every kldiv loss) is the mean over
    unmasked tokens. ``options``: kldiv's option set, as :class:`kldiv.KLDivergence` (``direction``,
    ``epsilon`` — ``None``, the default, is exact mode for these logits —, ``temperature``,
    ``scale_by_temperature_squared``, ``ignore_index``, ``dtype``)."""
    return _fused(
        student_hidden,
        student_weight,
        student_bias,
        teacher_logits=teacher_logits,
        teacher_hidden=teacher_hidden,
        teacher_weight=teacher_weight,
        teacher_bias=teacher_bias,
        teacher_topk_indices=teacher_topk_indices,
        teacher_topk_values=teacher_topk_values,
        teacher_topk_format=teacher_topk_format,
        reduction=reduction,
        labels=labels,
        mask=mask,
        sample_weight=sample_weight,
        num_items=num_items,
        chunk_size=chunk_size,
        memory_budget=memory_budget,
        options=Options.of("kl", options, fixed=_LOGITS),
    )


def fused_linear_js_divergence(
    student_hidden: jax.Array, student_weight: jax.Array, student_bias: jax.Array | None = None, **kwargs: Any
) -> jax.Array:
    """:func:`fused_linear_kl_divergence` for ``JS_β`` (``beta`` keyword, default 0.5)."""
    names = (
        "teacher_logits",
        "teacher_hidden",
        "teacher_weight",
        "teacher_bias",
        "teacher_topk_indices",
        "teacher_topk_values",
        "labels",
        "mask",
        "sample_weight",
        "num_items",
        "chunk_size",
    )
    call = {name: kwargs.pop(name, None) for name in names}
    return _fused(
        student_hidden,
        student_weight,
        student_bias,
        **call,
        teacher_topk_format=kwargs.pop("teacher_topk_format", "log_probs"),
        reduction=kwargs.pop("reduction", "auto"),
        memory_budget=kwargs.pop("memory_budget", chunking.DEFAULT_MEMORY_BUDGET),
        options=Options.of("js", kwargs, fixed=_LOGITS),
    )
