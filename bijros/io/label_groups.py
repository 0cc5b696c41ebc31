"""Label groupings (data files in ``bijros/data/label_groups_*.json``): many fine labels -> a few structures.

A grouping file: ``{"name", "description", "unlisted": 0, "groups": [{"value": 1, "name": "...", "labels": [..]}]}``.
Every label listed in a group becomes the group's value; every other label becomes ``unlisted`` (background).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bijros.errors import InputError
from bijros.io.image import Image, LabelTable, remap_values

DATA = Path(__file__).resolve().parents[1] / "data"


def load_label_groups(name_or_path: str) -> dict:
    """A grouping by file path, or by name (``malf_coarse`` for ``bijros/data/label_groups_malf_coarse.json``)."""
    path = Path(name_or_path)
    if not path.is_file():
        path = DATA / f"label_groups_{name_or_path}.json"
    if not path.is_file():
        known = ", ".join(p.stem[len("label_groups_"):] for p in sorted(DATA.glob("label_groups_*.json")))
        raise InputError(f"No label grouping '{name_or_path}' (built in: {known}).")
    data = json.loads(path.read_text(encoding="utf-8"))
    seen: dict[int, str] = {}
    for group in data["groups"]:
        for label in group["labels"]:
            if label in seen:
                raise InputError(f"{path.name}: label {label} is in both '{seen[label]}' and '{group['name']}'.")
            seen[int(label)] = group["name"]
    return data


def group_labels(image: Image, groups: dict) -> Image:
    """``image`` (a label map) with each label replaced by its group's value, the rest by ``unlisted``."""
    group_of = {int(v): int(g["value"]) for g in groups["groups"] for v in g["labels"]}
    keys = sorted(group_of)
    out = remap_values(np.asarray(image.array), keys, [group_of[k] for k in keys], int(groups.get("unlisted", 0)))
    table = LabelTable()
    for g in groups["groups"]:
        table.add(int(g["value"]), g["name"])
    dtype = np.uint8 if out.max() < 256 else np.int16
    return Image(out.astype(dtype), image.ijk_to_ras.copy(), table, image.name)
