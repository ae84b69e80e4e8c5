"""The process group of a multi-process run (``torchrun`` or any launcher that sets
``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): joining it, each rank's device and
its shard of a global batch. Backends: ``gloo`` on CPU, ``nccl`` on GPU (one GPU per rank)."""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from .device import check_device

__all__ = ["env_world_size", "world_info", "resolve_backend", "rank_device", "check_world_size",
           "init_distributed", "shard"]


def env_world_size() -> int:
    """``WORLD_SIZE`` set by ``torchrun`` (1 when absent)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer, got '{os.environ.get('WORLD_SIZE')}'")


def world_info() -> Tuple[int, int]:
    """``(rank, world_size)`` of the initialised default process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_backend(backend: str, device: str) -> str:
    """The concrete backend of ``backend`` (``"auto"``: ``nccl`` on CUDA, ``gloo`` on CPU)."""
    if backend == "auto":
        return "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl" and torch.device(device).type != "cuda":
        raise ValueError(f"the nccl backend needs a CUDA device, not '{device}'; use gloo on CPU")
    return backend


def rank_device(device: str, world_size: int) -> torch.device:
    """The device of this rank: ``device`` itself in one process, ``cuda:LOCAL_RANK`` for
    ``device="cuda"`` under a multi-process launch (one GPU per rank)."""
    dev = check_device(device)
    if dev.type != "cuda" or world_size <= 1:
        return dev
    if dev.index is not None:
        raise ValueError(f"device '{device}' names one GPU, but {world_size} processes each need "
                         f"their own: use device 'cuda' (rank r takes cuda:LOCAL_RANK)")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    n_gpu = torch.cuda.device_count()
    if local_world > n_gpu:
        raise ValueError(f"{local_world} processes on this machine but only {n_gpu} CUDA GPU(s): "
                         f"start {n_gpu} or fewer processes per machine")
    return torch.device("cuda", local_rank)


def check_world_size(world_size: int, batch_size: int, num_samples: Optional[int] = None) -> None:
    """Clear errors for a world size that does not split the work sensibly: the global batch
    must divide into equal non-empty shards, and every rank must get training samples."""
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    if world_size == 1:
        return
    if batch_size < world_size:
        raise ValueError(f"batch size {batch_size} is smaller than the world size {world_size}: "
                         f"some ranks would get no samples; use a batch size >= {world_size}")
    if batch_size % world_size:
        raise ValueError(f"batch size {batch_size} does not split evenly over {world_size} processes "
                         f"(the global batch is sharded across ranks); use a multiple of {world_size}, "
                         f"e.g. {batch_size - batch_size % world_size or world_size}")
    if num_samples is not None and num_samples < world_size:
        raise ValueError(f"only {num_samples} training samples for {world_size} processes")


def init_distributed(device: str = "cpu", backend: str = "auto", timeout_s: float = 7200.0
                     ) -> Tuple[int, int]:
    """Join the process group of a multi-process launch (``WORLD_SIZE > 1``, e.g. ``torchrun``)
    if it is not joined yet; returns ``(rank, world_size)``. The group is left at exit."""
    world = env_world_size()
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return world_info()
    if not dist.is_available():
        raise ValueError("this torch build has no torch.distributed support")
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise ValueError(f"WORLD_SIZE={world} but {var} is not set: start the processes with "
                             f"torchrun (or another launcher that sets RANK, MASTER_ADDR and MASTER_PORT)")
    backend = resolve_backend(backend, device)
    dev = rank_device(device, world)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    import atexit
    atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return world_info()


def shard(users: Tensor, pos: Tensor, neg: Tensor, rank: int, world_size: int
          ) -> Tuple[Tensor, Tensor, Tensor, float]:
    """This rank's contiguous shard of a global batch and its weight ``n_rank / n_batch``.
    An empty shard (a last batch smaller than the world size) becomes the batch's first
    sample with weight 0, so that every rank still takes part in the gradient all-reduce."""
    n = users.numel()
    if world_size == 1:
        return users, pos, neg, 1.0
    idx = torch.tensor_split(torch.arange(n), world_size)[rank]
    if idx.numel() == 0:
        return users[:1], pos[:1], neg[:1], 0.0
    return users[idx], pos[idx], neg[idx], idx.numel() / n
