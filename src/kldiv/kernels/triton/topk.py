r"""The student's side of a sparse top-k teacher in Triton: the row's log-sum-exp ``L`` and its tail's
``L_t``, and the chain rule back to the ``V`` logits — the contract of :mod:`kldiv.kernels.numba_topk`
(its docstring has the derivation) for torch tensors on a Triton device, one program per row.

:func:`support_lse_triton` is one online pass per row (running maxima and sums rescaled as the maxima
grow, the row's and the tail's apart, each shifted by 0 where its maximum is not finite, as the
core's log-sum-exp); :func:`support_chain_triton` writes ``(g_tail · e^{v_j − L_t} − G · e^{v_j − L})
/ T`` over every entry (no tail term where ``L_t = -inf``, NaN where ``L`` or ``G`` is not finite), each tile
read before it is written (the gradient may overwrite the logits).
Accumulation is float32 for float16 / bfloat16 / float32 logits and float64 for float64; row offsets
are int64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launcher import _ACCUMULATORS, launch_config


@triton.jit
def _finite_or_zero(x):
    return tl.where(tl.abs(x) < float("inf"), x, 0.0)


@triton.jit
def _online(top, total, s):
    """One tile of an online log-sum-exp: the new ``(top, total)`` (``total`` in units of ``e^shift``)."""
    new_top = tl.maximum(top, tl.max(s, axis=0))
    old_shift, shift = _finite_or_zero(top), _finite_or_zero(new_top)
    rescaled = tl.where(total == 0.0, 0.0, total * tl.exp(old_shift - shift))
    return new_top, rescaled + tl.sum(tl.exp(s - shift), axis=0)


@triton.jit
def _lse_kernel(
    u_ptr,
    mask_ptr,
    keep_ptr,
    lse_ptr,
    tail_ptr,
    n,
    stride_u,
    stride_mask,
    inv_t,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    r = tl.program_id(0).to(tl.int64)
    if tl.load(keep_ptr + r) == 0:
        tl.store(lse_ptr + r, 0.0)
        tl.store(tail_ptr + r, 0.0)
        return
    top = tl.full((), float("-inf"), ACC)
    tail_top = tl.full((), float("-inf"), ACC)
    total = tl.zeros((), ACC)
    tail = tl.zeros((), ACC)
    for start in range(0, n, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        inside = offsets < n
        v = tl.load(u_ptr + r * stride_u + offsets, mask=inside, other=0.0).to(ACC) * inv_t
        marked = tl.load(mask_ptr + r * stride_mask + offsets, mask=inside, other=1) != 0
        top, total = _online(top, total, tl.where(inside, v, float("-inf")))
        tail_top, tail = _online(tail_top, tail, tl.where(inside & ~marked, v, float("-inf")))
    tl.store(lse_ptr + r, _finite_or_zero(top) + tl.log(total))
    tl.store(tail_ptr + r, _finite_or_zero(tail_top) + tl.log(tail))


@triton.jit
def _chain_kernel(
    u_ptr,
    g_ptr,
    keep_ptr,
    lse_ptr,
    tail_ptr,
    out_ptr,
    n,
    buckets,
    stride_u,
    stride_g,
    stride_out,
    inv_t,
    HAS_TAIL: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
    G_BLOCK: tl.constexpr,
):
    r = tl.program_id(0).to(tl.int64)
    kept = tl.load(keep_ptr + r) != 0
    columns = tl.arange(0, G_BLOCK)
    total = tl.zeros((), ACC)
    for start in range(0, buckets, G_BLOCK):
        g = tl.load(g_ptr + r * stride_g + start + columns, mask=start + columns < buckets, other=0.0)
        total += tl.sum(g.to(ACC), axis=0)
    g_tail = tl.zeros((), ACC)
    if HAS_TAIL:
        g_tail = tl.load(g_ptr + r * stride_g + buckets - 1).to(ACC)
    log_total = tl.load(lse_ptr + r).to(ACC)
    log_tail = tl.load(tail_ptr + r).to(ACC)
    for start in range(0, n, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        inside = offsets < n
        v = tl.load(u_ptr + r * stride_u + offsets, mask=inside, other=0.0).to(ACC) * inv_t
        grad = -total * tl.exp(v - log_total)
        if HAS_TAIL:  # a tail without mass (L_t = -inf) has no term
            grad += tl.where(log_tail == float("-inf"), 0.0, g_tail * tl.exp(v - log_tail))
        finite = (tl.abs(log_total) < float("inf")) & (tl.abs(total) < float("inf"))
        grad = tl.where(finite, grad, float("nan"))  # the core's NaN row
        grad = tl.where(kept, grad * inv_t, 0.0)
        tl.store(out_ptr + r * stride_out + offsets, grad.to(out_ptr.dtype.element_ty), mask=inside)


def _unit_stride(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def support_lse_triton(
    u: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L, L_t)`` ``[rows]`` in the accumulation dtype: :func:`kldiv.kernels.numba_topk.support_lse`.
    ``mask``: ``[rows, V]`` uint8 / bool, nonzero at the top entries; ``keep``: ``[rows]`` bool / uint8."""
    u, mask = _unit_stride(u), _unit_stride(mask.view(torch.uint8) if mask.dtype == torch.bool else mask)
    keep = keep.view(torch.uint8) if keep.dtype == torch.bool else keep
    rows, n = u.shape
    dtype, accumulator = _ACCUMULATORS[u.dtype]
    lse = torch.empty(rows, dtype=dtype, device=u.device)
    lse_tail = torch.empty(rows, dtype=dtype, device=u.device)
    if rows:
        block, num_warps = launch_config(n, u.element_size())
        _lse_kernel[(rows,)](
            u,
            mask,
            keep,
            lse,
            lse_tail,
            n,
            u.stride(0),
            mask.stride(0),
            1.0 / temperature,
            ACC=accumulator,
            BLOCK=block,
            num_warps=num_warps,
        )
    return lse, lse_tail


def support_chain_triton(
    u: torch.Tensor,
    g: torch.Tensor,
    keep: torch.Tensor,
    lse: torch.Tensor,
    lse_tail: torch.Tensor,
    temperature: float,
    has_tail: bool,
    out: torch.Tensor,
) -> torch.Tensor:
    """:func:`kldiv.kernels.numba_topk.support_chain` (``out`` may be ``u``; unit stride along ``V``)."""
    u, g = _unit_stride(u), g.contiguous()
    keep = keep.view(torch.uint8) if keep.dtype == torch.bool else keep
    rows, n = u.shape
    _, accumulator = _ACCUMULATORS[u.dtype]
    if rows:
        block, num_warps = launch_config(n, u.element_size())
        _chain_kernel[(rows,)](
            u,
            g,
            keep,
            lse,
            lse_tail,
            out,
            n,
            g.shape[1],
            u.stride(0),
            g.stride(0),
            out.stride(0),
            1.0 / temperature,
            HAS_TAIL=has_tail,
            ACC=accumulator,
            BLOCK=block,
            G_BLOCK=triton.next_power_of_2(max(1, min(g.shape[1], 1024))),
            num_warps=num_warps,
        )
    return out
