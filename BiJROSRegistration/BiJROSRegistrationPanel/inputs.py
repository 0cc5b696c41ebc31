"""Inputs: fixed and moving volumes, the moving segmentation, the fixed mask, and the method."""

from __future__ import annotations

from BiJROSLib.bindings import Binding
from BiJROSLib.common_sections import MethodSection


class InputsSection:
    @staticmethod
    def bindings():
        return [
            Binding("fixedVolumeSelector", "FixedVolume", "node"),
            Binding("movingVolumeSelector", "MovingVolume", "node"),
            Binding("movingSegmentationSelector", "MovingSegmentation", "node"),
            Binding("fixedMaskSelector", "FixedMask", "node"),
            *MethodSection.bindings(),
        ]

    @staticmethod
    def setup(widget):
        MethodSection.setup(widget)

    @staticmethod
    def refresh(widget):
        MethodSection.refresh(widget)
