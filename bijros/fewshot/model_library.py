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
