"""The atlas library shown in FewShotSegment: a data file, Resources/Atlases/atlas_library.json.

Each entry points at an atlas of the engine's catalog (``bijros.atlas.library.get_atlas``, files that
ship inside pip packages) or at image/label/table files next to the JSON file.

Console example::

    from BiJROSLib.atlases import atlasLibrary, resolveAtlas
    [a.name for a in atlasLibrary()]          # ['mni152-desikan-killiany', 'mni152-aal']
    files = resolveAtlas("mni152-desikan-killiany")
    files.imagePath, files.labelsPath, files.tablePath
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

LIBRARY_FILE = Path("Resources") / "Atlases" / "atlas_library.json"


@dataclasses.dataclass
class LibraryAtlas:
    """One atlas of the library, as listed (files not resolved yet)."""

    name: str
    title: str
    description: str
    license: str
    modality: str = ""
    structures: str = ""
    citation: str = ""
    engineAtlas: str | None = None
    image: str | None = None
    labels: str | None = None
    table: str | None = None
    resampleLabels: bool = False


@dataclasses.dataclass
class AtlasFiles:
    """An atlas's files on disk, ready for the engine's ``propagate`` command."""

    atlas: LibraryAtlas
    imagePath: Path
    labelsPath: Path
    tablePath: Path | None


def libraryFile() -> Path:
    """atlas_library.json: beside the installed modules (Slicer) or at the repository root."""
    here = Path(__file__).resolve()
    for folder in (here.parents[1], here.parents[2]):
        candidate = folder / LIBRARY_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"The BiJROS atlas library ({LIBRARY_FILE}) is missing from the installation.")


def _load() -> dict:
    return json.loads(libraryFile().read_text(encoding="utf-8"))


def atlasLibrary() -> list[LibraryAtlas]:
    """All atlases of the library, in catalog order."""
    return [
        LibraryAtlas(
            name=e["name"], title=e.get("title", e["name"]), description=e.get("description", ""),
            license=e.get("license", ""), modality=e.get("modality", ""), structures=e.get("structures", ""),
            citation=e.get("citation", ""), engineAtlas=e.get("engine_atlas"), image=e.get("image"),
            labels=e.get("labels"), table=e.get("table"), resampleLabels=bool(e.get("resample_labels", False)),
        )
        for e in _load()["atlases"]
    ]


def defaultAtlasName() -> str:
    return _load().get("default") or atlasLibrary()[0].name


def libraryAtlas(name: str | None = None) -> LibraryAtlas:
    """The library entry called ``name`` (default: the library's default). ``ValueError`` if unknown."""
    name = name or defaultAtlasName()
    atlases = atlasLibrary()
    for atlas in atlases:
        if atlas.name == name:
            return atlas
    raise ValueError(f"Unknown atlas '{name}'. Available atlases: {', '.join(a.name for a in atlases)}.")


def resolveAtlas(name: str | None = None) -> AtlasFiles:
    """Files of a library atlas. ``ValueError`` with the fix when its package or files are missing."""
    atlas = libraryAtlas(name)
    if atlas.engineAtlas:
        from bijros.atlas.library import get_atlas
        from bijros.errors import BijrosError

        try:
            entry = get_atlas(atlas.engineAtlas)
        except BijrosError as exc:
            raise ValueError(f"The atlas '{atlas.title}' is not available: {exc}") from exc
        return AtlasFiles(atlas, Path(entry.image_path), Path(entry.labels_path),
                          Path(entry.table_path) if entry.table_path else None)
    folder = libraryFile().parent
    if not atlas.image or not atlas.labels:
        raise ValueError(f"The atlas library entry '{atlas.name}' names no image or labels.")
    files = AtlasFiles(atlas, folder / atlas.image, folder / atlas.labels, folder / atlas.table if atlas.table else None)
    for path in (files.imagePath, files.labelsPath, files.tablePath):
        if path is not None and not path.is_file():
            raise ValueError(f"The atlas '{atlas.title}' is incomplete: {path} is missing. Reinstall the BiJROS extension.")
    return files
