"""``torch.autograd.Function`` around the Numba kernel: value and gradient in one forward pass.

Forward runs the kernel once, writing the per-sample values and the gradient w.r.t. ``y_pred``
pre-scaled by the expected upstream gradient (``grad_scale_hint``). Backward compares the real
upstream gradient with that guess: equal (the usual case for a mean or sum reduction) → the saved
gradient is returned as is; otherwise each row is rescaled in place. A second backward through the
same graph (``retain_graph=True``, ``gradcheck``) cannot trust that buffer any more (autograd may
have accumulated into it), so it recomputes the gradient with the kernel.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .fused import _kernel_options, _squared_temperature
from .numba_cpu import fused_rows


class FusedDivergence(torch.autograd.Function):
    """Per-sample divergence of ``y_true`` (no gradient) and ``y_pred`` (gradient from the kernel)."""

    @staticmethod
    def forward(ctx, y_true, y_pred, keep, axis, options, grad_scale_hint):
        t = torch.movedim(y_true.detach(), axis, -1).contiguous()
        p = torch.movedim(y_pred.detach(), axis, -1).contiguous()
        batch_shape, n = p.shape[:-1], p.shape[-1]
        rows = math.prod(batch_shape)
        keep_rows = None
        if keep is not None:
            keep_rows = torch.broadcast_to(keep, batch_shape).reshape(rows).numpy()
        squared_t = _squared_temperature(options)
        want_grad = bool(ctx.needs_input_grad[1])
        scale = grad_scale_hint * squared_t
        values, grad = fused_rows(
            t.reshape(rows, n).numpy(),
            p.reshape(rows, n).numpy(),
            np.full(rows, scale),
            keep_rows,
            want_grad=want_grad,
            **_kernel_options(options),
        )
        if want_grad:
            ctx.save_for_backward(t, p)
            ctx.grad = torch.from_numpy(grad)  # not saved_tensors: backward may rescale it in place
            ctx.hint = scale
            ctx.layout = (tuple(p.shape), axis, keep_rows, options)
            ctx.consumed = False
        values *= squared_t
        return torch.from_numpy(values).to(p.dtype).reshape(batch_shape)

    @staticmethod
    def backward(ctx, grad_values):
        t, p = ctx.saved_tensors
        grad = ctx.grad
        moved_shape, axis, keep_rows, options = ctx.layout
        rows = grad.shape[0]
        upstream = grad_values.reshape(rows).to(torch.float64)
        if ctx.consumed:
            n = moved_shape[-1]
            _, grad = fused_rows(
                t.reshape(rows, n).numpy(),
                p.reshape(rows, n).numpy(),
                (upstream * _squared_temperature(options)).numpy(),
                keep_rows,
                want_grad=True,
                **_kernel_options(options),
            )
            grad = torch.from_numpy(grad)
        elif not bool(torch.all(upstream == ctx.hint / _squared_temperature(options))):
            grad.mul_((upstream * (_squared_temperature(options) / ctx.hint)).to(grad.dtype)[:, None])
        ctx.consumed = True
        return None, torch.movedim(grad.reshape(moved_shape), -1, axis), None, None, None, None
