"""Engine displacement / affine -> Slicer transform nodes, checked against Slicer's own readers and resampler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "BiJROSRegistration"))

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

import torch  # noqa: E402
from test_mrml_volumes import geometry  # noqa: E402

from bijros.io import load_image  # noqa: E402
from bijros.io.image import Image  # noqa: E402
from bijros.registration.field import upsample_displacement  # noqa: E402
from BiJROSLib.transforms import (  # noqa: E402
    gridTransformNodeFromArray,
    gridTransformNodeFromFile,
    linearTransformNodeFromFile,
    orientedGridTransform,
    readDisplacementField,
    readItkAffine,
)
from BiJROSLib.volumes import imageToVolumeNode, volumeNodeToImage  # noqa: E402


@pytest.fixture(scope="module")
def engine_output(tmp_path_factory):
    """One real engine run (fast preset) on two hippocampus MRIs: its output folder."""
    from conftest import shared_data_path

    fixed = shared_data_path("hippocampus", "images", "hippocampus_001.nii.gz")
    moving = shared_data_path("hippocampus", "images", "hippocampus_003.nii.gz")
    out = tmp_path_factory.mktemp("engine") / "out"
    env = dict(os.environ, BIJROS_NUM_THREADS=os.environ.get("BIJROS_NUM_THREADS", "1"))
    subprocess.run([sys.executable, "-m", "bijros", "register", "--fixed", str(fixed), "--moving", str(moving),
                    "--out", str(out), "--preset", "fast", "--progress", "none"], check=True, env=env, cwd=REPO)
    return {"fixed": fixed, "moving": moving, "out": out}


def _displacement_from_transform(transform, image: Image) -> np.ndarray:
    """T(x) - x at every voxel centre of ``image``, evaluated by the VTK transform."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape], indexing="ij"), -1).reshape(-1, 3)
    ras = ijk @ image.ijk_to_ras[:3, :3].T + image.ijk_to_ras[:3, 3]
    mapped = np.array([transform.TransformPoint(p) for p in ras])
    return (mapped - ras).reshape(*image.shape, 3)


@pytest.mark.parametrize("kind", ["oblique", "flipped"])
def test_grid_transform_holds_ras_displacement_on_any_grid(mrml_scene, kind):
    rng = np.random.default_rng(1)
    image = Image(np.zeros((5, 6, 4), np.float32), geometry(kind))
    displacement = rng.normal(scale=2.0, size=(*image.shape, 3))
    node = gridTransformNodeFromArray(displacement, image.ijk_to_ras, "t", mrml_scene)
    assert node.IsA("vtkMRMLGridTransformNode")
    fromParent = node.GetTransformFromParent()
    assert fromParent.GetClassName() == "vtkOrientedGridTransform"
    # FromParent = resampling direction: fixed point x -> x + d(x), exact at the grid's nodes
    np.testing.assert_allclose(_displacement_from_transform(fromParent, image), displacement, atol=1e-5)
    np.testing.assert_allclose(slicer.util.arrayFromGridTransform(node).transpose(2, 1, 0, 3), displacement, atol=1e-5)


def test_displacement_file_matches_slicer_storage_node(mrml_scene, engine_output):
    """Our reader of displacement.nii.gz (LPS -> RAS) agrees with Slicer's vtkMRMLTransformStorageNode."""
    path = engine_output["out"] / "displacement.nii.gz"
    ours = gridTransformNodeFromFile(path, "ours", mrml_scene)
    theirs = mrml_scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "slicer")
    storage = mrml_scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(theirs)
    field, field_ijk_to_ras = readDisplacementField(path)
    nodes = Image(np.zeros(field.shape[:3], np.float32), field_ijk_to_ras)
    # at the field's nodes Slicer's reader (cubic interpolation) and ours (linear) agree exactly
    d_ours = _displacement_from_transform(ours.GetTransformFromParent(), nodes)
    d_theirs = _displacement_from_transform(theirs.GetTransformFromParent(), nodes)
    assert np.abs(d_theirs).max() > 0.1  # a real, non-trivial field
    np.testing.assert_allclose(d_ours, d_theirs, atol=1e-5)
    # between them, ours is the engine's own trilinear upsampling: the mapping its outputs were made with
    fixed = load_image(engine_output["fixed"])
    report = json.loads((engine_output["out"] / "report.json").read_text())
    factor = report["displacement_grid"]["factor"]
    assert factor == 2 and list(field.shape[:3]) == report["displacement_grid"]["shape"]
    full = upsample_displacement(torch.as_tensor(field), factor, fixed.shape).numpy()
    np.testing.assert_allclose(_displacement_from_transform(ours.GetTransformFromParent(), fixed), full, atol=1e-4)


def test_affine_node_matches_report_and_slicer_reader(mrml_scene, engine_output):
    out = engine_output["out"]
    affine_report = np.array(json.loads((out / "report.json").read_text())["affine_ras"])
    np.testing.assert_allclose(readItkAffine(out / "affine.tfm"), affine_report, atol=1e-5)
    node = linearTransformNodeFromFile(out / "affine.tfm", "affine", mrml_scene)
    np.testing.assert_allclose(_matrix(node.GetMatrixTransformFromParent), affine_report, atol=1e-5)
    theirs = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    storage = mrml_scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    storage.SetFileName(str(out / "affine.tfm"))
    assert storage.ReadData(theirs)
    np.testing.assert_allclose(_matrix(theirs.GetMatrixTransformFromParent), affine_report, atol=1e-5)


def _matrix(getter) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    getter(m)
    return slicer.util.arrayFromVTKMatrix(m)


def test_slicer_resampling_through_grid_transform_reproduces_engine_warped(mrml_scene, engine_output):
    """The moving volume under the grid transform, resampled by Slicer's volumes logic onto the fixed
    grid, equals the engine's warped.nii.gz wherever the sampled point lies inside the moving image."""
    out = engine_output["out"]
    fixed_image = load_image(engine_output["fixed"])
    moving_image = load_image(engine_output["moving"])
    fixed = imageToVolumeNode(fixed_image, "fixed", mrml_scene)
    moving = imageToVolumeNode(Image(moving_image.array.astype(np.float32), moving_image.ijk_to_ras), "moving", mrml_scene)
    transform = gridTransformNodeFromFile(out / "displacement.nii.gz", "moving to fixed", mrml_scene)
    moving.SetAndObserveTransformNodeID(transform.GetID())

    resampled = slicer.vtkSlicerVolumesLogic.ResampleVolumeToReferenceVolume(moving, fixed)
    resampled.SetAndObserveTransformNodeID(None)
    ours = volumeNodeToImage(resampled).array
    engine = load_image(out / "warped.nii.gz").array

    # voxels whose sampled point x + d(x) is at least one voxel inside the moving image
    displacement = _displacement_from_transform(transform.GetTransformFromParent(), fixed_image)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in fixed_image.shape], indexing="ij"), -1).astype(float)
    ras = ijk @ fixed_image.ijk_to_ras[:3, :3].T + fixed_image.ijk_to_ras[:3, 3] + displacement
    moving_ijk = (ras - moving_image.ijk_to_ras[:3, 3]) @ np.linalg.inv(moving_image.ijk_to_ras[:3, :3]).T
    inside = np.all((moving_ijk >= 1) & (moving_ijk <= np.array(moving_image.shape) - 2), axis=-1)
    assert inside.mean() > 0.5
    scale = np.abs(engine[inside]).max()
    np.testing.assert_allclose(ours[inside], engine[inside], atol=1e-3 * scale)
    # and the result is not trivially the unregistered moving image
    assert np.abs(displacement).max() > 0.5


def test_refilling_an_existing_transform_node(mrml_scene):
    image = Image(np.zeros((3, 3, 3), np.float32), np.eye(4))
    existing = mrml_scene.AddNewNodeByClass("vtkMRMLTransformNode", "mine")
    node = gridTransformNodeFromArray(np.ones((3, 3, 3, 3)), image.ijk_to_ras, "ignored", mrml_scene, node=existing)
    assert node is existing and node.GetName() == "mine"
    np.testing.assert_allclose(node.GetTransformFromParent().TransformPoint((1.0, 1.0, 1.0)), (2.0, 2.0, 2.0))
    # orientedGridTransform refuses a field of the wrong shape
    with pytest.raises(ValueError, match="shape"):
        orientedGridTransform(np.zeros((3, 3, 3)), np.eye(4))
