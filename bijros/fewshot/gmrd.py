"""GMRD: few-shot segmentation of a query slice from a support slice and its mask, by many descriptors.

After Cheng et al., "Few-shot medical image segmentation via generation of multiple representative
descriptors" (IEEE TMI 2024), sized for a CPU: a small 2D encoder (no downloaded backbone) maps both slices
to features at half resolution; the support features inside the mask give the foreground descriptors, those
outside the background ones: ``K`` learned spatial mixtures (an MLP over each channel's masked map, pooled
to a fixed size), the masked average and the average over the mask's boundary band. The cosine affinity of
every query feature with every descriptor gives ``K + 2`` maps per path; a small decoder fuses them into one
map per path, and the two paths (background, foreground) are the logits.

Shapes: ``forward(support (B, 1, H, W), support_mask (B, 1, H, W) in [0, 1], query (B, 1, H, W))`` ->
logits (B, 2, H, W) (channel 1 = foreground). :func:`episode_loss` is the training loss: weighted NLL of the
query (background 0.1, foreground 1.0) plus the alignment loss (the support re-predicted from the query and
its predicted mask).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvAct2d(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.InstanceNorm2d(cout, affine=True),
                         nn.LeakyReLU(0.2))


class Encoder2D(nn.Sequential):
    """(B, 1, H, W) -> (B, channels, ceil(H/2), ceil(W/2))."""

    def __init__(self, channels: int = 64, depth: int = 4):
        layers = [ConvAct2d(1, channels // 2), ConvAct2d(channels // 2, channels, stride=2)]
        layers += [ConvAct2d(channels, channels) for _ in range(depth - 2)]
        super().__init__(*layers)


def masked_average(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w), (B, 1, h, w) -> (B, 1, C): the mean feature inside ``mask`` (weights)."""
    total = mask.sum((2, 3)).clamp_min(1e-6)
    return ((features * mask).sum((2, 3)) / total)[:, None]


def boundary_band(mask: torch.Tensor, width: int = 1) -> torch.Tensor:
    """(B, 1, h, w) in [0, 1] -> the band ``width`` pixels either side of the mask's edge."""
    size = 2 * width + 1
    grown = F.max_pool2d(mask, size, stride=1, padding=width)
    shrunk = -F.max_pool2d(-mask, size, stride=1, padding=width)
    return (grown - shrunk).clamp(0, 1)


class DescriptorGenerator(nn.Module):
    """``k`` learned spatial mixtures of masked support features: each channel's masked map, pooled to
    ``size`` x ``size``, goes through an MLP to ``k`` values. (B, C, h, w), (B, 1, h, w) -> (B, k, C)."""

    def __init__(self, k: int, size: int = 12, hidden: int = 128):
        super().__init__()
        self.size = size
        self.mlp = nn.Sequential(nn.Linear(size * size, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, k))

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        masked = F.adaptive_avg_pool2d(features * mask, self.size)  # (B, C, S, S)
        share = F.adaptive_avg_pool2d(mask, self.size).mean((2, 3), keepdim=True).clamp_min(1e-3)
        return self.mlp((masked / share).flatten(2)).transpose(1, 2)  # (B, k, C)


class PathDecoder(nn.Sequential):
    """(B, K + 2, h, w) affinity maps -> (B, 1, h, w)."""

    def __init__(self, maps: int, hidden: int = 32):
        super().__init__(nn.Conv2d(maps, hidden, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(hidden, 1, 1))


def affinity(query: torch.Tensor, descriptors: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every query feature with every descriptor: (B, C, h, w), (B, K, C) -> (B, K, h, w)."""
    q = F.normalize(query, dim=1)
    d = F.normalize(descriptors, dim=2)
    return torch.einsum("bkc,bchw->bkhw", d, q)


class GMRD(nn.Module):
    """See the module docstring. ``k_fg``, ``k_bg``: learned descriptors per path (the paper: 100 and 600)."""

    def __init__(self, channels: int = 64, depth: int = 4, k_fg: int = 24, k_bg: int = 48, mixture_size: int = 12):
        super().__init__()
        self.encoder = Encoder2D(channels, depth)
        self.fg = DescriptorGenerator(k_fg, mixture_size)
        self.bg = DescriptorGenerator(k_bg, mixture_size)
        self.fg_decoder = PathDecoder(k_fg + 2)
        self.bg_decoder = PathDecoder(k_bg + 2)

    def descriptors(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Foreground (B, k_fg + 2, C) and background (B, k_bg + 2, C) descriptors of support features and their
        mask (on the feature grid)."""
        band = boundary_band((mask > 0.5).float())
        fg = torch.cat([self.fg(features, mask), masked_average(features, mask),
                        masked_average(features, band * mask + 1e-6)], 1)
        inverse = 1 - mask
        bg = torch.cat([self.bg(features, inverse), masked_average(features, inverse),
                        masked_average(features, band * inverse + 1e-6)], 1)
        return fg, bg

    def forward(self, support: torch.Tensor, support_mask: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        if support.dim() != 4 or support.shape != support_mask.shape or support.shape[:2] != query.shape[:2]:
            raise ValueError(f"support {tuple(support.shape)}, its mask {tuple(support_mask.shape)} and query "
                             f"{tuple(query.shape)} must be (B, 1, H, W) slices")
        if bool((support_mask.flatten(1).amax(1) <= 0).any()):
            raise ValueError("The support mask is empty: paint the structure on the support slice first.")
        feats = self.encoder(torch.cat([support, query], 0))
        fs, fq = feats[: support.shape[0]], feats[support.shape[0]:]
        mask = F.adaptive_avg_pool2d(support_mask.float(), fs.shape[2:])
        fg, bg = self.descriptors(fs, mask)
        logits = torch.cat([self.bg_decoder(affinity(fq, bg)), self.fg_decoder(affinity(fq, fg))], 1)
        return F.interpolate(logits, size=query.shape[2:], mode="bilinear", align_corners=False)


def episode_loss(model: GMRD, support, support_mask, query, query_mask, align_weight: float = 1.0) -> dict:
    """``{"loss", "query", "align"}``: weighted NLL of the query (background 0.1, foreground 1.0) and the
    alignment loss (the support predicted back from the query with its predicted foreground as the mask)."""
    weights = torch.tensor([0.1, 1.0], device=query.device)
    logits = model(support, support_mask, query)
    q_loss = F.cross_entropy(logits, query_mask[:, 0].long(), weight=weights)
    terms = {"query": q_loss}
    if align_weight > 0:
        predicted = logits.softmax(1)[:, 1:]
        has_fg = predicted.flatten(1).amax(1) > 0.5
        if bool(has_fg.all()):
            back = model(query, predicted, support)
            terms["align"] = F.cross_entropy(back, support_mask[:, 0].long(), weight=weights)
    terms["loss"] = q_loss + align_weight * terms.get("align", torch.zeros((), device=query.device))
    return terms
