"""Where trained one-shot models are kept for the Slicer panel and the console: ``$BIJROS_CONFIG_DIR/oneshot-models``
(default ``~/.config/bijros/oneshot-models``), one folder per model (the ``train-oneshot --out`` folder)."""

from __future__ import annotations

import json
import re
from pathlib import Path


def models_dir() -> Path:
    from bijros.atlas.folders import config_dir

    return config_dir() / "oneshot-models"


def model_folder_name(text: str) -> str:
    """A folder name from a model name people typed: letters, digits, '-', '_' and '.' kept, the rest '-'."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text.strip()).strip("-.")
    return name or "model"


def list_models(root: str | Path | None = None) -> list[dict]:
    """Finished models under ``root`` (default :func:`models_dir`), newest first: name, folder, recipe, steps,
    structures (label values without background)."""
    folder = Path(root) if root is not None else models_dir()
    models = []
    if not folder.is_dir():
        return models
    for sub in folder.iterdir():
        path = sub / "model.json"
        if not path.is_file():
            continue
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if entry.get("task") != "oneshot":
            continue
        models.append({"name": sub.name, "folder": str(sub), "recipe": entry.get("recipe"),
                       "steps": entry.get("training", {}).get("steps"), "structures": len(entry.get("values", [])) - 1,
                       "mtime": path.stat().st_mtime})
    return sorted(models, key=lambda m: -m["mtime"])
