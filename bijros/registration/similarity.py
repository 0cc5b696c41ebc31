"""Image similarity terms and MIND-SSC features (all separable box filters: no k^3 kernels).

Tensors are ``(1, C, D, H, W)``; losses return scalars where *lower is better*.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def box_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Separable mean filter of odd ``size`` with replicate padding; (N, C, D, H, W) -> same.

    Implemented as shifted adds (3x faster than ``avg_pool3d`` on CPU, forward and backward).
    """
    if size <= 1:
        return x
    r = size // 2
    x = F.pad(x, (r, r, r, r, r, r), mode="replicate")
    for dim in (2, 3, 4):
        n = x.shape[dim] - 2 * r
        acc = x.narrow(dim, 0, n)
        for k in range(1, size):
            acc = acc + x.narrow(dim, k, n)
        x = acc / size
    return x


def ncc_loss(fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """1 - global normalised cross-correlation."""
    f, m = fixed - fixed.mean(), moving - moving.mean()
    return 1 - (f * m).mean() / torch.sqrt((f * f).mean() * (m * m).mean() + 1e-8)


def lncc_loss(fixed: torch.Tensor, moving: torch.Tensor, window: int = 7, eps: float = 1e-4) -> torch.Tensor:
    """1 - mean squared local NCC over ``window``^3 neighbourhoods (ANTs' CC flavour)."""
    stats = box_filter(torch.cat([fixed, moving, fixed * fixed, moving * moving, fixed * moving], 1), window)
    mf, mm, ff, mmm, fm = stats.split(fixed.shape[1], dim=1)
    cross = fm - mf * mm
    var_f = (ff - mf * mf).clamp_min(0)
    var_m = (mmm - mm * mm).clamp_min(0)
    cc = cross * cross / (var_f * var_m + eps)
    return 1 - cc.mean()


def mi_loss(fixed: torch.Tensor, moving: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """Negative normalised mutual information, joint histogram by linear (triangular) Parzen
    windows: differentiable, and with no exponentials much cheaper than Gaussian windows.
    Inputs are in [0, 1]."""
    f = fixed.reshape(-1).clamp(0, 1)
    m = moving.reshape(-1).clamp(0, 1)
    if f.numel() > 200_000:  # a fixed random subset keeps each step cheap
        gen = torch.Generator(device="cpu").manual_seed(f.numel())
        idx = torch.randint(0, f.numel(), (200_000,), generator=gen).to(f.device)
        f, m = f[idx], m[idx]
    centres = torch.linspace(0, 1, bins, device=f.device, dtype=f.dtype)
    width = 1.0 / (bins - 1)
    wf = torch.relu(1 - (f[:, None] - centres).abs() / width)  # each sample feeds its 2 nearest bins
    wm = torch.relu(1 - (m[:, None] - centres).abs() / width)
    joint = wf.T @ wm / f.numel()
    pf, pm = joint.sum(1), joint.sum(0)
    hf = -(pf * torch.log(pf + 1e-10)).sum()
    hm = -(pm * torch.log(pm + 1e-10)).sum()
    hj = -(joint * torch.log(joint + 1e-10)).sum()
    return -(hf + hm) / hj


def mind_ssc(image: torch.Tensor, radius: int = 1, dilation: int = 2) -> torch.Tensor:
    """MIND-SSC descriptor (Heinrich et al. 2013): (1, 1, D, H, W) -> (1, 12, D, H, W).

    Self-similarity over the 12 edges of a 6-neighbourhood, patch distances by a separable
    box filter of size 2*radius+1, normalised by their local variance.
    """
    d = dilation
    six = torch.tensor([[0, 1, 1], [1, 1, 0], [1, 0, 1], [1, 1, 2], [2, 1, 1], [1, 2, 1]], device=image.device)
    dist = ((six[:, None, :] - six[None, :, :]) ** 2).sum(-1)
    i, j = torch.triu_indices(6, 6, offset=1, device=image.device)
    keep = dist[i, j] == 2
    pairs = torch.stack([i[keep], j[keep]], 1)  # 12 pairs
    padded = F.pad(image, (d, d, d, d, d, d), mode="replicate")
    D, H, W = image.shape[2:]

    def shifted(k: int) -> torch.Tensor:
        o = six[k] * d
        return padded[:, :, o[0] : o[0] + D, o[1] : o[1] + H, o[2] : o[2] + W]

    shifts = {k: shifted(k) for k in range(6)}
    ssd = torch.cat([(shifts[int(a)] - shifts[int(b)]) ** 2 for a, b in pairs], 1)
    ssd = box_filter(ssd, 2 * radius + 1)
    ssd = ssd - ssd.min(1, keepdim=True)[0]
    var = ssd.mean(1, keepdim=True)
    var = var.clamp(var.mean() * 0.001, var.mean() * 1000)
    mind = torch.exp(-ssd / var)
    return mind / mind.max(1, keepdim=True)[0].clamp_min(1e-8)


def diffusion_penalty(field: torch.Tensor) -> torch.Tensor:
    """Mean squared forward difference of a (1, 3, D, H, W) field (voxel units)."""
    dz = field[:, :, 1:] - field[:, :, :-1]
    dy = field[:, :, :, 1:] - field[:, :, :, :-1]
    dx = field[:, :, :, :, 1:] - field[:, :, :, :, :-1]
    return (dz * dz).mean() + (dy * dy).mean() + (dx * dx).mean()


def bending_penalty(field: torch.Tensor) -> torch.Tensor:
    """Mean squared second differences (pure terms) of a (1, 3, D, H, W) field."""
    d2z = field[:, :, 2:] - 2 * field[:, :, 1:-1] + field[:, :, :-2]
    d2y = field[:, :, :, 2:] - 2 * field[:, :, :, 1:-1] + field[:, :, :, :-2]
    d2x = field[:, :, :, :, 2:] - 2 * field[:, :, :, :, 1:-1] + field[:, :, :, :, :-2]
    return (d2z * d2z).mean() + (d2y * d2y).mean() + (d2x * d2x).mean()
