"""Data-parallel training under torchrun: one process per GPU (NCCL) or per CPU share (gloo).

Without torchrun (no ``WORLD_SIZE`` in the environment, or 1) nothing here does anything and the trainers run
as before. Under ``torchrun --nproc-per-node N -m bijros train-...`` every process builds the same model
from the same seed, draws its own training samples (its generator is seeded from the seed, its rank and the
step), and the gradients are averaged over the processes before every update, so the processes keep one
model: the effective batch is N times the config's, at the config's learning rate (not rescaled; both are
written into model.json). The registration trainer does this with DistributedDataParallel; the few-shot
trainer (its alignment loss runs the network a second time before the backward pass) and the one-shot
trainer (its bi-level step takes hyper-gradients with ``torch.autograd.grad``, which DDP's hooks do not see)
average their gradients with one ``all_reduce`` per update (:func:`average_gradients`), the same mean that
DDP computes. Only rank 0 validates and writes checkpoints, plots and the model; a resumed run reads the
same checkpoint on every rank.
"""

from __future__ import annotations

import dataclasses
import datetime
import os

import torch

from bijros.errors import InputError


@dataclasses.dataclass
class DataParallel:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def environment() -> DataParallel:
    """This process's place from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE); one
    process without it. No process group is started."""
    env = os.environ
    size = int(env.get("WORLD_SIZE", 1))
    return DataParallel(int(env.get("RANK", 0)), size, int(env.get("LOCAL_RANK", 0)),
                        int(env.get("LOCAL_WORLD_SIZE", size)))


def setup(requested: str) -> tuple[DataParallel, torch.device]:
    """(the process's place in the run, its device); starts the process group under torchrun."""
    from bijros.device import configure_threads, resolve_device

    dp = environment()
    if not dp.active:
        device = resolve_device(requested)
        if device.type == "cpu":
            configure_threads()
        return dp, device
    import torch.distributed as dist

    requested = (requested or "auto").lower()
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        resolve_device(requested)  # a clear error without CUDA
        if dp.local_rank >= torch.cuda.device_count():
            raise InputError(f"torchrun started {dp.local_world} processes on this machine but it has "
                             f"{torch.cuda.device_count()} GPUs; use --nproc-per-node {torch.cuda.device_count()}.")
        device = torch.device(f"cuda:{dp.local_rank}")  # one GPU per process
        torch.cuda.set_device(device)
        dp.backend = "nccl"
    else:
        device = torch.device("cpu")
        configure_threads(share=dp.local_world)
        dp.backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(dp.backend, timeout=datetime.timedelta(hours=2))
    return dp, device


def wrap(model: torch.nn.Module, dp: DataParallel, device: torch.device) -> torch.nn.Module:
    """The model in DistributedDataParallel under torchrun (rank 0's weights broadcast), else itself."""
    if not dp.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def average_gradients(parameters, dp: DataParallel) -> None:
    """Replace every gradient by its mean over the processes (one flat all_reduce); a no-op on one process.
    A parameter without a gradient on some rank takes zeros there, so every rank sends the same tensors."""
    if not dp.active:
        return
    import torch.distributed as dist

    params = [p for p in parameters if p.requires_grad]
    if not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= dp.world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


class SyncedOptimizer:
    """An optimizer whose ``step()`` first averages the gradients of its parameters over the processes."""

    def __init__(self, optimizer: torch.optim.Optimizer, dp: DataParallel):
        self.optimizer, self.dp = optimizer, dp

    def step(self, *args, **kwargs):
        average_gradients([p for g in self.optimizer.param_groups for p in g["params"]], self.dp)
        return self.optimizer.step(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.optimizer, name)


def synced(optimizer, dp: DataParallel):
    return SyncedOptimizer(optimizer, dp) if dp.active else optimizer


def rank_generator(gen: torch.Generator, seed: int, dp: DataParallel, step: int) -> None:
    """Under torchrun: seed ``gen`` from (seed, rank, step), so each process draws its own samples, at the start
    and again at a resume (one process keeps its exact stream, restored from the checkpoint)."""
    if dp.active:
        gen.manual_seed(int(seed) + 1_000_003 * dp.rank + 7_919 * int(step))


def agree(value: float, dp: DataParallel) -> float:
    """Rank 0's ``value`` on every process (a time budget's fraction: all stop at the same step)."""
    if not dp.active:
        return value
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64)
    if dp.backend == "nccl":
        t = t.cuda()
    dist.broadcast(t, 0)
    return float(t.item())


def barrier(dp: DataParallel) -> None:
    if dp.active:
        import torch.distributed as dist

        dist.barrier()


def finish(dp: DataParallel) -> None:
    if dp.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def describe(dp: DataParallel, batch_per_process: int, learning_rate: float, averaging: str) -> dict:
    """What model.json says of the run's parallelism."""
    return {"processes": dp.world, "backend": dp.backend, "gradient_averaging": averaging if dp.active else None,
            "batch_per_process": int(batch_per_process), "effective_batch": int(batch_per_process) * dp.world,
            "learning_rate": float(learning_rate), "learning_rate_scaling": "none"}
