"""Learned deformable registration with the shipped models (Resources/Models/catalog.json).

The model library (catalog, sha256-verified safetensors) is :mod:`bijros.models.library`.

:func:`learned_register` runs a model once on an affinely pre-aligned pair and returns the
displacement in RAS millimetres on the model's grid, the same form as
:func:`bijros.registration.deformable.deformable_register` returns, so the pipeline composes, warps, or
hands it to instance optimisation as its starting field in one way.
"""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from bijros.errors import InputError
from bijros.models.library import resolve_entry
from bijros.registration.grid import Grid, downsample, points_ras, pool_factors, sample


@lru_cache(maxsize=4)
def _cached_model(entry_json: str, folder: str, device: str) -> nn.Module:
    from bijros.models.weights import load_model

    model = load_model(json.loads(entry_json), folder, device)
    if device == "cpu":  # oneDNN's 3D convolutions are about 20 % faster on channels-last weights
        model = model.to(memory_format=torch.channels_last_3d)
    return model


def get_model(model: str | None, device: torch.device) -> tuple[nn.Module, dict]:
    """The verified, eval-mode model named by ``model`` (see :func:`resolve_entry`) on ``device``, and its entry."""
    entry, folder = resolve_entry(model)
    if "input_spacing_mm" not in entry:
        raise InputError(f"model '{entry.get('name')}' has no input_spacing_mm in its catalog entry")
    return _cached_model(json.dumps(entry, sort_keys=True), str(folder), str(device)), entry


def _unit_range(volume: torch.Tensor) -> torch.Tensor:
    lo, hi = volume.amin(), volume.amax()
    return ((volume - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)


def _to_model_grid(volume: torch.Tensor, grid: Grid, spacing_mm: float) -> tuple[torch.Tensor, Grid]:
    """(C, I, J, K) on ``grid`` -> the same box at ``spacing_mm``: average pooling when whole factors reach it
    (within 5 %), else trilinear resampling onto a grid of that spacing (e.g. a 3 mm working grid)."""
    factors = pool_factors(grid.spacing, spacing_mm)
    if np.allclose(grid.spacing * np.array(factors), spacing_mm, rtol=0.05):
        return downsample(volume, grid, factors)
    scale = spacing_mm / grid.spacing
    shape = tuple(max(4, round(n / s)) for n, s in zip(grid.shape, scale))
    step = np.eye(4)
    step[:3, :3] = np.diag(scale)
    step[:3, 3] = (scale - 1) / 2.0
    out_grid = Grid(shape, grid.ijk_to_ras @ step)  # type: ignore[arg-type]
    smooth, src_grid = downsample(volume, grid, factors)  # anti-aliasing first (a no-op for factors of 1)
    return sample(smooth, src_grid, points_ras(out_grid, volume.device), padding_mode="border"), out_grid


def learned_register(fixed: torch.Tensor, moving: torch.Tensor, grid: Grid, model: nn.Module,
                     input_spacing_mm: float, progress=None, regions: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, Grid]:
    """One forward pass: displacement (1, 3, X, Y, Z) in RAS mm on the model's grid, and that grid.

    ``fixed`` and ``moving`` are (1, I, J, K) normalised intensities on the same axis-aligned RAS
    ``grid`` (the moving one already affinely pre-aligned). They are average-pooled to the model's
    input spacing and min-max scaled to [0, 1], as in training; ``regions`` (1, X, Y, Z) int64 on the model
    grid is the region map of a region-aware model (:mod:`bijros.registration.text`). The model's voxel displacement
    (components i, j, k, resampling convention) is turned into millimetres along the grid's axes.
    """
    if progress:
        progress(0.0, f"learned model at {input_spacing_mm:g} mm")
    f_small, m_grid = _to_model_grid(fixed, grid, input_spacing_mm)
    m_small, _ = _to_model_grid(moving, grid, input_spacing_mm)
    device = fixed.device
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        inputs = (_unit_range(f_small)[None], _unit_range(m_small)[None])
        if regions is not None:
            if tuple(regions.shape[1:]) != tuple(f_small.shape[1:]):
                raise ValueError(f"region map {tuple(regions.shape)} is not on the model grid {tuple(f_small.shape)}")
            inputs = (*inputs, regions[None])
        disp_vox = model(*inputs).float()
    axes = torch.as_tensor(np.asarray(m_grid.ijk_to_ras)[:3, :3], dtype=torch.float32, device=device)
    disp_mm = torch.einsum("rc,bc...->br...", axes, disp_vox)
    if progress:
        progress(1.0, "learned field ready")
    return disp_mm, m_grid
