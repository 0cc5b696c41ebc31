"""Advanced: preset, device, affine similarity, working spacing, iterations, regularisation, diffeomorphic."""

from __future__ import annotations

import re

from BiJROSLib.bindings import Binding
from BiJROSLib.common_sections import EngineSettingsSection


class AdvancedSection:
    @staticmethod
    def bindings():
        return [
            *EngineSettingsSection.bindings(),
            Binding("spacingSpinBox", "Spacing", "float", "0"),  # 0: from the preset
            Binding("iterationsLineEdit", "Iterations", "text", ""),  # empty: from the preset
            Binding("regWeightSpinBox", "RegWeight", "float", "0"),  # 0: from the preset
            Binding("diffeomorphicCheckBox", "Diffeomorphic", "bool", "false"),
        ]

    @staticmethod
    def setup(widget):
        EngineSettingsSection.setup(widget)

    @staticmethod
    def problem(parameterNode) -> str:
        """'' or what is wrong with the advanced settings (the Apply button's tooltip)."""
        iterations = parameterNode.GetParameter("Iterations").strip()
        if iterations and not re.fullmatch(r"\d+(\s*,\s*\d+)*", iterations):
            return f"Iterations '{iterations}': give whole numbers separated by commas, e.g. 40,30,20."
        return ""
