"""Few-shot segmentation of a volume from a few annotated slices (``bijros fewshot``).

The support is an image with labels on some slices (a structure painted on a few slices in Slicer, or a
labelled volume: then every slice holding the label counts). The annotated slices are along one voxel axis:
``slices`` names them, else the axis is the one along which the labelled voxels lie on the fewest slices. Every slice of the query along that axis is segmented by the model from one annotated slice (the
GMRD chunking protocol: the query's slices are paired with the nearest annotated slice, by index in the same
volume, by relative position in another volume). In the same volume the annotated slices are kept exactly.
Several labels are segmented one by one and each voxel takes the most probable (background below 0.5).
"""

from __future__ import annotations

import numpy as np
import torch

from bijros.errors import InputError


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
    return best[1], best[2]


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


def segment(model, support: np.ndarray, support_labels: np.ndarray, query: np.ndarray, values: list[int] | None = None,
            slices: tuple[int, list[int]] | None = None, same_volume: bool = False, device="cpu",
            progress=None) -> tuple[np.ndarray, dict]:
    """Labels on the query's voxel grid (the dtype of ``support_labels``) and a report."""
    if support.ndim != 3 or query.ndim != 3:
        raise InputError(f"Few-shot segmentation needs 3D support and query images (got {support.ndim}D and "
                         f"{query.ndim}D).")
    if support.shape != support_labels.shape:
        raise InputError(f"The support labels {support_labels.shape} are not on the support image's grid "
                         f"{support.shape}.")
    values = values or [int(v) for v in np.unique(support_labels) if v != 0]
    if not values:
        raise InputError("The support labels are empty: paint the structure on at least one slice.")
    s_img, q_img = _unit(support), (None if same_volume else _unit(query))
    if same_volume:
        q_img = s_img
    best_p = np.zeros(query.shape, np.float32)
    out = np.zeros(query.shape, support_labels.dtype)
    report = {"labels": {}}
    model.eval()
    for n, value in enumerate(values):
        axis, indices = annotated_slices(support_labels, value, slices)
        s_slices = np.moveaxis(s_img, axis, 0)
        s_masks = np.moveaxis(support_labels == value, axis, 0)
        q_slices = np.moveaxis(q_img, axis, 0)
        nq, ns = q_slices.shape[0], s_slices.shape[0]
        if s_slices.shape[1:] != q_slices.shape[1:]:  # another volume: its slices' size (the model is local)
            s_slices, s_masks = _resize(s_slices, q_slices.shape[1:]), _resize(s_masks, q_slices.shape[1:]) > 0.5
        prob = np.zeros(q_slices.shape, np.float32)
        pairs: dict[int, list[int]] = {}
        for j in range(nq):
            if same_volume and j in indices:
                prob[j] = s_masks[j]  # an annotated slice is kept exactly
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
        prob = np.moveaxis(prob, 0, axis)
        take = (prob > 0.5) & (prob > best_p)
        out[take], best_p[take] = value, prob[take]
        report["labels"][str(value)] = {"axis": axis, "annotated_slices": indices, "voxels": int((out == value).sum())}
        if progress:
            progress((n + 1) / len(values), f"label {value}: {len(indices)} annotated slice(s) along axis {axis}")
    return out, report
