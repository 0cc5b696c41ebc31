"""Segmentation and deformation quality metrics, in one place.

Dice and HD95 are computed per label on each label's bounding box (scipy's exact Euclidean
distance transform with the true voxel spacing), which keeps 100+ labels on a 1 mm brain
fast and light; folding and SDlogJ come from :mod:`bijros.registration.field`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["dice_per_label", "evaluate_labels", "hd95"]


def dice_per_label(pred: np.ndarray, truth: np.ndarray, labels: list[int]) -> dict[int, float]:
    """Dice of each label value (NaN when a label is absent from both)."""
    n = int(max(pred.max(), truth.max(), max(labels, default=0))) + 1
    # one bincount of (pred, truth) pairs gives all intersections at once
    pairs = np.bincount(pred.ravel().astype(np.int64) * n + truth.ravel().astype(np.int64), minlength=n * n)
    confusion = pairs.reshape(n, n)
    out = {}
    for lab in labels:
        inter = confusion[lab, lab]
        size = confusion[lab, :].sum() + confusion[:, lab].sum()
        out[lab] = float(2 * inter / size) if size > 0 else float("nan")
    return out


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hd95(pred_mask: np.ndarray, truth_mask: np.ndarray, spacing) -> float:
    """95th percentile symmetric surface distance in mm (NaN if a mask is empty)."""
    if not pred_mask.any() or not truth_mask.any():
        return float("nan")
    both = pred_mask | truth_mask
    idx = np.nonzero(both)
    lo = np.maximum(np.min(idx, axis=1) - 2, 0)
    hi = np.max(idx, axis=1) + 3
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    p, t = pred_mask[sl], truth_mask[sl]
    sp, st = _surface(p), _surface(t)
    dt_t = ndimage.distance_transform_edt(~st, sampling=spacing)
    dt_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    d = np.concatenate([dt_t[sp], dt_p[st]])
    return float(np.percentile(d, 95))


def evaluate_labels(
    pred: np.ndarray, truth: np.ndarray, spacing, exclude: tuple[int, ...] = (0,), with_hd95: bool = True
) -> dict:
    """Per-label Dice (+ HD95 in mm) over the labels present in ``truth`` minus ``exclude``."""
    labels = sorted(int(v) for v in np.unique(truth) if int(v) not in set(exclude))
    dice = dice_per_label(pred, truth, labels)
    result: dict = {"labels": labels, "dice": {str(k): v for k, v in dice.items()}}
    result["mean_dice"] = float(np.nanmean(list(dice.values()))) if labels else float("nan")
    if with_hd95:
        hd = {str(lab): hd95(pred == lab, truth == lab, spacing) for lab in labels}
        result["hd95_mm"] = hd
        finite = [v for v in hd.values() if np.isfinite(v)]
        result["mean_hd95_mm"] = float(np.mean(finite)) if finite else float("nan")
    return result
