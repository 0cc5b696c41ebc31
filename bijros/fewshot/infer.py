"""Few-shot segmentation of a volume from a few annotated slices (``bijros fewshot``).

The support is an image with labels on some slices (a structure painted on a few slices in Slicer, or a
labelled volume: then every slice holding the label counts). The annotated slices are along one voxel axis:
``slices`` names them, else the axis is the one along which the labelled voxels lie on the fewest slices. Every slice of the query along that axis is segmented by the model from one annotated slice (the
GMRD chunking protocol: the query's slices are paired with the nearest annotated slice, by index in the same
volume, by relative position in another volume). In the same volume the annotated slices are kept exactly.
Several labels are segmented one by one and each voxel takes the most probable (background below 0.5).

In the same volume the model's probability is fused with the structure's shape interpolated between the
annotated slices (:mod:`.prior`, ``FewShotOptions.prior_weight``; the model only looks ``band_px`` pixels
beyond that shape), and the model can first be tuned on the annotated slices (:mod:`.finetune`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from bijros.errors import InputError
from bijros.fewshot.annotation import annotated_slices

BATCH = 32  # query slices per forward pass


def _tensor(slices: np.ndarray, device) -> torch.Tensor:
    """(n, H, W) -> (n, 1, H, W) float32 on ``device``."""
    return torch.as_tensor(np.ascontiguousarray(slices), dtype=torch.float32, device=device)[:, None]


def _resize(slices: np.ndarray, size) -> np.ndarray:
    import torch.nn.functional as F

    t = torch.as_tensor(np.ascontiguousarray(slices), dtype=torch.float32)[:, None]
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)[:, 0].numpy()


def _unit(volume: np.ndarray) -> np.ndarray:
    from bijros.registration.preprocess import robust_normalize

    return np.clip(robust_normalize(volume.astype(np.float32)), 0, 1)


@dataclasses.dataclass
class FewShotOptions:
    """How a volume is filled from its annotated slices (``bijros fewshot`` options of the same names)."""

    prior_weight: float = 0.5  # same volume: weight of the interpolated shape against the model (0: model only)
    band_px: float = 4.0  # same volume: the model may add voxels up to this far outside the interpolated shape
    taper_px: float = 1.0  # the shape shrinks by this much per slice beyond the first/last annotated slice
    finetune_steps: int = 30  # test-time fine-tuning steps on the annotated slices (0: off; +0.03 Dice, ~2 s CPU)
    finetune_lr: float = 1e-4

    def __post_init__(self):
        if not 0 <= self.prior_weight <= 1:
            raise InputError(f"prior weight {self.prior_weight} must be between 0 and 1.")
        if self.finetune_steps < 0 or self.band_px < 0 or self.taper_px < 0:
            raise InputError("fine-tuning steps, band and taper cannot be negative.")


def _model_probabilities(model, s_slices, s_masks, q_slices, indices, skip, same_volume, device) -> np.ndarray:
    """Foreground probability of every query slice (0 on ``skip``), each from its nearest annotated slice."""
    nq, ns = q_slices.shape[0], s_slices.shape[0]
    prob = np.zeros(q_slices.shape, np.float32)
    pairs: dict[int, list[int]] = {}
    for j in range(nq):
        if j in skip:
            continue
        position = j if same_volume else j * (ns - 1) / max(nq - 1, 1)
        pairs.setdefault(min(indices, key=lambda k: abs(k - position)), []).append(j)
    for i, js in pairs.items():  # one batch per annotated slice: the query slices it is the support of
        for start in range(0, len(js), BATCH):
            part = js[start:start + BATCH]
            sup = _tensor(np.repeat(s_slices[i][None], len(part), 0), device)
            msk = _tensor(np.repeat(s_masks[i][None].astype(np.float32), len(part), 0), device)
            with torch.no_grad():
                logits = model(sup, msk, _tensor(q_slices[part], device))
            prob[part] = logits.softmax(1)[:, 1].cpu().numpy()
    return prob


CONTEXT_PX = 16  # in-plane context the model sees around the band of the interpolated shape


def _box(region: np.ndarray, margin: int) -> tuple[slice, slice]:
    """In-plane bounding box of ``region`` (N, H, W) grown by ``margin`` pixels, inside the slices."""
    box = []
    for axis, size in ((1, region.shape[1]), (2, region.shape[2])):
        hits = np.nonzero(region.any(axis=tuple(a for a in (0, 1, 2) if a != axis)))[0]
        lo, hi = (int(hits.min()), int(hits.max()) + 1) if hits.size else (0, size)
        box.append(slice(max(0, lo - margin), min(size, hi + margin)))
    return tuple(box)


def _tuned(model, slices: np.ndarray, masks: np.ndarray, options: FewShotOptions):
    """``model`` fine-tuned on the annotated ``slices`` (n, H, W) and ``masks`` when options ask for it (a copy)."""
    if not options.finetune_steps:
        return model
    from bijros.fewshot.finetune import finetune

    return finetune(model, _tensor(slices, "cpu"), _tensor(masks.astype(np.float32), "cpu"), options.finetune_steps,
                    options.finetune_lr)


def _fused_probabilities(model, raw: np.ndarray, masks: np.ndarray, indices: list[int], options: FewShotOptions,
                         device) -> np.ndarray:
    """Same volume: (1 - w) x the model inside the band around the interpolated shape + w x that shape, on the
    slices (N, H, W) of ``raw`` (the image, not normalised). The model, its fine-tuning and the intensity
    normalisation all see one region: the band and CONTEXT_PX around it, in plane and across slices, so a
    structure painted on a whole-head scan gets the same input as in a crop around it."""
    from bijros.fewshot.prior import signed_distance_stack, soft_prior

    distance = signed_distance_stack(masks, indices, options.taper_px)
    band = distance <= options.band_px  # where the model may add to the shape
    rows = np.nonzero(band.any(axis=(1, 2)))[0]
    region = (slice(max(0, int(rows.min()) - CONTEXT_PX), int(rows.max()) + 1 + CONTEXT_PX), *_box(band, CONTEXT_PX))
    first = region[0].start
    local_img, local_masks = _unit(raw[region]), masks[region]
    local_indices = [i - first for i in indices]
    tuned = _tuned(model, local_img[local_indices], local_masks[local_indices], options)
    skip = set(local_indices) | {j for j in range(local_img.shape[0]) if not band[region][j].any()}
    prob = np.zeros(masks.shape, np.float32)
    prob[region] = _model_probabilities(tuned, local_img, local_masks, local_img, local_indices, skip, True, device)
    w = options.prior_weight
    return (1 - w) * prob * band + w * soft_prior(distance)


def segment(model, support: np.ndarray, support_labels: np.ndarray, query: np.ndarray, values: list[int] | None = None,
            slices: tuple[int, list[int]] | None = None, same_volume: bool = False, device="cpu",
            progress=None, options: FewShotOptions | None = None) -> tuple[np.ndarray, dict]:
    """Labels on the query's voxel grid (the dtype of ``support_labels``) and a report."""
    options = options or FewShotOptions()
    if support.ndim != 3 or query.ndim != 3:
        raise InputError(f"Few-shot segmentation needs 3D support and query images (got {support.ndim}D and "
                         f"{query.ndim}D).")
    if support.shape != support_labels.shape:
        raise InputError(f"The support labels {support_labels.shape} are not on the support image's grid "
                         f"{support.shape}.")
    values = values or [int(v) for v in np.unique(support_labels) if v != 0]
    if not values:
        raise InputError("The support labels are empty: paint the structure on at least one slice.")
    fused = same_volume and options.prior_weight > 0  # normalised per region there, not over the whole volume
    s_img = None if fused else _unit(support)
    q_img = s_img if same_volume else _unit(query)
    best_p = np.zeros(query.shape, np.float32)
    out = np.zeros(query.shape, support_labels.dtype)
    report = {"labels": {}, "options": dataclasses.asdict(options)}
    model.eval()
    for n, value in enumerate(values):
        axis, indices = annotated_slices(support_labels, value, slices)
        s_masks = np.moveaxis(support_labels == value, axis, 0)
        if fused:
            prob = _fused_probabilities(model, np.moveaxis(support, axis, 0), s_masks, indices, options, device)
        else:
            s_slices, q_slices = np.moveaxis(s_img, axis, 0), np.moveaxis(q_img, axis, 0)
            if s_slices.shape[1:] != q_slices.shape[1:]:  # another volume: its slices' size (the model is local)
                s_slices, s_masks = _resize(s_slices, q_slices.shape[1:]), _resize(s_masks, q_slices.shape[1:]) > 0.5
            tuned = _tuned(model, s_slices[indices], s_masks[indices], options)
            skip = set(indices) if same_volume else set()
            prob = _model_probabilities(tuned, s_slices, s_masks, q_slices, indices, skip, same_volume, device)
        if same_volume:
            prob[indices] = s_masks[indices]  # an annotated slice is kept exactly
        prob = np.moveaxis(prob, 0, axis)
        take = (prob > 0.5) & (prob > best_p)
        out[take], best_p[take] = value, prob[take]
        report["labels"][str(value)] = {"axis": axis, "annotated_slices": indices, "voxels": int((out == value).sum())}
        if progress:
            progress((n + 1) / len(values), f"label {value}: {len(indices)} annotated slice(s) along axis {axis}")
    return out, report
