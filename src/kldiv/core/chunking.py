"""The chunk planner: how many rows of a ``[rows, vocab]`` problem to process at once.

Pure integers, cached; shared by the chunked and fused-linear paths of every framework, so that the
same memory budget gives the same chunk everywhere.
"""

from __future__ import annotations

import functools

DEFAULT_MEMORY_BUDGET = 96 * 2**20
"""Bytes of temporaries a chunk may use (96 MiB)."""

KERNEL_TEMPORARIES = 3
"""Chunk-sized arrays the fused-kernel path holds: student logits, teacher logits, their gradient."""

AUTOGRAD_TEMPORARIES = 10
"""Chunk-sized arrays at the peak of autograd through the core: both logits, two log-softmaxes, their
probabilities, masked copies, the per-element terms and the gradient."""


@functools.cache
def rows_per_chunk(
    rows: int,
    vocab: int,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    bytes_per_element: int = 4,
    chunk_size: int | None = None,
    temporaries: int = AUTOGRAD_TEMPORARIES,
    minimum_rows: int = 1,
) -> int:
    """Rows per chunk: ``chunk_size`` when given, else the most rows whose temporaries
    (``temporaries · vocab · bytes_per_element`` bytes per row) fit in ``memory_budget``, but at
    least ``minimum_rows``; at most ``rows`` (and 1 for an empty problem)."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"Argument `chunk_size`: expected a positive integer; received {chunk_size}.")
        return max(1, min(chunk_size, rows))
    per_row = temporaries * max(vocab, 1) * bytes_per_element
    return max(1, min(rows, max(memory_budget // per_row, minimum_rows)))


def chunks(rows: int, size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(rows)`` in pieces of ``size`` (the last may be shorter)."""
    return [(start, min(start + size, rows)) for start in range(0, rows, size)]
