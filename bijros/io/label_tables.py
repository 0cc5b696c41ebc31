"""Label tables: read and write CSV, JSON and Slicer colour tables (.ctbl), and find the one beside a label map."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from bijros.errors import InputError
from bijros.io.image import LabelTable

LABEL_TABLE_SUFFIXES = (".csv", ".json", ".ctbl", ".txt")


def find_label_table(label_path: Path) -> LabelTable | None:
    """Look beside a label file for its table: <stem>.csv/.json/.ctbl/.txt, then labels.csv."""
    from bijros.io.images import file_stem

    stem = file_stem(label_path)
    candidates = [label_path.with_name(stem + s) for s in LABEL_TABLE_SUFFIXES]
    candidates += [label_path.with_name(n) for n in ("labels.csv", "labels.json", "labels.ctbl")]
    for candidate in candidates:
        if candidate.is_file():
            try:
                return read_label_table(candidate)
            except InputError:
                continue
    return None


def read_label_table(path: str | os.PathLike) -> LabelTable:
    """Read a label table: CSV (value,name[,r,g,b | color]), JSON, or a Slicer colour table."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Label table not found: {path}.")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            table = _table_from_json(json.loads(text))
        elif suffix == ".csv":
            table = _table_from_csv(text)
        else:
            table = _table_from_ctbl(text)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise InputError(f"Cannot read label table {path.name}: {exc}. Expected columns value,name[,r,g,b].") from exc
    if not len(table):
        raise InputError(f"Label table {path.name} has no entries.")
    return table


def _rgb(values: list) -> tuple[float, float, float]:
    rgb = [float(v) for v in values[:3]]
    if max(rgb) > 1.0:
        rgb = [v / 255.0 for v in rgb]
    return (rgb[0], rgb[1], rgb[2])


def _table_from_json(data) -> LabelTable:
    table = LabelTable()
    items = data.get("labels", data) if isinstance(data, dict) else data
    if isinstance(items, dict):  # {"1": "name"} or {"1": {"name":..., "color": [...]}}
        items = [{"value": k, **(v if isinstance(v, dict) else {"name": v})} for k, v in items.items()]
    for item in items:
        color = item.get("color")
        if isinstance(color, str):
            color = [int(color.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4)]
        table.add(int(item["value"]), str(item["name"]), _rgb(color) if color else None)
    return table


def _table_from_csv(text: str) -> LabelTable:
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
    header = [c.strip().lower() for c in rows[0]]
    has_header = not header[0].lstrip("-").isdigit()
    if has_header:
        value_col = next(i for i, h in enumerate(header) if h in ("value", "index", "label number", "label", "id", "label_value"))
        name_col = next((i for i, h in enumerate(header) if "name" in h or h in ("structure", "description")), value_col + 1)
        rgb_cols = [header.index(c) for c in ("r", "g", "b")] if all(c in header for c in ("r", "g", "b")) else None
        color_col = header.index("color") if "color" in header else None
        rows = rows[1:]
    else:
        value_col, name_col, rgb_cols, color_col = 0, 1, ([2, 3, 4] if len(rows[0]) >= 5 else None), None
    table = LabelTable()
    for row in rows:
        color = None
        if rgb_cols:
            color = _rgb([row[c] for c in rgb_cols])
        elif color_col is not None and row[color_col].strip():
            hexa = row[color_col].strip().lstrip("#")
            color = _rgb([int(hexa[i : i + 2], 16) for i in (0, 2, 4)])
        table.add(int(float(row[value_col])), row[name_col].strip(), color)
    return table


def _table_from_ctbl(text: str) -> LabelTable:
    """Slicer colour table / FreeSurfer LUT: `value name r g b a` per line, '#' comments."""
    table = LabelTable()
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        table.add(int(parts[0]), parts[1], _rgb(parts[2:5]) if len(parts) >= 5 else None)
    return table


def write_label_table(table: LabelTable, path: str | os.PathLike) -> Path:
    """Write value,name,r,g,b (0-255) CSV."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["value", "name", "r", "g", "b"])
        for e in table:
            writer.writerow([e.value, e.name, *(round(c * 255) for c in e.color)])
    return path
