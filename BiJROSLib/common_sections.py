"""Panel parts both modules have: the method menu with its cross-contrast warning, and the engine
settings (preset, device, affine similarity). Each part: ``bindings()``, ``setup(widget)``, ``refresh(widget)``.

The widget's ``methodVolumes()`` returns the (fixed/target, moving/atlas) volume nodes the
warning looks at; the .ui file has ``methodComboBox``, ``methodWarningLabel``, ``presetComboBox``,
``deviceComboBox`` and ``affineMetricComboBox``.
"""

from __future__ import annotations

from . import choices
from .bindings import Binding
from .options import crossContrastWarning


class MethodSection:
    """The method menu (from the engine's methods.json) and the warning under it."""

    @staticmethod
    def bindings():
        return [Binding("methodComboBox", "Method", "choice", choices.defaultMethod())]

    @staticmethod
    def setup(widget):
        choices.fillComboBox(widget.ui.methodComboBox, choices.methodChoices())

    @staticmethod
    def refresh(widget):
        node = widget._parameterNode
        fixed, moving = widget.methodVolumes()
        warning = crossContrastWarning(node.GetParameter("Method"), fixed, moving,
                                       node.GetParameter("AffineMetric") or None)
        widget.ui.methodWarningLabel.text = warning
        widget.ui.methodWarningLabel.visible = bool(warning)


class EngineSettingsSection:
    """Preset, device and the affine similarity (NCC for one contrast, MI across contrasts)."""

    @staticmethod
    def bindings():
        return [
            Binding("presetComboBox", "Preset", "choice", ""),
            Binding("deviceComboBox", "Device", "choice", "auto"),
            Binding("affineMetricComboBox", "AffineMetric", "choice", ""),
        ]

    @staticmethod
    def setup(widget):
        choices.fillComboBox(widget.ui.presetComboBox, choices.PRESET_CHOICES)
        choices.fillComboBox(widget.ui.deviceComboBox, choices.DEVICE_CHOICES)
        choices.fillComboBox(widget.ui.affineMetricComboBox, choices.AFFINE_METRIC_CHOICES)
