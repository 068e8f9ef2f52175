"""Processes under ``torchrun``: who we are (``DistInfo``) and the few collective operations the trainer needs.

Every function is a no-op (or the obvious single-process answer) when the world has one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class DistInfo:
    """Process rank, world size and local rank (1 process: 0, 1, 0); ``owned``: we created the process group."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False

    @property
    def main(self) -> bool:
        """Rank 0 writes the run directory and reports."""
        return self.rank == 0


def init_distributed(device_spec: str) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, False)
    use_cuda = device_spec != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local % torch.cuda.device_count())
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, True)


def finish_distributed(d: DistInfo) -> None:
    """Leave the process group if ``init_distributed`` created it."""
    if d.owned:
        import torch.distributed as dist

        dist.destroy_process_group()


def barrier(d: DistInfo) -> None:
    """Wait until every rank gets here."""
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


def gather(d: DistInfo, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a list of one element without distribution)."""
    if d.world <= 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_module(d: DistInfo, module: torch.nn.Module, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters (and buffers) to every rank."""
    if d.world <= 1:
        return
    import torch.distributed as dist

    tensors = list(module.buffers()) if buffers_only else list(module.parameters()) + list(module.buffers())
    for t in tensors:
        dist.broadcast(t.data, src=0)


def all_ok(d: DistInfo, ok: bool) -> bool:
    """True when ``ok`` holds on every rank (Σ of the ranks' failures is 0), so an error on one stops them all."""
    if d.world <= 1:
        return ok
    import torch.distributed as dist

    t = torch.tensor([0 if ok else 1], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t.item()) == 0
