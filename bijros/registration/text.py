"""``--method text``: the TextSCF head (:mod:`bijros.models.textscf`) on a new scan, in two passes.

A new scan has no labels, so the head's region map comes from a first pass: the backbone model alone
(``region_model`` of the text model's catalog entry, the catalog default otherwise) registers the affinely
aligned atlas, and the atlas labels carried through it are the fixed image's regions. Each region's embedding
is the text of its name (:func:`bijros.text.regions.region_table`), or the user's own words for it (a prompts
file, :func:`read_region_prompts`); the second pass is the text model with those regions.

The learnable-table ablation has no text for new names: each label is given the training region whose name's
text is nearest to its own (the mapping needs the text embeddings; the filters do not).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from bijros.errors import InputError
from bijros.registration.grid import Grid, points_ras, sample


def read_region_prompts(path: str | Path, values: set[int] | None = None) -> dict[int, str]:
    """A prompts file: label value -> the words for that structure. JSON ``{"17": "left hippocampus", ...}`` or CSV
    rows ``value,prompt`` (a header row ``value,prompt`` is allowed). Errors name the line; with ``values``, a
    value not among them is an error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"Cannot read the prompts file {path}: {exc}") from exc
    rows: list[tuple[int, object, object]] = []  # (line, value, prompt)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg}).") from exc
        if not isinstance(data, dict):
            raise InputError(f"{path}: the JSON must be an object of label value -> prompt, e.g. "
                             '{"17": "left hippocampus"}.')
        lines = text.splitlines()
        for value, prompt in data.items():
            line = next((i + 1 for i, t in enumerate(lines) if f'"{value}"' in t), 1)
            rows.append((line, value, prompt))
    else:
        for line, row in enumerate(csv.reader(text.splitlines()), start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if line == 1 and row[0].strip().lower() == "value":
                continue
            if len(row) < 2:
                raise InputError(f"{path}, line {line}: expected 'value,prompt', got '{','.join(row)}'.")
            rows.append((line, row[0].strip(), ",".join(row[1:]).strip()))
    out: dict[int, str] = {}
    for line, value, prompt in rows:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise InputError(f"{path}, line {line}: '{value}' is not a label value (a whole number).") from None
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"{path}, line {line}: the prompt for label {number} is empty.")
        if values is not None and number not in values:
            raise InputError(f"{path}, line {line}: label {number} is not in the moving label map "
                             f"(it holds {', '.join(map(str, sorted(values)[:12]))}{' ...' if len(values) > 12 else ''}).")
        out[number] = prompt.strip()
    if not out:
        raise InputError(f"{path} holds no prompts; write one 'value,prompt' per line.")
    return out


def region_rows(model, names: dict[int, str], prompts: dict[int, str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(lut, table): ``lut[value]`` the region row of each label value (0 = background), and for the text variant
    the (R, d) region embeddings (row 0 background), for the learned one its own table's row count (empty)."""
    from bijros.text.encoder import Embeddings
    from bijros.text.names import key
    from bijros.text.regions import BACKGROUND_NAMES, region_table, region_text

    words = {v: (prompts or {}).get(v, n) for v, n in names.items() if v != 0}
    words = {v: w for v, w in words.items() if key(w) not in BACKGROUND_NAMES or v in (prompts or {})}
    lut = np.zeros(max([0, *names, *(prompts or {})]) + 1, np.int64)
    embed = Embeddings()
    if model.embedding == "text":
        values = sorted(words)
        lut[values] = np.arange(1, len(values) + 1)
        return lut, region_table(["background", *(words[v] for v in values)], embed)
    trained = model.region_names
    if not trained:
        raise InputError("this learned-table model does not record its training regions (region_names)")
    train_vec = embed([region_text(n) for n in trained[1:]])
    values = list(words)
    if values:  # each label takes the training region whose text is nearest to its own
        lut[values] = 1 + np.argmax(embed([region_text(words[v]) for v in values]) @ train_vec.T, axis=1)
    return lut, np.zeros((0, 0), np.float32)


def regions_on_model_grid(moving_labels, lut: np.ndarray, affine: np.ndarray, disp: torch.Tensor, grid: Grid,
                          device) -> torch.Tensor:
    """(1, I, J, K) int64 region rows on the model grid: the moving labels carried through the affine and the
    first pass's displacement ``disp`` (1, 3, ...) RAS mm on ``grid`` (nearest neighbour)."""
    pts = points_ras(grid, device)
    moved = pts + disp[0].permute(1, 2, 3, 0)
    a = torch.as_tensor(affine, dtype=torch.float32, device=device)
    labels = np.asarray(moving_labels.array)
    rows = lut[np.clip(labels, 0, len(lut) - 1).astype(np.int64)] * (labels >= 0) * (labels < len(lut))
    source = torch.as_tensor(rows.astype(np.float32), device=device)[None]
    out = sample(source, Grid(moving_labels.shape, moving_labels.ijk_to_ras), moved @ a[:3, :3].T + a[:3, 3],
                 mode="nearest")
    return out.round().long()


def text_register(fixed: torch.Tensor, moving: torch.Tensor, work: Grid, moving_labels, affine: np.ndarray,
                  model, entry: dict, prompts: dict[int, str] | None = None,
                  progress=None) -> tuple[torch.Tensor, Grid, dict]:
    """The two passes on the working grid (``fixed`` and ``moving`` (1, I, J, K), the moving one through the
    affine): displacement (1, 3, ...) RAS mm on the model grid, that grid, and a report."""
    from bijros.registration.learned import get_model, learned_register

    if moving_labels is None:
        raise InputError("--method text needs the moving image's labels (--moving-labels, or the atlas labels when "
                         "propagating): their names place the text filters.")
    table = moving_labels.label_table
    present = set(np.unique(moving_labels.array).astype(int).tolist()) - {0}
    names = {e.value: e.name for e in table} if table is not None else {}
    unnamed = sorted(v for v in present if v not in names and v not in (prompts or {}))
    if table is None and not prompts:
        raise InputError("--method text needs names for the moving labels: give --labels-table (or --prompts with "
                         "words for each structure).")
    names = {v: n for v, n in names.items() if v in present}
    spacing = float(entry["input_spacing_mm"])
    device = fixed.device
    base, base_entry = get_model(entry.get("region_model"), device)
    say = progress or (lambda f, m: None)
    say(0.0, f"first pass ({base_entry['name']}) for the region map")
    disp1, grid1 = learned_register(fixed, moving, work, base, spacing)
    lut, rows = region_rows(model, names, prompts)
    if model.embedding == "text":
        model.set_regions(torch.as_tensor(rows, device=device))
    regions = regions_on_model_grid(moving_labels, lut, affine, disp1, grid1, device)
    say(0.5, f"text filters for {int(lut.max())} regions")
    disp, grid = learned_register(fixed, moving, work, model, spacing, regions=regions)
    say(1.0, "text-steered field ready")
    report = {"region_model": base_entry["name"], "regions": int(lut.max()), "embedding": model.embedding,
              "unnamed_labels": unnamed, "prompts": {str(k): v for k, v in (prompts or {}).items()}}
    return disp, grid, report
