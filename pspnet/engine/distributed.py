"""This process's place in a torchrun job, and the little that ranks share.

Training, evaluation and prediction join torchrun's process group the same way (NCCL on
CUDA, gloo on the CPU); without torchrun a process is rank 0 of 1 and nothing is initialised.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from pspnet.errors import ConfigError

T = TypeVar("T")


@dataclass
class Process:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_process(device: str) -> Process:
    """Join torchrun's process group when its variables are set: NCCL on CUDA, gloo on CPU.

    Args:
        device: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N"; under torchrun each
            rank takes the CUDA device of its local rank.
    """
    kind = device.partition(":")[0]
    use_cuda = kind == "cuda" or (device == "auto" and torch.cuda.is_available())
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but no CUDA device is available")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        index = local_rank if world_size > 1 or ":" not in device else int(device.split(":")[1])
        torch.cuda.set_device(index)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    cuda = torch.device("cuda", torch.cuda.current_device()) if use_cuda else None
    return Process(rank, world_size, cuda or torch.device("cpu"))


def shard(items: Sequence[T], process: Process) -> list[T]:
    """This rank's share of ``items``: every ``world_size``-th one from its rank, disjoint."""
    return list(items[process.rank :: process.world_size])


def sum_over_ranks(values: Sequence[int], process: Process) -> list[int]:
    """Element-wise sum of ``values`` over every rank (the values themselves without torchrun)."""
    if process.world_size == 1 or not dist.is_initialized():
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.int64, device=process.device)
    dist.all_reduce(tensor)
    return [int(v) for v in tensor.tolist()]


def gather_lists(items: list, process: Process) -> list:
    """Every rank's ``items`` (picklable), concatenated in rank order, on every rank."""
    if process.world_size == 1 or not dist.is_initialized():
        return list(items)
    parts: list = [None] * process.world_size
    dist.all_gather_object(parts, list(items))
    return [item for part in parts for item in part]


def leave(together: bool = False) -> None:
    """Leave the process group, if one was joined: gloo's threads must stop before exit.

    ``together`` (every rank finished its work) waits for the others first, so no rank tears
    its connections down while another still writes its last files or sends its last tensor;
    a rank that failed leaves at once rather than wait for ranks that may never come, and a
    wait past the group's timeout (a rank still at work, or gone) ends in leaving all the same.
    """
    if dist.is_available() and dist.is_initialized():
        if together:
            # DistBackendError, a RuntimeError: the others did not come within the timeout.
            with contextlib.suppress(RuntimeError):
                dist.barrier()
        dist.destroy_process_group()
