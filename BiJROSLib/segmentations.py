"""Engine label maps -> segmentation nodes; Jacobian -> a coloured scalar volume.

Segments keep the atlas's names, colours and label values (``vtkSegment.SetLabelValue``),
the segmentation's reference geometry is the target volume, and new nodes are placed beside
the target in the subject hierarchy (same parent folder / study).

Console example::

    from bijros.io import load_image
    from BiJROSLib.segmentations import labelImageToSegmentationNode
    labels = load_image("out/labels.nii.gz", label_map=True)  # finds out/labels.csv
    segmentation = labelImageToSegmentationNode(labels, "subject labels", targetVolume, slicer.mrmlScene)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .scene import nodeIds, removeNodesAddedSince
from .volumes import imageToVolumeNode

if TYPE_CHECKING:  # the engine is imported where it is used (a source checkout loads without it)
    from bijros.io.image import Image, LabelTable

#: colour maps for the Jacobian determinant, best first (Slicer's ColorFiles, then built-ins)
JACOBIAN_COLOR_NODE_NAMES = ("DivergingBlueRed", "ColdToHotRainbow", "fMRI")
JACOBIAN_COLOR_NODE_NAME = "BiJROS Jacobian (blue < 1 < red)"


def placeBeside(node, referenceNode, scene) -> None:
    """Put ``node`` in the same subject-hierarchy folder/study as ``referenceNode``."""
    shNode = scene.GetSubjectHierarchyNode()
    if shNode is None or node is None or referenceNode is None:
        return
    referenceItem = shNode.GetItemByDataNode(referenceNode)
    parentItem = shNode.GetItemParent(referenceItem) if referenceItem else shNode.GetSceneItemID()
    item = shNode.GetItemByDataNode(node)
    if not item:  # Slicer's subject hierarchy plugins create items for new nodes; bare MRML does not
        item = shNode.CreateItem(parentItem, node)
    else:
        shNode.SetItemParent(item, parentItem)


def labelImageToSegmentationNode(labels: Image, name: str, referenceVolumeNode, scene,
                                 labelTable: LabelTable | None = None, node=None):
    """Segmentation node with one segment per non-zero label value of ``labels``.

    Names and colours come from ``labelTable`` (or ``labels.label_table``; else defaults);
    every value of the table gets a segment, present or not, so that an atlas's structures
    are all listed even when one did not reach the target. The segmentation's reference
    geometry is ``referenceVolumeNode`` and it is placed beside it in the subject hierarchy.
    """
    import slicer

    from bijros.io.image import Image, LabelTable

    table = labelTable or labels.label_table or LabelTable()
    present = [int(v) for v in np.unique(labels.array) if int(v) != 0]
    values = sorted(set(present) | {e.value for e in table if e.value != 0})

    segmentationNode = node or scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    if node is not None:
        segmentationNode.GetSegmentation().RemoveAllSegments()
    segmentationNode.CreateDefaultDisplayNodes()
    if referenceVolumeNode is not None:
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)

    before = nodeIds(scene)
    labelmapNode = imageToVolumeNode(
        Image(np.asarray(labels.array).astype(np.int32 if labels.array.max(initial=0) > 32767 else np.int16),
              labels.ijk_to_ras),
        "__BiJROS_import__", scene, className="vtkMRMLLabelMapVolumeNode")
    try:
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
            labelmapNode, segmentationNode, "")
        if not ok:
            raise RuntimeError(f"Could not import the label map into the segmentation '{name}'.")
    finally:
        removeNodesAddedSince(scene, before)

    segmentation = segmentationNode.GetSegmentation()
    byValue = {}
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        byValue[int(segment.GetLabelValue())] = segment
    for value in values:
        segment = byValue.get(value)
        if segment is None:  # listed in the table but absent from the propagated map
            segmentId = segmentation.AddEmptySegment("", table.name(value), list(table.color(value)))
            segment = segmentation.GetSegment(segmentId)
        segment.SetName(table.name(value))
        segment.SetColor(*table.color(value))
        segment.SetLabelValue(value)
    placeBeside(segmentationNode, referenceVolumeNode, scene)
    return segmentationNode


def jacobianColorNode(scene):
    """A diverging colour node for Jacobian maps: Slicer's own if loaded, else one made here."""
    for name in (JACOBIAN_COLOR_NODE_NAME, *JACOBIAN_COLOR_NODE_NAMES[:2]):
        nodes = scene.GetNodesByClassByName("vtkMRMLColorNode", name)
        if nodes.GetNumberOfItems():
            return nodes.GetItemAsObject(0)
    colorNode = scene.AddNewNodeByClass("vtkMRMLProceduralColorNode", JACOBIAN_COLOR_NODE_NAME)
    colorNode.SetAttribute("Category", "BiJROS")
    function = colorNode.GetColorTransferFunction()
    function.RemoveAllPoints()
    # mapped over the display window [0, 2]: 0 = strong shrinkage (blue), 1 = no change (white), 2 = expansion (red)
    function.AddRGBPoint(0.0, 0.02, 0.19, 0.38)
    function.AddRGBPoint(0.5, 0.26, 0.58, 0.76)
    function.AddRGBPoint(1.0, 0.97, 0.97, 0.97)
    function.AddRGBPoint(1.5, 0.84, 0.38, 0.30)
    function.AddRGBPoint(2.0, 0.40, 0.0, 0.05)
    colorNode.SetDescription("Jacobian determinant: blue shrinks, white keeps volume, red expands")
    return colorNode


def mapVolumeNode(image: Image, name: str, referenceVolumeNode, scene, colorNode, window: tuple, role: str):
    """A scalar volume shown with ``colorNode`` over the fixed ``window`` (min, max), tagged ``BiJROS.Role``."""
    volumeNode = imageToVolumeNode(image, name, scene)
    display = volumeNode.GetDisplayNode()
    if colorNode is not None:
        display.SetAndObserveColorNodeID(colorNode.GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(*window)
    volumeNode.SetAttribute("BiJROS.Role", role)
    placeBeside(volumeNode, referenceVolumeNode, scene)
    return volumeNode


def jacobianImageToVolumeNode(jacobian: Image, name: str, referenceVolumeNode, scene):
    """Scalar volume of the Jacobian determinant, centred on 1 with a diverging colour map."""
    return mapVolumeNode(jacobian, name, referenceVolumeNode, scene, jacobianColorNode(scene), (0.0, 2.0),
                         "JacobianDeterminant")


def confidenceImageToVolumeNode(confidence: Image, name: str, referenceVolumeNode, scene):
    """Scalar volume of the label-fusion confidence (0..1: the share of the atlases' votes the chosen label got)."""
    return mapVolumeNode(confidence, name, referenceVolumeNode, scene, scene.GetFirstNodeByName("Grey"), (0.0, 1.0),
                         "FusionConfidence")


def segmentationProblem(node, role: str) -> str:
    """'' when ``node`` is a segmentation with at least one segment, else why not (``role``: "moving", "atlas")."""
    if not node.IsA("vtkMRMLSegmentationNode"):
        return f"'{node.GetName()}' is not a segmentation."
    if node.GetSegmentation().GetNumberOfSegments() == 0:
        return f"The {role} segmentation '{node.GetName()}' has no segments."
    return ""
