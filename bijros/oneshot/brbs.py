"""BRBS (He et al., TNNLS 2022): registration that makes segmentation training data, from K >= 1 atlases.

Registration step (the registration network: encoder + registration decoder): LNCC both ways + smoothness +
100 x semantic consistency (soft Dice of the warped atlas one-hot vs the segmentation network's detached
prediction on the unlabelled scan) + 0.1 x inverse consistency.

Segmentation step (the segmentation network, its own encoder): space-style sampling S3P, ``beta, alpha ~
Beta(0.3, 0.3)``: image ``warp(L + beta * (U1 in atlas space - L), alpha * flow_{L->U2})``, label ``warp(L's
one-hot, alpha * flow_{L->U2})``; loss soft Dice + 0.01 x mix-misalignment (``gamma ~ Beta(0.3, 0.3)``: the
prediction on ``gamma * x1 + (1 - gamma) * x2`` vs the same mix of the two predictions). The flows come from the
registration network, or from our instance-optimisation propagation when precomputed ones are given.
"""

from __future__ import annotations

import dataclasses

import torch

from bijros.models.spatial import warp
from bijros.oneshot.bilevel import soft_dice, two_way_terms


@dataclasses.dataclass
class BRBSWeights:
    ncc: float = 1.0
    smooth: float = 1.0
    semantic: float = 100.0
    inverse: float = 0.1
    mix: float = 0.01
    ncc_window: int = 9
    beta: float = 0.3  # the Beta(a, a) of beta, alpha and gamma


def beta_sample(a: float, generator: torch.Generator) -> float:
    """One Beta(a, a) draw from the run's seeded generator, by Johnk's method (uniforms only; exact for any a)."""
    while True:
        u, v = torch.rand(2, generator=generator, device=generator.device).tolist()
        x, y = u ** (1 / a), v ** (1 / a)
        if 0 < x + y <= 1:
            return x / (x + y)


def invert_flow(flow: torch.Tensor, iterations: int = 10) -> torch.Tensor:
    """Approximate inverse of a voxel displacement (B, 3, ...) by fixed-point iteration v = -u(x + v)."""
    inv = -flow
    for _ in range(iterations):
        inv = -warp(flow, inv)
    return inv


def s3p(atlas: torch.Tensor, atlas_onehot: torch.Tensor, u1_in_atlas: torch.Tensor, flow_to_u2: torch.Tensor,
        beta: float, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Space-style sampling: (new image (B, 1, ...), new soft label (B, C, ...)).

    ``u1_in_atlas``: an unlabelled scan in atlas space (its style); ``flow_to_u2``: the displacement warping the
    atlas onto another scan (its space); ``beta`` mixes the style, ``alpha`` scales the displacement."""
    styled = atlas + beta * (u1_in_atlas - atlas)
    flow = alpha * flow_to_u2
    return warp(styled, flow), warp(atlas_onehot, flow)


def registration_step(model, atlas, atlas_onehot, target, optimizer, w: BRBSWeights) -> dict:
    f_at, f_ta = model.register(atlas, target), model.register(target, atlas)
    ncc, smooth, inverse = two_way_terms(atlas, target, f_at, f_ta, w.ncc_window)
    with torch.no_grad():
        seg = torch.softmax(model.segment(target), 1)
    semantic = soft_dice(warp(atlas_onehot, f_at), seg, logits=False)
    loss = w.ncc * ncc + w.smooth * smooth + w.semantic * semantic + w.inverse * inverse
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.detach()), "ncc": float(ncc.detach()), "semantic": float(semantic.detach()), "inverse": float(inverse.detach())}


def segmentation_step(model, atlas, atlas_onehot, u1, u2, u3, optimizer, generator: torch.Generator,
                      w: BRBSWeights, flows: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """``flows``: (atlas -> u1, atlas -> u2) displacements precomputed (our io); else the registration decoder's."""
    with torch.no_grad():
        if flows is None:
            u1_in_atlas = warp(u1, model.register(u1, atlas))
            to_u2 = model.register(atlas, u2)
        else:
            u1_in_atlas = warp(u1, invert_flow(flows[0]))
            to_u2 = flows[1]
        beta, alpha, gamma = (beta_sample(w.beta, generator) for _ in range(3))
        image, label = s3p(atlas, atlas_onehot, u1_in_atlas, to_u2, beta, alpha)
    logits = model.segment(image)
    dice = soft_dice(logits, label)
    mixed = gamma * image + (1 - gamma) * u3
    with torch.no_grad():
        target = gamma * torch.softmax(logits, 1) + (1 - gamma) * torch.softmax(model.segment(u3), 1)
    mix = ((torch.softmax(model.segment(mixed), 1) - target) ** 2).mean()
    loss = dice + w.mix * mix
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.detach()), "dice": float(dice.detach()), "mix": float(mix.detach()), "beta": beta, "alpha": alpha}
