"""Target: the volume to segment, and an optional mask on it."""

from __future__ import annotations

from BiJROSLib.bindings import Binding


class TargetSection:
    @staticmethod
    def bindings():
        return [
            Binding("targetVolumeSelector", "TargetVolume", "node"),
            Binding("targetMaskSelector", "TargetMask", "node"),
        ]
