"""Region embeddings for the TextSCF head: one row per region of a label table, from the region's name.

Row ``i`` of :func:`region_table` is the text embedding of region ``i``'s name phrased with the TextSCF template
of ``bijros/data/prompts.json`` ("A magnetic resonance imaging of a {name} in human brain."), the name read
as words (:func:`region_phrase`) without its side (:mod:`bijros.text.names`; these models barely tell left from right, and a structure deforms
alike on both sides). Row 0 is the background: as in TextSCF, a direction out of the label rows' span from their
SVD: the embedding of the word "background" with its projection onto that span removed, so it is orthogonal to
every label row and still the same kind of vector for any label table.
"""

from __future__ import annotations

import numpy as np

from bijros.text.encoder import Embeddings, settings
from bijros.text.names import descriptions, key, label_text

BACKGROUND_NAMES = ("", "unknown", "unlabeled", "unlabelled", "background", "clear label")


def region_phrase(name: str) -> str:
    """A region's name as words: its first description in label_descriptions.json ('Left-VentralDC' -> 'ventral
    diencephalon'), else the name without side, short words spelled out ('Inf Lat Vent' -> ...)."""
    if key(name) in BACKGROUND_NAMES:
        return "background"
    label = label_text(0, name)
    described = descriptions()["descriptions"].get(label.base)
    return described[0] if described else label.texts[1] if len(label.texts) > 1 else label.base


def region_text(name: str) -> str:
    """The text embedded for a region named ``name`` (any label table's spelling): the template around its phrase."""
    return settings()["template"].format(name=region_phrase(name))


def background_row(rows: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """A unit vector orthogonal to every row of ``rows`` (n, d): ``reference`` minus its projection onto the rows'
    span (their right singular vectors); when the rows span everything (n >= d), the last singular vector."""
    if rows.shape[0] == 0:
        return (reference / np.linalg.norm(reference)).astype(np.float32)
    _, s, vh = np.linalg.svd(rows.astype(np.float64), full_matrices=True)
    rank = int(np.sum(s > 1e-6 * max(float(s.max()), 1e-12))) if s.size else 0
    if rank >= rows.shape[1]:
        return vh[-1].astype(np.float32)
    span = vh[:rank]
    residual = reference.astype(np.float64) - span.T @ (span @ reference.astype(np.float64))
    if np.linalg.norm(residual) < 1e-6:
        residual = vh[rank]
    return (residual / np.linalg.norm(residual)).astype(np.float32)


def region_table(names: list[str], embeddings: Embeddings | None = None) -> np.ndarray:
    """(len(names), d) float32: row 0 the background (whatever ``names[0]`` says), row i the embedding of
    ``region_text(names[i])``."""
    embed = embeddings or Embeddings()
    texts = [region_text(n) for n in names[1:]]
    rows = embed(texts) if texts else np.zeros((0, 384), np.float32)
    reference = embed([region_text("background")])[0]
    return np.concatenate([background_row(rows, reference)[None], rows], 0).astype(np.float32)
