"""The process-group plumbing of :mod:`kldiv.distributed.torch`: the all-reduces, the ranks' agreement
before any collective (one all-gather of a small integer descriptor per rank: a rank that disagrees
or failed its local checks makes every rank raise ``ValueError`` instead of hanging), and an explicit
group held by a loss."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

from kldiv._extras import require
from kldiv.options import changed

torch = require("torch", "kldiv.distributed.torch")
dist = require("torch.distributed", "kldiv.distributed.torch")

_DTYPES = ("torch.float16", "torch.bfloat16", "torch.float32", "torch.float64")
_SHOWN_DIMS = 8  # batch dimensions carried in the shape check (the rest is compared by checksum)
_STATUS, _DTYPE, _OPTIONS, _NDIM, _ROWS, _KEPT, _VOCAB, _SHAPE_CRC, _CALL, _DIMS = range(10)
VOCAB = _VOCAB
"""The index of a rank's vocabulary shard size in its :func:`descriptor`."""


def require_initialized() -> None:
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "kldiv.distributed.torch needs an initialized default process group; call "
            "torch.distributed.init_process_group first."
        )


def default_device(group: Any) -> torch.device:
    """CUDA for NCCL (its collectives need CUDA tensors), else CPU."""
    if "nccl" in str(dist.get_backend(group)).lower():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def dtype_code(dtype: Any) -> int:
    name = str(dtype)
    return _DTYPES.index(name) if name in _DTYPES else zlib.crc32(name.encode())


def dtype_name(code: int) -> str:
    return _DTYPES[code] if 0 <= code < len(_DTYPES) else f"dtype with checksum {code}"


def describe(descriptor: Sequence[int]) -> str:
    """The batch shape and local vocabulary of one rank, for an error message."""
    ndim = descriptor[_NDIM]
    dims = descriptor[_DIMS : _DIMS + min(ndim, _SHOWN_DIMS)]
    shape = "(" + ", ".join(str(d) for d in dims) + ("," if ndim == 1 else "")
    shape += ", ...)" if ndim > _SHOWN_DIMS else ")"
    return f"rows {shape} x vocabulary shard {descriptor[_VOCAB]}"


def descriptor(
    batch: Sequence[int], dtype: Any, options_code: int, kept: int, vocab: int, call: int = 0
) -> list[int]:
    """One rank's call as integers: its rows (batch shape), dtype, options, kept rows, vocabulary shard
    and ``call`` (a checksum of what else must agree: the fused losses' hidden sizes, gradients)."""
    fields = [0] + [-1] * (_DIMS + _SHOWN_DIMS - 1)
    fields[:_DIMS] = [
        0,
        dtype_code(dtype),
        options_code,
        len(batch),
        math.prod(batch),
        kept,
        vocab,
        zlib.crc32(repr(tuple(batch)).encode()),
        call,
    ]
    fields[_DIMS : _DIMS + min(len(batch), _SHOWN_DIMS)] = list(batch[:_SHOWN_DIMS])
    return fields


def agree(group: Any, fields: list[int] | None, local_error: Exception | None, like: Any) -> list[list[int]]:
    """All-gather each rank's :func:`descriptor` (``None``: its local checks failed with
    ``local_error``) before any other collective; raise on every rank unless all agree. The rows."""
    device = like.device if isinstance(like, torch.Tensor) else default_device(group)
    if fields is None:
        fields = [1] + [-1] * (_DIMS + _SHOWN_DIMS - 1)
    descriptor = torch.tensor(fields, dtype=torch.int64, device=device)
    world = dist.get_world_size(group)
    gathered = [torch.empty_like(descriptor) for _ in range(world)]
    dist.all_gather(gathered, descriptor, group=group)
    if local_error is not None:
        raise local_error
    rows = [g.tolist() for g in gathered]
    failed = [rank for rank, row in enumerate(rows) if row[_STATUS] != 0]
    if failed:
        raise ValueError(
            f"Vocabulary-parallel divergence: rank(s) {failed} of the group failed their input "
            "checks (see the error raised there); no rank computed the loss."
        )
    compare(rows)
    return rows


class SharedGroup:
    """An explicit process group held by a loss: ``copy.deepcopy`` of the loss (or of a model holding it)
    shares it, as a communicator handle cannot be copied; pickling it is refused with what to do instead,
    as a process group belongs to the process that created it (``group=None``, the default group,
    pickles)."""

    def __init__(self, group: Any, owner: str) -> None:
        self.group, self.owner = group, owner

    def __copy__(self) -> SharedGroup:
        return self

    def __deepcopy__(self, memo: dict) -> SharedGroup:
        return self

    def __reduce__(self) -> Any:
        raise TypeError(
            f"{self.owner} with an explicit process group cannot be pickled: a process group belongs to "
            "the process that created it. Pickle it with `group=None` (the default group of the receiving "
            f"process), or save `get_config()` and rebuild it with `{self.owner}.from_config(config, group)`."
        )


class GroupModule(torch.nn.Module):
    """An ``nn.Module`` loss computed over a process group: the group it holds (a :class:`SharedGroup`:
    shared by copies, not pickled), ``from_config(config, group)`` and a ``repr`` of the arguments that
    differ from a default-constructed module's, ``group`` included when one is given."""

    def _hold(self, group: Any) -> None:
        self._group = None if group is None else SharedGroup(group, type(self).__name__)

    @property
    def group(self) -> Any:
        """The process group sharing the vocabulary (None: the default group)."""
        return None if self._group is None else self._group.group

    @classmethod
    def from_config(cls, config: dict[str, Any], group: Any = None) -> Any:
        """The loss of :meth:`get_config`'s ``config``, on ``group``."""
        return cls(**config, group=group)

    def extra_repr(self) -> str:
        """The arguments that differ from a default-constructed module's (``group`` when one is given)."""
        shown = changed(self.get_config(), type(self)().get_config())
        return shown if self.group is None else ", ".join(filter(None, (shown, f"group={self.group!r}")))


def compare(rows: list[list[int]]) -> None:
    def differ(*fields: int) -> bool:
        return len({tuple(row[f] for f in fields) for row in rows}) > 1

    listing = "; ".join(f"rank {rank}: {describe(row)}" for rank, row in enumerate(rows))
    if differ(_NDIM, _SHAPE_CRC, _ROWS) or any(row[_DIMS:] != rows[0][_DIMS:] for row in rows):
        raise ValueError(
            "Vocabulary-parallel divergence: expected the same rows (batch shape) on every rank of "
            f"the group, only the vocabulary is sharded; received {listing}."
        )
    if differ(_DTYPE):
        raise ValueError(
            "Vocabulary-parallel divergence: expected the same dtype on every rank of the group; "
            f"received {[dtype_name(row[_DTYPE]) for row in rows]} (by rank)."
        )
    if differ(_OPTIONS):
        raise ValueError(
            "Vocabulary-parallel divergence: expected the same loss options (reduction, direction, "
            "beta, temperature, epsilon, formats, ...) on every rank of the group; they differ."
        )
    if differ(_CALL):
        raise ValueError(
            "Vocabulary-parallel divergence: expected the same hidden sizes, teacher form and "
            "gradient requirements (which of the hidden states, the teacher's tensors require a "
            "gradient) on every rank of the group; they differ."
        )
    if differ(_KEPT):
        raise ValueError(
            "Vocabulary-parallel divergence: expected the same `mask` / `labels` on every rank of the "
            f"group; received {[row[_KEPT] for row in rows]} kept rows (-1: no mask)."
        )


class TorchCollectives:
    """In-place ``torch.distributed.all_reduce`` over ``group`` (on copies the caller owns)."""

    def __init__(self, group: Any) -> None:
        self.group = group

    def all_max(self, x: Any) -> Any:
        x = x.contiguous()
        dist.all_reduce(x, op=dist.ReduceOp.MAX, group=self.group)
        return x

    def all_sum(self, x: Any) -> Any:
        x = x.contiguous()
        dist.all_reduce(x, op=dist.ReduceOp.SUM, group=self.group)
        return x
