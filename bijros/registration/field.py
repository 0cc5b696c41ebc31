"""Total mapping on the fixed grid: composition, resampling of images and labels, Jacobian QC.

The total mapping is ``phi(x) = A @ (x + u(x))`` for fixed RAS points ``x``: ``u`` is the
deformable displacement (RAS mm) on its own (coarse, axis-aligned) grid and ``A`` the
fixed->moving affine.
The stored displacement is ``phi(x) - x`` on the fixed image's own grid.
"""

from __future__ import annotations

import numpy as np
import torch

from bijros.io.image import Image
from bijros.registration.grid import Grid, points_ras, sample


def total_displacement(
    fixed_grid: Grid, affine: np.ndarray, field_mm: torch.Tensor | None, field_grid: Grid | None, device="cpu"
) -> torch.Tensor:
    """``phi(x) - x`` in RAS mm on ``fixed_grid``: (I, J, K, 3) float32.

    ``field_mm`` (1, 3, X, Y, Z) is the deformable displacement on ``field_grid`` (None: affine only).
    """
    x = points_ras(fixed_grid, device)
    y = x
    if field_mm is not None and field_grid is not None:
        u = sample(field_mm[0], field_grid, x, padding_mode="border")  # (3, I, J, K)
        y = x + u.permute(1, 2, 3, 0)
    a = torch.as_tensor(affine, dtype=x.dtype, device=device)
    phi = y @ a[:3, :3].T + a[:3, 3]
    return phi - x


def source_ijk_slabs(source_ijk_to_ras: np.ndarray, fixed_grid: Grid, displacement: torch.Tensor, chunk: int = 32):
    """Yield ``(start, end, ijk)``: source-image voxel coordinates (end - start, J, K, 3) of the fixed
    voxels of slabs ``[start, end)`` along i, sampled at ``x + displacement(x)``.

    ``ijk_src = R (M ijk_fixed + t + d)``: the fixed grid's matrix is folded into one affine, so no
    full-size array of world points is ever built.
    """
    dev = displacement.device
    ras_to_ijk = torch.as_tensor(np.linalg.inv(source_ijk_to_ras), dtype=torch.float32, device=dev)
    m = torch.as_tensor(fixed_grid.ijk_to_ras, dtype=torch.float32, device=dev)
    lin = ras_to_ijk[:3, :3] @ m[:3, :3]
    off = ras_to_ijk[:3, :3] @ m[:3, 3] + ras_to_ijk[:3, 3]
    ni, nj, nk = fixed_grid.shape
    jj, kk = torch.meshgrid(torch.arange(nj, device=dev), torch.arange(nk, device=dev), indexing="ij")
    for s in range(0, ni, chunk):
        e = min(s + chunk, ni)
        ii = torch.arange(s, e, device=dev, dtype=torch.float32)[:, None, None].expand(-1, nj, nk)
        ijk_f = torch.stack([ii, jj.expand(e - s, -1, -1).float(), kk.expand(e - s, -1, -1).float()], -1)
        yield s, e, ijk_f @ lin.T + off + displacement[s:e] @ ras_to_ijk[:3, :3].T


def warp_image(moving: Image, fixed_grid: Grid, displacement: torch.Tensor, chunk: int = 32) -> np.ndarray:
    """Trilinear resampling of ``moving`` at ``x + displacement`` (slab by slab to bound memory; 0 outside)."""
    dev = displacement.device
    vol = torch.as_tensor(np.asarray(moving.array, dtype=np.float32), device=dev)[None, None]
    size = torch.tensor([max(n - 1, 1) for n in moving.shape], device=dev, dtype=torch.float32)
    out = torch.empty(fixed_grid.shape, dtype=torch.float32, device=dev)
    for s, e, ijk in source_ijk_slabs(moving.ijk_to_ras, fixed_grid, displacement, chunk):
        coords = (2.0 * ijk / size - 1.0).flip(-1)  # grid_sample order (k, j, i), align_corners=True
        out[s:e] = torch.nn.functional.grid_sample(vol, coords[None], mode="bilinear", padding_mode="zeros",
                                                   align_corners=True)[0, 0]
    return out.cpu().numpy()


def warp_labels(labels: Image, fixed_grid: Grid, displacement: torch.Tensor, chunk: int = 32) -> np.ndarray:
    """Label resampling equal to trilinear one-hot interpolation + argmax, without one-hot volumes.

    For every output voxel the 8 surrounding source voxels vote with their trilinear
    weights; the label with the largest summed weight wins (0 outside the source). Where
    all 8 agree (most voxels) the vote is skipped.
    """
    dev = displacement.device
    src = torch.as_tensor(np.asarray(labels.array, dtype=np.int32), device=dev)
    padded = torch.nn.functional.pad(src, (1, 1, 1, 1, 1, 1))  # zero border: outside reads label 0
    n = torch.tensor(src.shape, device=dev)
    out = torch.zeros(fixed_grid.shape, dtype=torch.int32, device=dev)
    ps = padded.shape
    strides = torch.tensor([ps[1] * ps[2], ps[2], 1], device=dev)
    corners = torch.tensor([[(c >> 2) & 1, (c >> 1) & 1, c & 1] for c in range(8)], device=dev)
    corner_offsets = (corners * strides).sum(-1)
    flat = padded.reshape(-1)
    for s, e, slab in source_ijk_slabs(labels.ijk_to_ras, fixed_grid, displacement, chunk):
        ijk = slab.reshape(-1, 3)
        base = torch.floor(ijk)
        frac = ijk - base
        base = base.long()
        far = ((base < -1) | (base > n - 1)).any(-1)
        first = ((base + 1).clamp(min=0).minimum(n) * strides).sum(-1)
        lab = flat[first[:, None] + corner_offsets]  # (N, 8)
        result = torch.where(far, 0, lab[:, 0])
        mixed = (lab != lab[:, :1]).any(1) & ~far
        if mixed.any():
            lm = lab[mixed]
            fm = frac[mixed][:, None, :]
            w = torch.prod(torch.where(corners.bool(), fm, 1 - fm), dim=-1)  # (M, 8)
            score = ((lm[:, :, None] == lm[:, None, :]) * w[:, None, :]).sum(-1)
            result[mixed] = torch.gather(lm, 1, score.argmax(1, keepdim=True))[:, 0]
        out[s:e] = result.view(slab.shape[:3])
    return out.cpu().numpy()


def jacobian_determinant(displacement: np.ndarray, ijk_to_ras: np.ndarray) -> np.ndarray:
    """det(d phi / d x) for phi(x) = x + displacement(x), on a grid with ``ijk_to_ras``.

    Central differences in index space, converted to physical derivatives with the
    inverse of the grid's 3x3 direction-spacing matrix. Returns (I, J, K) float32.
    """
    d = torch.as_tensor(displacement, dtype=torch.float32)  # (I, J, K, 3)
    grads = torch.stack(torch.gradient(d, dim=(0, 1, 2)), dim=-1)  # (I,J,K,3 comp,3 ijk)
    inv = torch.as_tensor(np.linalg.inv(ijk_to_ras[:3, :3]), dtype=torch.float32)  # ijk per mm
    j = grads @ inv + torch.eye(3)
    del grads
    # explicit 3x3 determinant: much faster than batched linalg.det on millions of small matrices
    det = (
        j[..., 0, 0] * (j[..., 1, 1] * j[..., 2, 2] - j[..., 1, 2] * j[..., 2, 1])
        - j[..., 0, 1] * (j[..., 1, 0] * j[..., 2, 2] - j[..., 1, 2] * j[..., 2, 0])
        + j[..., 0, 2] * (j[..., 1, 0] * j[..., 2, 1] - j[..., 1, 1] * j[..., 2, 0])
    )
    return det.numpy()


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
