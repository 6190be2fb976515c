"""Distributed data parallel set-up for ``torchrun --nproc_per_node=N -m sparks train ...``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them the run is a single process. The backend is NCCL on
CUDA and gloo on CPU. Only the main process (rank 0) logs and writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; ``cuda`` → ``cuda:<local_rank>``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group if torchrun launched us; return rank, world size and this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, local_rank, world_size, dev)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Element-wise sum of ``values`` over all processes (identity on a single process)."""
    if not info.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_finite(value: torch.Tensor, info: DistInfo) -> bool:
    """Whether ``value`` is finite on every process (so all ranks stop together on a NaN/Inf loss)."""
    flag = torch.isfinite(value.detach()).all().to(torch.float32).reshape(1)
    if info.distributed:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def gather_objects(obj: object, info: DistInfo) -> list[object]:
    """``obj`` from every rank, in rank order (a one-element list on a single process)."""
    if not info.distributed:
        return [obj]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def broadcast_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BN running statistics, selections) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last training step each rank still holds the
    statistics of its own batch; syncing them makes evaluation (split across ranks) use one model.
    """
    if info.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)
