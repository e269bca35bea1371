"""Training on several processes with torch.distributed (DDP), Django-free.

After open_clip_train's `distributed.py` and `main.py`: the world comes from torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK), NCCL on GPUs and gloo on CPUs, the model is
wrapped in DistributedDataParallel, and the contrastive loss sees the features of every
rank (open_clip's `ClipLoss(local_loss=True, gather_with_grad=True)`); rank 0 validates.

One difference: every rank deals the same global batches (`epoch_batches` with the same
seed) and trains on its share of each, which a DistributedSampler over the batch picks.
So a batch still holds no product twice across all ranks, and a run on N processes takes
the steps, learning rates and random choices of one process with the same batch size:
its gradients are that process's on the whole batch, up to float rounding (and per-rank
BatchNorm statistics in ResNet towers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import open_clip
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from .schedule import TimeBudget

# Ranks other than 0 wait in a collective while rank 0 reads the catalog and evaluates the
# active space, which takes a while on a large one; a dead rank is noticed by torchrun's
# agent (it watches the processes), not by this timeout.
COLLECTIVE_TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env() -> tuple[int, int, int]:
    """(local_rank, rank, world_size) as torchrun sets them; (0, 0, 1) outside it."""
    env = os.environ
    return int(env.get("LOCAL_RANK", 0)), int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1))


def world_init(device_type: str = "") -> World:
    """Join the process group torchrun set up: NCCL and this rank's GPU when training on
    CUDA (`device_type` "cuda", or empty with a GPU present), else gloo on the CPU."""
    local_rank, rank, world_size = world_from_env()
    use_cuda = device_type.startswith("cuda") or (not device_type and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)  # "cuda" now means this rank's GPU everywhere
        device = torch.device("cuda", local_rank)
        dist.init_process_group("nccl", timeout=COLLECTIVE_TIMEOUT, device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)
    return World(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def world_close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_from_main(world: World, value: Any = None) -> Any:
    """Rank 0's `value` (any picklable object) on every rank."""
    box = [value if world.is_main else None]
    dist.broadcast_object_list(box, src=0, device=world.device)
    return box[0]


def contrastive_loss(world: World) -> torch.nn.Module:
    """open_clip's loss over the features of all ranks: each rank's rows against every
    rank's columns, gathered with their gradients (open_clip_train's defaults for DDP)."""
    return open_clip.ClipLoss(
        local_loss=True,
        gather_with_grad=True,
        cache_labels=True,
        rank=world.rank,
        world_size=world.world_size,
    )


def ddp_wrap(model: torch.nn.Module, world: World) -> DistributedDataParallel:
    """`model` in DDP: rank 0's weights on every rank now, gradients averaged at each step."""
    device_ids = [world.device.index] if world.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


class BatchShard:
    """A rank's share of each global batch: a DistributedSampler over the batch's positions,
    without shuffling (the batch is dealt shuffled already) and dropping the last few when
    the batch does not divide by the world size, so every rank gathers as many features."""

    def __init__(self, world: World):
        self.world = world
        self._samplers: dict[int, list[int]] = {}

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        positions = self._samplers.get(len(batch))
        if positions is None:
            sampler = DistributedSampler(
                range(len(batch)),
                num_replicas=self.world.world_size,
                rank=self.world.rank,
                shuffle=False,
                drop_last=True,
            )
            positions = self._samplers[len(batch)] = list(sampler)
        return np.asarray(positions, dtype=np.int64)


def step_sync(world: World, loss: float, clock: TimeBudget) -> float:
    """After a step: the mean loss over the ranks, and rank 0's clock on every rank (its
    schedule horizon and whether its deadline passed), so all ranks stop at the same step
    and none waits forever in a collective the others skipped. One small all-reduce."""
    main = world.is_main
    values = torch.tensor(
        [loss, clock.total_steps if main else 0, float(clock.expired) if main else 0.0],
        dtype=torch.float64,
        device=world.device,
    )
    dist.all_reduce(values)
    clock.total_steps, clock.expired = int(values[1]), bool(values[2])
    return float(values[0]) / world.world_size
