"""What a library holds, for people: each atlas's name, modality, size, number of labels and a thumbnail
(``bijros atlas show``; the FewShotSegment panel's library table).

Modality comes from the file name's role (``<id>_t1``: MR T1, ``_t2``, ``_flair``, ``_ct``, ``_mr``) and else from
the intensities (CT when the 1st percentile is below -500 HU, else MR). The thumbnail is the middle slice across
the axis that runs nearest to superior-inferior, windowed at the 1st-99th percentile, at most ``size`` pixels.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from bijros.atlas.folders import FolderAtlas
from bijros.atlas.multi import looks_like_ct
from bijros.errors import InputError

ROLE_MODALITY = {"t1": "MR (T1)", "t2": "MR (T2)", "flair": "MR (FLAIR)", "ct": "CT", "mr": "MR"}


def modality(entry: FolderAtlas, image) -> str:
    if entry.role in ROLE_MODALITY:
        return ROLE_MODALITY[entry.role]
    return "CT (from intensities)" if looks_like_ct(image) else "MR (from intensities)"


def thumbnail(image, path: Path, size: int = 96) -> Path:
    from PIL import Image as PILImage

    axis = int(np.argmax(np.abs(image.ijk_to_ras[2, :3])))  # nearest to superior-inferior
    plane = np.take(image.array, image.shape[axis] // 2, axis=axis).astype(np.float32)
    spacing = [s for a, s in enumerate(image.spacing) if a != axis]
    lo, hi = np.percentile(plane, (1, 99))
    grey = (np.clip((plane - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    picture = PILImage.fromarray(np.rot90(grey))  # first in-plane axis across, second up
    width, height = grey.shape[0] * spacing[0], grey.shape[1] * spacing[1]
    scale = size / max(width, height)
    picture = picture.resize((max(1, round(width * scale)), max(1, round(height * scale))), PILImage.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def describe_library(entries: list[FolderAtlas], thumbnails: Path, progress=None) -> tuple[list[dict], list[str]]:
    """([{"name", "modality", "shape", "spacing_mm", "labels", "thumbnail"}], skipped: "name: why")."""
    from bijros.io import load_image

    atlases, skipped = [], []
    for i, entry in enumerate(entries):
        try:
            image = load_image(entry.image_path)
            labels = load_image(entry.labels_path, label_map=True)
        except InputError as exc:
            skipped.append(f"{entry.name}: {exc}")
            continue
        picture = thumbnail(image, thumbnails / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', entry.name)}.png")
        atlases.append({"name": entry.name, "modality": modality(entry, image), "shape": list(image.shape),
                        "spacing_mm": [round(float(s), 3) for s in image.spacing],
                        "labels": int(np.count_nonzero(np.unique(labels.array))), "thumbnail": str(picture)})
        if progress:
            progress((i + 1) / len(entries), f"read {entry.name}")
    return atlases, skipped
