"""Label names as text: the side a name says, and the descriptions embedded for it.

A name is read with its side word removed (:func:`bijros.laterality.split_side`), '_' and '-' as spaces,
a leading abbreviation dropped where the table gives one (Neuromorphometrics: 'ACgG  anterior cingulate
gyrus'), AAL's short words spelled out ('Frontal_Sup' -> 'frontal superior'), a gyrus also read as its cortex,
and the descriptions of ``bijros/data/label_descriptions.json`` added ('Ventral DC' -> 'ventral diencephalon').
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from importlib import resources

from bijros.laterality import split_side

#: AAL-style short words -> the word (applied to whole words of a label name only)
SHORT_WORDS = {"sup": "superior", "mid": "middle", "inf": "inferior", "ant": "anterior", "post": "posterior",
               "med": "medial", "orb": "orbital", "oper": "opercular", "tri": "triangular", "supp": "supplementary",
               "lat": "lateral", "vent": "ventricle", "rol": "rolandic", "sma": "supplementary motor area"}


@functools.lru_cache(maxsize=1)
def descriptions() -> dict:
    text = resources.files("bijros").joinpath("data/label_descriptions.json").read_text(encoding="utf-8")
    return json.loads(text)


def key(text: str) -> str:
    """Lower case, '_' and '-' as spaces, single spaces: the form names are compared in."""
    return re.sub(r"\s+", " ", re.sub(r"[_\-]", " ", text.lower())).strip()


def _without_abbreviation(rest: str) -> str:
    """'ACgG  anterior cingulate gyrus', 'Right_FuG_fusiform_gyrus' (rest 'FuG_fusiform_gyrus'), 'Calc  calcarine
    cortex' -> the description; 'CC_Posterior', 'Inf Lat Vent' stay (no lower-case description follows)."""
    spaced = re.sub(r"[_\-]", " ", rest).strip()
    tokens = spaced.split()
    described = len(tokens) > 1 and all(t.islower() for t in tokens[1:] if t.isalpha())
    if described and (sum(c.isupper() for c in tokens[0]) >= 2 or re.match(r"^\S+\s{2,}", rest)):
        return spaced[len(tokens[0]):].strip()
    return rest


@dataclasses.dataclass(frozen=True)
class LabelText:
    value: int
    name: str  # as in the table
    side: str | None  # left | right | None
    base: str  # the key of the name without side or abbreviation ('hippocampus')
    texts: tuple[str, ...]  # what is embedded for it


def label_text(value: int, name: str) -> LabelText:
    side, rest = split_side(name)
    base = key(_without_abbreviation(rest))
    spelled = " ".join(SHORT_WORDS.get(w, w) for w in base.split())
    texts = [base] + ([spelled] if spelled != base else [])
    if spelled.endswith(" gyrus"):  # clinicians say 'anterior cingulate cortex' for the gyrus's cortex
        texts.append(spelled[: -len("gyrus")] + "cortex")
    texts += descriptions()["descriptions"].get(base, [])
    return LabelText(int(value), name, side, base, tuple(dict.fromkeys(texts)))


def groups_for(bases: set[str]) -> dict[str, set[str]]:
    """The groups of label_descriptions.json that have at least two members among ``bases`` (name -> members)."""
    out = {}
    for group, members in descriptions()["groups"].items():
        present = {key(m) for m in members} & bases
        if len(present) >= 2 or (present and key(group) not in bases):
            out[key(group)] = present
    return out
