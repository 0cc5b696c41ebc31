"""Which labels a prompt names: ``bijros prompt-match --labels-table FILE --prompt "TEXT"``.

The prompt is split into phrases ('hippocampus and amygdala', 'caudate, putamen'); each phrase's side words
(``left``, ``rh``, ``bilateral``, ... in ``bijros/data/prompts.json``) are taken out and set the side; what is
left is embedded and compared (cosine) with every label's descriptions (:mod:`bijros.text.names`) and with
the label groups ('basal ganglia', 'ventricles'). The best match wins if it scores at least ``min_score``; a
group selects all its members, when it fits clearly better (by ``GROUP_MARGIN``) than any one structure. A side
carries on to the phrases after it until another side is said ('left amygdala and hippocampus'). Labels without
a side (midline) match whatever side was said. A phrase of side words only ('left and right hippocampus') lends
its side to the next phrase.
"""

from __future__ import annotations

import re

import numpy as np

from bijros.errors import InputError
from bijros.text.encoder import Embeddings, settings
from bijros.text.names import LabelText, groups_for, key, label_text

GROUP_MARGIN = 0.05  # how much better than the best single structure a group must fit to be chosen


def split_phrases(prompt: str) -> list[str]:
    text = f" {prompt.strip().lower()} "
    for connector in settings()["connectors"]:
        text = text.replace(connector, "|")
    return [p.strip() for p in text.split("|") if p.strip()]


def read_phrase(phrase: str) -> tuple[str | None, str]:
    """(side: left | right | both | None, the words to embed)."""
    sides = settings()["sides"]
    fillers = set(settings()["fillers"])
    said, words = set(), []
    for word in re.findall(r"[\w']+", phrase):
        side = next((s for s, forms in sides.items() if word in forms), None)
        if side is not None:
            said.add(side)
        elif word not in fillers:
            words.append(word)
    side = "both" if "both" in said or {"left", "right"} <= said else next(iter(said)) if said else None
    return side, " ".join(words)


def candidates(entries: list[tuple[int, str]]):
    """(labels, units): every label's text, and the units a phrase can match: a label base (all its sides)
    or a group of bases, each with the texts it is embedded by."""
    labels = [label_text(v, n) for v, n in entries if n and key(n) not in ("unknown", "unlabeled", "background")]
    units: dict[str, dict] = {}
    for label in labels:
        unit = units.setdefault(label.base, {"kind": "label", "bases": {label.base}, "texts": []})
        unit["texts"] += [t for t in label.texts if t not in unit["texts"]]
    for group, members in groups_for({lab.base for lab in labels}).items():
        units.setdefault(group, {"kind": "group", "bases": members, "texts": [group]})
    return labels, units


def match_prompt(prompt: str, entries: list[tuple[int, str]], embeddings: Embeddings | None = None) -> dict:
    """``{"prompt", "labels": [{"value", "name", "score"}], "phrases": [...]}``; InputError when nothing matches."""
    embed = embeddings or Embeddings()
    labels, units = candidates(entries)
    if not labels:
        raise InputError("The label table has no named labels to match a prompt against.")
    names = list(units)
    unit_texts = [t for n in names for t in units[n]["texts"]]
    owner = np.array([i for i, n in enumerate(names) for _ in units[n]["texts"]])
    unit_vectors = embed(unit_texts)
    minimum = float(settings()["min_score"])
    is_group = np.array([units[n]["kind"] == "group" for n in names])
    chosen: dict[int, float] = {}
    phrases, pending, carried, closest = [], None, None, {}
    for phrase in split_phrases(prompt):
        side, words = read_phrase(phrase)
        if not words:  # 'left and right X': the side words lend their side to the next phrase
            pending = side if pending is None or pending == side else "both"
            continue
        if pending is not None:
            side = pending if side is None or side == pending else "both"
            pending = None
        if side is None:  # 'left amygdala and hippocampus': a side carries on until another is said
            side = carried
        carried = side
        scores = embed([words])[0] @ unit_vectors.T
        per_unit = np.full(len(names), -1.0)
        np.maximum.at(per_unit, owner, scores)
        best = int(np.argmax(per_unit))
        label_best = int(np.argmax(np.where(is_group, -1.0, per_unit)))
        if is_group[best] and per_unit[best] < per_unit[label_best] + GROUP_MARGIN:
            best = label_best  # a group wins only when it fits clearly better than any one structure
        for i in np.argsort(-per_unit)[:5]:
            closest[names[i]] = max(closest.get(names[i], -1.0), float(per_unit[i]))
        record = {"phrase": phrase, "words": words, "side": side or "any", "best": names[best],
                  "score": round(float(per_unit[best]), 4)}
        phrases.append(record)
        if per_unit[best] < minimum:
            record["matched"] = False
            continue
        record["matched"] = True
        for label in _members(labels, units[names[best]]["bases"], side):
            chosen[label.value] = max(chosen.get(label.value, -1.0), float(per_unit[best]))
    if not chosen:
        near = sorted(closest, key=lambda n: -closest[n])[:5]
        raise InputError(f"The prompt '{prompt}' matches no label of the table (best score below {minimum}). "
                         f"The closest label names: {', '.join(near)}. Use one of these words, or a label's name.")
    by_value = {lab.value: lab for lab in labels}
    out = [{"value": v, "name": by_value[v].name, "score": round(s, 4)} for v, s in sorted(chosen.items())]
    return {"prompt": prompt, "labels": out, "phrases": phrases}


def _members(labels: list[LabelText], bases: set[str], side: str | None) -> list[LabelText]:
    keep = {"left": ("left", None), "right": ("right", None)}.get(side or "both", ("left", "right", None))
    return [lab for lab in labels if lab.base in bases and lab.side in keep]
