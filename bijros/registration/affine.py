"""Affine pre-alignment: centre-of-mass initialisation, then rigid and affine stages on a
multi-resolution pyramid, optimised with Adam on a robust similarity.

The result ``A`` is a 4x4 matrix mapping fixed RAS points to moving RAS points (the
resampling convention: the moving image is sampled at ``A @ x`` to produce the warped image).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from bijros.registration.grid import Grid, downsample, points_ras, pool_factors, ras_to_grid_sample
from bijros.registration.optim import CosineAdam
from bijros.registration.similarity import mi_loss, ncc_loss

#: a pyramid level (affine or deformable) whose grid has fewer voxels than this along an axis is skipped
#: (small crops need no coarse level; the finest level always runs)
MIN_LEVEL_VOXELS = 8


@dataclasses.dataclass
class AffineOptions:
    levels_mm: tuple[float, ...] = (6.0, 3.0)
    rigid_iterations: tuple[int, ...] = (80, 40)
    affine_iterations: tuple[int, ...] = (80, 40)
    metric: str = "ncc"  # ncc (same modality) | mi (mutual information, any modality)
    lr_translation_mm: float = 1.0
    lr_matrix: float = 0.01
    max_samples: int = 30000
    seed: int = 0


def centre_of_mass(volume: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Intensity-weighted centre (3,) in RAS of a (1, I, J, K) non-negative volume."""
    w = volume[0].clamp_min(0)
    total = w.sum().clamp_min(1e-8)
    ijk = [
        (w.sum(dim=tuple(a for a in range(3) if a != ax)) * torch.arange(w.shape[ax], dtype=w.dtype, device=w.device)).sum()
        / total
        for ax in range(3)
    ]
    ijk_t = torch.stack(ijk)
    m = torch.as_tensor(grid.ijk_to_ras, dtype=w.dtype, device=w.device)
    return m[:3, :3] @ ijk_t + m[:3, 3]


def _skew(w: torch.Tensor) -> torch.Tensor:
    z = torch.zeros((), dtype=w.dtype, device=w.device)
    return torch.stack([torch.stack([z, -w[2], w[1]]), torch.stack([w[2], z, -w[0]]), torch.stack([-w[1], w[0], z])])


def _loss(metric: str, fixed: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
    if metric == "mi":
        return mi_loss(fixed, moved)
    return ncc_loss(fixed, moved)


def affine_register(
    fixed: torch.Tensor,
    fixed_grid: Grid,
    moving: torch.Tensor,
    moving_grid: Grid,
    options: AffineOptions | None = None,
    rigid_only: bool = False,
    progress: Callable[[float, str], None] | None = None,
    fixed_mask: torch.Tensor | None = None,
) -> np.ndarray:
    """Return the 4x4 fixed-RAS -> moving-RAS affine matrix.

    ``fixed``: (1, I, J, K) normalised intensities on ``fixed_grid``; ``moving``: likewise on
    ``moving_grid`` (any orientation). Both should be in [0, 1]. ``fixed_mask``: optional
    (1, I, J, K) 0/1 on ``fixed_grid``; the similarity then counts only fixed points inside it.
    """
    opts = options or AffineOptions()
    dev, dt = fixed.device, torch.float32
    rng = torch.Generator(device="cpu").manual_seed(opts.seed)
    c_f = centre_of_mass(fixed, fixed_grid).detach()
    c_m = centre_of_mass(moving, moving_grid).detach()
    rot = torch.zeros(3, device=dev, dtype=dt, requires_grad=True)
    gen = torch.zeros(3, 3, device=dev, dtype=dt, requires_grad=True)
    trans = (c_m - c_f).clone().to(dt).requires_grad_(True)

    def matrix() -> torch.Tensor:
        return torch.linalg.matrix_exp(_skew(rot) + gen)

    stages = [("rigid", opts.rigid_iterations)] + ([] if rigid_only else [("affine", opts.affine_iterations)])
    total = sum(sum(its) for _, its in stages)
    done = 0
    for stage, iterations in stages:
        for index, (level_mm, n_iter) in enumerate(zip(opts.levels_mm, iterations)):
            if n_iter <= 0:
                continue
            f_lvl, f_grid = downsample(fixed, fixed_grid, pool_factors(fixed_grid.spacing, level_mm))
            if min(f_grid.shape) < MIN_LEVEL_VOXELS and index < len(opts.levels_mm) - 1:
                done += n_iter  # the pyramid's depth follows the image: a level of a few voxels is skipped
                continue
            m_lvl, m_grid = downsample(moving, moving_grid, pool_factors(moving_grid.spacing, level_mm), zero_margin=True)
            pts = points_ras(f_grid, dev).reshape(-1, 3) - c_f
            f_vals = f_lvl.reshape(1, -1)
            if fixed_mask is not None:
                inside = downsample(fixed_mask, fixed_grid, pool_factors(fixed_grid.spacing, level_mm))[0].reshape(-1) > 0.5
                if int(inside.sum()) >= 64:  # a mask smaller than a few coarse voxels: use every point at this level
                    pts, f_vals = pts[inside], f_vals[:, inside]
            n_pts = pts.shape[0]
            m_in = m_lvl[None]
            # RAS -> grid_sample coordinates (k, j, i order, [-1, 1]) of the moving level, as one affine map
            norm = torch.as_tensor(ras_to_grid_sample(m_grid), dtype=dt, device=dev)
            to_norm_lin, to_norm_off = norm[:3, :3], norm[:3, 3]
            scale = level_mm / max(opts.levels_mm)
            groups = [(trans, opts.lr_translation_mm * max(scale, 0.25)), (rot, opts.lr_matrix * max(scale, 0.25))]
            if stage == "affine":
                groups.append((gen, opts.lr_matrix * 0.5 * max(scale, 0.25)))
            optim = CosineAdam(groups, n_iter, eta_min=0.0)
            for it in range(n_iter):
                optim.zero_grad()
                if n_pts > opts.max_samples:  # a fresh sorted random subset each step (stochastic, like elastix)
                    pick = torch.sort(torch.randint(0, n_pts, (opts.max_samples,), generator=rng))[0].to(dev)
                    p_it, f_it = pts[pick], f_vals[:, pick]
                else:
                    p_it, f_it = pts, f_vals
                q = p_it @ matrix().T + c_f + trans
                moved = torch.nn.functional.grid_sample(m_in, (q @ to_norm_lin.T + to_norm_off).view(1, 1, 1, -1, 3),
                                                        align_corners=True)[0, :, 0, 0]
                loss = _loss(opts.metric, f_it, moved)
                loss.backward()
                if stage == "rigid" and gen.grad is not None:
                    gen.grad = None
                optim.step()
                done += 1
                if progress and it % 10 == 0:
                    progress(done / total, f"{stage} {level_mm:g} mm: loss {loss.item():.4f}")
    with torch.no_grad():
        a = np.eye(4)
        mat = matrix().double().cpu().numpy()
        a[:3, :3] = mat
        a[:3, 3] = (-mat @ c_f.double().cpu().numpy()) + c_f.double().cpu().numpy() + trans.double().cpu().numpy()
    if progress:
        progress(1.0, f"{'rigid' if rigid_only else 'affine'} done")
    return a
