"""Which side a label name says (left, right or none), from the name patterns in ``bijros/data/laterality.json``:
one place for mirrored atlases (:mod:`bijros.atlas.mirror`) and text prompts (:mod:`bijros.text`)."""

from __future__ import annotations

import functools
import json
from importlib import resources


@functools.lru_cache(maxsize=1)
def patterns() -> dict:
    text = resources.files("bijros").joinpath("data/laterality.json").read_text(encoding="utf-8")
    return json.loads(text)


def split_side(name: str) -> tuple[str | None, str]:
    """('left' | 'right' | None, the name without its side word, original case): 'Left-Hippocampus' ->
    ('left', 'Hippocampus'), 'Precentral_L' -> ('left', 'Precentral'), 'Brain Stem' -> (None, 'Brain Stem')."""
    stripped = name.strip()
    low = stripped.lower()
    for left, right in patterns()["prefixes"]:
        for side, form in (("left", left), ("right", right)):
            if low.startswith(form) and len(low) > len(form):
                return side, stripped[len(form):].strip()
    for left, right in patterns()["suffixes"]:
        for side, form in (("left", left), ("right", right)):
            if low.endswith(form) and len(low) > len(form):
                return side, stripped[: -len(form)].strip()
    return None, stripped
