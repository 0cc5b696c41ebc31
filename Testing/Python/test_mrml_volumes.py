"""Volume / segmentation nodes <-> engine images with slicer-core's real MRML (no Slicer application)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "BiJROSRegistration"))

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

from bijros.io import load_image  # noqa: E402
from bijros.io.image import Image, LabelTable  # noqa: E402
from BiJROSLib.scene import nodeIds  # noqa: E402
from BiJROSLib.segmentations import labelImageToSegmentationNode  # noqa: E402
from BiJROSLib.volumes import (  # noqa: E402
    checkScalarVolume,
    imageToVolumeNode,
    segmentationToLabelImage,
    volumeNodeToImage,
)


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def geometry(kind: str) -> np.ndarray:
    """ijk->RAS: oblique (rotated, anisotropic), flipped (LPS-like with det < 0), oblique + flipped."""
    m = np.eye(4)
    spacing = np.diag([0.9, 1.3, 2.1])
    if kind == "oblique":
        m[:3, :3] = rotation(0.3, -0.2, 0.5) @ spacing
    elif kind == "flipped":
        m[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ spacing @ np.diag([1.0, 1.0, -1.0])
    else:
        m[:3, :3] = rotation(-0.4, 0.25, 0.1) @ np.diag([-1.0, 1.0, 1.0]) @ spacing
    m[:3, 3] = [12.5, -40.25, 7.0]
    return m


@pytest.mark.parametrize("kind", ["oblique", "flipped", "oblique-flipped"])
def test_volume_round_trip_is_exact(mrml_scene, kind, tmp_path):
    rng = np.random.default_rng(0)
    image = Image(rng.normal(size=(7, 9, 5)).astype(np.float32), geometry(kind), name="vol")
    node = imageToVolumeNode(image, "vol", mrml_scene)

    back = volumeNodeToImage(node)
    assert back.array.shape == (7, 9, 5)
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, image.array)
    np.testing.assert_allclose(back.ijk_to_ras, image.ijk_to_ras, atol=1e-9)
    # voxel (i, j, k) of the engine image is arrayFromVolume[k, j, i] in Slicer
    assert slicer.util.arrayFromVolume(node)[4, 8, 6] == image.array[6, 8, 4]

    # Slicer's own writer (NRRD, LPS) and the engine's reader agree on the world geometry
    storage = node.CreateDefaultStorageNode()
    storage.SetFileName(str(tmp_path / "vol.nrrd"))
    assert storage.WriteData(node)
    storage.UnRegister(None)
    loaded = load_image(tmp_path / "vol.nrrd")
    np.testing.assert_allclose(loaded.ijk_to_ras, image.ijk_to_ras, atol=1e-5)
    np.testing.assert_array_equal(loaded.array, image.array)


def test_linear_parent_transform_is_folded_into_geometry(mrml_scene):
    image = Image(np.zeros((4, 5, 6), np.float32), geometry("oblique"))
    node = imageToVolumeNode(image, "vol", mrml_scene)
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = [10, 0, -3]
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(shift))
    node.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(volumeNodeToImage(node).ijk_to_ras, shift @ image.ijk_to_ras, atol=1e-9)
    np.testing.assert_allclose(volumeNodeToImage(node, world=False).ijk_to_ras, image.ijk_to_ras, atol=1e-9)

    grid = mrml_scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    node.SetAndObserveTransformNodeID(grid.GetID())
    with pytest.raises(ValueError, match="non-linear transform"):
        volumeNodeToImage(node)


def test_2d_vector_and_empty_volumes_are_refused_with_a_reason(mrml_scene):
    flat = imageToVolumeNode(Image(np.zeros((8, 9, 1), np.float32), np.eye(4)), "slice", mrml_scene)
    assert "2D" in checkScalarVolume(flat, "moving volume")
    with pytest.raises(ValueError, match="2D"):
        volumeNodeToImage(flat)

    vector = mrml_scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    slicer.util.updateVolumeFromArray(vector, np.zeros((4, 5, 6, 3), np.uint8))
    reason = checkScalarVolume(vector, "fixed volume")
    assert "VectorVolume" in reason and "4D, vector or colour" in reason

    empty = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    assert "no image data" in checkScalarVolume(empty)
    assert checkScalarVolume(None, "fixed volume") == "Select the fixed volume."


def _table() -> LabelTable:
    table = LabelTable()
    table.add(3, "Left-Hippocampus", (0.86, 0.85, 0.05))
    table.add(7, "Right-Hippocampus", (0.1, 0.2, 0.9))
    table.add(12, "Amygdala", (0.4, 0.9, 0.3))
    return table


def test_labels_to_segmentation_and_back_keep_names_colours_values(mrml_scene):
    ijk_to_ras = geometry("oblique-flipped")
    labels = np.zeros((10, 11, 12), np.int16)
    labels[1:4, 2:6, 3:7] = 3
    labels[5:9, 2:6, 3:7] = 7
    labels[2:7, 7:10, 8:11] = 12
    reference = imageToVolumeNode(Image(np.ones(labels.shape, np.float32), ijk_to_ras), "ref", mrml_scene)
    before = set(nodeIds(mrml_scene))

    segmentation = labelImageToSegmentationNode(Image(labels, ijk_to_ras), "seg", reference, mrml_scene, _table())
    seg = segmentation.GetSegmentation()
    got = {seg.GetNthSegment(i).GetName(): (seg.GetNthSegment(i).GetLabelValue(), seg.GetNthSegment(i).GetColor())
           for i in range(seg.GetNumberOfSegments())}
    assert set(got) == {"Left-Hippocampus", "Right-Hippocampus", "Amygdala"}
    for entry in _table():
        value, color = got[entry.name]
        assert value == entry.value
        np.testing.assert_allclose(color, entry.color, atol=1e-6)
    # only the segmentation and its display node were added (temporary label map removed)
    added = set(nodeIds(mrml_scene)) - before
    assert sorted(mrml_scene.GetNodeByID(i).GetClassName() for i in added) == [
        "vtkMRMLSegmentationDisplayNode", "vtkMRMLSegmentationNode"]

    before = nodeIds(mrml_scene)
    back = segmentationToLabelImage(segmentation, reference, mrml_scene)
    assert nodeIds(mrml_scene) == before  # the export leaves the scene as it was
    np.testing.assert_array_equal(back.array, labels)
    np.testing.assert_allclose(back.ijk_to_ras, ijk_to_ras, atol=1e-9)
    assert {e.value: e.name for e in back.label_table} == {3: "Left-Hippocampus", 7: "Right-Hippocampus", 12: "Amygdala"}


def test_hand_drawn_segments_get_values_in_order(mrml_scene):
    reference = imageToVolumeNode(Image(np.zeros((6, 6, 6), np.float32), np.eye(4)), "ref", mrml_scene)
    segmentation = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "drawn")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    for name, color, box in (("tumour", (1, 0, 0), (slice(1, 3),) * 3), ("oedema", (0, 1, 0), (slice(3, 5),) * 3)):
        mask = np.zeros((6, 6, 6), np.uint8)
        mask[box] = 1
        maskNode = imageToVolumeNode(Image(mask, np.eye(4)), "mask", mrml_scene, "vtkMRMLLabelMapVolumeNode")
        oriented = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(maskNode)
        segmentation.AddSegmentFromBinaryLabelmapRepresentation(oriented, name, color)
        mrml_scene.RemoveNode(maskNode)
    labelValues = [segmentation.GetSegmentation().GetNthSegment(i).GetLabelValue() for i in range(2)]
    assert labelValues == [1, 1]  # drawn segments do not carry distinct values
    image = segmentationToLabelImage(segmentation, reference, mrml_scene)
    assert image.array[2, 2, 2] == 1 and image.array[4, 4, 4] == 2 and image.array[0, 0, 0] == 0
    assert [(e.value, e.name) for e in image.label_table] == [(1, "tumour"), (2, "oedema")]

    empty = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "nothing")
    with pytest.raises(ValueError, match="no segments"):
        segmentationToLabelImage(empty, reference, mrml_scene)


def test_real_hippocampus_labels_round_trip(mrml_scene, shared_data):
    image = load_image(shared_data("hippocampus", "images", "hippocampus_001.nii.gz"))
    labels = load_image(shared_data("hippocampus", "labels", "hippocampus_001.nii.gz"), label_map=True)
    volume = imageToVolumeNode(image, "hippocampus_001", mrml_scene)
    np.testing.assert_array_equal(volumeNodeToImage(volume).array, image.array)
    segmentation = labelImageToSegmentationNode(labels, "labels", volume, mrml_scene)
    back = segmentationToLabelImage(segmentation, volume, mrml_scene)
    np.testing.assert_array_equal(back.array, labels.array)
