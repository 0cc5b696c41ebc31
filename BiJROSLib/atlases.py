"""The atlas library shown in FewShotSegment: the engine's one catalog, ``bijros/data/atlases.json``.

Listing reads the catalog only; resolving an atlas finds its files inside the pip package that
ships them (installed on first use: :data:`BiJROSLib.dependencies.ATLAS_PACKAGES`).

Console example::

    from BiJROSLib.atlases import atlasLibrary, resolveAtlas
    [a.name for a in atlasLibrary()]          # ['mni152-desikan-killiany', 'mni152-aal']
    files = resolveAtlas("mni152-desikan-killiany")
    files.imagePath, files.labelsPath, files.tablePath
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional


@dataclasses.dataclass
class AtlasFiles:
    """An atlas's files on disk, ready for the engine's ``propagate`` command."""

    atlas: object  # bijros.atlas.library.CatalogAtlas
    imagePath: Path
    labelsPath: Path
    tablePath: Optional[Path]  # noqa: UP045 (evaluated at run time on Python 3.9)


def atlasLibrary() -> list:
    """All atlases of the catalog (``CatalogAtlas``: name, title, description, license, ...), in order."""
    from bijros.atlas.library import catalog_atlases

    return catalog_atlases()


def defaultAtlasName() -> str:
    from bijros.atlas.library import default_atlas_name

    return default_atlas_name()


def libraryAtlas(name: str | None = None):
    """The catalog entry called ``name`` (default: the catalog's default). ``ValueError`` if unknown."""
    from bijros.atlas.library import catalog_atlas
    from bijros.errors import BijrosError

    try:
        return catalog_atlas(name)
    except BijrosError as exc:
        raise ValueError(str(exc)) from exc


def resolveAtlas(name: str | None = None) -> AtlasFiles:
    """Files of a library atlas. ``ValueError`` with the fix when its package or files are missing."""
    from bijros.atlas.library import get_atlas
    from bijros.errors import BijrosError

    atlas = libraryAtlas(name)
    try:
        entry = get_atlas(atlas.name)
    except BijrosError as exc:
        raise ValueError(f"The atlas '{atlas.title}' is not available: {exc}") from exc
    return AtlasFiles(atlas, Path(entry.image_path), Path(entry.labels_path),
                      Path(entry.table_path) if entry.table_path else None)
