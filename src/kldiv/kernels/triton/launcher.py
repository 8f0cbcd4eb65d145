"""Launch :func:`~kldiv.kernels.triton.kernel.fused_rows_kernel`: one program per row.

The tile size and warp count are decided per call from the row length and the dtype's size
(:func:`launch_config`, cached), never at import; nothing here reads the device's properties.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from .kernel import fused_rows_kernel

DIRECTIONS = ("forward", "reverse", "symmetric")
FORMATS = ("probs", "log_probs", "logits")
TILE_BYTES = 16384
"""Bytes of one input per tile: 4096 float32 / 8192 bfloat16 entries, 16 per thread at 8 / 16 warps."""

_ACCUMULATORS = {
    torch.float16: (torch.float32, tl.float32),
    torch.bfloat16: (torch.float32, tl.float32),
    torch.float32: (torch.float32, tl.float32),
    torch.float64: (torch.float64, tl.float64),
}


@functools.cache
def launch_config(n: int, itemsize: int) -> tuple[int, int]:
    """``(BLOCK, num_warps)`` for rows of ``n`` entries of ``itemsize`` bytes.

    ``BLOCK`` is the row rounded up to a power of two when it fits in :data:`TILE_BYTES`, else
    ``TILE_BYTES / itemsize``, and at least 32 (one warp); ``num_warps = BLOCK / 512`` in ``[1, 16]``
    keeps about 16 entries per thread (four 16-byte float32 loads).
    """
    block = max(32, min(triton.next_power_of_2(max(n, 1)), TILE_BYTES // itemsize))
    return block, max(1, min(16, block // 512))


def _check(
    y_true: torch.Tensor,
    y_pred: torch.Tensor,
    true_format: str,
    pred_format: str,
    direction: str,
    beta: float | None,
    epsilon: float,
    temperature: float,
) -> None:
    if y_pred.ndim != 2 or tuple(y_true.shape) != tuple(y_pred.shape):
        raise ValueError(
            f"Arguments `y_true`, `y_pred`: expected two [rows, n] tensors of one shape; received shapes "
            f"{tuple(y_true.shape)} and {tuple(y_pred.shape)}."
        )
    if y_pred.dtype not in _ACCUMULATORS or y_true.dtype != y_pred.dtype:
        raise ValueError(
            "Arguments `y_true`, `y_pred`: expected one dtype of float16, bfloat16, float32, float64; "
            f"received {y_true.dtype} and {y_pred.dtype}."
        )
    if true_format not in FORMATS or pred_format not in FORMATS:
        raise ValueError(f"Formats: expected one of {FORMATS}; received {true_format!r}, {pred_format!r}.")
    if beta is None and direction not in DIRECTIONS:
        raise ValueError(f"Argument `direction`: expected one of {DIRECTIONS}; received {direction!r}.")
    if beta is not None and not 0.0 < beta < 1.0:
        raise ValueError(f"Argument `beta`: expected 0 < beta < 1 (the kernel); received {beta}.")
    if not epsilon >= 0.0 or not temperature > 0.0:
        raise ValueError(
            f"Arguments `epsilon`, `temperature`: expected epsilon ≥ 0 and temperature > 0; received "
            f"{epsilon} and {temperature}."
        )


def fused_rows_triton(
    y_true: torch.Tensor,
    y_pred: torch.Tensor,
    coef: torch.Tensor,
    keep: torch.Tensor | None = None,
    *,
    true_format: str,
    pred_format: str,
    direction: str,
    beta: float | None,
    epsilon: float,
    temperature: float,
    want_grad: bool,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Per-row divergence ``[rows]`` and, if asked, ``coef[:, None] · ∂value/∂y_pred``.

    The contract of :func:`kldiv.kernels.numba_cpu.fused_rows` for torch tensors on a Triton device
    (CUDA; CPU tensors under ``TRITON_INTERPRET=1``): row ``r`` is
    ``divergence(y_true[r], y_pred[r], ...)`` of :mod:`kldiv.core.divergences` (``beta`` given:
    :math:`\mathrm{JS}_\beta`; else the KL of ``direction``), rows whose ``keep`` is 0 give 0 and a
    zero gradient. No host synchronisation: every input stays on the device.

    Args:
        y_true, y_pred: ``[rows, n]`` tensors of one dtype (float16, bfloat16, float32, float64) on one
            device, unit stride along ``n`` (other strides are copied once).
        coef: ``[rows]`` per-row gradient coefficients (any float dtype, same device).
        keep: ``[rows]`` bool / integer keep-mask, or None (every row).
        true_format, pred_format: ``"probs"``, ``"log_probs"`` or ``"logits"``.
        direction: ``"forward"``, ``"reverse"`` or ``"symmetric"`` (ignored when ``beta`` is given).
        beta: ``0 < beta < 1`` for :math:`\mathrm{JS}_\beta`, or None.
        epsilon: Keras clip (``> 0``) or exact mode (``0``).
        temperature: ``T > 0``; both sides become ``log_softmax(log x / T)``.
        want_grad: compute the gradient (else only the values).
        out: where to write the gradient (``y_pred``'s shape and dtype, unit stride along ``n``),
            or None for a new tensor. It may be ``y_pred`` itself: each tile of a row is read before
            the same tile is written, so the gradient can overwrite the logits (Liger's in-place
            trick: no second ``[rows, n]`` buffer).

    Returns:
        ``(values, grad)``: values in float32 (float64 for float64 inputs), the gradient in
        ``y_pred``'s dtype and shape (``out`` when given, else contiguous), or None without
        ``want_grad``.
    """
    _check(y_true, y_pred, true_format, pred_format, direction, beta, epsilon, temperature)
    y_true = y_true if y_true.stride(-1) == 1 else y_true.contiguous()
    y_pred = y_pred if y_pred.stride(-1) == 1 else y_pred.contiguous()
    rows, n = y_pred.shape
    values_dtype, accumulator = _ACCUMULATORS[y_pred.dtype]
    values = torch.empty(rows, dtype=values_dtype, device=y_pred.device)
    grad = None
    if want_grad and out is not None:
        if tuple(out.shape) != (rows, n) or out.dtype != y_pred.dtype or (n > 1 and out.stride(-1) != 1):
            raise ValueError(
                f"Argument `out`: expected a [{rows}, {n}] {y_pred.dtype} tensor of unit stride along the "
                f"last axis; received {tuple(out.shape)} {out.dtype} with strides {out.stride()}."
            )
        grad = out
    elif want_grad:
        grad = torch.empty((rows, n), dtype=y_pred.dtype, device=y_pred.device)
    if rows == 0:
        return values, grad
    if n == 0:
        return values.zero_(), grad
    if keep is not None and keep.dtype == torch.bool:
        keep = keep.view(torch.uint8)
    block, num_warps = launch_config(n, y_pred.element_size())
    inv_t = 1.0 / temperature
    true_lse = true_format == "logits" or inv_t != 1.0
    pred_lse = pred_format == "logits" or inv_t != 1.0
    weight = 0.5 if beta is None else float(beta)  # JS_β's β (unused by the KL directions)
    fused_rows_kernel[(rows,)](
        y_true,
        y_pred,
        coef,
        values if keep is None else keep,
        values,
        values if grad is None else grad,
        n,
        y_true.stride(0),
        y_pred.stride(0),
        n if grad is None else grad.stride(0),
        float(epsilon),
        math.log(epsilon) if epsilon > 0 else 0.0,
        inv_t,
        weight,
        math.log(weight),
        math.log1p(-weight),
        TRUE_FORMAT=true_format,
        PRED_FORMAT=pred_format,
        KIND="js" if beta is not None else direction,
        CLIP=epsilon > 0,
        TRUE_LSE=true_lse,
        PRED_LSE=pred_lse,
        SUM_G_IS_MINUS_ONE=beta is None and direction == "forward" and epsilon == 0 and true_lse and pred_lse,
        HAS_KEEP=keep is not None,
        WANT_GRAD=bool(want_grad),
        ACC=accumulator,
        BLOCK=block,
        num_warps=num_warps,
        enable_fp_fusion=True,
    )
    return values, grad
