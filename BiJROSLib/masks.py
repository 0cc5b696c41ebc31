"""Masks on the fixed / target volume: a segmentation or a labelmap volume -> an engine image."""

from __future__ import annotations

from .volumes import segmentationToLabelImage, volumeNodeToImage


def maskProblem(maskNode, role: str) -> str:
    """'' when ``maskNode`` (or None) can be used as the ``role`` image's mask, else why not."""
    if maskNode is None:
        return ""
    if maskNode.IsA("vtkMRMLSegmentationNode"):
        if maskNode.GetSegmentation().GetNumberOfSegments() == 0:
            return f"The {role} mask '{maskNode.GetName()}' has no segments; paint the region to register."
        return ""
    if maskNode.IsA("vtkMRMLLabelMapVolumeNode"):
        return ""
    return (f"The {role} mask '{maskNode.GetName()}' must be a segmentation or a labelmap volume "
            f"(a {maskNode.GetClassName()} was given).")


def maskImage(maskNode, referenceVolume, scene):
    """The mask as an engine image (non-zero = inside), in world coordinates."""
    if maskNode.IsA("vtkMRMLSegmentationNode"):
        return segmentationToLabelImage(maskNode, referenceVolume, scene)
    return volumeNodeToImage(maskNode, role="mask")
