"""DDP check for ``kldiv.torch`` (run by ``test_torch.py``): 2 CPU ranks with the gloo backend.

Each rank holds half of a token batch whose masks keep different numbers of tokens. With
``reduction="token_mean"`` and ``num_items`` = (global number of kept tokens) / world size, DDP's
gradient averaging gives exactly the gradient of ``token_mean`` over the whole batch on one process.
Prints ``max_grad_diff=<float>`` (float64).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import kldiv.torch

WORLD = 2
OPTIONS = {"reduction": "token_mean", "from_logits": True, "y_true_format": "logits", "temperature": 2.0}


def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(4, 3, 6, generator=generator, dtype=torch.float64)
    teacher = torch.randn(4, 3, 5, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)  # 5 vs 1 kept
    return x, teacher, mask


def student() -> torch.nn.Module:
    torch.manual_seed(11)
    return torch.nn.Linear(6, 5).double()


def rank_main(rank: int, store: str, queue: Any) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    x, teacher, mask = (t.chunk(WORLD)[rank] for t in data())
    model = torch.nn.parallel.DistributedDataParallel(student())
    count = mask.sum().to(torch.float64)
    dist.all_reduce(count)
    loss = kldiv.torch.KLDivergence(**OPTIONS)(teacher, model(x), mask=mask, num_items=count / WORLD)
    loss.backward()
    if rank == 0:
        queue.put([p.grad.numpy().copy() for p in model.parameters()])  # plain arrays: no shared memory
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    x, teacher, mask = data()
    single = student()
    kldiv.torch.KLDivergence(**OPTIONS)(teacher, single(x), mask=mask).backward()
    context = mp.get_context("spawn")
    queue = context.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        mp.spawn(rank_main, args=(store, queue), nprocs=WORLD, join=True)
    ddp_grads = queue.get(timeout=60)
    diff = max(
        float((torch.from_numpy(g) - p.grad).abs().max())
        for g, p in zip(ddp_grads, single.parameters(), strict=True)
    )
    print(f"max_grad_diff={diff!r}")


if __name__ == "__main__":
    main()
