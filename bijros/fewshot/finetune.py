"""Test-time fine-tuning of the few-shot model on the annotated slices themselves (a few seconds on a CPU).

The annotated slices are the only labelled examples of this structure in this image: episodes pair one of
them (the support, with its mask) with another one or with itself, each side randomly warped (rotation,
scale, shift) and its contrast changed (gamma), and the model takes ``steps`` Adam steps on the episode
loss. A copy is tuned: the model the library cached stays as it was.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F


def _augment(images: torch.Tensor, masks: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, H, W) images and masks, each pair warped by its own random similarity and gamma."""
    b = images.shape[0]
    rnd = lambda *shape: torch.rand(*shape, generator=gen) * 2 - 1  # noqa: E731  uniform in [-1, 1)
    angle, scale, shift = rnd(b) * math.radians(10), 1 + 0.1 * rnd(b), 0.06 * rnd(b, 2)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    warped_masks = (F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5)
    gamma = torch.exp(0.3 * rnd(b))[:, None, None, None]
    return warped.clamp(0, 1) ** gamma, warped_masks.float()


def finetune(model, slices: torch.Tensor, masks: torch.Tensor, steps: int = 30, learning_rate: float = 1e-4,
             batch: int = 4, seed: int = 0, align_weight: float = 1.0):
    """A copy of ``model`` tuned on the annotated ``slices`` (n, 1, H, W) in [0, 1] and their ``masks``
    (n, 1, H, W) 0/1 (each holding the structure). Same device as ``model``; returned in eval mode."""
    from bijros.fewshot.gmrd import episode_loss

    tuned = copy.deepcopy(model)
    if steps <= 0:
        return tuned.eval()
    device = next(tuned.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    slices, masks = slices.float().cpu(), masks.float().cpu()
    n = slices.shape[0]
    optim = torch.optim.Adam(tuned.parameters(), lr=learning_rate)
    tuned.train()
    for _ in range(steps):
        s = torch.randint(n, (batch,), generator=gen)
        q = torch.randint(n, (batch,), generator=gen)
        sup, sup_mask = _augment(slices[s], masks[s], gen)
        qry, qry_mask = _augment(slices[q], masks[q], gen)
        keep = (sup_mask.flatten(1).amax(1) > 0) & (qry_mask.flatten(1).amax(1) > 0)  # a warp can push it out
        if not bool(keep.any()):
            continue
        loss = episode_loss(tuned, sup[keep].to(device), sup_mask[keep].to(device), qry[keep].to(device),
                            qry_mask[keep].to(device), align_weight)["loss"]
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
    return tuned.eval()
