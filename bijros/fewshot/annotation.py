"""Which slices of a support label map are annotated (numpy only: the Slicer side checks a painted segment with it
before a run starts, without importing torch)."""

from __future__ import annotations

import numpy as np

from bijros.errors import InputError


class MixedOrientationError(InputError):
    """The label lies on slices of more than one orientation (painted in two views)."""


def annotated_slices(labels: np.ndarray, value: int, slices: tuple[int, list[int]] | None = None
                     ) -> tuple[int, list[int]]:
    """(axis, indices) of the slices of ``labels`` annotated with ``value``."""
    mask = labels == value
    if not mask.any():
        raise InputError(f"The support mask of label {value} is empty: paint the structure on at least one slice.")
    if slices is not None:
        axis, indices = slices
        bad = [i for i in indices if not 0 <= i < labels.shape[axis]]
        if bad:
            raise InputError(f"--slices: slice(s) {bad} are outside axis {axis} (0..{labels.shape[axis] - 1}).")
        holding = [i for i in indices if np.take(mask, i, axis=axis).any()]
        if not holding:
            raise InputError(f"--slices: none of the slices {indices} along axis {axis} holds label {value}.")
        return axis, sorted(holding)  # a label is supported by the annotated slices that hold it
    best = None
    for axis in range(3):
        per_slice = mask.any(axis=tuple(a for a in range(3) if a != axis))
        idx = np.nonzero(per_slice)[0]
        key = (len(idx), len(idx) / (idx.max() - idx.min() + 1))  # fewest slices, then the sparsest
        if best is None or key < best[0]:
            best = (key, axis, idx.tolist())
    axis, indices = best[1], best[2]
    across = _isolated(mask, axis)
    other = [a for a in range(3) if a != axis and (_isolated(mask, a) & ~across).sum() >= MIXED_SHARE * mask.sum()]
    if other and _longest_run(indices) >= MIXED_RUN:
        raise MixedOrientationError(f"Label {value} looks painted on slices of more than one orientation (along "
                                    f"voxel axes {axis} and {other[0]}): paint every slice of a structure in the "
                                    "same view, or name the annotated slices with --slices AXIS:i,j,k.")
    return axis, indices


#: painted in two views when this share of the labelled voxels lies on slices across a second axis
MIXED_SHARE = 0.2
#: ... and the slices holding the label along the first axis run on for this many (the other view's slices cross
#: them); fewer: a small structure painted on consecutive slices, not refused
MIXED_RUN = 5


def _isolated(mask: np.ndarray, axis: int) -> np.ndarray:
    """The labelled voxels whose two neighbours along ``axis`` are unlabelled (voxels of slices painted across
    that axis)."""
    m = np.moveaxis(mask, axis, 0)
    padded = np.pad(m, ((1, 1), (0, 0), (0, 0)))
    return np.moveaxis(m & ~padded[:-2] & ~padded[2:], 0, axis)


def _longest_run(indices: list[int]) -> int:
    """The longest run of consecutive indices."""
    best = run = 1
    for a, b in zip(indices, indices[1:]):
        run = run + 1 if b == a + 1 else 1
        best = max(best, run)
    return best if indices else 0
