"""``torch.autograd.Function`` around the fused kernels: value and gradient in one forward pass.

One design for both devices: the plan's kernel (:func:`kldiv.kernels.dispatch.plan`) runs, Numba
for CPU tensors, Triton for CUDA tensors (and CPU tensors under Triton's interpreter); both have
the contract of :func:`kldiv.kernels.numba_cpu.fused_rows`.

Forward runs the kernel once, writing the per-sample values and the gradient w.r.t. ``y_pred``
pre-scaled by the expected upstream gradient (``grad_scale_hint``). Backward rescales each row by
``upstream / hint``: on the CPU only when the real upstream gradient differs from the guess (equal
is the usual case for a mean or sum reduction; the saved gradient is then returned as is); on the
Triton path always, as one multiply, since comparing would synchronise the GPU with the host. A
second backward through the same graph (``retain_graph=True``, ``gradcheck``) cannot trust that
buffer any more (autograd may have accumulated into it), so it recomputes the gradient with the
kernel.

A call with logit maps (:attr:`kldiv.Options.student_map` / ``teacher_map``: soft cap, logit scale)
runs the kernel on the mapped logits ``φ(z)`` (formed here, in float32 or wider) and finishes the
gradient with the chain rule's factor ``φ'(z)`` (:meth:`kldiv.core.logit_maps.LogitMap.derivative`;
0 on masked rows), as the fused-linear chunks do: the kernels themselves know no maps.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def _fused_rows(
    triton: bool,
    t: torch.Tensor,
    p: torch.Tensor,
    coef: float | torch.Tensor,
    keep_rows: torch.Tensor | None,
    options: Any,
    want_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(values [rows], grad [rows, n] or None)`` from the kernel that serves these tensors.

    ``coef`` scales each row's gradient: one number for every row, or a float64 tensor ``[rows]``.
    """
    t, p, factor = _mapped(t, p, keep_rows, options)
    values, grad = _kernel_rows(triton, t, p, coef, options, keep_rows, want_grad)
    if grad is not None and factor is not None:
        grad = grad.mul_(factor)  # ∂/∂z = ∂/∂φ(z) · φ'(z)
    return values, grad


def _mapped(
    t: torch.Tensor, p: torch.Tensor, keep_rows: torch.Tensor | None, options: Any
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """``(φ_t(t), φ_p(p), φ_p'(p))`` for the options' logit maps (the inputs and None without maps);
    float16 / bfloat16 inputs are mapped in float32. ``φ_p'`` is 0 on masked rows (whose raw logits
    may be NaN or inf), a number for a scale alone."""
    student, teacher = options.student_map, options.teacher_map
    if student.identity and teacher.identity:
        return t, p, None
    if p.element_size() < 4:
        t, p = t.float(), p.float()
    t = t if teacher.identity else teacher.apply(torch, t).contiguous()
    if student.identity:
        return t, p, None
    p = student.apply(torch, p).contiguous()
    factor = student.derivative(torch, p)
    if isinstance(factor, torch.Tensor) and keep_rows is not None:
        factor = factor.masked_fill_(~keep_rows.bool().unsqueeze(-1), 0.0)
    return t, p, factor


def _kernel_rows(
    triton: bool,
    t: torch.Tensor,
    p: torch.Tensor,
    coef: float | torch.Tensor,
    options: Any,
    keep_rows: torch.Tensor | None,
    want_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The kernel's ``(values, grad)`` (see :func:`_fused_rows`)."""
    rows = p.shape[0]
    if triton:
        from .triton import fused_rows_triton

        if not isinstance(coef, torch.Tensor):
            coef = torch.full((rows,), coef, dtype=torch.float64, device=p.device)
        return fused_rows_triton(t, p, coef, keep_rows, want_grad=want_grad, **options.formula_arguments())
    from .numba_cpu import fused_rows

    values, grad = fused_rows(
        t.numpy(),
        p.numpy(),
        coef.numpy() if isinstance(coef, torch.Tensor) else np.full(rows, coef),
        None if keep_rows is None else keep_rows.numpy(),
        want_grad=want_grad,
        **options.formula_arguments(),
    )
    return torch.from_numpy(values), None if grad is None else torch.from_numpy(grad)


def _rows_last(x: torch.Tensor, axis: int) -> torch.Tensor:
    """``x`` detached, with ``axis`` moved last, C-contiguous (no copy when it already is)."""
    x = x.detach()
    if axis not in (-1, x.ndim - 1):
        x = torch.movedim(x, axis, -1)
    return x.contiguous()


def fused_forward(
    ctx: Any,
    y_true: torch.Tensor,
    y_pred: torch.Tensor,
    keep: torch.Tensor | None,
    axis: int,
    options: Any,
    kernel: str,
    grad_scale_hint: float,
    reduce: Any = None,
    record: Any = None,
) -> torch.Tensor:
    """:meth:`FusedDivergence.forward`; with ``ctx=None``, the same values without a gradient or an
    autograd node (a call where nothing needs a gradient: ``Function.apply`` alone costs ~40 µs,
    as much as the kernel on a [32, 1000] call)."""
    t, p = _rows_last(y_true, axis), _rows_last(y_pred, axis)
    batch_shape, n = p.shape[:-1], p.shape[-1]
    rows = math.prod(batch_shape)
    triton = kernel == "triton"
    keep_rows = None
    if keep is not None:
        keep_rows = torch.broadcast_to(keep, batch_shape).reshape(rows).contiguous()
    squared_t = options.loss_scale
    want_grad = ctx is not None and bool(ctx.needs_input_grad[1])
    scale = grad_scale_hint * squared_t
    t_rows, p_rows = t.reshape(rows, n), p.reshape(rows, n)
    values, grad = _fused_rows(triton, t_rows, p_rows, scale, keep_rows, options, want_grad)
    if want_grad:
        ctx.save_for_backward(t, p)
        ctx.grad = grad  # not saved_tensors: backward may rescale it in place
        ctx.hint = scale
        ctx.layout = (tuple(p.shape), axis, keep_rows, options, triton, reduce is not None)
        ctx.consumed = False
    if record is not None:
        record(values.reshape(batch_shape).clone())
    if squared_t != 1.0:
        values *= squared_t
    # float16 / bfloat16 y_pred (the Triton kernel reads them as they are): float32 values,
    # kldiv's compute dtype; the reduction and the cast to the output dtype follow.
    dtype = torch.promote_types(p.dtype, torch.float32)
    values = (values if values.dtype == dtype else values.to(dtype)).reshape(batch_shape)
    return values if reduce is None else reduce(values)


class FusedDivergence(torch.autograd.Function):
    """Per-sample divergence of ``y_true`` (no gradient) and ``y_pred`` (gradient from the kernel),
    optionally followed by a linear reduction whose gradient is ``grad_scale_hint`` at every row.
    ``record`` receives a detached copy of the per-sample values before ``T²`` (``return_stats``)."""

    @staticmethod
    def forward(ctx, *arguments):
        """:func:`fused_forward` (``y_true, y_pred, keep, axis, options, kernel, grad_scale_hint,
        reduce, record``), recording what the backward pass needs in ``ctx``."""
        return fused_forward(ctx, *arguments)

    @staticmethod
    def backward(ctx, grad_output):
        t, p = ctx.saved_tensors
        grad = ctx.grad
        moved_shape, axis, keep_rows, options, triton, reduced = ctx.layout
        rows = grad.shape[0]
        squared_t = options.loss_scale
        if reduced:
            # One scalar upstream gradient g: row r received g · hint, and the stored gradient is
            # already scaled by hint, so it is scaled by g alone.
            if ctx.consumed:
                upstream = grad_output.to(torch.float64).expand(rows) * (ctx.hint / squared_t)
            elif triton or float(grad_output) != 1.0:
                grad.mul_(grad_output.to(torch.promote_types(grad.dtype, torch.float32)))
        else:
            upstream = grad_output.reshape(rows).to(torch.float64)
            if not ctx.consumed and (triton or not bool(torch.all(upstream == ctx.hint / squared_t))):
                factor = (upstream * (squared_t / ctx.hint)).to(
                    torch.promote_types(grad.dtype, torch.float32)
                )
                grad.mul_(factor[:, None])
        if ctx.consumed:
            n = moved_shape[-1]
            _, grad = _fused_rows(
                triton, t.reshape(rows, n), p.reshape(rows, n), upstream * squared_t, keep_rows, options, True
            )
        ctx.consumed = True
        if grad.dtype != p.dtype:  # float16 / bfloat16 logits mapped in float32
            grad = grad.to(p.dtype)
        grad = grad.reshape(moved_shape)
        if axis not in (-1, len(moved_shape) - 1):
            grad = torch.movedim(grad, -1, axis)
        return None, grad, None, None, None, None, None, None, None
