"""Prompt-steered instance optimisation (training-free, ``--prompt`` on register/propagate).

After the whole-image registration, the structures a prompt names (matched by :mod:`bijros.text.match`
against the moving labels' table) get a second, local pass: their region in the fixed image (the moving labels
carried there by the first pass, widened by ``margin_mm``) is registered again inside its bounding box, on a
finer field grid, with the similarity counted only in the region and no extra regulariser, and the change is
blended in with a smooth taper that is 1 in the region and 0 beyond ``taper_mm``: the rest of the mapping is
the first pass's, voxel for voxel.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from bijros.errors import InputError
from bijros.registration.deformable import DeformableOptions, Level, deformable_register
from bijros.registration.grid import Grid, downsample, points_ras, pool_factors, sample
from bijros.registration.similarity import box_filter


@dataclasses.dataclass
class PromptOptions:
    values: tuple[int, ...]  # the moving label values the prompt names
    margin_mm: float = 4.0  # the region: the named labels in the fixed image, widened by this much
    taper_mm: float = 4.0  # the blend from the refined field (inside) to the first one (outside)
    param_mm: float = 1.0  # field grid of the local pass
    iterations: int = 40
    lcn_window_mm: float = 7.0
    learning_rate: float = 1.0
    similarity: str = "lcn"  # lcn | mind


def prompt_values(prompt: str, labels, table) -> tuple[tuple[int, ...], dict]:
    """The label values of ``labels`` (an Image) that ``prompt`` names through ``table`` (a LabelTable), and the
    match (``bijros prompt-match``'s JSON)."""
    from bijros.text.match import match_prompt

    if table is None:
        raise InputError("--prompt needs names for the moving labels: give --labels-table (or a label map that "
                         "carries its table, e.g. a Slicer segmentation or a built-in atlas).")
    present = set(np.unique(labels.array).astype(int).tolist())
    entries = [(e.value, e.name) for e in table if e.value in present]
    match = match_prompt(prompt, entries)
    return tuple(int(lab["value"]) for lab in match["labels"]), match


def region_on_grid(moving_labels, values, affine: np.ndarray, disp: torch.Tensor, disp_grid: Grid, work: Grid,
                   device) -> torch.Tensor:
    """(1, I, J, K) share of each working-grid voxel covered by the named labels, carried through the affine and
    the first pass's displacement (``disp`` (1, 3, ...) RAS mm on ``disp_grid``)."""
    mask = torch.as_tensor(np.isin(moving_labels.array, list(values)).astype(np.float32), device=device)[None]
    pts = points_ras(work, device)
    moved = pts + sample(disp[0], disp_grid, pts, padding_mode="border").permute(1, 2, 3, 0)
    a = torch.as_tensor(affine, dtype=torch.float32, device=device)
    return sample(mask, Grid(moving_labels.shape, moving_labels.ijk_to_ras), moved @ a[:3, :3].T + a[:3, 3])


def _box(inside: torch.Tensor, pad: int) -> tuple[slice, slice, slice]:
    idx = torch.nonzero(inside[0] > 0)
    lo = (idx.min(0).values - pad).clamp_min(0).tolist()
    hi = [min(int(h) + pad + 1, n) for h, n in zip(idx.max(0).values.tolist(), inside.shape[1:])]
    return tuple(slice(a, b) for a, b in zip(lo, hi))  # type: ignore[return-value]


def _sub_grid(grid: Grid, box) -> Grid:
    shift = np.eye(4)
    shift[:3, 3] = [s.start for s in box]
    return Grid(tuple(s.stop - s.start for s in box), grid.ijk_to_ras @ shift)  # type: ignore[arg-type]


def refine(fixed: torch.Tensor, moving: torch.Tensor, work: Grid, disp: torch.Tensor, disp_grid: Grid,
           region: torch.Tensor, options: PromptOptions, progress=None, cancel=None) -> tuple[torch.Tensor, Grid]:
    """The first pass's field (``disp`` on ``disp_grid``) refined inside ``region`` (1, I, J, K on ``work``):
    (1, 3, ...) RAS mm on the working grid at ``param_mm``, and that grid."""
    spacing = float(np.mean(work.spacing))
    grow = max(1, round(options.margin_mm / spacing))
    inside = F.max_pool3d((region > 0.5).float()[None], 2 * grow + 1, stride=1, padding=grow)[0]
    if inside.sum() < 27:
        raise InputError("The structures the prompt names cover almost nothing of the fixed image after the first "
                         "pass; check the prompt and the moving labels.")
    pad = int(np.ceil((options.taper_mm + 2 * options.param_mm + 6.0) / spacing))
    box = _box(inside, pad)
    sub = _sub_grid(work, box)
    crop = (slice(None), *box)
    level = Level(feature_mm=spacing, param_mm=options.param_mm, iterations=options.iterations,
                  similarity=options.similarity)
    local = DeformableOptions(levels=(level,), reg_weight=0.0, smooth_size=3, learning_rate=options.learning_rate,
                              lcn_window_mm=options.lcn_window_mm, max_samples=300_000)
    refined, grid = deformable_register(fixed[crop], moving[crop], sub, local, progress=progress, cancel=cancel,
                                        init=(disp, disp_grid), fixed_mask=inside[crop])
    # blend on the whole working grid at the local pass's spacing: first + taper * (refined - first), the taper
    # 1 in the region and 0 beyond taper_mm (outside the box the refined field is the first one's anyway)
    inside_o, out = downsample(inside, work, pool_factors(work.spacing, options.param_mm))
    nodes = points_ras(out, disp.device)
    first = sample(disp[0], disp_grid, nodes, padding_mode="border")[None]
    size = 2 * max(1, round(options.taper_mm / float(np.mean(out.spacing)))) + 1
    taper = box_filter(box_filter((inside_o > 0.5).float()[None], size), size).clamp(0, 1)  # (1, 1, ...)
    refined_o = sample(refined[0], grid, nodes, padding_mode="border")[None]
    return first + taper * (refined_o - first), out
