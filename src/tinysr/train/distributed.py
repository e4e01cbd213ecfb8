"""DistributedDataParallel set-up from the environment ``torchrun`` provides (NCCL on GPUs, gloo on CPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); otherwise a single process.

    ``TINYSR_DIST_TIMEOUT`` (seconds, default 600) bounds how long a collective waits for a peer.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        # A peer that never arrives should end the run in minutes, not PyTorch's default 30.
        timeout = timedelta(seconds=float(os.environ.get("TINYSR_DIST_TIMEOUT", "600")))
        dist.init_process_group(backend=backend, timeout=timeout)
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
    return DistInfo(rank, local_rank, world)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_flag(info: DistInfo, flag: bool, device) -> bool:
    """Rank 0's boolean, on every rank (e.g. 'stop now')."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def weights_in_sync(info: DistInfo, model: torch.nn.Module, device) -> bool:
    """True when every rank holds bit-identical parameters (compared through a float64 checksum pair)."""
    if not info.enabled:
        return True
    with torch.no_grad():
        flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])
        weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)
        local = torch.stack([flat.sum(), (flat * weights.reciprocal()).sum()]).to(device)
    gathered = [torch.zeros_like(local) for _ in range(info.world_size)]
    dist.all_gather(gathered, local)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
