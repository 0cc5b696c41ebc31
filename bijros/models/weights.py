"""Load learned-registration weights from a catalog entry, safely.

A catalog entry (a JSON object, e.g. the ``model.json`` that ``bijros train-registration`` writes)::

    {"name": "...", "file": "model.safetensors", "sha256": "<64 hex>", "architecture": "eoir",
     "config": {...model keyword arguments...}, ...}

The file's sha256 is checked before anything is read from it, and tensors are read with
safetensors only: nothing is unpickled, so a weight file cannot run code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from bijros.errors import InputError

REQUIRED_KEYS = ("name", "file", "sha256", "architecture", "config")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_entry(entry: dict | str | Path) -> tuple[dict, Path]:
    """A catalog entry (dict, or a JSON file) and the folder its ``file`` is relative to."""
    if isinstance(entry, dict):
        return entry, Path.cwd()
    path = Path(entry)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the model catalog entry {path}: {exc}") from exc
    return data, path.parent


def verified_weights_path(entry: dict, base_dir: str | Path | None = None) -> Path:
    """The entry's weight file, after checking its sha256; InputError if missing or different."""
    missing = [k for k in REQUIRED_KEYS if k not in entry]
    if missing:
        raise InputError(f"model catalog entry lacks {', '.join(missing)}")
    path = Path(entry["file"])
    if not path.is_absolute():
        path = Path(base_dir or Path.cwd()) / path
    if not path.is_file():
        raise InputError(f"weights file {path} of model '{entry['name']}' is missing")
    expected = str(entry["sha256"]).lower()
    actual = sha256_file(path)
    if actual != expected:
        raise InputError(
            f"weights file {path} is damaged or was changed: sha256 {actual}, expected {expected}. "
            "Download or export it again; it was not loaded."
        )
    return path


def load_model(entry: dict | str | Path, base_dir: str | Path | None = None,
               device: torch.device | str = "cpu") -> nn.Module:
    """Build the entry's architecture and load its verified safetensors weights (eval mode, on ``device``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from bijros.models import build_model

    data, folder = read_entry(entry)
    path = verified_weights_path(data, base_dir if base_dir is not None else folder)
    model = build_model(data["architecture"], data["config"])
    try:
        state = load_file(str(path), device=str(device))
    except SafetensorError as exc:
        raise InputError(f"weights file {path} is not a valid safetensors file: {exc}") from exc
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"weights file {path} does not fit architecture '{data['architecture']}': {exc}") from exc
    return model.to(device).eval()
