"""torch.distributed set-up as torchrun leaves it: rank, world size and local rank from the environment."""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch.distributed as dist

BACKENDS = {"npu": "hccl", "cuda": "nccl", "gpu": "nccl"}


def init(device: str, timeout_s: int = 60) -> tuple[int, int, int]:
    """(rank, world, local_rank); joins the process group when there is more than one rank. The short
    timeout makes a lost peer fail the job in seconds instead of the default 30 minutes (FACTS)."""
    rank, world, local = (int(os.environ.get(k, "0")) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    world = max(world, 1)
    if world > 1:
        if device == "npu":
            import torch
            import torch_npu  # noqa: F401  (registers the device; only on an Ascend host)

            torch.npu.set_device(local)
        dist.init_process_group(BACKENDS.get(device, "gloo"), timeout=datetime.timedelta(seconds=timeout_s))
    return rank, world, local


def print_params_digest(rank: int, model: Any) -> None:
    """``rank R: params sha256 D``: DDP must leave the parameters identical on every rank and node, and the
    tests compare these lines."""
    import hashlib

    digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())).hexdigest()[:16]
    print(f"rank {rank}: params sha256 {digest}", flush=True)


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def finish(world: int) -> None:
    if world > 1:
        dist.destroy_process_group()
