"""Bi-JROS's bi-level step: the segmentation decoder is the lower level, the registration decoder the upper.

Lower level (segmentation decoder, loss L_L): pseudo image ``(1 - w) * cycle + w * target`` with
``w ~ U(0.6, 0.95)``, ``cycle`` the target warped to the atlas and back by the registration decoder; pseudo label
the atlas one-hot warped onto the target (by the registration decoder, or our instance-optimisation propagation
when ``pseudo`` is given); ``L_L = soft-Dice loss``.

Upper level (registration decoder, loss L_U), on the target after a random rotation (up to ``rotate_deg``) and
scale (``scale`` range): LNCC(9) both ways + L2 gradient smoothness of both fields + 10 x cycle consistency +
soft-Dice of the segmentation decoder on the target vs the warped atlas one-hot.

Hyper-gradient: ``g_R = dL_U/d theta_seg``, ``g_S = dL_L/d theta_seg``, ``c = <g_R, g_S> / <g_S, g_S>`` (a
number, no gradient); the segmentation decoder steps along ``g_S``, the registration decoder along
``d(L_U - c L_L)/d theta_reg``. The shared encoder is frozen (pretrained by :func:`pretrain_step`).

Where we differ from the original, for a CPU budget (each measured in Testing/Benchmarks/oneshot_cohort.py):
``L_L`` adds a cross-entropy term (``BiLevelWeights.ce``; 0 gives Bi-JROS's Dice alone), the lower level's pair
goes through the same kind of random rotation and scale as the upper level's (``augment_lower``), and the trainer
runs ``inner_steps - 1`` lower-level steps (:func:`lower_step`) between two bi-level steps.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from bijros.models.spatial import compose, warp
from bijros.registration.similarity import diffusion_penalty, lncc_loss
from bijros.training.losses import soft_dice_loss


@dataclasses.dataclass
class BiLevelWeights:
    ncc: float = 1.0
    smooth: float = 1.0
    cycle: float = 10.0
    dice: float = 1.0
    ncc_window: int = 9
    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    mix: tuple[float, float] = (0.6, 0.95)
    ce: float = 1.0  # cross-entropy beside the soft Dice in L_L (0: Bi-JROS's Dice alone)
    augment_lower: bool = True  # the lower level's pair through a random rotation and scale too


def projection_coefficient(g_r: list[torch.Tensor | None], g_s: list[torch.Tensor | None]) -> float:
    """``<g_R, g_S> / <g_S, g_S>`` over matching lists of gradients (None: zero); 0 when ``g_S`` is zero."""
    dot = sum(float((a * b).sum()) for a, b in zip(g_r, g_s) if a is not None and b is not None)
    norm = sum(float((b * b).sum()) for b in g_s if b is not None)
    return dot / norm if norm > 0 else 0.0


def random_affine(shape: tuple[int, ...], generator: torch.Generator, rotate_deg: float,
                  scale: tuple[float, float], device) -> torch.Tensor:
    """A voxel displacement (1, 3, D, H, W) of a random rotation about each axis (up to ``rotate_deg``) and an
    isotropic scale in ``scale``, about the volume's centre (resampling convention)."""
    r = (torch.rand(3, generator=generator, device=device) * 2 - 1) * math.radians(rotate_deg)
    s = scale[0] + torch.rand(1, generator=generator, device=device) * (scale[1] - scale[0])
    cx, cy, cz = torch.cos(r)
    sx, sy, sz = torch.sin(r)
    one, zero = torch.ones((), device=device), torch.zeros((), device=device)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx]).view(3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy]).view(3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one]).view(3, 3)
    m = (rz @ ry @ rx) * s
    idx = torch.stack(torch.meshgrid(*[torch.arange(n, device=device, dtype=torch.float32) for n in shape],
                                     indexing="ij"))
    centre = torch.tensor([(n - 1) / 2 for n in shape], device=device).view(3, 1, 1, 1)
    x = idx - centre
    y = torch.einsum("ab,bijk->aijk", m, x)
    return (y - x)[None]


def soft_dice(logits_or_probs: torch.Tensor, target: torch.Tensor, logits: bool = True) -> torch.Tensor:
    probs = torch.softmax(logits_or_probs, 1) if logits else logits_or_probs
    return soft_dice_loss(probs, target)


def cycle_loss(f_ab: torch.Tensor, f_ba: torch.Tensor) -> torch.Tensor:
    """Mean squared displacement of going there and back, both ways."""
    return (compose(f_ab, f_ba) ** 2).mean() + (compose(f_ba, f_ab) ** 2).mean()


def two_way_terms(atlas: torch.Tensor, target: torch.Tensor, f_at: torch.Tensor, f_ta: torch.Tensor,
                  window: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(LNCC both ways, smoothness of both fields, cycle consistency) of a pair registered both ways."""
    ncc = lncc_loss(target, warp(atlas, f_at), window) + lncc_loss(atlas, warp(target, f_ta), window)
    return ncc, diffusion_penalty(f_at) + diffusion_penalty(f_ta), cycle_loss(f_at, f_ta)


def pretrain_step(model, atlas: torch.Tensor, target: torch.Tensor, optimizer, w: BiLevelWeights) -> dict:
    """Bi-JROS's step 1: unsupervised joint registration (encoder + registration decoder), both ways."""
    fa, ft = model.encode(atlas), model.encode(target)
    f_at, f_ta = model.register(atlas, target, (fa, ft)), model.register(target, atlas, (ft, fa))
    ncc, smooth, cyc = two_way_terms(atlas, target, f_at, f_ta, w.ncc_window)
    loss = w.ncc * ncc + w.smooth * smooth + w.cycle * cyc
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.detach()), "ncc": float(ncc.detach()), "cycle": float(cyc.detach())}


def lower_pair(target, atlas_onehot, f_at, f_ta, pseudo, generator, w: BiLevelWeights):
    """The lower level's (pseudo image, pseudo label): ``(1 - w) * cycle + w * target`` and the atlas one-hot
    warped by ``f_at`` (or ``pseudo``), both through one random rotation and scale (as the upper level's)."""
    dev = target.device
    cycled = warp(warp(target, f_ta), f_at)
    mix = w.mix[0] + torch.rand(1, generator=generator, device=dev).item() * (w.mix[1] - w.mix[0])
    image = (1 - mix) * cycled + mix * target
    label = pseudo if pseudo is not None else warp(atlas_onehot, f_at)
    if w.augment_lower:
        a = random_affine(tuple(target.shape[2:]), generator, w.rotate_deg, w.scale, dev)
        image, label = warp(image, a), warp(label, a)
    return image, label


def lower_loss(logits: torch.Tensor, label: torch.Tensor, w: BiLevelWeights) -> torch.Tensor:
    """Soft-Dice loss (+ ``w.ce`` x cross-entropy with the soft label) of the segmentation decoder."""
    loss = soft_dice(logits, label)
    if w.ce > 0:
        loss = loss - w.ce * (label * torch.log_softmax(logits, 1)).sum(1).mean()
    return loss


def lower_step(model, atlas, atlas_onehot, target, seg_optimizer, generator, w: BiLevelWeights,
               pseudo: torch.Tensor | None = None, atlas_feats=None) -> dict:
    """A lower-level step alone (the segmentation decoder on L_L; the registration decoder only looked at): the
    ``inner_steps - 1`` extra segmentation steps between two bi-level steps."""
    with torch.no_grad():
        fa = atlas_feats if atlas_feats is not None else model.encode(atlas)
        ft = model.encode(target)
        f_at, f_ta = model.register(atlas, target, (fa, ft)), model.register(target, atlas, (ft, fa))
        image, label = lower_pair(target, atlas_onehot, f_at, f_ta, pseudo, generator, w)
        feats = model.encode(image)
    loss = lower_loss(model.segment(image, feats), label, w)
    seg_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    seg_optimizer.step()
    return {"loss": float(loss.detach()), "lower": float(loss.detach())}


def bilevel_losses(model, atlas: torch.Tensor, atlas_onehot: torch.Tensor, target: torch.Tensor,
                   generator: torch.Generator, w: BiLevelWeights, pseudo: torch.Tensor | None = None,
                   atlas_feats: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(L_L, L_U, terms) for one (atlas, target) pair; (1, 1, ...) images, (1, C, ...) one-hots."""
    dev = target.device
    with torch.no_grad():
        fa = atlas_feats if atlas_feats is not None else model.encode(atlas)
        ft = model.encode(target)
    # lower level
    f_at = model.register(atlas, target, (fa, ft))
    f_ta = model.register(target, atlas, (ft, fa))
    pseudo_image, pseudo_label = lower_pair(target, atlas_onehot, f_at, f_ta, pseudo, generator, w)
    loss_lower = lower_loss(model.segment(pseudo_image, model.encode(pseudo_image)), pseudo_label, w)
    # upper level, on a randomly rotated and scaled target
    with torch.no_grad():
        aug = warp(target, random_affine(tuple(target.shape[2:]), generator, w.rotate_deg, w.scale, dev))
        fg = model.encode(aug)
    g_at = model.register(atlas, aug, (fa, fg))
    g_ta = model.register(aug, atlas, (fg, fa))
    ncc, smooth, cyc = two_way_terms(atlas, aug, g_at, g_ta, w.ncc_window)
    dice = soft_dice(model.segment(aug, fg), warp(atlas_onehot, g_at))
    loss_upper = w.ncc * ncc + w.smooth * smooth + w.cycle * cyc + w.dice * dice
    terms = {"lower": float(loss_lower.detach()), "upper": float(loss_upper.detach()), "ncc": float(ncc.detach()), "cycle": float(cyc.detach()),
             "dice": float(dice.detach())}
    return loss_lower, loss_upper, terms


def bilevel_step(model, atlas: torch.Tensor, atlas_onehot: torch.Tensor, target: torch.Tensor, seg_optimizer,
                 reg_optimizer, generator: torch.Generator, w: BiLevelWeights, pseudo: torch.Tensor | None = None,
                 atlas_feats: list[torch.Tensor] | None = None) -> dict:
    """One bi-level update of both decoders (the encoder is left as it is); returns the terms and ``c``."""
    seg_params, reg_params = model.segmentation_parameters(), model.registration_parameters()
    loss_lower, loss_upper, terms = bilevel_losses(model, atlas, atlas_onehot, target, generator, w, pseudo,
                                                   atlas_feats)
    g_s = torch.autograd.grad(loss_lower, seg_params, retain_graph=True, allow_unused=True)
    g_r = torch.autograd.grad(loss_upper, seg_params, retain_graph=True, allow_unused=True)
    c = projection_coefficient(list(g_r), list(g_s))
    reg_grads = torch.autograd.grad(loss_upper - c * loss_lower, reg_params, allow_unused=True)
    for p, g in zip(seg_params, g_s):
        p.grad = None if g is None else g.detach()
    for p, g in zip(reg_params, reg_grads):
        p.grad = None if g is None else g.detach()
    seg_optimizer.step()
    reg_optimizer.step()
    terms["c"] = c
    terms["loss"] = terms["lower"] + terms["upper"]
    return terms


def one_hot(classes: torch.Tensor, num: int) -> torch.Tensor:
    """(D, H, W) or (B, D, H, W) class indices -> (B, num, D, H, W) float."""
    if classes.dim() == 3:
        classes = classes[None]
    return F.one_hot(classes.long(), num).permute(0, 4, 1, 2, 3).float()
