"""The choices both panels offer: (value, label) pairs for their combo boxes.

The methods come from the engine's method table (``bijros/data/methods.json``, read without
torch), the engine's default first; the rest are the engine's fixed option values.
"""

from __future__ import annotations

PRESET_CHOICES = (
    ("", "From the method (recommended)"),
    ("default", "Default (1 mm working grid)"),
    ("fast", "Fast (2 mm working grid)"),
    ("accurate", "Accurate (finer last level)"),
)
DEVICE_CHOICES = (
    ("auto", "Automatic (GPU when available)"),
    ("cpu", "CPU"),
    ("cuda", "CUDA GPU"),
)
AFFINE_METRIC_CHOICES = (
    ("", "From the preset (cross-correlation)"),
    ("ncc", "Cross-correlation (same contrast)"),
    ("mi", "Mutual information (different contrasts, e.g. CT to MR)"),
)


def methodChoices() -> tuple:
    """(engine method, title) pairs, the engine's default first."""
    from bijros.registration.methods import DEFAULT_METHOD, METHOD_NAMES, method_info

    return tuple((name, method_info(name)["title"]) for name in
                 (DEFAULT_METHOD, *(m for m in METHOD_NAMES if m != DEFAULT_METHOD)))


def defaultMethod() -> str:
    from bijros.registration.methods import DEFAULT_METHOD

    return DEFAULT_METHOD


def fillComboBox(comboBox, choices) -> None:
    """Replace a combo box's items with ``choices`` ((value, label) pairs)."""
    comboBox.clear()
    for value, label in choices:
        comboBox.addItem(label, value)
