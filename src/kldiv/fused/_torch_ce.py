"""The cross-entropy of a linear head with hard labels, one checkpointed chunk of tokens at a time.

``Σ_t CE(φ(hidden_t @ W.T + b), label_t)`` over the tokens whose label is not ``ignore_index``: each
chunk's logits are formed, reduced and freed in forward, and formed again in backward
(``torch.utils.checkpoint``), so at most one chunk of logits exists at a time. The distillation
losses add it as their hard-label term (``alpha`` in :mod:`kldiv.transformers`, ``weight_hard_loss``
in :mod:`kldiv.compat.liger`).
"""

from __future__ import annotations

from .._extras import require
from ..core import chunking
from ..core.logit_maps import IDENTITY, LogitMap
from ._torch_chunks import MATMUL_MIN_ROWS

torch = require("torch", "kldiv.fused.torch")


def cross_entropy_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    logit_map: LogitMap = IDENTITY,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """The summed cross-entropy (float32) of ``[BT, H]`` hidden states through the head ``[V, H]``."""
    from torch.utils.checkpoint import checkpoint

    def chunk_sum(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
        logits = logit_map.apply(torch, torch.nn.functional.linear(h, w, b)).float()
        return torch.nn.functional.cross_entropy(logits, y, ignore_index=ignore_index, reduction="sum")

    rows = hidden.shape[0]
    per_chunk = chunking.rows_per_chunk(
        rows, weight.shape[0], chunk_size=chunk_size, minimum_rows=1 if chunk_size else MATMUL_MIN_ROWS
    )
    total = hidden.new_zeros((), dtype=torch.float32)
    for start, stop in chunking.chunks(rows, per_chunk):
        piece = checkpoint(
            chunk_sum, hidden[start:stop], weight, bias, labels[start:stop], use_reentrant=False
        )
        total = total + piece
    return total
