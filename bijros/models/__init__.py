"""Learned registration networks (the engine's model zoo).

Every model maps ``forward(fixed, moving)`` with ``(B, 1, D, H, W)`` inputs to a ``(B, 3, D, H, W)``
displacement in voxel units of the input grid, components (i, j, k), resampling convention
(see :mod:`bijros.models.spatial`); untrained models return the identity (zero flow).
The shipped weights and their catalog live in Resources/Models (see :mod:`bijros.models.library`).
The zoo also builds ``gmrd``, the few-shot slice segmentation model of :mod:`bijros.fewshot` (catalog entries
with ``task`` "fewshot"), so its weights load through the same sha256-checked path.

* :mod:`.zoo` -- ``MODELS`` (name -> class), ``build_model``, ``count_parameters``
* :mod:`.eoir`, :mod:`.unet` -- the networks; :mod:`.spatial` -- warping and integration layers
* :mod:`.weights` -- sha256-verified safetensors loading; :mod:`.library` -- the catalog (torch-free)

The zoo names below are imported on first use, so ``bijros.models.library`` loads without torch.
"""

from __future__ import annotations

import importlib

_LAZY = ("MODELS", "build_model", "count_parameters")
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module("bijros.models.zoo"), name)
    raise AttributeError(f"module 'bijros.models' has no attribute '{name}'")
