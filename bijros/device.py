"""Compute device selection: auto (CUDA, else CPU), with clear errors."""

from __future__ import annotations

import os

import torch

from bijros.errors import DeviceError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA if available, else CPU. Apple MPS only on request (not yet verified)."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build, but no GPU is visible"
            raise DeviceError(
                f"--device {name} was requested but CUDA is not available (torch {torch.__version__} is {build}). "
                "Use --device cpu or auto, or install a CUDA build of torch (see README, 'GPU')."
            )
        return torch.device(name)
    if name == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise DeviceError("--device mps was requested but Apple MPS is not available. Use --device cpu.")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"Unknown device '{name}'. Use auto, cpu, cuda, cuda:N or mps.")


def available_cores() -> int:
    """The cores this process may run on (torch's default counts physical cores only)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def thread_count(share: int = 1) -> int:
    """``BIJROS_NUM_THREADS`` if set, else this process's 1/``share`` of the cores (at least 1), where ``share``
    processes run side by side (torchrun ranks, batch workers)."""
    if os.environ.get("BIJROS_NUM_THREADS"):
        return max(1, int(os.environ["BIJROS_NUM_THREADS"]))
    return max(1, available_cores() // max(1, share))


def configure_threads(share: int = 1) -> int:
    """Use every core the process may run on, or its 1/``share`` (see :func:`thread_count`)."""
    n = thread_count(share)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
