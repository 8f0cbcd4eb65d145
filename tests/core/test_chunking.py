"""Chunk sizes from a memory budget (kldiv.core.chunking)."""

from __future__ import annotations

import pytest

from kldiv.core import chunking


def test_budget_sets_the_rows_and_minimum_rows_raises_them():
    budget = 96 * 2**20
    assert chunking.rows_per_chunk(4096, 32000, memory_budget=budget, temporaries=1) == budget // (32000 * 4)
    assert chunking.rows_per_chunk(4096, 128256, memory_budget=budget, temporaries=1) == 196
    assert chunking.rows_per_chunk(4096, 128256, memory_budget=budget, temporaries=1, minimum_rows=512) == 512
    assert chunking.rows_per_chunk(300, 128256, memory_budget=budget, temporaries=1, minimum_rows=512) == 300
    assert chunking.rows_per_chunk(0, 10, minimum_rows=512) == 1


def test_chunk_size_wins_and_is_validated():
    assert chunking.rows_per_chunk(100, 10, chunk_size=7, minimum_rows=512) == 7
    with pytest.raises(ValueError, match="chunk_size"):
        chunking.rows_per_chunk(100, 10, chunk_size=0)


def test_chunks_cover_every_row_once():
    assert chunking.chunks(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunking.chunks(0, 4) == []
