"""What the modules' in-Slicer self-tests share: a phantom pair with a known shift, and the check
that a result transform really maps the fixed phantom's centre onto the moving one's (a transform
with the wrong sign or the wrong convention fails it, not only a missing node).
"""

from __future__ import annotations

import numpy as np

#: phantom centre (i, j, k voxels) and size, on a 40 x 36 x 32 grid at 1.5 mm
CENTRE_IJK = (20, 18, 16)
SHAPE_KJI = (32, 36, 40)
SPACING_MM = 1.5


def phantomArrays(offset):
    """(image, labels) arrays [k, j, i]: an ellipsoid with a brighter inner one, centred at CENTRE_IJK + offset."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in SHAPE_KJI), indexing="ij")
    ci, cj, ck = (c + o for c, o in zip(CENTRE_IJK, offset))
    outer = ((i - ci) / 12.0) ** 2 + ((j - cj) / 10.0) ** 2 + ((k - ck) / 8.0) ** 2 < 1
    inner = ((i - ci) / 5.0) ** 2 + ((j - cj) / 4.0) ** 2 + ((k - ck) / 3.0) ** 2 < 1
    image = (100.0 * outer + 80.0 * inner).astype(np.float32)
    return image, (outer.astype(np.uint8) + inner)


def makePhantomPair(shift, fixedName="fixed", movingName="moving"):
    """A fixed phantom, a moving one shifted by ``shift`` voxels, and a two-segment segmentation of the moving one."""
    import slicer

    fixedArray, _ = phantomArrays((0, 0, 0))
    movingArray, movingLabels = phantomArrays(shift)
    fixed = slicer.util.addVolumeFromArray(fixedArray, nodeClassName="vtkMRMLScalarVolumeNode", name=fixedName)
    moving = slicer.util.addVolumeFromArray(movingArray, nodeClassName="vtkMRMLScalarVolumeNode", name=movingName)
    labels = slicer.util.addVolumeFromArray(movingLabels, nodeClassName="vtkMRMLLabelMapVolumeNode",
                                            name=f"{movingName} labels")
    for node in (fixed, moving, labels):
        node.SetSpacing(SPACING_MM, SPACING_MM, SPACING_MM)
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{movingName} segmentation")
    slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labels, segmentation)
    slicer.mrmlScene.RemoveNode(labels)
    return fixed, moving, segmentation


def _ras(volumeNode, ijk):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return np.array(matrix.MultiplyPoint((*ijk, 1.0))[:3])


def mappedCentreError(transformNode, fixedVolume, movingVolume, shift) -> float:
    """Distance (mm) between where ``transformNode`` sends the fixed phantom's centre and the moving
    phantom's true centre. Slicer's resampling convention: a transform on the moving volume that
    aligns it to the fixed one maps fixed points to moving points through its FromParent transform."""
    fixedCentre = _ras(fixedVolume, CENTRE_IJK)
    movingCentre = _ras(movingVolume, tuple(c + s for c, s in zip(CENTRE_IJK, shift)))
    mapped = np.array(transformNode.GetTransformFromParent().TransformPoint(fixedCentre.tolist()))
    return float(np.linalg.norm(mapped - movingCentre))
