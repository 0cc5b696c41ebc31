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


def configure_threads(share: int = 1) -> int:
    """Use every core the process may run on (torch defaults to physical cores only), or its 1/``share`` where
    ``share`` processes run side by side (torchrun on the CPU); ``BIJROS_NUM_THREADS`` wins."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        n = os.cpu_count() or 1
    n = max(1, n // max(1, share))
    n = int(os.environ.get("BIJROS_NUM_THREADS", n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
