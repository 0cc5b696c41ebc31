"""Bi-JROS's joint network (after Fan et al., CVPR 2024): one shared 3D U-Net encoder, a registration decoder
and a segmentation decoder. BRBS (He et al., TNNLS 2022) uses two separate networks; ``separate=True`` gives
the segmentation decoder its own encoder, so the same class holds both recipes.

Shapes::

    encode(image (B, 1, D, H, W))              -> features, one (B, C_l, D/2^l, H/2^l, W/2^l) per level l
    register(source, target (B, 1, D, H, W))   -> displacement (B, 3, D, H, W), voxel units, components (i, j, k)
    segment(image (B, 1, D, H, W))             -> logits (B, classes, D, H, W)

``register`` returns the displacement that warps ``source`` onto ``target`` in the resampling convention of
:mod:`bijros.models.spatial` (``source`` is sampled at ``x + u(x)``). The registration decoder sees the
channel concatenation of the source and target features at every level; the segmentation decoder sees one
image's features. The flow convolution starts at zero (an untrained model returns the identity). Any size
that is a multiple of ``2 ** (len(channels) - 1)`` works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bijros.models.conv import Conv3d


class DoubleConv(nn.Sequential):
    """Two (Conv3d 3x3x3, instance norm, LeakyReLU 0.2): (B, Cin, ...) -> (B, Cout, ...)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(Conv3d(cin, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU(0.2),
                         Conv3d(cout, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU(0.2))


class UNetEncoder(nn.Module):
    """Level 0 at full size, each next level max-pooled by 2: ``channels`` per level."""

    def __init__(self, channels: tuple[int, ...], cin: int = 1):
        super().__init__()
        self.levels = nn.ModuleList()
        for c in channels:
            self.levels.append(DoubleConv(cin, c))
            cin = c

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, level in enumerate(self.levels):
            x = level(x if i == 0 else F.max_pool3d(x, 2))
            feats.append(x)
        return feats


class UNetDecoder(nn.Module):
    """From the deepest level up: upsample, join the skip, DoubleConv; a 1x1x1 head. ``width`` scales the
    encoder channels it sees (2 for the registration decoder's concatenated pair)."""

    def __init__(self, channels: tuple[int, ...], out_channels: int, width: int = 1, zero_head: bool = False):
        super().__init__()
        ch = [c * width for c in channels]
        self.up = nn.ModuleList()
        cin = ch[-1]
        for c_skip, c_out in zip(ch[-2::-1], channels[-2::-1]):
            self.up.append(DoubleConv(cin + c_skip, c_out))
            cin = c_out
        self.head = Conv3d(cin, out_channels, 3 if zero_head else 1, padding=1 if zero_head else 0)
        if zero_head:
            nn.init.normal_(self.head.weight, std=1e-5)
            nn.init.zeros_(self.head.bias)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for layer, skip in zip(self.up, feats[-2::-1]):
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = layer(torch.cat([x, skip], 1))
        return self.head(x)


class BiJROSNet(nn.Module):
    """Shared encoder + registration decoder + segmentation decoder.

    Args:
        classes: segmentation classes, background included.
        channels: encoder channels per level (Bi-JROS uses 32-64-128-256; smaller fits a CPU).
        separate: the segmentation decoder gets its own encoder (BRBS's two networks).
    """

    def __init__(self, classes: int, channels: tuple[int, ...] = (16, 32, 64, 128), separate: bool = False):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if classes < 2:
            raise ValueError("classes must count the background and at least one structure")
        self.classes, self.channels, self.separate = classes, channels, separate
        self.encoder = UNetEncoder(channels)
        self.seg_encoder = UNetEncoder(channels) if separate else None
        self.reg_decoder = UNetDecoder(channels, 3, width=2, zero_head=True)
        self.seg_decoder = UNetDecoder(channels, classes)

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(image)

    def register(self, source: torch.Tensor, target: torch.Tensor,
                 feats: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None) -> torch.Tensor:
        fs, ft = feats if feats is not None else (self.encode(source), self.encode(target))
        return self.reg_decoder([torch.cat([a, b], 1) for a, b in zip(fs, ft)])

    def segment(self, image: torch.Tensor, feats: list[torch.Tensor] | None = None) -> torch.Tensor:
        if self.seg_encoder is not None:
            feats = self.seg_encoder(image)
        elif feats is None:
            feats = self.encode(image)
        return self.seg_decoder(feats)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.segment(image)

    def registration_parameters(self) -> list[nn.Parameter]:
        return list(self.reg_decoder.parameters())

    def segmentation_parameters(self) -> list[nn.Parameter]:
        params = list(self.seg_decoder.parameters())
        return params + (list(self.seg_encoder.parameters()) if self.seg_encoder is not None else [])
