"""The registration methods (bijros/data/methods.json), torch-free so the Slicer panels can list them.

``METHOD_NAMES``: names in menu order; ``DEFAULT_METHOD``: what register/propagate use when none is
given (the most accurate one measured, Testing/Benchmarks/results/malf_propagation.md).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def load_methods() -> dict:
    """``{"default": name, "methods": {name: {"title", "description", "preset", "uses_model"}}}``."""
    text = resources.files("bijros").joinpath("data/methods.json").read_text(encoding="utf-8")
    return json.loads(text)


METHOD_NAMES: tuple[str, ...] = tuple(load_methods()["methods"])
DEFAULT_METHOD: str = load_methods()["default"]


def method_info(name: str) -> dict:
    return load_methods()["methods"][name]
