"""Checkpoints and model folders of one-shot runs: tensors in safetensors, everything else in JSON, each
safetensors file's sha256 recorded beside it and checked before it is read (nothing is unpickled).

A run folder (``bijros train-oneshot --out``)::

    checkpoint.safetensors + checkpoint.json   resumable state (weights, Adam moments, generator, history)
    cohort.safetensors + cohort.json           the aligned cohort (bijros.oneshot.cohort)
    model.safetensors + model.json             the exported model (``task`` "oneshot")
    atlas_image.nii.gz, atlas_labels.nii.gz, labels.csv, loss.csv, loss.png
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from bijros.errors import InputError
from bijros.models.weights import sha256_file


def flatten_optimizer(name: str, state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state_dict as (tensors named ``opt.NAME.INDEX.KEY``, JSON-able rest)."""
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"opt.{name}.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(name: str, tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    prefix = f"opt.{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            idx, field = key[len(prefix):].split(".", 1)
            state.setdefault(int(idx), {})[field] = value
    for key, value in meta["scalars"].items():
        idx, field = key.split(".", 1)
        state.setdefault(int(idx), {})[field] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_tensors(tensors: dict[str, torch.Tensor], meta: dict, folder: Path, stem: str) -> None:
    """``STEM.safetensors`` and ``STEM.json`` (with the tensors' sha256), each replaced atomically."""
    from safetensors.torch import save_file

    tmp = folder / f"{stem}.safetensors.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    meta = {**meta, "file": f"{stem}.safetensors", "sha256": sha256_file(tmp)}
    tmp_json = folder / f"{stem}.json.tmp"
    tmp_json.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    os.replace(tmp, folder / f"{stem}.safetensors")
    os.replace(tmp_json, folder / f"{stem}.json")


def load_tensors(folder: Path, stem: str, what: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) of ``STEM.safetensors``/``STEM.json``; InputError when missing, unreadable or changed."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta_path = folder / f"{stem}.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the {what} {meta_path}: {exc}") from exc
    path = folder / str(meta.get("file", f"{stem}.safetensors"))
    if not path.is_file():
        raise InputError(f"the {what} {path} is missing")
    if sha256_file(path) != meta.get("sha256"):
        raise InputError(f"the {what} {path} is damaged or was changed (its sha256 differs from {meta_path.name}); "
                         "it was not loaded. Train again into a new folder, or restore the file.")
    try:
        return load_file(str(path)), meta
    except SafetensorError as exc:
        raise InputError(f"the {what} {path} is not a valid safetensors file: {exc}") from exc


def read_model_entry(model_dir: str | Path) -> tuple[dict, Path]:
    """A one-shot model folder's model.json (checked to be one) and the folder."""
    folder = Path(model_dir)
    if folder.is_file() and folder.name == "model.json":
        folder = folder.parent
    path = folder / "model.json"
    if not path.is_file():
        raise InputError(f"{folder} holds no model.json: give the --out folder of a finished `bijros train-oneshot` run.")
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    if entry.get("task") != "oneshot":
        raise InputError(f"{path} is not a one-shot model (task {entry.get('task', 'registration')!r}); `bijros "
                         "segment` needs a folder written by `bijros train-oneshot`.")
    return entry, folder
