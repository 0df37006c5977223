"""Where this process stands under `torchrun`: rank, world size, and waiting for the others.

A single process (no torchrun) is rank 0 of a world of 1, and everything here is then a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device | None = None) -> Dist:
    """Join the process group torchrun describes in the environment (NCCL for CUDA devices, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device is not None and device.type == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size())


def barrier(d: Dist) -> None:
    """Wait until every process gets here."""
    if d.enabled:
            dist.barrier()
