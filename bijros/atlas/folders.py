"""Atlas libraries that are folders of image/label pairs, and the user's list of them.

Pairing rules (``discover_atlases``), tried in this order, no catalog step needed:

1. **images/ + labels/**: ``DIR/images/<name>.<ext>`` with ``DIR/labels/<name>.<ext>`` (the Medical
   Segmentation Decathlon layout, e.g. the hippocampus crops); an optional label table beside the
   label file or ``DIR/labels.csv``.
2. **<id>_<image>/<id>_labels**: ``DIR/<id>_<suffix>.<ext>`` with ``DIR/<id>_labels.<ext>`` in the same
   folder, where ``<suffix>`` is one of t1, t2, flair, image, img, ct, mr (e.g. the MALF layout
   ``1000_t1.nii.gz`` + ``1000_labels.nii.gz``), with one label table ``DIR/labels.csv`` (or
   ``.json``/``.ctbl``) for all of them.

``<ext>`` is any image format the engine reads (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd). An image
without its label file (or the other way round) is reported by name and skipped; so is a pair whose
files cannot be read (checked when the atlas is loaded).

User libraries (``bijros atlas add DIR``) are remembered by name in ``libraries.json`` in
``$BIJROS_CONFIG_DIR`` (default ``~/.config/bijros``); nothing is copied: the files stay where the
user keeps them (non-commercial data included).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Optional

from bijros.errors import InputError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_ROLES = ("t1", "t2", "flair", "image", "img", "ct", "mr")
TABLE_NAMES = ("labels.csv", "labels.json", "labels.ctbl")


@dataclasses.dataclass
class FolderAtlas:
    """One image/label pair of a folder library."""

    name: str
    image_path: Path
    labels_path: Path
    table_path: Optional[Path] = None  # noqa: UP045 (evaluated at run time on Python 3.9)
    role: Optional[str] = None  # noqa: UP045 the image's role in its file name (t1, ct, ...), lower case


@dataclasses.dataclass
class FolderLibrary:
    """The pairs found in a folder, and what was skipped (one line per file, for people)."""

    folder: Path
    atlases: list
    skipped: list


def _split(path: Path) -> tuple[str, str] | None:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], suffix
    return None


def _images(folder: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        split = _split(path)
        if path.is_file() and split and not path.name.startswith("."):
            found.setdefault(split[0], path)
    return found


def _table(folder: Path) -> Path | None:
    return next((folder / n for n in TABLE_NAMES if (folder / n).is_file()), None)


def discover_atlases(folder: str | os.PathLike) -> FolderLibrary:
    """The image/label pairs of ``folder`` by the pairing rules above; ``InputError`` when it holds none."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise InputError(f"The atlas library folder {root} does not exist or is not a folder.")
    atlases, skipped = [], []
    if (root / "images").is_dir() and (root / "labels").is_dir():
        images, labels = _images(root / "images"), _images(root / "labels")
        table = _table(root)
        for name, image in images.items():
            if name in labels:
                atlases.append(FolderAtlas(name, image, labels[name], table))
            else:
                skipped.append(f"{image.name}: no labels/{name}.* beside it")
        skipped += [f"labels/{labels[n].name}: no images/{n}.* for it" for n in labels if n not in images]
    else:
        files = _images(root)
        table = _table(root)
        pattern = re.compile(rf"^(?P<id>.+)_(?P<role>{'|'.join(IMAGE_ROLES)})$", re.IGNORECASE)
        label_ids = {stem[: -len("_labels")]: path for stem, path in files.items() if stem.lower().endswith("_labels")}
        used = set()
        for stem, path in files.items():
            match = pattern.match(stem)
            if not match:
                continue
            atlas_id = match.group("id")
            if atlas_id in label_ids:
                atlases.append(FolderAtlas(atlas_id, path, label_ids[atlas_id], table, match.group("role").lower()))
                used.add(atlas_id)
            else:
                skipped.append(f"{path.name}: no {atlas_id}_labels.* beside it")
        skipped += [f"{p.name}: no image ({i}_t1.*, {i}_image.*, ...) for it" for i, p in label_ids.items() if i not in used]
    if not atlases:
        raise InputError(
            f"No atlas (image + label map pair) found in {root}. Lay it out as images/X.nii.gz + labels/X.nii.gz, "
            "or as <id>_t1.nii.gz + <id>_labels.nii.gz (with one labels.csv)."
            + (f" Skipped: {'; '.join(skipped)}." if skipped else ""))
    return FolderLibrary(root, atlases, skipped)


# ------------------------------------------------------------------ the user's libraries


def config_dir() -> Path:
    return Path(os.environ.get("BIJROS_CONFIG_DIR") or Path.home() / ".config" / "bijros")


def _registry_path() -> Path:
    return config_dir() / "libraries.json"


def user_libraries() -> dict[str, str]:
    """Library name -> folder, as added with ``bijros atlas add``."""
    path = _registry_path()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"The list of atlas libraries {path} cannot be read ({exc}); fix or delete it.") from exc
    return {str(k): str(v) for k, v in data.get("libraries", {}).items()}


def _save(libraries: dict[str, str]) -> None:
    path = _registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"libraries": libraries}, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def add_library(folder: str | os.PathLike, name: str | None = None) -> tuple[str, FolderLibrary]:
    """Remember ``folder`` as a library (checked first: it must hold at least one pair)."""
    library = discover_atlases(folder)
    name = name or library.folder.resolve().name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise InputError(f"Library name '{name}': use letters, digits, '.', '_' or '-' (e.g. --name my-brains).")
    from bijros.atlas.library import list_atlases

    if name in list_atlases():
        raise InputError(f"'{name}' is the name of a built-in atlas; choose another with --name.")
    libraries = user_libraries()
    libraries[name] = str(library.folder.resolve())
    _save(libraries)
    return name, library


def remove_library(name: str) -> str:
    """Forget the library ``name`` (its files are not touched); returns its folder."""
    libraries = user_libraries()
    if name not in libraries:
        known = ", ".join(libraries) or "none"
        raise InputError(f"No atlas library called '{name}' (added libraries: {known}).")
    folder = libraries.pop(name)
    _save(libraries)
    return folder


def resolve_library(name_or_folder: str) -> FolderLibrary:
    """``--atlas-library NAME|DIR``: an added library's name, or a folder."""
    libraries = user_libraries()
    if name_or_folder in libraries:
        return discover_atlases(libraries[name_or_folder])
    path = Path(name_or_folder).expanduser()
    if path.is_dir():
        return discover_atlases(path)
    known = ", ".join(libraries) or "none yet (bijros atlas add DIR)"
    raise InputError(f"--atlas-library {name_or_folder}: neither an added library ({known}) nor a folder.")
