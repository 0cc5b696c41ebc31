"""Training losses of the learned registration models: soft Dice of warped one-hot labels, smoothness,
LNCC and dense flow supervision (:func:`registration_loss` combines them with a config's weights)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(warped_onehot: torch.Tensor, fixed_onehot: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """1 - mean soft Dice over foreground classes present in either map; (B, C, ...) probabilities."""
    dims = tuple(range(2, warped_onehot.dim()))
    inter = (warped_onehot * fixed_onehot).sum(dims)
    total = warped_onehot.sum(dims) + fixed_onehot.sum(dims)
    dice = (2 * inter + eps) / (total + eps)
    present = (total > 0).float()[:, 1:]
    return 1 - (dice[:, 1:] * present).sum() / present.sum().clamp_min(1)


def one_hot_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, 1, D, H, W) integer classes -> (B, num_classes, D, H, W) float one-hot."""
    return F.one_hot(labels[:, 0], num_classes).permute(0, 4, 1, 2, 3).float()


def registration_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], weights: dict[str, float],
                      num_classes: int) -> dict[str, torch.Tensor]:
    """Forward one batch (see :meth:`bijros.training.synth.SynthGenerator.sample`); returns the terms and ``loss``."""
    from bijros.models.spatial import warp
    from bijros.registration.similarity import diffusion_penalty, lncc_loss

    if getattr(getattr(model, "module", model), "uses_regions", False):  # (DDP keeps the model in .module)  # the TextSCF head: the fixed image's region map too
        if "fixed_regions" not in batch:
            from bijros.errors import InputError

            raise InputError('this model needs region maps: set "regions": "aseg" in the config\'s synth options')
        disp = model(batch["fixed"], batch["moving"], batch["fixed_regions"]).float()
    else:
        disp = model(batch["fixed"], batch["moving"]).float()
    moving_oh = one_hot_labels(batch["moving_labels"], num_classes)
    fixed_oh = one_hot_labels(batch["fixed_labels"], num_classes)
    terms = {"dice": soft_dice_loss(warp(moving_oh, disp), fixed_oh), "smooth": diffusion_penalty(disp)}
    if weights.get("image", 0) > 0:
        terms["image"] = lncc_loss(batch["fixed"].float(), warp(batch["moving"], disp))
    if weights.get("flow", 0) > 0 and "flow" in batch:
        # squared error (voxels^2) to the true displacement, inside the fixed brain, on pairs where it is known
        mask = (batch["fixed_labels"] > 0).float() * batch["flow_weight"].view(-1, 1, 1, 1, 1)
        err = ((disp - batch["flow"]) ** 2).sum(1, keepdim=True)
        terms["flow"] = (err * mask).sum() / mask.sum().clamp_min(1.0)
    terms["loss"] = sum(weights.get(k, 0.0) * v for k, v in terms.items())
    return terms
