"""Total mapping on the fixed grid: composition, resampling of images and labels, Jacobian QC.

The total mapping is ``phi(x) = A @ (x + u(x))`` for fixed RAS points ``x``: ``u`` is the
deformable displacement (RAS mm) on the working grid and ``A`` the fixed->moving affine.
The stored displacement is ``phi(x) - x`` on the fixed image's own grid.
"""

from __future__ import annotations

import numpy as np
import torch

from bijros.image import Image
from bijros.spatial import Grid, points_ras, sample


def total_displacement(
    fixed_grid: Grid, affine: np.ndarray, disp_work_mm: torch.Tensor | None, work_grid: Grid | None, device="cpu"
) -> torch.Tensor:
    """``phi(x) - x`` in RAS mm on ``fixed_grid``: (I, J, K, 3) float32."""
    x = points_ras(fixed_grid, device)
    y = x
    if disp_work_mm is not None and work_grid is not None:
        u = sample(disp_work_mm[0], work_grid, x, padding_mode="border")  # (3, I, J, K)
        y = x + u.permute(1, 2, 3, 0)
    a = torch.as_tensor(affine, dtype=x.dtype, device=device)
    phi = y @ a[:3, :3].T + a[:3, 3]
    return phi - x


def warp_image(moving: Image, fixed_grid: Grid, displacement: torch.Tensor, chunk: int = 32) -> np.ndarray:
    """Trilinear resampling of ``moving`` at ``x + displacement`` (slab by slab to bound memory)."""
    vol = torch.as_tensor(np.asarray(moving.array, dtype=np.float32), device=displacement.device)[None]
    m_grid = Grid(moving.shape, moving.ijk_to_ras)
    x = points_ras(fixed_grid, displacement.device)
    out = torch.empty(fixed_grid.shape, dtype=torch.float32, device=displacement.device)
    for s in range(0, fixed_grid.shape[0], chunk):
        pts = x[s : s + chunk] + displacement[s : s + chunk]
        out[s : s + chunk] = sample(vol, m_grid, pts)[0]
    return out.cpu().numpy()


def warp_labels(labels: Image, fixed_grid: Grid, displacement: torch.Tensor, chunk: int = 16) -> np.ndarray:
    """Label resampling equal to trilinear one-hot interpolation + argmax, without one-hot volumes.

    For every output voxel the 8 surrounding source voxels vote with their trilinear
    weights; the label with the largest summed weight wins (0 outside the source).
    """
    dev = displacement.device
    src = torch.as_tensor(np.asarray(labels.array, dtype=np.int64), device=dev)
    shape = torch.tensor(src.shape, device=dev)
    ras_to_ijk = torch.as_tensor(np.linalg.inv(labels.ijk_to_ras), dtype=torch.float32, device=dev)
    x = points_ras(fixed_grid, dev)
    out = torch.empty(fixed_grid.shape, dtype=torch.int64, device=dev)
    strides = torch.tensor([src.shape[1] * src.shape[2], src.shape[2], 1], device=dev)
    flat = src.reshape(-1)
    for s in range(0, fixed_grid.shape[0], chunk):
        pts = x[s : s + chunk] + displacement[s : s + chunk]
        ijk = pts @ ras_to_ijk[:3, :3].T + ras_to_ijk[:3, 3]
        base = torch.floor(ijk)
        frac = ijk - base
        base = base.long()
        votes_l, votes_w = [], []
        for corner in range(8):
            off = torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1], device=dev)
            idx = base + off
            w = torch.prod(torch.where(off.bool(), frac, 1 - frac), dim=-1)
            inside = ((idx >= 0) & (idx < shape)).all(-1)
            lab = flat[(idx.clamp(min=0).minimum(shape - 1) * strides).sum(-1)]
            votes_l.append(torch.where(inside, lab, torch.zeros_like(lab)))
            votes_w.append(w)
        lab = torch.stack(votes_l, -1)
        wts = torch.stack(votes_w, -1)
        score = ((lab[..., :, None] == lab[..., None, :]) * wts[..., None, :]).sum(-1)
        out[s : s + chunk] = torch.gather(lab, -1, score.argmax(-1, keepdim=True))[..., 0]
    return out.cpu().numpy()


def jacobian_determinant(displacement: np.ndarray, ijk_to_ras: np.ndarray) -> np.ndarray:
    """det(d phi / d x) for phi(x) = x + displacement(x), on a grid with ``ijk_to_ras``.

    Central differences in index space, converted to physical derivatives with the
    inverse of the grid's 3x3 direction-spacing matrix. Returns (I, J, K) float32.
    """
    d = torch.as_tensor(displacement, dtype=torch.float32)  # (I, J, K, 3)
    grads = torch.stack(torch.gradient(d, dim=(0, 1, 2)), dim=-1)  # (I,J,K,3 comp,3 ijk)
    inv = torch.as_tensor(np.linalg.inv(ijk_to_ras[:3, :3]), dtype=torch.float32)  # ijk per mm
    jac = grads @ inv + torch.eye(3)
    return torch.linalg.det(jac).numpy()


def folding_stats(jac: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Folding fraction (|J| <= 0) and SDlogJ (std of log J, J clipped at 1e-9)."""
    values = jac[mask] if mask is not None else jac.ravel()
    log_j = np.log(np.clip(values, 1e-9, None))
    return {
        "folding_fraction": float(np.mean(values <= 0)),
        "sdlogj": float(np.std(log_j)),
        "jacobian_min": float(values.min()),
        "jacobian_max": float(values.max()),
    }
