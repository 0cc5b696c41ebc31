"""Segment a new scan with a trained one-shot model (``bijros segment``).

The scan is aligned to the model's atlas by the same affine stage as in training, the segmentation decoder runs
on the working grid, and its class probabilities are carried back onto the scan's own grid through the affine
(slab by slab) and turned into the atlas's label values. For comparison the atlas labels are also propagated by
our best registration (``io``) and, on request, by the model's registration decoder.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from bijros.errors import InputError
from bijros.io.image import Image
from bijros.registration.grid import Grid, sample, slab_points


@dataclasses.dataclass
class OneShotModel:
    net: torch.nn.Module
    entry: dict
    atlas: Image
    atlas_labels: Image
    values: list[int]
    device: torch.device
    aligner: object

    @property
    def grid(self) -> Grid:
        return self.aligner.grid


def load_oneshot_model(model_dir, device: torch.device) -> OneShotModel:
    """The folder's network (weights verified by sha256, read with safetensors), atlas and label values; read once
    per process where :mod:`bijros.memo` is on (a batch worker; the network is used read-only)."""
    from bijros import memo

    key = memo.file_key(model_dir)
    return memo.cached(None if key is None else ("oneshot-model", key, str(device)),
                       lambda: _load_oneshot_model(model_dir, device), dataclasses.replace)


def _load_oneshot_model(model_dir, device: torch.device) -> OneShotModel:
    from bijros.io import load_image
    from bijros.models.bijros_net import BiJROSNet
    from bijros.oneshot.checkpoint import load_tensors, read_model_entry
    from bijros.oneshot.cohort import Aligner

    entry, folder = read_model_entry(model_dir)
    tensors, entry = load_tensors(folder, "model", "one-shot model weights")
    cfg = entry["config"]
    net = BiJROSNet(int(cfg["classes"]), tuple(cfg["channels"]), bool(cfg.get("separate", False)))
    try:
        net.load_state_dict(tensors)
    except RuntimeError as exc:
        raise InputError(f"the weights in {folder} do not fit the model described by its model.json: {exc}") from exc
    net = net.to(device).eval()
    from bijros.io.label_tables import read_label_table

    table = read_label_table(folder / entry["label_table"]) if entry.get("label_table") else None
    atlas = load_image(folder / entry["atlas"]["image"])
    atlas_labels = load_image(folder / entry["atlas"]["labels"], label_map=True)
    if table is not None:
        atlas_labels.label_table = table
    aligner = Aligner(atlas, float(entry["grid"]["spacing_mm"]), device, net.multiple)
    if list(aligner.grid.shape) != list(entry["grid"]["shape"]):
        raise InputError(f"the atlas in {folder} gives a working grid {aligner.grid.shape}, not the trained "
                         f"{tuple(entry['grid']['shape'])}: the folder's atlas was changed.")
    return OneShotModel(net, entry, atlas, atlas_labels, [int(v) for v in entry["values"]], device, aligner)


def to_image_grid(probs: torch.Tensor, work: Grid, image: Image, affine: np.ndarray, values: list[int]) -> np.ndarray:
    """Class probabilities (C, D, H, W) on the working grid -> label values on ``image``'s grid (argmax of the
    probabilities sampled through ``affine``, atlas RAS -> image RAS; outside the working grid: background)."""
    inv = torch.as_tensor(np.linalg.inv(affine), dtype=torch.float32, device=probs.device)
    lut = np.asarray(values)
    out = np.zeros(image.shape, dtype=np.int16 if lut.max() < 32768 else np.int32)
    for s, e, pts in slab_points(Grid(image.shape, image.ijk_to_ras), 1_000_000, probs.device):
        p = sample(probs, work, pts @ inv[:3, :3].T + inv[:3, 3])
        out[s:e] = lut[p.argmax(0).cpu().numpy()]
    return out


def segment(model: OneShotModel, image: Image, propagation: bool = True, decoder_registration: bool = False,
            progress=None) -> dict:
    """{"labels": Image, "labels_propagated": Image | None, "labels_decoder_registration": Image | None,
    "affine_ras": 4x4, "report": dict} for one scan."""
    from bijros.models.spatial import warp
    from bijros.oneshot.bilevel import one_hot

    report = progress or (lambda f, m: None)
    t0 = time.perf_counter()
    report(0.0, "aligning to the atlas")
    work, affine = model.aligner.align(image)
    t_align = time.perf_counter() - t0
    table = model.atlas_labels.label_table
    with torch.no_grad():
        x = work[None]
        probs = torch.softmax(model.net.segment(x), 1)[0]
        labels = to_image_grid(probs, model.grid, image, affine, model.values)
        out = {"labels": Image(labels, image.ijk_to_ras.copy(), table, name="labels"), "affine_ras": affine}
        seconds = {"align": round(t_align, 3), "segment": round(time.perf_counter() - t0 - t_align, 3)}
        out["labels_decoder_registration"] = None
        if decoder_registration:
            atlas_classes = model.aligner.labels_on_grid(model.atlas_labels, model.values)
            flow = model.net.register(model.aligner.atlas[None], x)
            warped = warp(one_hot(atlas_classes, len(model.values)).to(flow.device), flow)[0]
            out["labels_decoder_registration"] = Image(to_image_grid(warped, model.grid, image, affine, model.values),
                                                       image.ijk_to_ras.copy(), table, name="labels")
    report(0.3, "segmented")
    out["labels_propagated"], qc = None, None
    if propagation:
        from bijros.registration.pipeline import RegistrationOptions, propagate

        t1 = time.perf_counter()
        result = propagate(model.atlas, model.atlas_labels, image,
                           RegistrationOptions(method="io", device=str(model.device)),
                           affine_ras=np.linalg.inv(affine))
        out["labels_propagated"] = Image(result.labels.array, image.ijk_to_ras.copy(), table, name="labels")
        qc = result.report["qc"]
        seconds["propagate"] = round(time.perf_counter() - t1, 3)
    report(1.0, "done")
    out["report"] = summary(model, image, out, seconds, qc)
    return out


def summary(model: OneShotModel, image: Image, out: dict, seconds: dict, qc: dict | None) -> dict:
    """Volumes (mL) per label of each result and the decoder's Dice agreement with the propagation."""
    voxel_ml = float(np.prod(image.spacing)) / 1000.0
    structures = []
    seg, prop = out["labels"].array, out["labels_propagated"]
    table = model.atlas_labels.label_table
    for v in model.values[1:]:
        row = {"value": v, "name": table.name(v) if table is not None and v in table else str(v),
               "volume_ml": round(float((seg == v).sum()) * voxel_ml, 3)}
        if prop is not None:
            a, b = seg == v, prop.array == v
            row["volume_ml_propagated"] = round(float(b.sum()) * voxel_ml, 3)
            denom = a.sum() + b.sum()
            row["agreement_dice"] = round(float(2 * (a & b).sum() / denom), 4) if denom else None
        structures.append(row)
    return {"model": model.entry["name"], "recipe": model.entry["recipe"], "image": image.name,
            "device": str(model.device), "affine_ras": np.round(out["affine_ras"], 6).tolist(),
            "structures": structures, "propagation_qc": qc, "seconds": seconds,
            "note": "labels.nii.gz: the segmentation decoder; labels_propagated.nii.gz: the atlas labels propagated by "
                    "bijros's io registration, for comparison; agreement_dice compares the two"}
