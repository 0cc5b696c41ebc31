"""A one-shot cohort in atlas space: the atlas and every unlabelled scan, affinely aligned to it and resampled
onto one working grid, with (optionally) our instance-optimisation propagation of the atlas labels onto each.

The originals (Bi-JROS, BRBS) assume pre-aligned data; here the engine's affine stage aligns each scan to the
atlas first (the same stage as ``bijros register``). Tensors on the working grid ``grid`` (the atlas's
foreground at ``spacing`` mm, a multiple of the network's size):

    atlas (1, D, H, W) in [0, 1]; atlas_classes (D, H, W) class indices (0 background, i -> values[i])
    images (N, D, H, W); affines (N, 4, 4) atlas RAS -> scan RAS
    pseudo (N, D, H, W) class indices of the io propagation, flows (N, 3, D, H, W) its displacement in working-grid
    voxels (i, j, k), atlas sampled at x + u(x) (None when not computed)

Prepared once and kept in the run folder (``cohort.safetensors`` + ``cohort.json``), so a resumed run does not
align again.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from bijros.errors import InputError
from bijros.io.image import Image, LabelTable, remap_values
from bijros.registration.grid import Grid, points_ras, resample_to_grid, sample

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclasses.dataclass
class Cohort:
    grid: Grid
    atlas: torch.Tensor
    atlas_classes: torch.Tensor
    values: list[int]
    table: LabelTable | None
    images: torch.Tensor
    names: list[str]
    affines: torch.Tensor
    pseudo: torch.Tensor | None = None
    flows: torch.Tensor | None = None
    skipped: list[str] = dataclasses.field(default_factory=list)

    @property
    def classes(self) -> int:
        return len(self.values)

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        tensors = {"atlas": self.atlas, "atlas_classes": self.atlas_classes.to(torch.uint8 if self.classes < 256
                                                                               else torch.int32),
                   "images": self.images.half(), "affines": self.affines.double()}
        if self.pseudo is not None:
            tensors["pseudo"] = self.pseudo.to(tensors["atlas_classes"].dtype)
            tensors["flows"] = self.flows.half()
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(folder / "cohort.safetensors.tmp"))
        meta = {"grid": {"shape": list(self.grid.shape), "ijk_to_ras": self.grid.ijk_to_ras.tolist()},
                "values": self.values, "names": self.names, "skipped": self.skipped}
        (folder / "cohort.json.tmp").write_text(json.dumps(meta), encoding="utf-8")
        (folder / "cohort.safetensors.tmp").replace(folder / "cohort.safetensors")
        (folder / "cohort.json.tmp").replace(folder / "cohort.json")

    @classmethod
    def load(cls, folder: Path, table: LabelTable | None) -> Cohort:
        from safetensors.torch import load_file

        meta = json.loads((folder / "cohort.json").read_text(encoding="utf-8"))
        t = load_file(str(folder / "cohort.safetensors"))
        grid = Grid(tuple(meta["grid"]["shape"]), np.asarray(meta["grid"]["ijk_to_ras"]))
        return cls(grid, t["atlas"], t["atlas_classes"].long(), meta["values"], table, t["images"].float(),
                   meta["names"], t["affines"], t["pseudo"].long() if "pseudo" in t else None,
                   t["flows"].float() if "flows" in t else None, meta.get("skipped", []))


def list_images(images: str | Path | list) -> list[Path]:
    """The cohort's image files: a folder (every image file in it, sorted), a text file (one path per line,
    relative to the file's folder; ``#`` starts a comment) or a list of paths."""
    if isinstance(images, (list, tuple)):
        return [Path(p) for p in images]
    path = Path(images)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
    if path.is_file() and not path.name.lower().endswith(IMAGE_SUFFIXES):
        lines = [ln.split("#")[0].strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        return [p if p.is_absolute() else path.parent / p for p in (Path(ln) for ln in lines if ln)]
    raise InputError(f"--images {path}: give a folder of images or a text file listing one image path per line.")


def choose_spacing(atlas: Image, device: torch.device) -> float:
    """The working grid: the atlas's own voxels (at least 1 mm) for a crop up to 128 mm, else 2 mm on a CPU
    (1 mm on a GPU)."""
    extent = float(np.max(np.abs(atlas.corners_ras().max(0) - atlas.corners_ras().min(0))))
    fine = max(1.0, float(np.min(atlas.spacing)))
    return fine if extent <= 128 or device.type == "cuda" else 2.0


def check_atlas(atlas: Image, labels: Image) -> list[int]:
    """The atlas's label values (0 first); InputError when the labels are empty or not on the atlas grid."""
    from bijros.registration.preprocess import check_intensity_image

    check_intensity_image(atlas, "atlas")
    if not labels.same_grid(atlas):
        raise InputError(f"The atlas labels ({labels.shape}, spacing {np.round(labels.spacing, 3).tolist()}) are not "
                         f"on the atlas grid ({atlas.shape}); give the label map that belongs to the atlas image, or pass "
                         "--resample-labels to resample them onto it.")
    values = sorted(int(v) for v in np.unique(labels.array))
    if values == [0] or not values:
        raise InputError("The atlas label map is empty (only background): label at least one structure.")
    return values if values[0] == 0 else [0, *values]


def labels_onto(labels: Image, image: Image) -> Image:
    """``labels`` on ``image``'s grid: the nearest label at each voxel centre, through world coordinates (0
    outside); the same image when already there."""
    if labels.same_grid(image):
        return labels
    from bijros.registration.grid import Grid, sample, slab_points

    src = torch.as_tensor(np.asarray(labels.array), dtype=torch.float32)[None]
    own = Grid(labels.shape, labels.ijk_to_ras)
    out = np.zeros(image.shape, dtype=labels.array.dtype)
    for s, e, pts in slab_points(Grid(image.shape, image.ijk_to_ras), 1_000_000):  # bounded memory on whole brains
        out[s:e] = sample(src, own, pts, mode="nearest")[0].round().numpy().astype(labels.array.dtype)
    return Image(out, image.ijk_to_ras.copy(), labels.label_table, labels.name)


class Aligner:
    """Affine alignment of scans to the atlas on the working grid (the ``register`` affine stage)."""

    def __init__(self, atlas: Image, spacing: float, device: torch.device, multiple: int = 8, options=None):
        from bijros.registration.pipeline import RegistrationOptions
        from bijros.registration.preprocess import robust_normalize, working_grid

        self.device = device
        self.options = options or RegistrationOptions(method="io")
        norm = robust_normalize(atlas.array)
        self.grid = working_grid(atlas, norm, spacing, multiple=multiple)
        self.points = points_ras(self.grid, device)
        self.atlas = resample_to_grid(torch.as_tensor(norm, device=device)[None], Grid(atlas.shape, atlas.ijk_to_ras),
                                      self.grid)

    def align(self, image: Image) -> tuple[torch.Tensor, np.ndarray]:
        """(the scan on the working grid (1, D, H, W), the affine atlas RAS -> scan RAS)."""
        from bijros.registration.affine import affine_register
        from bijros.registration.preprocess import check_intensity_image, robust_normalize, working_grid

        check_intensity_image(image, image.name or "cohort image")
        norm = robust_normalize(image.array)
        m_t = torch.as_tensor(norm, device=self.device)[None]
        own = Grid(image.shape, image.ijk_to_ras)
        canon_grid = working_grid(image, norm, self.grid.spacing[0])
        canon = resample_to_grid(m_t, own, canon_grid)
        with torch.enable_grad():  # the affine stage optimises by autograd, also when called under no_grad
            affine = affine_register(self.atlas, self.grid, canon, canon_grid, self.options.affine_options())
        a = torch.as_tensor(affine, dtype=torch.float32, device=self.device)
        return sample(m_t, own, self.points @ a[:3, :3].T + a[:3, 3]), affine

    def carry(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        """Our instance optimisation of ``moving`` onto ``fixed`` (both (1, D, H, W) on the working grid): the
        displacement (3, D, H, W) in RAS mm at the working grid's voxels (``moving`` is sampled at x + u(x))."""
        from bijros.registration.deformable import deformable_register

        disp_mm, disp_grid = deformable_register(fixed, moving, self.grid, self.options.deformable_options())
        return sample(disp_mm[0], disp_grid, self.points, padding_mode="border")

    def labels_on_grid(self, labels: Image, values: list[int]) -> torch.Tensor:
        """Class indices (D, H, W) of a label map on the atlas grid: its one-hot, trilinearly resampled, argmax."""
        # values ascending, 0 first (check_atlas); unknown values: background
        classes = remap_values(labels.array, values, np.arange(len(values)), 0).astype(np.int64)
        onehot = torch.nn.functional.one_hot(torch.as_tensor(classes), len(values)).permute(3, 0, 1, 2).float()
        own = Grid(labels.shape, labels.ijk_to_ras)
        return resample_to_grid(onehot.to(self.device), own, self.grid).argmax(0)


def io_pseudo_labels(aligner: Aligner, image_work: torch.Tensor, atlas_onehot: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Our instance optimisation from the atlas onto one aligned scan: (class indices (D, H, W), displacement
    (3, D, H, W) in working-grid voxels)."""
    u = aligner.carry(image_work, aligner.atlas)  # (3, D, H, W) mm
    warped = sample(atlas_onehot, aligner.grid, aligner.points + u.permute(1, 2, 3, 0), padding_mode="border")
    spacing = torch.as_tensor(aligner.grid.spacing, dtype=u.dtype, device=u.device).view(3, 1, 1, 1)
    return warped.argmax(0), u / spacing


def prepare_cohort(atlas: Image, atlas_labels: Image, paths: list[Path], spacing: float, device: torch.device,
                   multiple: int, pseudo: bool, progress=None, log=None, pseudo_paths: int = 0) -> Cohort:
    """Align every readable scan of ``paths`` to the atlas; a scan that fails to load or align is skipped with a
    warning naming it. Fewer than 2 usable scans is an InputError. ``pseudo_paths`` > 0: each scan's io pseudo
    labels are fused with those of that many other scans carried onto it (:mod:`bijros.oneshot.paths`)."""
    from bijros.io import load_image

    log = log or (lambda msg: print(msg, file=sys.stderr))
    values = check_atlas(atlas, atlas_labels)
    aligner = Aligner(atlas, spacing, device, multiple)
    atlas_classes = aligner.labels_on_grid(atlas_labels, values)
    onehot = torch.nn.functional.one_hot(atlas_classes, len(values)).permute(3, 0, 1, 2).float()
    images, names, affines, labels, flows, skipped = [], [], [], [], [], []
    for n, path in enumerate(paths):
        try:
            image = load_image(path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                work, affine = aligner.align(image)
        except Exception as exc:
            skipped.append(str(path))
            log(f"warning: skipped cohort image {path}: {exc}")
            continue
        images.append(work[0].cpu())
        names.append(str(path))
        affines.append(torch.as_tensor(affine))
        if pseudo:
            lab, flow = io_pseudo_labels(aligner, work, onehot)
            labels.append(lab.cpu())
            flows.append(flow.cpu())
        if progress:
            share = 0.5 if pseudo and pseudo_paths > 0 else 1.0
            progress(share * (n + 1) / len(paths), f"aligned {n + 1}/{len(paths)}: {Path(path).name}")
    if len(images) < 2:
        raise InputError(f"The cohort has {len(images)} usable image(s) of {len(paths)}; one-shot learning needs at "
                         "least 2 unlabelled scans (the more, the better: tens are typical).")
    if pseudo and pseudo_paths > 0:
        from bijros.oneshot.paths import fused_pseudo_labels

        labels = list(fused_pseudo_labels(aligner, onehot, torch.stack(images), torch.stack(labels),
                                          torch.stack(flows), pseudo_paths,
                                          progress=progress and (lambda f, m: progress(0.5 + 0.5 * f, m))))
    return Cohort(aligner.grid, aligner.atlas.cpu(), atlas_classes.cpu(), values, atlas_labels.label_table,
                  torch.stack(images), names, torch.stack(affines), torch.stack(labels) if pseudo else None,
                  torch.stack(flows) if pseudo else None, skipped)
