"""Held-out validation of a registration model during training.

The last ``validation_maps`` label maps of a training config are never used for training pairs; two
fixed sets of pairs are drawn from them once (their own seed): fixed and moving always from two
different maps (inter-subject, the use case) and never with a known flow, once with both images
sharing one random contrast (like a T1 atlas onto a T1 scan) and once with independent contrasts
(like T1 onto T2 or CT onto MR). A model is scored by the mean soft Dice of the warped moving label
maps against the fixed ones (foreground classes, :func:`bijros.training.losses.soft_dice_loss`); the untrained
model returns zero flow, so its score is the no-registration baseline.
"""

from __future__ import annotations

import dataclasses

import torch

SETS = ("same_contrast", "cross_contrast")


def validation_pairs(maps, options, device, seed: int, pairs: int) -> tuple[dict[str, list[dict]], int]:
    """``({set name: [batch of one pair, ...]}, number of Dice classes)`` from ``maps`` (at least two),
    reproducible from ``seed``."""
    from bijros.training.synth import SynthGenerator

    sets = {}
    for offset, (name, shared) in enumerate(zip(SETS, (1.0, 0.0))):
        opts = dataclasses.replace(options, same_map_prob=0.0, flow_pairs_prob=0.0, same_contrast_prob=shared)
        gen = SynthGenerator(maps, opts, device, torch.Generator(device=device).manual_seed(seed + offset))
        sets[name] = [gen.sample(1) for _ in range(pairs)]
    return sets, gen.num_classes


@torch.no_grad()
def validate(model: torch.nn.Module, sets: dict[str, list[dict]], num_classes: int) -> dict[str, float]:
    """Mean soft Dice per set (and their mean, ``score``) of ``model`` on the fixed validation pairs."""
    from bijros.training.losses import registration_loss

    was_training = model.training
    model.eval()
    result = {}
    for name, batches in sets.items():
        dice = [1 - registration_loss(model, b, {"dice": 1.0}, num_classes)["dice"].item() for b in batches]
        result[name] = sum(dice) / len(dice)
    result["score"] = sum(result[n] for n in sets) / len(sets)
    model.train(was_training)
    return result
