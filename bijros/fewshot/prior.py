"""The shape of a structure between and beyond its annotated slices, from the masks alone (no image).

Shape-based interpolation (Raya and Udupa, IEEE TMI 1990; Herman et al. 1992): each annotated slice's mask
becomes a signed distance map (pixels, negative inside); a slice between two annotated ones takes the
linear blend of their maps, so the contour moves smoothly from one to the other (what Segment Editor's
*Fill between slices* does with morphological contour interpolation). Beyond the first and the last
annotated slice the nearest one's map is carried on, shrunk by ``taper`` pixels per slice: structures
narrow towards their ends, and the image (the few-shot model) decides where they stop.

:func:`signed_distance_stack` -> (N, H, W) float32 maps for every slice of the stack; ``< 0`` is inside.
:func:`soft_prior` turns such maps into probabilities.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> signed distance in pixels to the mask's edge: negative inside, positive outside."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.full(mask.shape, float(sum(mask.shape)), np.float32)
    if mask.all():
        return np.full(mask.shape, -float(sum(mask.shape)), np.float32)
    outside = ndimage.distance_transform_edt(~mask)
    inside = ndimage.distance_transform_edt(mask)
    return (outside - inside + 0.5 * mask - 0.5 * ~mask).astype(np.float32)  # +-0.5: the edge between pixels


def signed_distance_stack(masks: np.ndarray, indices: list[int], taper: float = 1.0) -> np.ndarray:
    """Signed distance maps of every slice of ``masks`` (N, H, W) from its annotated slices ``indices``:
    interpolated between two annotated slices, carried on (shrunk by ``taper`` px per slice) beyond them.
    The annotated slices keep their own maps."""
    indices = sorted({int(i) for i in indices})
    if not indices:
        raise ValueError("no annotated slice")
    maps = {i: signed_distance(masks[i]) for i in indices}
    out = np.empty(masks.shape, np.float32)
    first, last = indices[0], indices[-1]
    for j in range(masks.shape[0]):
        if j <= first:
            out[j] = maps[first] + taper * (first - j)
        elif j >= last:
            out[j] = maps[last] + taper * (j - last)
        else:
            k = int(np.searchsorted(indices, j))  # indices[k - 1] < j <= indices[k]
            lo, hi = indices[k - 1], indices[k]
            t = (j - lo) / (hi - lo)
            out[j] = (1 - t) * maps[lo] + t * maps[hi]
    return out


def soft_prior(distance: np.ndarray, width: float = 1.5) -> np.ndarray:
    """Signed distance (pixels) -> probability of being inside: 0.5 on the interpolated contour, a logistic
    ramp ``width`` pixels wide."""
    return (1.0 / (1.0 + np.exp(np.clip(distance / max(width, 1e-3), -30, 30)))).astype(np.float32)
