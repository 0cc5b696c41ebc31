"""EOIR: encoder-only image registration (after Chen et al., "Encoder-Only Image Registration").

A tiny convolutional encoder, shared by the fixed and the moving image, runs once at full
resolution; its features are average-pooled into a pyramid. From the coarsest level to the
finest, a small flow estimator looks at ``[y + x, y - x]`` (fixed features ``y``, moving
features ``x`` warped by the current estimate) and the current estimate, and predicts a
refinement (optionally a stationary velocity integrated by scaling and squaring), which is
composed with the estimate upsampled from the coarser level.

Shapes::

    fixed, moving: (B, 1, D, H, W)  ->  displacement (B, 3, D, H, W)

in voxel units of the input grid, components ordered (i, j, k) like the array axes (the
convention of :mod:`bijros.registration.deformable`): the moving image is sampled at ``x + u(x)``. Every
flow head's last convolution starts at zero, so an untrained model returns the identity.
Any input size works (the pyramid uses ``ceil_mode`` pooling and size-matched upsampling).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bijros.models.conv import Conv3d
from bijros.models.spatial import compose, integrate, resize_displacement, warp


class ConvAct(nn.Sequential):
    """Conv3d(k=3, same padding) + instance norm (optional) + LeakyReLU(0.2): (B, Cin, ...) -> (B, Cout, ...)."""

    def __init__(self, cin: int, cout: int, norm: bool = False):
        layers: list[nn.Module] = [Conv3d(cin, cout, 3, padding=1)]
        if norm:
            layers.append(nn.InstanceNorm3d(cout, affine=True))
        layers.append(nn.LeakyReLU(0.2))
        super().__init__(*layers)


class Encoder(nn.Sequential):
    """Shared full-resolution encoder: (B, 1, D, H, W) -> (B, channels, D, H, W)."""

    def __init__(self, channels: int = 16, depth: int = 3, norm: bool = True):
        layers = [ConvAct(1, channels, norm)] + [ConvAct(channels, channels, norm) for _ in range(depth - 1)]
        super().__init__(*layers)


class FlowHead(nn.Module):
    """Flow estimator of one level: ``[y + x, y - x, u]`` (B, 2C + 3, ...) -> refinement (B, 3, ...).

    The last convolution is zero-initialised (weights and bias): the refinement starts at 0.
    """

    def __init__(self, channels: int, hidden: int = 32, layers: int = 2):
        super().__init__()
        blocks = [ConvAct(2 * channels + 3, hidden)] + [ConvAct(hidden, hidden) for _ in range(layers - 1)]
        self.body = nn.Sequential(*blocks)
        self.out = Conv3d(hidden, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def hidden(self, fixed_feat: torch.Tensor, warped_feat: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """The estimator's hidden features (B, hidden, ...), before the last convolution."""
        return self.body(torch.cat([fixed_feat + warped_feat, fixed_feat - warped_feat, flow], 1))

    def forward(self, fixed_feat: torch.Tensor, warped_feat: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(fixed_feat, warped_feat, flow))


def feature_pyramid(features: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Average-pooled pyramid, finest first: [(B, C, D, H, W), (B, C, ceil(D/2), ...), ...]."""
    pyramid = [features]
    for _ in range(levels - 1):
        pyramid.append(F.avg_pool3d(pyramid[-1], 2, stride=2, ceil_mode=True))
    return pyramid


class EOIR(nn.Module):
    """Encoder-only registration network. See the module docstring for shapes and conventions.

    Args:
        channels: encoder feature channels.
        encoder_depth: convolutions in the shared encoder.
        levels: pyramid levels (1 = full resolution only).
        head_channels, head_layers: width and depth of each level's flow estimator.
        diffeomorphic: integrate each level's refinement (a velocity) by scaling and squaring.
        int_steps: scaling and squaring steps.
        norm: instance normalisation in the encoder (contrast robustness).
    """

    def __init__(self, channels: int = 16, encoder_depth: int = 3, levels: int = 4, head_channels: int = 32,
                 head_layers: int = 2, diffeomorphic: bool = True, int_steps: int = 5, norm: bool = True):
        super().__init__()
        self.levels = levels
        self.diffeomorphic = diffeomorphic
        self.int_steps = int_steps
        self.encoder = Encoder(channels, encoder_depth, norm)
        self.heads = nn.ModuleList(FlowHead(channels, head_channels, head_layers) for _ in range(levels))

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        """(B, 1, D, H, W) fixed and moving -> (B, 3, D, H, W) voxel displacement (i, j, k)."""
        if fixed.shape != moving.shape or fixed.dim() != 5:
            raise ValueError(f"fixed {tuple(fixed.shape)} and moving {tuple(moving.shape)} must both be (B, 1, D, H, W)")
        return self.coarse_to_fine(fixed, moving, lambda level, y, warped, flow: self.heads[level](y, warped, flow))

    def coarse_to_fine(self, fixed: torch.Tensor, moving: torch.Tensor, refine) -> torch.Tensor:
        """The pyramid loop: ``refine(level, fixed_feat, warped_feat, flow)`` gives each level's refinement
        (integrated when diffeomorphic), composed with the estimate upsampled from the coarser level."""
        feats = self.encoder(torch.cat([fixed, moving], 0))
        pyr_f = feature_pyramid(feats[: fixed.shape[0]], self.levels)
        pyr_m = feature_pyramid(feats[fixed.shape[0]:], self.levels)
        flow: torch.Tensor | None = None
        for level in reversed(range(self.levels)):
            y, x = pyr_f[level], pyr_m[level]
            shape = tuple(y.shape[2:])
            flow = y.new_zeros((y.shape[0], 3, *shape)) if flow is None else resize_displacement(flow, shape)
            warped = warp(x, flow) if level < self.levels - 1 else x
            delta = refine(level, y, warped, flow)
            if self.diffeomorphic:
                delta = integrate(delta, self.int_steps)
            flow = compose(delta, flow)
        assert flow is not None
        return flow
