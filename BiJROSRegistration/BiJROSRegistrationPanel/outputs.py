"""Outputs: the transform node to fill (or a new one) and which result nodes to create."""

from __future__ import annotations

from BiJROSLib.bindings import Binding


class OutputsSection:
    @staticmethod
    def bindings():
        return [
            Binding("outputTransformSelector", "OutputTransform", "node"),
            Binding("createWarpedVolumeCheckBox", "CreateWarpedVolume", "bool", "true"),
            Binding("createSegmentationCheckBox", "CreateSegmentation", "bool", "true"),
            Binding("createJacobianCheckBox", "CreateJacobian", "bool", "false"),
        ]

    @staticmethod
    def refresh(widget):
        # the propagated segmentation needs a moving segmentation
        hasSegmentation = widget._parameterNode.GetNodeReference("MovingSegmentation") is not None
        widget.ui.createSegmentationCheckBox.enabled = hasSegmentation
