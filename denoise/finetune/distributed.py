"""How a run is spread over processes: device per process, process group, collective helpers, sampler.

One process per device under ``torchrun`` (``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` from the environment),
NCCL between CUDA devices and gloo on CPU. With one process every helper is a no-op.
"""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from denoise.backends.torch_backend import select_device


@dataclass(frozen=True)
class Processes:
    """This process's place among the run's processes."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> Processes:
        env = os.environ
        return cls(
            int(env.get("WORLD_SIZE", "1")), int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def process_device(name: str, local_rank: int) -> torch.device:
    """The device of one process: ``auto``/``cuda`` mean the ``local_rank``-th GPU under torchrun."""
    device = select_device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def process_group_backend(device: torch.device) -> str:
    """NCCL between GPUs; gloo on CPU (NCCL has no CPU tensors)."""
    return "nccl" if device.type == "cuda" else "gloo"


def join(procs: Processes, device: torch.device) -> bool:
    """Join the process group if the run has several processes; True when this call created it."""
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL collectives and object broadcasts use the current device
    if procs.world > 1 and not dist.is_initialized():
        dist.init_process_group(process_group_backend(device))
        return True
    return False


def barrier(procs: Processes) -> None:
    if procs.world > 1:
        dist.barrier()


def broadcast(procs: Processes, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if procs.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_processes(procs: Processes, values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over all processes (on their own device, as NCCL requires)."""
    if procs.world > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= procs.world
    return values


class ResumableSampler(Sampler[int]):
    """Distributed, seeded, resumable index sampler.

    Like ``torch.utils.data.DistributedSampler`` (each of ``world`` processes gets a disjoint, equally
    long share of a per-epoch permutation seeded by ``seed + epoch``), plus :meth:`skip` so that a run
    resumed in the middle of an epoch continues with the very next batch.
    """

    def __init__(
        self, size: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0, world: int = 1
    ) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world of {world}")
        self.size, self.shuffle, self.seed, self.rank, self.world = size, shuffle, seed, rank, world
        self.per_rank = -(-size // world)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch's permutation; ``skip`` = indices of this rank's share already consumed."""
        self.epoch, self.start = int(epoch), int(skip)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=gen).tolist()
        else:
            order = list(range(self.size))
        total = self.per_rank * self.world
        order = (order * (-(-total // max(len(order), 1))))[:total]  # pad by wrapping, as torch does
        return iter(order[self.rank : total : self.world][self.start :])

    def __len__(self) -> int:
        return max(self.per_rank - self.start, 0)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def smoke_replica(rank: int, world: int, device_type: str, port: int, steps: int, out: str) -> None:
    """One DDP replica of ``make gpu-check``'s ``ddp`` check: a few GTCRN training steps (train mode:
    cuDNN's RNN backward needs it) on a seeded tone in noise; writes ``out/rank{rank}.json`` with the
    losses and how far this replica's weights are from the others' afterwards (0.0 expected)."""
    from torch.nn.parallel import DistributedDataParallel

    from denoise_models import build_model

    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        device = torch.device(f"cuda:{rank}" if device_type == "cuda" else "cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
            torch.cuda.reset_peak_memory_stats()
        torch.manual_seed(0)  # the same initial weights on every replica (DDP also broadcasts them)
        net = build_model("gtcrn").to(device).train()
        model = DistributedDataParallel(net, device_ids=[rank] if device.type == "cuda" else None)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        noise = torch.Generator().manual_seed(rank)
        clean = 0.1 * torch.sin(torch.arange(16000) * (2 * math.pi * (150 + 10 * rank) / 16000))[None]
        noisy = (clean + 0.05 * torch.randn(clean.shape, generator=noise)).to(device)
        clean = clean.to(device)
        losses = []
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(model(noisy), clean[..., : noisy.shape[-1] // 256 * 256])
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        spread = max(float((g - flat).abs().max()) for g in gathered)
        peak = round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None
        record = {"rank": rank, "backend": backend, "losses": losses, "replica_spread": spread,
                  "peak_gpu_mb": peak}  # fmt: skip
        Path(out, f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        dist.destroy_process_group()
