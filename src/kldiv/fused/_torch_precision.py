"""The dtypes of the PyTorch chunked passes: what a chunk is computed in and what gradients are summed in.

kldiv's rule (SPEC): float16 / bfloat16 inputs are computed in float32 and rounded once at the end;
float32 and float64 are computed as they are. The parameter gradients summed across chunks follow the
same rule unless ``accumulation_dtype`` says otherwise (:data:`ACCUMULATION_DTYPES`).
"""

from __future__ import annotations

from .._extras import require

torch = require("torch", "kldiv.fused.torch")

ACCUMULATION_DTYPES = (None, "float32", "float64", "weight")
"""The parameter gradients' accumulation dtype: None (kldiv's rule: float32 for float16 / bfloat16
inputs, float64 for float64), ``"float32"`` / ``"float64"``, or ``"weight"`` (each tensor's own dtype:
half the gradient memory for bfloat16 parameters, rounded to bfloat16 after every chunk)."""


def wide(x: torch.Tensor) -> torch.Tensor:
    """float16 / bfloat16 → float32 (kldiv's accumulation rule); float32 / float64 unchanged."""
    return x.float() if x.element_size() < 4 else x


def accumulation(choice: str | None, tensor: torch.Tensor, default: torch.dtype) -> torch.dtype:
    """The dtype ``tensor``'s gradient is accumulated in under ``choice`` (:data:`ACCUMULATION_DTYPES`;
    None: ``default``, the pass's own accumulation dtype)."""
    if choice is None:
        return default
    return tensor.dtype if choice == "weight" else getattr(torch, choice)
