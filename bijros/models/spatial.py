"""Batched warping for the learned models (voxelmorph's SpatialTransformer / VecInt, functional).

Conventions (the same as :mod:`bijros.registration.deformable`): a displacement is a ``(B, 3, D, H, W)``
tensor in voxel units of its own grid, components ordered (i, j, k) like the array axes
(D, H, W); the moving image is sampled at ``x + u(x)`` (resampling convention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def identity_grid(shape: tuple[int, ...], device, dtype=torch.float32) -> torch.Tensor:
    """grid_sample identity coordinates ``(D, H, W, 3)`` ordered (k, j, i), ``align_corners=True``."""
    theta = torch.eye(3, 4, device=device, dtype=dtype)[None]
    return F.affine_grid(theta, [1, 1, *shape], align_corners=True)[0]


def voxel_to_normalized(disp: torch.Tensor) -> torch.Tensor:
    """(B, 3, D, H, W) voxel displacement -> (B, D, H, W, 3) grid_sample offsets in (k, j, i) order."""
    size = torch.tensor([max(s - 1, 1) for s in disp.shape[2:]], device=disp.device, dtype=disp.dtype)
    return (disp.permute(0, 2, 3, 4, 1) * (2.0 / size)).flip(-1)


def warp(volume: torch.Tensor, disp: torch.Tensor, mode: str = "bilinear",
         padding_mode: str = "border") -> torch.Tensor:
    """Sample ``volume`` (B, C, D, H, W) at ``x + disp(x)``; ``disp`` (B, 3, D, H, W) -> (B, C, D, H, W)."""
    base = identity_grid(tuple(disp.shape[2:]), disp.device, disp.dtype)
    grid = base[None] + voxel_to_normalized(disp)
    return F.grid_sample(volume.to(disp.dtype), grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def integrate(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """Scaling and squaring of a stationary velocity (B, 3, D, H, W) -> displacement, same shape."""
    disp = velocity / (2**steps)
    for _ in range(steps):
        disp = disp + warp(disp, disp)
    return disp


def compose(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Displacement of ``x -> x + first(x)`` followed by the lookup ``second``: ``first + second∘(id+first)``.

    With the resampling convention, warping by ``compose(delta, u)`` equals warping by ``u`` then by ``delta``
    (``m∘(id+u)∘(id+delta)``): the coarse-to-fine update of an estimate ``u`` by a refinement ``delta``.
    """
    return first + warp(second, first)


def resize_displacement(disp: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Trilinear resize of a voxel displacement (B, 3, d, h, w) to ``shape``, rescaling each component.

    With ``align_corners=True`` voxel ``n-1`` maps to ``N-1``, so component i scales by (N_i-1)/(n_i-1).
    """
    if tuple(disp.shape[2:]) == tuple(shape):
        return disp
    out = F.interpolate(disp, size=tuple(shape), mode="trilinear", align_corners=True)
    scale = [(n - 1) / max(o - 1, 1) for n, o in zip(shape, disp.shape[2:])]
    return out * torch.tensor(scale, device=disp.device, dtype=disp.dtype).view(1, 3, 1, 1, 1)
