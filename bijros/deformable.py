"""Training-free deformable registration by instance optimisation (ConvexAdam-like).

Coarse-to-fine: at each pyramid level, a dense displacement (optionally a stationary
velocity integrated by scaling and squaring) is optimised with Adam on a feature
similarity (MIND-SSC SSD, or LNCC on intensities) plus a diffusion or bending penalty;
the field is box-smoothed every step (as ConvexAdam does). Between levels the field is
carried over in world millimetres, so grids of any size chain exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from bijros.similarity import bending_penalty, box_filter, diffusion_penalty, lncc_loss, mind_ssc
from bijros.spatial import Grid, downsample, identity_normalized, points_ras, pool_factors, sample


@dataclasses.dataclass
class DeformableOptions:
    levels_mm: tuple[float, ...] = (4.0, 2.0)
    iterations: tuple[int, ...] = (60, 40)
    similarity: str = "mind"  # mind | lncc
    regularizer: str = "diffusion"  # diffusion | bending
    reg_weight: float = 1.0
    smooth_size: int = 3  # box smoothing of the field every step (0 = off)
    learning_rate: float = 1.0  # voxels per step at the start of each level
    diffeomorphic: bool = False
    integration_steps: int = 6


def warp_normalized(volume: torch.Tensor, disp_vox: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Warp (1, C, D, H, W) by a (1, 3, D, H, W) voxel displacement (components i, j, k)."""
    size = torch.tensor([max(s - 1, 1) for s in disp_vox.shape[2:]], device=disp_vox.device, dtype=disp_vox.dtype)
    offset = (disp_vox[0].permute(1, 2, 3, 0) * (2.0 / size)).flip(-1)
    return F.grid_sample(volume, (base + offset)[None], mode="bilinear", padding_mode="border", align_corners=True)


def integrate_velocity(velocity: torch.Tensor, base: torch.Tensor, steps: int) -> torch.Tensor:
    """Scaling and squaring of a stationary velocity field (1, 3, D, H, W) in voxel units."""
    disp = velocity / (2**steps)
    for _ in range(steps):
        disp = disp + warp_normalized(disp, disp, base)
    return disp


def _features(image: torch.Tensor, kind: str) -> torch.Tensor:
    return mind_ssc(image) if kind == "mind" else image


def deformable_register(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    grid: Grid,
    options: DeformableOptions | None = None,
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Displacement (1, 3, I, J, K) in RAS mm on ``grid`` such that ``moving(x + u(x))`` matches ``fixed(x)``.

    ``fixed`` and ``moving`` are (1, I, J, K) normalised intensities on the same axis-aligned
    RAS ``grid`` (the moving one already affinely pre-aligned).
    """
    opts = options or DeformableOptions()
    dev = fixed.device
    spacing = float(grid.spacing[0])
    total = max(sum(opts.iterations), 1)
    done = 0
    disp_mm: torch.Tensor | None = None
    prev_grid: Grid | None = None
    for level_mm, n_iter in zip(opts.levels_mm, opts.iterations):
        factors = pool_factors(grid.spacing, level_mm)
        f_lvl, l_grid = downsample(fixed, grid, factors)
        m_lvl, _ = downsample(moving, grid, factors)
        lvl_spacing = spacing * factors[0]
        feat_f = _features(f_lvl[None], opts.similarity).detach()
        feat_m = _features(m_lvl[None], opts.similarity).detach()
        base = identity_normalized(l_grid.shape, dev)
        if disp_mm is None:
            init = torch.zeros((1, 3, *l_grid.shape), device=dev)
        else:
            init = sample(disp_mm[0], prev_grid, points_ras(l_grid, dev), padding_mode="border")[None] / lvl_spacing
        param = init.clone().requires_grad_(True)
        optim = torch.optim.Adam([param], lr=opts.learning_rate)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=max(n_iter, 1), eta_min=opts.learning_rate * 0.1)
        for it in range(n_iter):
            if cancel is not None and cancel():
                from bijros.errors import CancelledError

                raise CancelledError("Registration cancelled.")
            optim.zero_grad(set_to_none=True)
            field = box_filter(box_filter(param, opts.smooth_size), opts.smooth_size) if opts.smooth_size > 1 else param
            disp = integrate_velocity(field, base, opts.integration_steps) if opts.diffeomorphic else field
            warped = warp_normalized(feat_m, disp, base)
            if opts.similarity == "lncc":
                data = lncc_loss(feat_f, warped, window=5)
            else:
                data = ((feat_f - warped) ** 2).mean()
            reg = bending_penalty(field) if opts.regularizer == "bending" else diffusion_penalty(field)
            loss = data + opts.reg_weight * reg
            loss.backward()
            optim.step()
            sched.step()
            done += 1
            if progress and (it % 5 == 0 or it == n_iter - 1):
                progress(done / total, f"deformable {level_mm:g} mm: similarity {data.item():.4f}")
        with torch.no_grad():
            field = box_filter(box_filter(param, opts.smooth_size), opts.smooth_size) if opts.smooth_size > 1 else param
            disp = integrate_velocity(field, base, opts.integration_steps) if opts.diffeomorphic else field
            disp_mm = disp.detach() * lvl_spacing
            prev_grid = l_grid
    assert disp_mm is not None and prev_grid is not None
    with torch.no_grad():
        return sample(disp_mm[0], prev_grid, points_ras(grid, dev), padding_mode="border")[None]


def numpy_field(disp: torch.Tensor) -> np.ndarray:
    """(1, 3, I, J, K) tensor -> (I, J, K, 3) float32 numpy array."""
    return disp[0].permute(1, 2, 3, 0).float().cpu().numpy()
