"""Geometry helpers in torch: voxel grids, resampling between world grids, pyramids.

Shapes: volumes are ``(C, I, J, K)`` or ``(1, C, I, J, K)`` tensors indexed like the
numpy arrays of :class:`bijros.io.image.Image`; points are ``(..., 3)`` RAS millimetres.
torch's ``grid_sample`` wants its last coordinate axis ordered (k, j, i) and normalised
to [-1, 1] with ``align_corners=True`` (voxel 0 -> -1, voxel N-1 -> +1).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class Grid:
    """A voxel grid: shape (I, J, K) and its 4x4 ijk->RAS matrix."""

    shape: tuple[int, int, int]
    ijk_to_ras: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def num_voxels(self) -> int:
        return int(np.prod(self.shape))


def points_ras(grid: Grid, device: torch.device | str = "cpu", dtype=torch.float32) -> torch.Tensor:
    """RAS position of every voxel centre of ``grid``, shape (I, J, K, 3)."""
    axes = [torch.arange(n, device=device, dtype=dtype) for n in grid.shape]
    ii, jj, kk = torch.meshgrid(*axes, indexing="ij")
    m = torch.as_tensor(grid.ijk_to_ras, device=device, dtype=dtype)
    return (
        ii[..., None] * m[:3, 0] + jj[..., None] * m[:3, 1] + kk[..., None] * m[:3, 2] + m[:3, 3]
    )


def slab_points(grid: Grid, voxels: int, device: torch.device | str = "cpu"):
    """Yield ``(start, end, points)`` for slabs ``[start, end)`` along i of about ``voxels`` voxels each (at least
    one slice): ``points`` the RAS voxel centres of the slab, (end - start, J, K, 3)."""
    ni, nj, nk = grid.shape
    step = max(1, voxels // max(1, nj * nk))
    for s in range(0, ni, step):
        e = min(s + step, ni)
        shift = np.eye(4)
        shift[0, 3] = s
        yield s, e, points_ras(Grid((e - s, nj, nk), grid.ijk_to_ras @ shift), device)


def ras_to_grid_sample(grid: Grid) -> np.ndarray:
    """4x4 mapping RAS points to ``grid_sample`` coordinates of ``grid``: ordered (k, j, i), [-1, 1]."""
    size = np.array([max(n - 1, 1) for n in grid.shape], float)
    scale = np.eye(4)
    scale[:3, :3] = np.diag(2.0 / size)
    scale[:3, 3] = -1.0
    flip = np.eye(4)[[2, 1, 0, 3]]
    return flip @ scale @ np.linalg.inv(grid.ijk_to_ras)


def ras_to_normalized(points: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Map RAS points (..., 3) to grid_sample coordinates (..., 3) ordered (k, j, i)."""
    m = torch.as_tensor(ras_to_grid_sample(grid), device=points.device, dtype=points.dtype)
    return points @ m[:3, :3].T + m[:3, 3]


def sample(
    volume: torch.Tensor,
    grid: Grid,
    points: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Sample ``volume`` (C, I, J, K) living on ``grid`` at RAS ``points`` (X, Y, Z, 3) -> (C, X, Y, Z)."""
    coords = ras_to_normalized(points, grid)
    out = F.grid_sample(
        volume[None].to(coords.dtype), coords[None], mode=mode, padding_mode=padding_mode, align_corners=True
    )
    return out[0]


def identity_normalized(shape: tuple[int, int, int], device, dtype=torch.float32) -> torch.Tensor:
    """grid_sample identity coordinates for a volume of ``shape``: (I, J, K, 3) in (k, j, i) order."""
    theta = torch.eye(3, 4, device=device, dtype=dtype)[None]
    return F.affine_grid(theta, [1, 1, *shape], align_corners=True)[0]


def downsample(
    volume: torch.Tensor, grid: Grid, factors: tuple[int, int, int], zero_margin: bool = False
) -> tuple[torch.Tensor, Grid]:
    """Average-pool a (C, I, J, K) volume by integer ``factors`` and return the matching grid.

    ``zero_margin`` pads ``factors`` voxels of zeros on every side first, so the world outside
    the image counts as 0, the same way resampling onto a larger grid treats it; otherwise the
    last partial block is filled by replicating the edge.
    """
    if all(f == 1 for f in factors) and not zero_margin:
        return volume, grid
    shift = np.zeros(3)
    if zero_margin:
        f0, f1, f2 = factors
        volume = F.pad(volume[None], (f2, f2, f1, f1, f0, f0))[0]
        shift = -np.array(factors, float)
    pad = [0, (-volume.shape[3]) % factors[2], 0, (-volume.shape[2]) % factors[1], 0, (-volume.shape[1]) % factors[0]]
    padded = F.pad(volume[None], pad, mode="constant" if zero_margin else "replicate")
    pooled = F.avg_pool3d(padded, kernel_size=factors, stride=factors)[0]
    scale = np.eye(4)
    scale[:3, :3] = np.diag(factors)
    scale[:3, 3] = (np.array(factors) - 1) / 2.0 + shift
    return pooled, Grid(tuple(pooled.shape[1:]), grid.ijk_to_ras @ scale)


def pool_factors(spacing: np.ndarray, target_mm: float) -> tuple[int, int, int]:
    """Integer pooling factors bringing ``spacing`` close to (not above) ``target_mm``."""
    return tuple(max(1, math.floor(target_mm / s + 1e-6)) for s in spacing)  # type: ignore[return-value]


def lattice_map(src: Grid, dst: Grid) -> tuple[np.ndarray, np.ndarray] | None:
    """When every voxel centre of ``dst`` is a voxel centre of ``src`` (same spacing, axes a signed
    permutation, integer offset): (perm, offset) with ``src_ijk = P @ dst_ijk + offset``; else None."""
    t = np.linalg.inv(src.ijk_to_ras) @ dst.ijk_to_ras
    lin, off = t[:3, :3], t[:3, 3]
    rounded = np.round(lin)
    if not np.allclose(lin, rounded, atol=1e-6) or not np.allclose(off, np.round(off), atol=1e-4):
        return None
    if sorted(np.abs(rounded).sum(0).tolist()) != [1.0, 1.0, 1.0] or sorted(np.abs(rounded).sum(1).tolist()) != [1.0, 1.0, 1.0]:
        return None
    return rounded.astype(int), np.round(off).astype(int)


def resample_to_grid(volume: torch.Tensor, src: Grid, dst: Grid) -> torch.Tensor:
    """``volume`` (C, I, J, K) on ``src`` resampled at the voxel centres of ``dst`` (trilinear, 0 outside):
    an exact copy by indexing when ``dst``'s voxels lie on ``src``'s lattice, else ``grid_sample``."""
    mapping = lattice_map(src, dst)
    if mapping is None:
        return sample(volume, src, points_ras(dst, volume.device))
    perm, off = mapping
    volume = volume.to(torch.float32)  # as sample() returns
    out = torch.zeros((volume.shape[0], *dst.shape), dtype=torch.float32, device=volume.device)
    index = []
    for a in range(3):  # src axis a is driven by dst axis b with sign sgn: src_a = sgn * dst_b + off_a
        b = int(np.nonzero(perm[a])[0][0])
        index.append((b, int(perm[a, b]), int(off[a])))
    # for every dst axis b: the dst index range whose src index is inside the source
    src_slices, dst_slices = [slice(None)] * 3, [slice(None)] * 3
    order = [0] * 3
    flips = []
    for a, (b, sgn, o) in enumerate(index):
        n_src, n_dst = volume.shape[1 + a], dst.shape[b]
        d = np.arange(n_dst)
        valid = d[(sgn * d + o >= 0) & (sgn * d + o < n_src)]
        if valid.size == 0:
            return out
        lo, hi = int(valid[0]), int(valid[-1])
        dst_slices[b] = slice(lo, hi + 1)
        s0, s1 = sorted((sgn * lo + o, sgn * hi + o))
        src_slices[a] = slice(s0, s1 + 1)
        order[b] = a
        if sgn < 0:
            flips.append(b)
    block = volume[(slice(None), *src_slices)].permute(0, *[1 + a for a in order])
    if flips:
        block = block.flip([1 + b for b in flips])
    out[(slice(None), *dst_slices)] = block
    return out
