"""The few-shot models of the model library (``task`` "fewshot" entries of Resources/Models/catalog.json)."""

from __future__ import annotations

import json
from functools import lru_cache

from bijros.errors import InputError


def fewshot_entry(model: str | None):
    """(entry, folder): ``model`` (a catalog name or model.json), else the catalog's first few-shot model."""
    from bijros.models.library import load_catalog, models_dir, resolve_entry

    if model:
        entry, folder = resolve_entry(model)
    else:
        folder = models_dir()
        found = [e for e in load_catalog(folder)["models"] if e.get("task") == "fewshot"]
        if not found:
            raise InputError("The model library has no few-shot model yet; train one with `bijros train-fewshot` "
                             "and pass its model.json with --model.")
        entry = found[0]
    if entry.get("task") != "fewshot":
        raise InputError(f"Model '{entry.get('name')}' is not a few-shot model (task {entry.get('task', 'registration')}).")
    return entry, folder


@lru_cache(maxsize=2)
def _load(entry_json: str, folder: str, device: str):
    from bijros.models.weights import load_model

    return load_model(json.loads(entry_json), folder, device)


def get_fewshot_model(model: str | None, device):
    entry, folder = fewshot_entry(model)
    return _load(json.dumps(entry, sort_keys=True), str(folder), str(device)), entry


#: the parts of Testing/Benchmarks/fewshot_slices.py's JSON and the Dice each record holds
BENCHMARK_PARTS = {"a": ("hippocampus crops, same volume, 3 painted slices, 40 cases x 3 axes", "whole"),
                   "b": ("hippocampus crops, 3 painted slices of one case -> 40 other cases", "whole"),
                   "c": ("MALF brains, same volume, 4 structures x 4 scans x 3 axes", "dice")}


def benchmark_figures(path) -> dict:
    """The rows of a few-shot benchmark JSON (Testing/Benchmarks/fewshot_slices.py), compacted for the catalog."""
    from pathlib import Path

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        rows = [{"part": part, "setup": setup, "title": title, "mean_dice": round(sum(r[key] for r in row["records"])
                                                                             / len(row["records"]), 4),
                 "median_s": round(row["median_s"], 3)}
                for part, (setup, key) in BENCHMARK_PARTS.items() for title, row in data.get(part, {}).items()]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ZeroDivisionError) as exc:
        raise InputError(f"cannot read few-shot benchmark results {path}: {exc}") from exc
    if not rows:
        raise InputError(f"{path} holds no few-shot benchmark rows (parts a, b, c of fewshot_slices.py)")
    usable = [r for r in rows if "reference" not in r["title"]]  # a fully labelled support is not few-shot
    best = {part: max((r for r in usable if r["part"] == part), key=lambda r: r["mean_dice"])
            for part in BENCHMARK_PARTS if any(r["part"] == part for r in usable)}
    return {"source": Path(path).name, "rows": rows,
            "summary": "; ".join(f"({part}) {r['title']} Dice {r['mean_dice']:.3f}" for part, r in best.items())}
