"""File conventions (issue item 6): displacement.nii.gz and affine.tfm read by SimpleITK and by
slicer-core's transform storage node reproduce the engine's own mapping and warped.nii.gz.

Findings this test pins down (SimpleITK 2.5, slicer-core 5.13): the field is written by
SimpleITK with NIfTI intent 1007 (vector) and LPS vectors, as ANTs' Warp files; ITK reads
it back unchanged (LPS), and Slicer's storage node reads it (with a warning that it expects
intent 1006) and converts LPS -> RAS correctly. A file stamped 1006 would be treated as RAS by
ITK's reader, so the intent must stay 1007 for the LPS vectors written here.
"""

from __future__ import annotations

import numpy as np
import pytest

from bijros.io import load_image, save_image
from bijros.io.image import Image
from bijros.io.outputs import write_outputs
from bijros.registration.pipeline import RegistrationOptions, register


@pytest.fixture(scope="module")
def registered(small_brain_path, tmp_path_factory):
    """A real deformable registration written to disk: an oblique, shifted copy of the small brain."""
    tmp = tmp_path_factory.mktemp("interop")
    fixed = load_image(small_brain_path)
    moved = fixed.ijk_to_ras.copy()
    t = np.deg2rad(6.0)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    moved[:3, :3] = rot @ moved[:3, :3]
    moved[:3, 3] += [3.0, -2.0, 4.0]
    moving_path = save_image(Image(fixed.array.astype(np.float32), moved, name="moving"), tmp / "moving.nii.gz")
    moving = load_image(moving_path)
    result = register(fixed, moving, None, RegistrationOptions(preset="fast", spacing=3.0, device="cpu"))
    out = tmp / "out"
    write_outputs(result, out)
    return {"fixed_path": small_brain_path, "moving_path": moving_path, "fixed": fixed, "moving": moving,
            "result": result, "out": out}


def _inside_moving(points_ras: np.ndarray, moving: Image, margin: float = 1.0) -> np.ndarray:
    """Points whose sampling position lies well inside the moving image (no edge-padding effects)."""
    ijk = points_ras @ np.linalg.inv(moving.ijk_to_ras)[:3, :3].T + np.linalg.inv(moving.ijk_to_ras)[:3, 3]
    return np.all((ijk >= margin) & (ijk <= np.array(moving.shape) - 1 - margin), axis=-1)


def _fixed_points(fixed: Image) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in fixed.shape], indexing="ij"), -1).astype(float)
    return ijk @ fixed.ijk_to_ras[:3, :3].T + fixed.ijk_to_ras[:3, 3]


def test_written_files_match_result(registered):
    out, result = registered["out"], registered["result"]
    disp = load_image(out / "warped.nii.gz")
    np.testing.assert_allclose(disp.array, result.warped.array, atol=1e-3)
    np.testing.assert_allclose(disp.ijk_to_ras, registered["fixed"].ijk_to_ras, atol=1e-4)
    assert np.abs(result.displacement_ras_mm).max() > 2.0  # a real, non-trivial mapping


def test_simpleitk_displacement_field_reproduces_warped(registered):
    import SimpleITK as sitk

    out, fixed, moving = registered["out"], registered["fixed"], registered["moving"]
    field = sitk.ReadImage(str(out / "displacement.nii.gz"))
    assert field.GetNumberOfComponentsPerPixel() == 3
    # vectors on disk are LPS: the same voxel holds the RAS displacement with x, y negated
    arr = np.transpose(sitk.GetArrayFromImage(field), (2, 1, 0, 3))
    np.testing.assert_allclose(arr * [-1, -1, 1], registered["result"].displacement_ras_mm, atol=1e-4)

    tx = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    fixed_itk = sitk.ReadImage(str(registered["fixed_path"]), sitk.sitkFloat32)
    moving_itk = sitk.ReadImage(str(registered["moving_path"]), sitk.sitkFloat32)
    resampled = sitk.Resample(moving_itk, fixed_itk, tx, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    ours = np.transpose(sitk.GetArrayFromImage(resampled), (2, 1, 0))
    warped = load_image(out / "warped.nii.gz").array
    x = _fixed_points(fixed)
    inside = _inside_moving(x + registered["result"].displacement_ras_mm, moving)
    assert inside.mean() > 0.5
    scale = np.abs(warped[inside]).max()
    diff = np.abs(ours - warped)[inside]
    assert diff.max() < 1e-3 * scale, f"max diff {diff.max():.3g} of {scale:.3g}"

    # and ITK maps a fixed point (LPS) to x + d exactly where the field has its nodes
    for ijk in [(5, 10, 6), (16, 20, 12), (25, 30, 18)]:
        p_ras = fixed.ijk_to_ras @ np.r_[ijk, 1.0]
        q_lps = np.array(tx.TransformPoint(tuple(p_ras[:3] * [-1, -1, 1])))
        expected = p_ras[:3] + registered["result"].displacement_ras_mm[ijk]
        np.testing.assert_allclose(q_lps * [-1, -1, 1], expected, atol=1e-3)


def test_affine_tfm_matches_affine_ras(registered):
    import SimpleITK as sitk

    tx = sitk.ReadTransform(str(registered["out"] / "affine.tfm"))
    a = registered["result"].affine_ras
    assert not np.allclose(a, np.eye(4), atol=1e-2)
    for p in ([0.0, 0.0, 0.0], [30.0, -20.0, 10.0], [-25.0, 35.0, -15.0]):
        expected_ras = a[:3, :3] @ p + a[:3, 3]
        got_lps = np.array(tx.TransformPoint(tuple(np.array(p) * [-1, -1, 1])))
        np.testing.assert_allclose(got_lps * [-1, -1, 1], expected_ras, atol=1e-4)


def test_slicer_storage_node_reads_displacement_field(registered):
    slicer = pytest.importorskip("slicer", reason="slicer-core (pip install -e .[slicer-test]) is not installed")
    from scipy import ndimage

    out, fixed, moving = registered["out"], registered["fixed"], registered["moving"]
    disp = registered["result"].displacement_ras_mm
    scene = slicer.vtkMRMLScene()
    storage = slicer.vtkMRMLTransformStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(out / "displacement.nii.gz"))
    node = slicer.vtkMRMLGridTransformNode()
    scene.AddNode(node)
    assert storage.ReadData(node), "Slicer could not read displacement.nii.gz as a transform"
    from_parent = node.GetTransformFromParent()  # resampling direction: fixed point -> moving point

    x = _fixed_points(fixed)
    rng = np.random.default_rng(0)
    sample = rng.choice(x.reshape(-1, 3).shape[0], 300, replace=False)
    ijk_all = np.stack(np.meshgrid(*[np.arange(n) for n in fixed.shape], indexing="ij"), -1).reshape(-1, 3)
    pts = x.reshape(-1, 3)[sample]
    mapped = np.array([from_parent.TransformPoint(*p) for p in pts])
    expected = pts + disp.reshape(-1, 3)[sample]
    np.testing.assert_allclose(mapped, expected, atol=0.01)

    # resampling the moving image at Slicer's positions reproduces warped.nii.gz
    ras_to_ijk = np.linalg.inv(moving.ijk_to_ras)
    m_ijk = mapped @ ras_to_ijk[:3, :3].T + ras_to_ijk[:3, 3]
    values = ndimage.map_coordinates(moving.array.astype(np.float64), m_ijk.T, order=1)
    warped = load_image(out / "warped.nii.gz").array
    target = warped[tuple(ijk_all[sample].T)]
    inside = _inside_moving(mapped, moving)
    assert inside.sum() > 100
    scale = np.abs(warped).max()
    assert np.abs(values - target)[inside].max() < 1e-3 * scale

    # a point between grid nodes: Slicer interpolates the field like ITK does (linear)
    p = fixed.ijk_to_ras @ np.r_[10.5, 20.5, 12.5, 1.0]
    corners = [disp[10 + a, 20 + b, 12 + c] for a in (0, 1) for b in (0, 1) for c in (0, 1)]
    np.testing.assert_allclose(np.array(from_parent.TransformPoint(*p[:3])), p[:3] + np.mean(corners, 0),
                               atol=0.05)  # Slicer may interpolate the grid cubically


def test_affine_tfm_is_the_text_simpleitk_writes(tmp_path):
    """affine.tfm is written without SimpleITK; its text is byte for byte what SimpleITK writes."""
    import SimpleITK as sitk

    from bijros.io.outputs import write_itk_affine

    a = np.array([[1.02, 0.03, -0.01, 3.5], [-0.02, 0.98, 0.04, -7.25], [0.01, -0.03, 1.01, 12.0], [0, 0, 0, 1]])
    write_itk_affine(a, tmp_path / "ours.tfm")
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps = flip @ a @ flip
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(tuple(lps[:3, :3].ravel()))
    tx.SetTranslation(tuple(lps[:3, 3]))
    sitk.WriteTransform(tx, str(tmp_path / "sitk.tfm"))
    assert (tmp_path / "ours.tfm").read_text() == (tmp_path / "sitk.tfm").read_text()
