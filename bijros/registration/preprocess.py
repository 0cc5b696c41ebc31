"""Input checks, robust intensity normalisation and the canonical working grid."""

from __future__ import annotations

import numpy as np

from bijros.errors import InputError
from bijros.io.image import Image
from bijros.registration.grid import Grid


def check_intensity_image(image: Image, what: str) -> None:
    """Refuse images a registration cannot use: NaN/inf, empty or constant."""
    arr = image.array
    if arr.size == 0:
        raise InputError(f"The {what} image '{image.name}' has no voxels.")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise InputError(
            f"The {what} image '{image.name}' contains {bad} NaN or infinite voxels; "
            "fix or mask them (e.g. replace with 0) before registering."
        )
    lo, hi = float(arr.min()), float(arr.max())
    if hi == lo:
        kind = "empty (all zero)" if hi == 0 else f"constant (every voxel is {hi:g})"
        raise InputError(f"The {what} image '{image.name}' is {kind}; there is nothing to register. Check the file.")


def robust_normalize(array: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Scale intensities so the [low, high] percentiles of the non-background voxels map to [0, 1]."""
    arr = np.asarray(array)
    background = np.min(arr)
    # percentiles of a regular subsample (every n-th voxel, ~1 M) are enough and much faster
    step = max(1, arr.size // 1_000_000)
    thin = arr.reshape(-1)[::step]
    foreground = thin[thin > background]
    sample = foreground if foreground.size > 100 else thin
    lo, hi = np.percentile(sample, [low_pct, high_pct])
    if foreground.size > 100:
        lo = min(lo, background)  # keep background at 0 (skull-stripped MRI, CT air)
    if hi <= lo:
        hi = lo + 1.0
    out = arr.astype(np.float32)  # a new array, then in place: fresh large buffers are slow to fill
    out -= np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def foreground_bbox_ras(image: Image, normalized: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """Bounding box (2, 3) in RAS of voxels above ``threshold`` (whole image if none)."""
    mask = normalized > threshold
    if mask.sum() < 27:
        mask = np.ones_like(mask)
    idx = [np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0] for ax in range(3)]
    lo = np.array([i[0] for i in idx], float)
    hi = np.array([i[-1] for i in idx], float)
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    ras = corners @ image.ijk_to_ras[:3, :3].T + image.ijk_to_ras[:3, 3]
    return np.stack([ras.min(0), ras.max(0)])


def working_grid(
    fixed: Image, fixed_normalized: np.ndarray, spacing_mm: float, multiple: int = 8, margin_mm: float = 10.0
) -> Grid:
    """Axis-aligned RAS grid (i->R, j->A, k->S) covering the fixed foreground plus a margin.

    The size along each axis is padded to a multiple of ``multiple`` voxels (network and
    pyramid friendly); the box stays centred on the foreground (to within half a voxel: an axis-aligned
    image at the working spacing gets a grid on its own voxel lattice).
    """
    bbox = foreground_bbox_ras(fixed, fixed_normalized)
    full = np.stack([fixed.corners_ras().min(0), fixed.corners_ras().max(0)])
    lo = np.maximum(bbox[0] - margin_mm, full[0] - spacing_mm)
    hi = np.minimum(bbox[1] + margin_mm, full[1] + spacing_mm)
    extent = hi - lo
    n = np.ceil(extent / spacing_mm).astype(int) + 1
    n = (np.ceil(n / multiple) * multiple).astype(int)
    n = np.maximum(n, multiple)
    centre = (lo + hi) / 2.0
    origin = centre - (n - 1) * spacing_mm / 2.0
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] *= spacing_mm
    ijk_to_ras[:3, 3] = origin
    # an axis-aligned image at the working spacing: put the grid on its voxel lattice (at most half a
    # voxel away), so resampling onto it is an exact copy (grid.resample_to_grid) instead of interpolation
    t = np.linalg.inv(fixed.ijk_to_ras) @ ijk_to_ras
    if np.allclose(t[:3, :3], np.round(t[:3, :3]), atol=1e-6) and np.allclose(np.abs(np.round(t[:3, :3])).sum(0), 1):
        ijk_to_ras[:3, 3] = (fixed.ijk_to_ras @ np.append(np.round(t[:3, 3]), 1.0))[:3]
    return Grid(tuple(int(x) for x in n), ijk_to_ras)  # type: ignore[arg-type]
