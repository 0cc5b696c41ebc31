"""Multi-atlas propagation: rank a library's atlases for a target, register the top k, fuse their labels.

One process, one read of the target, one torch import: every atlas goes through the same
:func:`bijros.registration.pipeline.register` as a single propagation. The affine found while
ranking is reused by the deformable registration (the affine stage runs once per atlas).

Console example::

    from bijros.atlas.folders import resolve_library
    from bijros.atlas.multi import MultiAtlasOptions, load_library_atlases, propagate_library
    from bijros.io import load_image
    target = load_image("subject_t1.nii.gz")
    atlases, skipped = load_library_atlases(resolve_library("my-brains").atlases)
    result = propagate_library(target, atlases, MultiAtlasOptions(top_k=5, fusion="weighted"))
    result.labels, result.confidence, result.ranking
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from bijros.atlas.fusion import (
    FUSION_METHODS,
    foreground,
    fuse,
    jlf_weights,
    local_search,
    local_weights,
    normalise,
)
from bijros.atlas.mirror import MIRROR_MODES, with_mirrored
from bijros.errors import InputError
from bijros.io.image import Image, LabelTable
from bijros.progress import Progress

#: when no k is given: every atlas of the library (mirrors included), up to this many. Measured on MALF (leave
#: one out, README "Atlas selection"): each added atlas raised the fused Dice up to the 28 there were (14 and
#: their mirrors), at ~7 s per atlas on 2 CPU cores; beyond 30 nothing was measured and the wall time passes 5 min.
AUTO_TOP_K_MAX = 30
MULTI_STAGES = {"rank": 0.25, "register": 0.55, "fuse": 0.15, "write": 0.05}


@dataclasses.dataclass
class LoadedAtlas:
    name: str
    image: Image
    labels: Image


@dataclasses.dataclass
class MultiAtlasOptions:
    top_k: int | None = None  # None: automatic (all, up to AUTO_TOP_K_MAX); 0: every atlas; k: the best k
    fusion: str = "jlf"  # jlf | weighted | vote
    registration: object = None  # RegistrationOptions for the deformable stage (None: the defaults)
    sigma_mm: float = 2.0  # weighted fusion: neighbourhood of the local intensity difference
    power: float = 2.0  # weighted fusion: weight = (eps + local MSD) ** -power
    search_radius: int = 1  # jlf: local search within this many voxels before the weights (0: none)
    mirror: str = "auto"  # auto | on | off: the atlases flipped left to right join the library (bijros.atlas.mirror)

    def validate(self, library_size: int) -> int:
        if self.fusion not in FUSION_METHODS:
            raise InputError(f"Unknown fusion '{self.fusion}'. Choose one of: {', '.join(FUSION_METHODS)}.")
        if self.mirror not in MIRROR_MODES:
            raise InputError(f"Unknown --mirror '{self.mirror}'. Choose one of: {', '.join(MIRROR_MODES)}.")
        if not 0 <= self.search_radius <= 3:
            raise InputError(f"--search-radius {self.search_radius}: give 0 (no search) to 3 voxels.")
        if self.top_k is None:
            return min(library_size, AUTO_TOP_K_MAX)
        if self.top_k < 0:
            raise InputError(f"--top-k {self.top_k}: give a positive number (or 0 for every atlas).")
        return library_size if self.top_k == 0 else min(self.top_k, library_size)


@dataclasses.dataclass
class MultiAtlasResult:
    target: Image
    labels: Image  # fused, on the target grid, with the merged label table
    confidence: Image  # float32 in [0, 1]
    ranking: list  # [{"name", "score", "rank", "used", "seconds"}], best first
    report: dict
    notes: list


def load_library_atlases(entries) -> tuple[list[LoadedAtlas], list[str]]:
    """Read each :class:`~bijros.atlas.folders.FolderAtlas`; one that cannot be read is skipped with its name."""
    from bijros.io import load_image
    from bijros.registration.pipeline import check_labels_match
    from bijros.registration.preprocess import check_intensity_image

    atlases, skipped = [], []
    for entry in entries:
        try:
            image = load_image(entry.image_path)
            check_intensity_image(image, f"atlas {entry.name}")
            labels = load_image(entry.labels_path, label_map=True,
                                label_table=str(entry.table_path) if entry.table_path else None)
            check_labels_match(image, labels, f"atlas {entry.name}", allow_resample=False)
        except InputError as exc:
            skipped.append(f"{entry.name}: {exc}")
            continue
        atlases.append(LoadedAtlas(entry.name, image, labels))
    return atlases, skipped


def merged_label_table(atlases: list[LoadedAtlas]) -> LabelTable | None:
    """One table for the fused labels; ``InputError`` naming both atlases when a value has two names."""
    merged, owner = LabelTable(), {}
    for atlas in atlases:
        table = atlas.labels.label_table
        if table is None:
            continue
        for entry in table:
            known = merged.entries.get(entry.value)
            if known is not None and known.name.strip().lower() != entry.name.strip().lower():
                raise InputError(
                    f"The atlases' label tables disagree: value {entry.value} is '{known.name}' in atlas "
                    f"'{owner[entry.value]}' but '{entry.name}' in atlas '{atlas.name}'. Give the atlases one "
                    "label table (e.g. one labels.csv in the library folder).")
            if known is None:
                merged.add(entry.value, entry.name, entry.color)
                owner[entry.value] = atlas.name
    return merged if len(merged) else None


def looks_like_ct(image: Image) -> bool:
    """Hounsfield units: air near -1000 (the 1st percentile below -500)."""
    return float(np.percentile(image.array, 1)) < -500


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).mean() / np.sqrt((a * a).mean() * (b * b).mean() + 1e-12))


def rank_atlases(target: Image, atlases: list[LoadedAtlas], registration=None, progress=None, cancel=None):
    """Affine-align every atlas to the target and score it by NCC of the intensities inside the target's
    foreground. Returns [(score, atlas, affine_ras, seconds)], best first."""
    from bijros.registration.pipeline import RegistrationOptions, register

    options = dataclasses.replace(registration or RegistrationOptions(), method="affine")
    target_array = target.array.astype(np.float32)
    target_norm, inside = normalise(target_array), foreground(target_array)
    ranked = []
    for i, atlas in enumerate(atlases):
        if cancel is not None and cancel():
            from bijros.errors import CancelledError

            raise CancelledError("Atlas ranking cancelled.")
        t0 = time.perf_counter()
        result = register(target, atlas.image, None, options)
        warped = normalise(result.warped.array)
        score = _ncc(target_norm[inside], warped[inside])
        ranked.append((score, atlas, result.affine_ras, time.perf_counter() - t0))
        if progress:
            progress((i + 1) / len(atlases), f"ranked {atlas.name}: NCC {score:.3f}")
    ranked.sort(key=lambda r: -r[0])
    return ranked


def propagate_library(target: Image, atlases: list[LoadedAtlas], options: MultiAtlasOptions | None = None,
                      progress: Progress | None = None, cancel=None) -> MultiAtlasResult:
    """Rank ``atlases`` for ``target``, register the top k and fuse their labels (see the module docstring)."""
    from bijros.registration.pipeline import RegistrationOptions, register

    opts = options or MultiAtlasOptions()
    if not atlases:
        raise InputError("The atlas library has no usable atlas.")
    opts.validate(len(atlases))
    prog = progress or Progress(None, MULTI_STAGES)
    t0 = time.perf_counter()
    notes = []
    registration = opts.registration or RegistrationOptions()
    table = merged_label_table(atlases)
    library_size = len(atlases)
    atlases, note = with_mirrored(atlases, table, opts.mirror)
    if note:
        notes.append(note)
    mirrored = len(atlases) > library_size
    k = opts.validate(len(atlases))
    if looks_like_ct(target) != any(looks_like_ct(a.image) for a in atlases) and registration.affine_metric != "mi":
        notes.append("The target and the atlases look like different modalities (CT values in only one of them): "
                     "mutual information is used for the affine stage.")
        registration = dataclasses.replace(registration, affine_metric="mi")
    if len(atlases) == 1:
        notes.append("The library has one atlas: single-atlas propagation (no fusion).")
    ranked = rank_atlases(target, atlases, registration, prog.stage("rank"), cancel)
    chosen = ranked[:k]
    report_register = prog.stage("register")
    label_maps, warped_images, seconds, device = [], [], {}, None
    for i, (_score, atlas, affine, rank_seconds) in enumerate(chosen):
        t1 = time.perf_counter()

        def sub(stage, fraction, message, eta, i=i, name=atlas.name):
            report_register((i + fraction) / len(chosen), f"{name}: {message or stage}")

        result = register(target, atlas.image, atlas.labels, registration, progress=Progress(sub), cancel=cancel,
                          affine_ras=affine)
        device = result.report["device"]
        label_maps.append(result.labels.array)
        warped_images.append(normalise(result.warped.array))
        seconds[atlas.name] = round(rank_seconds + time.perf_counter() - t1, 2)
    prog.stage("fuse")(0.0, f"fusing {len(chosen)} atlases ({opts.fusion})")
    stack = np.stack(label_maps)
    weights = None
    if opts.fusion in ("weighted", "jlf") and len(chosen) > 1:
        target_norm = normalise(target.array.astype(np.float32))
        if opts.fusion == "jlf":
            searched, stack = local_search(target_norm, np.stack(warped_images), stack, opts.search_radius)
            weights = jlf_weights(target_norm, searched, stack)
            del searched
        else:
            weights = local_weights(target_norm, np.stack(warped_images), target.spacing, opts.sigma_mm, opts.power)
    fused, confidence = fuse(stack, weights)
    prog.stage("fuse")(1.0, "fused")
    ranking = [{"rank": r + 1, "name": a.name, "score": round(float(s), 5), "used": r < k,
                "seconds": seconds.get(a.name, round(sec, 2))} for r, (s, a, _aff, sec) in enumerate(ranked)]
    report = {
        "mode": "multi-atlas",
        "fusion": opts.fusion if k > 1 else "none (one atlas)",
        "search_radius": opts.search_radius if opts.fusion == "jlf" and k > 1 else None,
        "top_k": k,
        "library_size": library_size,
        "mirrored": mirrored,
        "candidates": len(atlases),
        "ranking_metric": "NCC after affine, inside the target's foreground",
        "method": registration.method,
        "device": device,
        "seconds": {"total": round(time.perf_counter() - t0, 2)},
        "notes": notes,
    }
    return MultiAtlasResult(
        target=target,
        labels=Image(fused.astype(stack.dtype), target.ijk_to_ras.copy(), table, name="labels"),
        confidence=Image(confidence, target.ijk_to_ras.copy(), name="confidence"),
        ranking=ranking, report=report, notes=notes,
    )
