"""RegistrationLogic / PropagationLogic end to end with a real MRML scene and the real engine in a child process.

Small real data (hippocampus MRIs, ~35x50x35 voxels) and the "fast" preset keep each run to seconds.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "BiJROSRegistration"))

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

from test_mrml_process import living_processes_in_group  # noqa: E402

from bijros.io import load_image  # noqa: E402
from bijros.io.image import Image, LabelTable  # noqa: E402
from BiJROSLib.logic import PropagationLogic, RegistrationLogic  # noqa: E402
from BiJROSLib.scene import nodeIds, subjectHierarchyParents  # noqa: E402
from BiJROSLib.segmentations import labelImageToSegmentationNode  # noqa: E402
from BiJROSLib.volumes import imageToVolumeNode, segmentationToLabelImage, volumeNodeToImage  # noqa: E402

FAST = {"preset": "fast", "device": "cpu"}


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("BIJROS_NUM_THREADS", os.environ.get("BIJROS_NUM_THREADS", "1"))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))


def hippocampus_table() -> LabelTable:
    table = LabelTable()
    table.add(1, "Hippocampus anterior", (0.85, 0.35, 0.2))
    table.add(2, "Hippocampus posterior", (0.2, 0.55, 0.9))
    return table


def load_case(scene, case: str, folder=None):
    """Volume node (+ segmentation node with named, coloured segments) of a hippocampus case."""
    from conftest import shared_data_path

    image = load_image(shared_data_path("hippocampus", "images", f"hippocampus_{case}.nii.gz"))
    labels = load_image(shared_data_path("hippocampus", "labels", f"hippocampus_{case}.nii.gz"), label_map=True)
    volume = imageToVolumeNode(image, f"hippocampus_{case}", scene)
    sh = scene.GetSubjectHierarchyNode()
    parent = folder or sh.GetSceneItemID()
    item = sh.GetItemByDataNode(volume)  # Slicer's subject hierarchy plugins would have made it
    sh.SetItemParent(item, parent) if item else sh.CreateItem(parent, volume)
    segmentation = labelImageToSegmentationNode(labels, f"hippocampus_{case} labels", volume, scene, hippocampus_table())
    return volume, segmentation


def snapshot(scene) -> tuple:
    """Everything "scene unchanged" means here: node IDs in order and the subject hierarchy tree."""
    return tuple(nodeIds(scene)), subjectHierarchyParents(scene)


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """One deformable registration (fast) with segmentation + Jacobian in its own scene."""
    from conftest import mrml_scene_context

    context = mrml_scene_context()
    scene = context.__enter__()
    sh = scene.GetSubjectHierarchyNode()
    folder = sh.CreateFolderItem(sh.GetSceneItemID(), "Subject A")
    fixed, _ = load_case(scene, "001", folder)
    moving, moving_segmentation = load_case(scene, "003")
    logic = RegistrationLogic(scene=scene)
    nodes = logic.register(fixed, moving, method="deformable", movingSegmentation=moving_segmentation,
                           createJacobian=True, **FAST)
    yield {"scene": scene, "fixed": fixed, "moving": moving, "movingSegmentation": moving_segmentation,
           "nodes": nodes, "folder": folder}
    context.__exit__(None, None, None)


def test_register_creates_named_nodes_beside_the_fixed_volume(registered):
    nodes, scene = registered["nodes"], registered["scene"]
    assert nodes["transform"].IsA("vtkMRMLGridTransformNode")
    assert nodes["transform"].GetName() == "hippocampus_003 to hippocampus_001 (BiJROS)"
    assert nodes["affineTransform"].IsA("vtkMRMLLinearTransformNode")
    assert nodes["affineTransform"].GetName() == "hippocampus_003 to hippocampus_001 affine (BiJROS)"
    assert nodes["warpedVolume"].GetName() == "hippocampus_003 registered"
    assert nodes["segmentation"].GetName() == "hippocampus_003 labels on hippocampus_001"
    assert nodes["jacobianVolume"].GetName().endswith("Jacobian")
    from bijros.registration.methods import DEFAULT_METHOD

    assert nodes["report"]["method"] == DEFAULT_METHOD and nodes["report"]["preset"] == "fast"
    sh = scene.GetSubjectHierarchyNode()
    for key in ("transform", "affineTransform", "warpedVolume", "segmentation", "jacobianVolume"):
        item = sh.GetItemByDataNode(nodes[key])
        assert item and sh.GetItemParent(item) == registered["folder"], key
    # the warped volume is on the fixed grid; the Jacobian on the displacement grid (every factor-th fixed voxel)
    fixed = volumeNodeToImage(registered["fixed"])
    warped = volumeNodeToImage(nodes["warpedVolume"])
    assert warped.shape == fixed.shape
    np.testing.assert_allclose(warped.ijk_to_ras, fixed.ijk_to_ras, atol=1e-6)
    grid = nodes["report"]["displacement_grid"]
    jacobian = volumeNodeToImage(nodes["jacobianVolume"])
    assert list(jacobian.shape) == grid["shape"]
    scale = np.diag([grid["factor"]] * 3 + [1.0])
    np.testing.assert_allclose(jacobian.ijk_to_ras, fixed.ijk_to_ras @ scale, atol=1e-6)


def test_segment_names_colours_and_values_are_preserved(registered):
    nodes = registered["nodes"]
    segmentation = nodes["segmentation"].GetSegmentation()
    got = {segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegment(i)
           for i in range(segmentation.GetNumberOfSegments())}
    for entry in hippocampus_table():
        assert entry.name in got
        assert got[entry.name].GetLabelValue() == entry.value
        np.testing.assert_allclose(got[entry.name].GetColor(), entry.color, atol=1e-6)
    # reference geometry = the fixed volume; labels overlap the fixed volume's own hippocampus
    labels = segmentationToLabelImage(nodes["segmentation"], registered["fixed"], registered["scene"])
    from conftest import shared_data_path

    truth = load_image(shared_data_path("hippocampus", "labels", "hippocampus_001.nii.gz"), label_map=True).array
    for value in (1, 2):
        a, b = labels.array == value, truth == value
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.4, value


def test_jacobian_volume_has_a_diverging_colour_map(registered):
    jacobian = registered["nodes"]["jacobianVolume"]
    display = jacobian.GetDisplayNode()
    assert "Jacobian" in display.GetColorNode().GetName() or display.GetColorNode().GetName() in (
        "DivergingBlueRed", "ColdToHotRainbow")
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 2.0)
    values = volumeNodeToImage(jacobian).array
    assert 0.3 < np.median(values) < 3.0


def test_transform_node_warps_the_moving_volume_like_the_engine(registered):
    nodes, scene = registered["nodes"], registered["scene"]
    moving = registered["moving"]
    moving.SetAndObserveTransformNodeID(nodes["transform"].GetID())
    try:
        resampled = slicer.vtkSlicerVolumesLogic.ResampleVolumeToReferenceVolume(moving, registered["fixed"])
        resampled.SetAndObserveTransformNodeID(None)
        ours = volumeNodeToImage(resampled).array.astype(float)
        scene.RemoveNode(resampled)
    finally:
        moving.SetAndObserveTransformNodeID(None)
    engine = volumeNodeToImage(nodes["warpedVolume"]).array.astype(float)
    core = (slice(4, -4),) * 3  # away from the border, where out-of-image sampling differs
    scale = np.abs(engine[core]).max()
    assert np.median(np.abs(ours[core] - engine[core])) < 1e-3 * scale
    assert np.corrcoef(ours[core].ravel(), engine[core].ravel())[0, 1] > 0.99


def test_scene_save_and_reload_keeps_transform_and_segmentation(registered, tmp_path):
    scene, nodes = registered["scene"], registered["nodes"]
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    assert app.SaveSceneToSlicerDataBundleDirectory(str(bundle), None)
    mrml = next(bundle.glob("*.mrml"))

    from conftest import mrml_scene_context

    with mrml_scene_context() as reloaded:
        reloaded.SetURL(str(mrml))
        assert reloaded.Connect()
        transform = reloaded.GetFirstNodeByName(nodes["transform"].GetName())
        assert transform is not None and transform.IsA("vtkMRMLGridTransformNode")
        np.testing.assert_allclose(slicer.util.arrayFromGridTransform(transform),
                                   slicer.util.arrayFromGridTransform(nodes["transform"]), atol=1e-6)
        # same mapping at the grid's nodes, here every 2nd fixed voxel (between them, Slicer's reader picks
        # cubic interpolation where the module set linear)
        fixed = volumeNodeToImage(registered["fixed"])
        for ijk in ((6, 8, 10), (18, 26, 18), (30, 40, 28)):
            point = fixed.ijk_to_ras[:3, :3] @ ijk + fixed.ijk_to_ras[:3, 3]
            np.testing.assert_allclose(transform.GetTransformFromParent().TransformPoint(point),
                                       nodes["transform"].GetTransformFromParent().TransformPoint(point), atol=1e-4)
        segmentation = reloaded.GetFirstNodeByName(nodes["segmentation"].GetName())
        assert segmentation is not None
        seg = segmentation.GetSegmentation()
        names = {seg.GetNthSegment(i).GetName(): seg.GetNthSegment(i).GetColor() for i in range(seg.GetNumberOfSegments())}
        for entry in hippocampus_table():
            np.testing.assert_allclose(names[entry.name], entry.color, atol=1e-3)
        reference = reloaded.GetFirstNodeByName("hippocampus_001")
        before = segmentationToLabelImage(nodes["segmentation"], registered["fixed"], scene).array
        after = segmentationToLabelImage(segmentation, reference, reloaded).array
        np.testing.assert_array_equal(after, before)


def test_affine_into_an_existing_transform_node(mrml_scene):
    fixed, _ = load_case(mrml_scene, "001")
    moving, _ = load_case(mrml_scene, "004")
    mine = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "my transform")
    logic = RegistrationLogic()
    nodes = logic.register(fixed, moving, method="affine", outputTransform=mine, createWarpedVolume=False, **FAST)
    assert nodes["transform"] is mine and nodes["affineTransform"] is mine
    assert nodes["warpedVolume"] is None and nodes["segmentation"] is None and nodes["jacobianVolume"] is None
    assert mine.GetName() == "my transform"
    matrix = slicer.util.arrayFromVTKMatrix(mine.GetMatrixTransformFromParent())
    np.testing.assert_allclose(matrix, np.array(nodes["report"]["affine_ras"]), atol=1e-5)
    assert not np.allclose(matrix, np.eye(4))


def test_validate_inputs_gives_reasons(mrml_scene):
    logic = RegistrationLogic()
    volume = imageToVolumeNode(Image(np.random.default_rng(0).random((8, 8, 8), np.float32), np.eye(4)), "a", mrml_scene)
    other = imageToVolumeNode(Image(np.random.default_rng(1).random((8, 8, 8), np.float32), np.eye(4)), "b", mrml_scene)
    flat = imageToVolumeNode(Image(np.zeros((8, 8, 1), np.float32), np.eye(4)), "flat", mrml_scene)
    empty_seg = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty seg")
    assert logic.validateInputs(volume, other) == ""
    assert logic.validateInputs(None, other) == "Select the fixed volume."
    assert logic.validateInputs(volume, None) == "Select the moving volume."
    assert "same volume" in logic.validateInputs(volume, volume)
    assert "2D" in logic.validateInputs(volume, flat)
    assert "no segments" in logic.validateInputs(volume, other, empty_seg)
    before = snapshot(mrml_scene)
    with pytest.raises(ValueError, match="same volume"):
        logic.register(volume, volume)
    with pytest.raises(ValueError, match="Unknown method"):
        logic.startRegistration(volume, other, method="magic")
    with pytest.raises(ValueError, match="Iterations"):
        logic.startRegistration(volume, other, iterations="a,b")
    assert snapshot(mrml_scene) == before


def test_engine_failure_leaves_the_scene_unchanged_and_reports_the_engine_message(mrml_scene):
    fixed, _ = load_case(mrml_scene, "001")
    blank = imageToVolumeNode(Image(np.zeros((30, 30, 30), np.float32), np.eye(4)), "blank", mrml_scene)
    before = snapshot(mrml_scene)
    logic = RegistrationLogic()
    job = logic.startRegistration(fixed, blank, **FAST)
    assert job.wait(120) == "failed"
    assert job.error and "Traceback" not in job.error
    assert not job.workdir.exists()
    with pytest.raises(RuntimeError) as info:
        logic.finishJob(job)
    assert job.error in str(info.value)
    assert snapshot(mrml_scene) == before
    with pytest.raises(RuntimeError, match="BiJROS failed"):
        logic.register(fixed, blank, **FAST)
    assert snapshot(mrml_scene) == before


def test_import_failure_rolls_back_every_node_and_restores_the_output_transform(mrml_scene):
    fixed, _ = load_case(mrml_scene, "001")
    moving, moving_segmentation = load_case(mrml_scene, "003")
    mine = mrml_scene.AddNewNodeByClass("vtkMRMLTransformNode", "existing")
    shift = np.eye(4)
    shift[0, 3] = 7.0
    mine.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(shift))
    before = snapshot(mrml_scene)
    logic = RegistrationLogic()
    job = logic.startRegistration(fixed, moving, method="affine", movingSegmentation=moving_segmentation,
                                  outputTransform=mine, createJacobian=True, **FAST)
    assert job.wait(120) == "done", job.error
    (job.outputDir / "jacobian.nii.gz").unlink()  # the last output to import goes missing
    with pytest.raises(RuntimeError, match="scene is unchanged"):
        logic.finishJob(job)
    assert snapshot(mrml_scene) == before
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(mine.GetMatrixTransformToParent()), shift)
    assert not job.workdir.exists()


def test_cancel_kills_the_engine_and_leaves_the_scene_unchanged(mrml_scene):
    logic = PropagationLogic()
    target, _ = load_case(mrml_scene, "001")
    before = snapshot(mrml_scene)
    # the library atlas (1 mm MNI152 brain) takes long enough on a CPU to cancel it mid-run
    job = logic.startPropagation(target, atlasName="mni152-desikan-killiany", **FAST)
    pgid = job.runner.pid
    deadline = time.monotonic() + 60
    events = []
    while time.monotonic() < deadline and not any(e["stage"] not in ("start", "log") for e in events):
        events += job.poll()
        assert job.state == "running", job.error
        time.sleep(0.05)
    assert any(e["stage"] == "load" for e in events), events
    job.cancel()
    assert job.state == "cancelled"
    assert living_processes_in_group(pgid) == []
    assert not job.workdir.exists()
    assert job.poll()[-1]["stage"] == "cancelled"
    with pytest.raises(RuntimeError, match="cancelled"):
        logic.finishJob(job)
    assert snapshot(mrml_scene) == before


def test_propagation_from_a_scene_atlas(mrml_scene):
    sh = mrml_scene.GetSubjectHierarchyNode()
    study = sh.CreateFolderItem(sh.CreateFolderItem(sh.GetSceneItemID(), "Patient"), "Study")
    target, _ = load_case(mrml_scene, "001", study)
    atlas, atlas_segmentation = load_case(mrml_scene, "003")
    logic = PropagationLogic()
    assert "atlas has no segmentation" in logic.validateInputs(target, atlas, None).replace(
        "'hippocampus_003' has no segmentation", "atlas has no segmentation")
    nodes = logic.propagate(target, atlasVolume=atlas, atlasSegmentation=atlas_segmentation, method="affine", **FAST)
    segmentation = nodes["segmentation"]
    assert segmentation.GetName() == "hippocampus_001 hippocampus_003 labels"
    assert sh.GetItemParent(sh.GetItemByDataNode(segmentation)) == study
    names = {segmentation.GetSegmentation().GetNthSegment(i).GetName()
             for i in range(segmentation.GetSegmentation().GetNumberOfSegments())}
    assert names == {"Hippocampus anterior", "Hippocampus posterior"}
    assert nodes["transform"].IsA("vtkMRMLLinearTransformNode")
    assert nodes["report"]["fixed"]["name"] == "target"


def test_atlas_library_lists_the_engine_default(mrml_scene):
    logic = PropagationLogic()
    names = logic.atlasNames()
    assert names[0] == "mni152-desikan-killiany" and "mni152-aal" in names
    info = logic.atlasInfo("mni152-desikan-killiany")
    assert info["title"] and info["license"] and info["description"]
    target = imageToVolumeNode(Image(np.random.default_rng(0).random((8, 8, 8), np.float32), np.eye(4)), "t", mrml_scene)
    assert logic.validateInputs(target) == ""
    assert "Unknown atlas" in logic.validateInputs(target, atlasName="nope")
    assert "same volume" in logic.validateInputs(target, target, None)
    with pytest.raises(ValueError, match="Unknown atlas"):
        logic.startPropagation(target, atlasName="nope")


def test_temporary_folders_are_removed(mrml_scene, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    fixed, _ = load_case(mrml_scene, "001")
    moving, _ = load_case(mrml_scene, "004")
    RegistrationLogic().register(fixed, moving, method="affine", createWarpedVolume=False, **FAST)
    assert list(tmp_path.glob("BiJROS-*")) == []
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_segment_terminology_is_carried_over(mrml_scene):
    from BiJROSLib.results import applyTerminology, segmentTerminology

    liver = ("Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
             "~SCT^10200004^Liver^~^~^~Anatomic codes - DICOM master list~^^~^^")
    source = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "atlas")
    segmentId = source.GetSegmentation().AddEmptySegment("", "Liver", (0.8, 0.4, 0.3))
    source.GetSegmentation().GetSegment(segmentId).SetTag("TerminologyEntry", liver)
    source.GetSegmentation().AddEmptySegment("", "Untagged", (0.1, 0.2, 0.3))
    tags = segmentTerminology(source)
    assert tags["Liver"] == liver  # (new segments get Slicer's default "Tissue" entry)
    target = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "propagated")
    target.GetSegmentation().AddEmptySegment("", "Liver", (0.8, 0.4, 0.3))
    applyTerminology(target, tags)
    assert segmentTerminology(target) == {"Liver": liver}
