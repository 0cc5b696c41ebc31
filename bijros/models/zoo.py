"""The model zoo: architecture name -> network class, and building one from a catalog config."""


from __future__ import annotations

from torch import nn

from bijros.fewshot.gmrd import GMRD
from bijros.models.eoir import EOIR
from bijros.models.textscf import TextSCF
from bijros.models.unet import UNet

MODELS: dict[str, type[nn.Module]] = {"eoir": EOIR, "gmrd": GMRD, "textscf": TextSCF, "unet": UNet}


def build_model(name: str, config: dict | None = None) -> nn.Module:
    """Instantiate ``MODELS[name](**config)``; an unknown name or option is an InputError."""
    from bijros.errors import InputError

    if name not in MODELS:
        raise InputError(f"unknown model architecture '{name}'; known: {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](**(config or {}))
    except TypeError as exc:
        raise InputError(f"bad configuration for model '{name}': {exc}") from exc


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
