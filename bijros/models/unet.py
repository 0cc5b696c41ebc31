"""A plain VoxelMorph-style U-Net (Balakrishnan et al.), the baseline EOIR must beat.

Shapes::

    fixed, moving: (B, 1, D, H, W)  ->  displacement (B, 3, D, H, W)

in voxel units of the input grid, components ordered (i, j, k) (see :mod:`bijros.models.spatial`).
The input is the channel concatenation ``[moving, fixed]``; the flow convolution is
zero-initialised, so an untrained model returns the identity. Any input size works (each
decoder stage is upsampled to the size of its skip connection).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bijros.models.conv import Conv3d
from bijros.models.eoir import ConvAct
from bijros.models.spatial import integrate


class UNet(nn.Module):
    """VoxelMorph U-Net: strided encoder ``enc``, decoder ``dec`` (the last ``len(dec) - len(enc)`` at full size).

    Args:
        enc: channels of the encoder stages (each halves the size).
        dec: channels of the decoder convolutions.
        diffeomorphic: treat the output as a stationary velocity and integrate it.
        int_steps: scaling and squaring steps.
    """

    def __init__(self, enc: tuple[int, ...] = (16, 32, 32, 32), dec: tuple[int, ...] = (32, 32, 32, 32, 32, 16, 16),
                 diffeomorphic: bool = False, int_steps: int = 7):
        super().__init__()
        enc, dec = tuple(enc), tuple(dec)
        if len(dec) < len(enc):
            raise ValueError("dec needs at least as many stages as enc")
        self.diffeomorphic = diffeomorphic
        self.int_steps = int_steps
        self.down = nn.ModuleList()
        cin = 2
        for c in enc:
            self.down.append(nn.Sequential(Conv3d(cin, c, 3, stride=2, padding=1), nn.LeakyReLU(0.2)))
            cin = c
        skips = [2, *enc[:-1]][::-1]  # channels of the skip joined after each upsampling
        self.up = nn.ModuleList()
        for i, c in enumerate(dec[: len(enc)]):
            self.up.append(ConvAct(cin, c))
            cin = c + skips[i]
        self.extra = nn.ModuleList()
        for c in dec[len(enc):]:
            self.extra.append(ConvAct(cin, c))
            cin = c
        self.flow = Conv3d(cin, 3, 3, padding=1)
        nn.init.zeros_(self.flow.weight)
        nn.init.zeros_(self.flow.bias)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        """(B, 1, D, H, W) fixed and moving -> (B, 3, D, H, W) voxel displacement (i, j, k)."""
        if fixed.shape != moving.shape or fixed.dim() != 5:
            raise ValueError(f"fixed {tuple(fixed.shape)} and moving {tuple(moving.shape)} must both be (B, 1, D, H, W)")
        x = torch.cat([moving, fixed], 1)
        history = [x]
        for layer in self.down:
            x = layer(x)
            history.append(x)
        history.pop()
        for layer in self.up:
            x = layer(x)
            skip = history.pop()
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = torch.cat([x, skip], 1)
        for layer in self.extra:
            x = layer(x)
        flow = self.flow(x)
        return integrate(flow, self.int_steps) if self.diffeomorphic else flow
