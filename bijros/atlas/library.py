"""The atlas library: atlases that ship inside pip packages, listed in data/atlases.json."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from importlib import resources
from pathlib import Path

from bijros.errors import InputError


@dataclasses.dataclass
class AtlasEntry:
    name: str
    title: str
    image_path: Path
    labels_path: Path
    table_path: Path | None
    license: str
    description: str


def _catalog() -> dict:
    return json.loads(resources.files("bijros").joinpath("data/atlases.json").read_text(encoding="utf-8"))


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
    return [a["name"] for a in _catalog()["atlases"]]


def get_atlas(name: str | None = None) -> AtlasEntry:
    catalog = _catalog()
    name = name or catalog["default"]
    for entry in catalog["atlases"]:
        if entry["name"] == name:
            return AtlasEntry(
                name=entry["name"],
                title=entry["title"],
                image_path=resolve_package_path(entry["image"]),
                labels_path=resolve_package_path(entry["labels"]),
                table_path=resolve_package_path(entry["table"]) if entry.get("table") else None,
                license=entry["license"],
                description=f"{entry['title']} ({entry['image_source']}; {entry['labels_source']})",
            )
    raise InputError(f"Unknown atlas '{name}'. Available: {', '.join(a['name'] for a in catalog['atlases'])}.")


def default_atlas() -> AtlasEntry:
    return get_atlas(None)


def demo_target() -> Path:
    return resolve_package_path(_catalog()["demo_target"]["image"])
