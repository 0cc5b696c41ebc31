"""Pseudo labels through the cohort: the atlas reaches each scan directly and through other scans, and the
paths' labels are fused (``OneShotConfig.pseudo_paths``).

The io pseudo labels (:func:`bijros.oneshot.cohort.io_pseudo_labels`) carry the atlas onto every scan by one
registration. Here each scan ``i`` also receives the io labels of the ``k`` scans most like it (normalised cross
correlation on the working grid, all scans already affinely in atlas space), each carried by one more
registration ``j -> i`` (the same instance optimisation), and the ``k + 1`` label maps are fused by joint label
fusion with its local search (:mod:`bijros.atlas.fusion`, as ``bijros propagate-multi``), each path's image
being the atlas or scan ``j`` warped onto ``i``. Paths that make different mistakes outvote each other; this is
the classic multi-path atlas propagation, with the cohort as intermediate atlases. The fused maps replace the
direct ones as the lower level's pseudo labels; BRBS's flows stay the direct ones.

Measured on hippocampus (Testing/Benchmarks/results/oneshot_hippocampus_stop_step.md): see the README's one-shot
section.
"""

from __future__ import annotations

import numpy as np
import torch

from bijros.registration.grid import sample
from bijros.registration.similarity import ncc_loss


def neighbours(images: torch.Tensor, k: int) -> list[list[int]]:
    """For each scan, the ``k`` other scans with the highest NCC to it, best first."""
    n = images.shape[0]
    score = torch.full((n, n), -2.0)
    for i in range(n):
        for j in range(i + 1, n):
            score[i, j] = score[j, i] = 1 - float(ncc_loss(images[i], images[j]))
    return [torch.argsort(score[i], descending=True)[:min(k, n - 1)].tolist() for i in range(n)]


def fused_pseudo_labels(aligner, atlas_onehot: torch.Tensor, images: torch.Tensor, pseudo: torch.Tensor,
                        flows: torch.Tensor, k: int, progress=None, cancel=None) -> torch.Tensor:
    """(N, D, H, W) class indices: scan i's direct io labels (``pseudo[i]``, ``flows[i]`` in working-grid voxels)
    fused with the io labels of its ``k`` nearest scans carried onto it. ``images`` (N, D, H, W) on the
    aligner's working grid."""
    from bijros.atlas.fusion import fuse, jlf_weights, local_search

    device = aligner.points.device
    grid = aligner.grid
    spacing = torch.as_tensor(grid.spacing, dtype=torch.float32, device=device).view(3, 1, 1, 1)
    near = neighbours(images, k)
    out = []
    for i in range(images.shape[0]):
        if cancel is not None and cancel():
            raise KeyboardInterrupt
        target = images[i][None].to(device)
        direct = (aligner.points + (flows[i].to(device) * spacing).permute(1, 2, 3, 0))
        warped_images = [sample(aligner.atlas, grid, direct, padding_mode="border")[0]]
        stack = [pseudo[i].to(device)]
        for j in near[i]:
            moving = images[j][None].to(device)
            pts = aligner.points + aligner.carry(target, moving).permute(1, 2, 3, 0)
            warped_images.append(sample(moving, grid, pts, padding_mode="border")[0])
            onehot = torch.nn.functional.one_hot(pseudo[j].to(device), atlas_onehot.shape[0])
            stack.append(sample(onehot.permute(3, 0, 1, 2).float(), grid, pts, padding_mode="border").argmax(0))
        t = target[0].cpu().numpy()
        w_img = torch.stack(warped_images).cpu().numpy()
        labs = torch.stack(stack).cpu().numpy().astype(np.int32)
        searched, labs = local_search(t, w_img, labs)
        fused, _ = fuse(labs, jlf_weights(t, searched, labs))
        out.append(torch.as_tensor(fused.astype(np.int64)))
        if progress:
            progress((i + 1) / images.shape[0], f"fused {len(stack)} paths onto scan {i + 1}/{images.shape[0]}")
    return torch.stack(out)
