"""Multi-process training helpers for the ``multi_gpu_*`` bundle overlays (torchrun; NCCL on GPUs, gloo on CPUs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_rank_zero() -> bool:
    """True in the process that writes files and logs (or when not distributed)."""
    return rank() == 0


def init_process_group() -> torch.device:
    """Join the torchrun process group (NCCL with CUDA, gloo otherwise) and return this rank's device."""
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        device = torch.device(f"cuda:{dist.get_rank() % torch.cuda.device_count()}")
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def wrap(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``network`` on ``device``."""
    device_ids = [device] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(network, device_ids=device_ids)


def rank_zero_handlers(handlers: Sequence[Any]) -> list[Any]:
    """All handlers on rank 0; elsewhere only validation (no files, logs or trackers written twice)."""
    from monai.handlers import ValidationHandler

    return list(handlers) if is_rank_zero() else [h for h in handlers if isinstance(h, ValidationHandler)]


def destroy_process_group() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    """Number of processes in the group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    """Wait for every rank (nothing to wait for when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
