"""Advanced: method (with the cross-contrast warning), preset, device, affine similarity, and the outputs."""

from __future__ import annotations

from BiJROSLib.bindings import Binding
from BiJROSLib.common_sections import EngineSettingsSection, MethodSection


class AdvancedSection:
    @staticmethod
    def bindings():
        return [
            *MethodSection.bindings(),
            *EngineSettingsSection.bindings(),
            Binding("createTransformCheckBox", "CreateTransform", "bool", "true"),
            Binding("createJacobianCheckBox", "CreateJacobian", "bool", "false"),
        ]

    @staticmethod
    def setup(widget):
        MethodSection.setup(widget)
        EngineSettingsSection.setup(widget)

    @staticmethod
    def refresh(widget):
        MethodSection.refresh(widget)
