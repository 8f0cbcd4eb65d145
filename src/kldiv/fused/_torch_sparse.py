r"""One chunk of a sparse top-k teacher through the kernels: value and ∂/∂student-logits, no autograd.

The reference is autograd through :func:`kldiv.core.topk.sparse_log_probs` and the core's divergence
(:func:`kldiv.fused._torch_chunks._chunk_by_autograd`); this module computes the same from three
pieces, so the ``[c, V]`` work is two passes over the student's logits and one write of the gradient:

* ``"log_probs"`` values (teacher's top-k log-probabilities, the tail bucket for the rest): the
  student's log-sum-exps ``L``, ``L_t`` over the row and over its tail
  (:func:`kldiv.kernels.numba_topk.support_lse`, Numba on CPU / :mod:`kldiv.kernels.triton.topk`
  on CUDA); the ``k + 1`` buckets of both sides (small ``[c, k + 1]`` torch ops, the core's order); the
  bucket divergence and its gradient ``g_b`` from the general kernel (both sides log-probabilities,
  ``T = 1``); the chain rule back to the logits (the kernels' ``support_chain``), whose top entries are
  then overwritten by a scatter of ``k`` entries — the derivation is in :mod:`kldiv.kernels.numba_topk`.
* ``"logits"`` values (both sides renormalised over the k entries): the general kernel on the gathered
  ``[c, k]`` student logits and the teacher's values (logits at ``T``), its gradient scattered into a
  zero row.

``mask`` (``[c, V]`` uint8, all 0 between calls) marks the top entries for the tail's sums; it is
set by a scatter of the chunk's indices and cleared by another. Indices are checked by torch's
``gather`` / ``scatter`` (an out-of-range index raises, as on the autograd path).
"""

from __future__ import annotations

import dataclasses
import math

from .._extras import require
from ..options import Options
from ._torch_precision import wide

torch = require("torch", "kldiv.fused.torch")


def _bucket_rows(
    kernel: str,
    options: Options,
    teacher: torch.Tensor,
    student: torch.Tensor,
    coef: torch.Tensor,
    keep: torch.Tensor,
    want_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The general kernel on ``[c, buckets]`` rows: per-row values and ``coef · ∂value/∂student``."""
    arguments = options.formula_arguments()
    if kernel == "numba":
        from ..kernels.numba_cpu import fused_rows

        values, grad = fused_rows(
            teacher.numpy(),
            student.numpy(),
            coef.double().numpy(),
            keep.numpy(),
            want_grad=want_grad,
            **arguments,
        )
        return torch.from_numpy(values), None if grad is None else torch.from_numpy(grad)
    from ..kernels.triton import fused_rows_triton

    return fused_rows_triton(teacher, student, coef, keep, want_grad=want_grad, **arguments)


def _support_lse(
    kernel: str, student: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor, temperature: float
):
    if kernel == "numba":
        from ..kernels.numba_topk import support_lse

        lse, tail = support_lse(student.numpy(), mask.numpy(), keep.numpy(), temperature)
        return torch.from_numpy(lse), torch.from_numpy(tail)
    from ..kernels.triton.topk import support_lse_triton

    return support_lse_triton(student, mask, keep, temperature)


def _support_chain(kernel, student, g, keep, lse, lse_tail, temperature, has_tail, out) -> None:
    if kernel == "numba":
        from ..kernels.numba_topk import support_chain

        support_chain(
            student.numpy(),
            g.numpy(),
            keep.numpy(),
            lse.numpy(),
            lse_tail.numpy(),
            temperature,
            has_tail,
            out.numpy(),
        )
        return
    from ..kernels.triton.topk import support_chain_triton

    support_chain_triton(student, g, keep, lse, lse_tail, temperature, has_tail, out)


def sparse_chunk(
    kernel: str,
    options: Options,
    topk_format: str,
    student: torch.Tensor,
    indices: torch.Tensor,
    values: torch.Tensor,
    coef: torch.Tensor,
    keep: torch.Tensor,
    mask: torch.Tensor,
    *,
    want_grad: bool,
    out: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token divergence ``[c]`` and, with ``want_grad``, ``coef · ∂/∂student`` written into ``out``
    (which may be ``student`` itself) for one chunk of a sparse teacher.

    Args:
        kernel: ``"numba"`` (CPU tensors) or ``"triton"``.
        options: the chunk's divergence options (``T²`` already in ``coef``).
        topk_format: ``"log_probs"`` or ``"logits"`` (the teacher's ``values``).
        student: ``[c, V]`` student logits after their logit map, contiguous.
        indices, values: ``[c, k]`` the teacher's top entries.
        coef, keep: ``[c]`` gradient coefficients and bool keep-mask.
        mask: a ``[c', V]`` uint8 workspace (``c' ≥ c``) of zeros; it is left zero.
    """
    rows, vocab = student.shape
    indices = indices.long()
    kept = keep.unsqueeze(-1)
    keep = keep.view(torch.uint8)  # what the kernels read (a view of the bool mask: no copy)
    accumulate = torch.float64 if student.dtype == torch.float64 else torch.float32
    temperature = options.temperature
    if topk_format == "logits":
        restricted = student.gather(1, indices).to(accumulate).contiguous()
        bucket_options = dataclasses.replace(options, y_true_format="logits", y_pred_format="logits")
        per_token, g = _bucket_rows(
            kernel, bucket_options, values.to(accumulate).contiguous(), restricted, coef, keep, want_grad
        )
        if want_grad:
            out.zero_().scatter_add_(1, indices, g.to(out.dtype))
        return per_token, out if want_grad else None
    k = indices.shape[1]
    has_tail = k != vocab
    mask = mask[:rows]
    mask.scatter_(1, indices, 1)
    try:
        lse, lse_tail = _support_lse(kernel, student, mask, keep, temperature)
    finally:
        mask.scatter_(1, indices, 0)
    scaled = student.gather(1, indices).to(accumulate) * (1.0 / temperature)
    top = torch.where(kept, scaled.to(lse.dtype) - lse.unsqueeze(-1), 0.0).to(accumulate)
    teacher = values.to(accumulate)
    student_buckets = top
    if has_tail:
        mass = torch.clamp(teacher.exp().sum(-1, keepdim=True), max=1.0)
        teacher = torch.cat([teacher, torch.log1p(-mass)], dim=-1)
        tail = (lse_tail - lse).unsqueeze(-1).to(accumulate)
        student_buckets = torch.cat([top, tail], dim=-1)
    bucket_options = dataclasses.replace(
        options, y_true_format="log_probs", y_pred_format="log_probs", temperature=1.0
    )
    per_token, g = _bucket_rows(
        kernel, bucket_options, teacher.contiguous(), student_buckets.contiguous(), coef, keep, want_grad
    )
    if not want_grad:
        return per_token, None
    if has_tail:  # a tail without mass is the constant -inf (the core's): its bucket passes nothing back
        g[:, k] = torch.where(lse_tail == -math.inf, 0.0, g[:, k])
    _support_chain(kernel, student, g, keep, lse, lse_tail, temperature, has_tail, out)
    inv_t = 1.0 / temperature
    total = g.sum(-1, keepdim=True, dtype=accumulate)
    # A row whose log-sum-exp or Σ g is not finite has a NaN gradient throughout (the core's rule,
    # kldiv.core.grads.softmax_chain_factor), its top entries too.
    finite = torch.isfinite(lse).unsqueeze(-1) & torch.isfinite(total)
    total = torch.where(finite, total, math.nan)
    out.scatter_(1, indices, (-total * top.exp() * inv_t).to(out.dtype))
    out.scatter_add_(1, indices, (g[:, :k] * inv_t).to(out.dtype))
    return per_token, out


def autograd_log_probs(
    student_logits: torch.Tensor,
    indices: torch.Tensor,
    values: torch.Tensor,
    topk_format: str,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student as distributions over the top-k entries (+ the tail bucket):
    :func:`kldiv.core.topk.sparse_log_probs` on torch tensors (the autograd path's formula; the
    kernels' :func:`sparse_chunk` must equal it)."""
    import array_api_compat.torch as xp

    from ..core import topk

    def exclude(student: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        return student.scatter(-1, top, -math.inf)

    return topk.sparse_log_probs(
        xp,
        wide(student_logits),
        indices.long(),
        wide(values),
        topk_format,
        exclude=exclude,
        temperature=temperature,
    )


__all__ = ["autograd_log_probs", "sparse_chunk"]
