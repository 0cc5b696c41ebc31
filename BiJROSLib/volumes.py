"""Volume nodes <-> engine images, with exact voxel-to-world geometry.

An engine :class:`bijros.io.image.Image` holds ``array[i, j, k]`` and a 4x4 ``ijk_to_ras``.
Slicer's ``slicer.util.arrayFromVolume(node)`` is ``[k, j, i]`` and ``node.GetIJKToRASMatrix``
gives the same 4x4 matrix, for any orientation (oblique, flipped). A linear parent transform
is folded into the geometry (world coordinates); a non-linear one is refused.

Console example::

    from BiJROSLib.volumes import volumeNodeToImage, imageToVolumeNode
    image = volumeNodeToImage(slicer.util.getNode("MRHead"))
    copy = imageToVolumeNode(image, "MRHead copy", slicer.mrmlScene)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .scene import nodeIds, removeNodesAddedSince

if TYPE_CHECKING:  # the engine is imported where it is used (a source checkout loads without it)
    from bijros.io.image import Image, LabelTable

#: volume classes that derive from vtkMRMLScalarVolumeNode but hold several values per voxel
NON_SCALAR_VOLUME_CLASSES = ("vtkMRMLVectorVolumeNode", "vtkMRMLDiffusionWeightedVolumeNode",
                             "vtkMRMLDiffusionTensorVolumeNode", "vtkMRMLDiffusionImageVolumeNode")


def _vtkMatrixToArray(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def _arrayToVtkMatrix(array: np.ndarray):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def ijkToRasOf(volumeNode, world: bool = True) -> np.ndarray:
    """The node's 4x4 ijk->RAS matrix; with ``world`` its linear parent transforms are applied.

    Raises ``ValueError`` when ``world`` is set and the node is under a non-linear transform.
    """
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    ijkToRas = _vtkMatrixToArray(matrix)
    parent = volumeNode.GetParentTransformNode()
    if world and parent is not None:
        if not parent.IsTransformToWorldLinear():
            raise ValueError(
                f"'{volumeNode.GetName()}' is under the non-linear transform '{parent.GetName()}'. "
                "Harden the transform first (Data module: right-click the volume > Harden transform)."
            )
        toWorld = vtk.vtkMatrix4x4()
        parent.GetMatrixTransformToWorld(toWorld)
        ijkToRas = _vtkMatrixToArray(toWorld) @ ijkToRas
    return ijkToRas


def checkScalarVolume(volumeNode, role: str = "volume") -> str:
    """'' when ``volumeNode`` is a 3D single-component scalar volume, else a reason for people."""
    if volumeNode is None:
        return f"Select the {role}."
    name = volumeNode.GetName()
    notScalar = any(volumeNode.IsA(c) for c in NON_SCALAR_VOLUME_CLASSES) or "MultiVolume" in volumeNode.GetClassName()
    if notScalar or not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
        kind = volumeNode.GetClassName().replace("vtkMRML", "").replace("Node", "")
        return (f"The {role} '{name}' is a {kind} (4D, vector or colour); BiJROS needs a single-component 3D "
                "scalar volume (for a 4D series, pick one time point, e.g. with the Sequences module).")
    imageData = volumeNode.GetImageData()
    if imageData is None:
        return f"The {role} '{name}' has no image data."
    if imageData.GetNumberOfScalarComponents() != 1:
        return (f"The {role} '{name}' has {imageData.GetNumberOfScalarComponents()} components per voxel "
                "(a vector or colour volume); BiJROS needs a single-component scalar volume.")
    dims = imageData.GetDimensions()
    if min(dims) <= 1:
        return (f"The {role} '{name}' is 2D ({dims[0]} x {dims[1]} x {dims[2]} voxels); "
                "BiJROS registers 3D volumes.")
    return ""


def volumeNodeToImage(volumeNode, world: bool = True, role: str = "volume") -> Image:
    """Engine image (array [i, j, k], exact ijk->RAS) from a scalar or labelmap volume node.

    Raises ``ValueError`` with a message for people for 2D, 4D / vector or empty volumes.
    """
    import slicer

    reason = checkScalarVolume(volumeNode, role)
    if reason:
        raise ValueError(reason)
    array = np.array(slicer.util.arrayFromVolume(volumeNode)).transpose(2, 1, 0)
    from bijros.io.image import Image

    image = Image(np.ascontiguousarray(array), ijkToRasOf(volumeNode, world), name=volumeNode.GetName())
    if volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
        image.label_table = labelTableFromColorNode(
            volumeNode.GetDisplayNode().GetColorNode() if volumeNode.GetDisplayNode() else None,
            np.unique(image.array),
        )
    return image


def _vtkFriendly(array: np.ndarray) -> np.ndarray:
    """Voxel types VTK volumes display well (no 64-bit integers, no booleans)."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        return array.astype(np.int32)
    return array


def setVolumeFromImage(volumeNode, image: Image) -> None:
    """Replace a volume node's voxels and geometry with the image's (deep copy)."""
    import slicer

    volumeNode.SetIJKToRASMatrix(_arrayToVtkMatrix(image.ijk_to_ras))
    kji = np.ascontiguousarray(_vtkFriendly(np.asarray(image.array)).transpose(2, 1, 0))
    slicer.util.updateVolumeFromArray(volumeNode, kji)


def imageToVolumeNode(image: Image, name: str, scene, className: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node in ``scene`` holding ``image`` (voxels and geometry), with display nodes."""
    volumeNode = scene.AddNewNodeByClass(className, name)
    setVolumeFromImage(volumeNode, image)
    volumeNode.CreateDefaultDisplayNodes()
    return volumeNode


# ------------------------------------------------------------------------------- label tables


def labelTableFromColorNode(colorNode, values) -> LabelTable:
    """Names and colours of ``values`` (non-zero) from a colour table node (or defaults)."""
    from bijros.io.image import LabelTable

    table = LabelTable()
    for value in (int(v) for v in values):
        if value == 0:
            continue
        name, color = None, None
        if colorNode is not None and 0 <= value < colorNode.GetNumberOfColors():
            name = colorNode.GetColorName(value) or None
            if colorNode.GetColorDefined(value) if hasattr(colorNode, "GetColorDefined") else True:
                rgba = [0.0, 0.0, 0.0, 0.0]
                colorNode.GetColor(value, rgba)
                color = (rgba[0], rgba[1], rgba[2])
        table.add(value, name or f"Label {value}", color)
    return table


def segmentLabelValues(segmentation, segmentIds: list[str]) -> list[int]:
    """Label value for each segment: its own label value when those are distinct, else 1..N.

    Segments imported from a label map remember the value they came from
    (``vtkSegment.GetLabelValue``); segments drawn by hand all have 1.
    """
    values = []
    for segmentId in segmentIds:
        segment = segmentation.GetSegment(segmentId)
        values.append(int(segment.GetLabelValue()) if hasattr(segment, "GetLabelValue") else 0)
    if len(set(values)) != len(values) or min(values, default=1) <= 0:
        values = list(range(1, len(segmentIds) + 1))
    return values


def segmentationToLabelImage(segmentationNode, referenceVolumeNode, scene, world: bool = True,
                             segmentIds: list[str] | None = None) -> Image:
    """Label map on the reference volume's grid, one value per segment (``segmentIds``: those only), with a
    value->name/colour table.

    Values keep the segments' own label values when distinct (a segmentation imported from a
    FreeSurfer/atlas label map keeps its numbers), else 1..N in segment order. Temporary nodes
    are removed: the scene is left as it was.
    """
    import slicer

    if segmentationNode is None:
        raise ValueError("Select a segmentation.")
    segmentation = segmentationNode.GetSegmentation()
    if segmentation.GetNumberOfSegments() == 0:
        raise ValueError(f"The segmentation '{segmentationNode.GetName()}' has no segments.")
    if segmentIds is None:
        segmentIds = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    missing = [i for i in segmentIds if segmentation.GetSegment(i) is None]
    if missing:
        raise ValueError(f"The segmentation '{segmentationNode.GetName()}' has no segment {missing[0]}.")
    values = segmentLabelValues(segmentation, segmentIds)

    before = nodeIds(scene)
    labelmapNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__BiJROS_export__")
    try:
        ids = _vtkStringArray(segmentIds)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentationNode, ids, labelmapNode, referenceVolumeNode
        )
        if not ok or labelmapNode.GetImageData() is None:
            raise ValueError(f"Could not export the segmentation '{segmentationNode.GetName()}' to a label map.")
        exported = np.array(slicer.util.arrayFromVolume(labelmapNode)).transpose(2, 1, 0)
        ijkToRas = ijkToRasOf(labelmapNode, world=False)
        if referenceVolumeNode is not None:
            parent = referenceVolumeNode.GetParentTransformNode()
            if world and parent is not None:
                ijkToRas = ijkToRasOf(referenceVolumeNode, world=True) @ np.linalg.inv(
                    ijkToRasOf(referenceVolumeNode, world=False)) @ ijkToRas
    finally:
        removeNodesAddedSince(scene, before)

    # exported values are 1..N in the order of segmentIds: map them to the chosen values
    lookup = np.zeros(len(segmentIds) + 1, dtype=np.int32)
    lookup[1:] = values
    labels = lookup[np.clip(exported.astype(np.int64), 0, len(segmentIds))]
    dtype = np.int16 if max(values) <= 32767 else np.int32
    from bijros.io.image import Image, LabelTable

    table = LabelTable()
    for segmentId, value in zip(segmentIds, values):
        segment = segmentation.GetSegment(segmentId)
        table.add(value, segment.GetName(), tuple(float(c) for c in segment.GetColor()))
    return Image(np.ascontiguousarray(labels.astype(dtype)), ijkToRas, table, name=segmentationNode.GetName())


def _vtkStringArray(items: list[str]):
    import vtk

    array = vtk.vtkStringArray()
    for item in items:
        array.InsertNextValue(item)
    return array

