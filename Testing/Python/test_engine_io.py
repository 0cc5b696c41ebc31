"""Image and label-table I/O keeps geometry (oblique and flipped), values and names."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import rotation

from bijros.io import load_image, read_label_table, save_image
from bijros.io.image import Image

SUFFIXES = [".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"]


def oblique_flipped_affine() -> np.ndarray:
    """Rotated ~20/10/5 degrees, anisotropic spacing, one axis flipped, non-trivial origin."""
    m = np.eye(4)
    m[:3, :3] = (rotation(0, 20) @ rotation(1, 10) @ rotation(2, 5))[:3, :3] @ np.diag([-1.2, 0.9, 2.5])
    m[:3, 3] = [31.5, -12.25, 7.0]
    return m


AFFINES = {
    "oblique_flipped": oblique_flipped_affine(),
    "las": np.array([[-2.0, 0, 0, 32], [0, 2, 0, -40], [0, 0, 2, -16], [0, 0, 0, 1]]),
    "all_flipped_permuted": np.array([[0, 0, -1.5, 10], [0, -1.0, 0, 20], [-2.0, 0, 0, 30], [0, 0, 0, 1]]),
}


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("affine_name", list(AFFINES))
def test_geometry_round_trip(tmp_path, suffix, affine_name):
    rng = np.random.default_rng(1)
    array = rng.normal(100, 20, (7, 9, 5)).astype(np.float32)
    image = Image(array, AFFINES[affine_name], name="x")
    path = save_image(image, tmp_path / f"img{suffix}")
    back = load_image(path)
    assert back.shape == image.shape
    np.testing.assert_allclose(back.array, array, atol=1e-4)
    np.testing.assert_allclose(back.ijk_to_ras, image.ijk_to_ras, atol=1e-4)


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".mha", ".mhd", ".nii.gz"])
def test_point_agrees_between_nibabel_and_simpleitk(tmp_path, suffix):
    """A voxel's RAS position from our reader equals SimpleITK's LPS position with x, y negated,
    and nibabel's for the NIfTI written from the same image."""
    import nibabel as nib
    import SimpleITK as sitk

    image = Image(np.arange(7 * 9 * 5, dtype=np.float32).reshape(7, 9, 5), oblique_flipped_affine())
    path = save_image(image, tmp_path / f"img{suffix}")
    nii = save_image(image, tmp_path / "same.nii.gz")
    ours = load_image(path)
    itk = sitk.ReadImage(str(path))
    for ijk in [(0, 0, 0), (6, 8, 4), (3, 2, 1)]:
        lps = np.array(itk.TransformIndexToPhysicalPoint(tuple(int(v) for v in ijk)))
        ras_ours = ours.ijk_to_ras @ np.r_[ijk, 1.0]
        np.testing.assert_allclose(ras_ours[:3], lps * [-1, -1, 1], atol=1e-4)
        ras_nib = nib.load(str(nii)).affine @ np.r_[ijk, 1.0]
        np.testing.assert_allclose(ras_nib[:3], ras_ours[:3], atol=1e-4)
        # the same voxel value sits at that point in both readings
        assert itk[tuple(int(v) for v in ijk)] == pytest.approx(float(ours.array[ijk]))


def test_real_brain_geometry_matches_nibabel(small_brain_path, tmp_path):
    import nibabel as nib

    ours = load_image(small_brain_path)
    np.testing.assert_allclose(ours.ijk_to_ras, nib.load(str(small_brain_path)).affine, atol=1e-6)
    for suffix in (".nrrd", ".mha"):
        back = load_image(save_image(ours, tmp_path / f"brain{suffix}"))
        np.testing.assert_allclose(back.ijk_to_ras, ours.ijk_to_ras, atol=1e-4)
        np.testing.assert_array_equal(back.array, ours.array)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32])
def test_label_map_keeps_integer_values(tmp_path, suffix, dtype):
    values = np.array([0, 2, 17, 41, 255, 1000, 2035])
    if dtype == np.uint8:
        values = values[values < 256]
    arr = np.random.default_rng(0).choice(values, (6, 7, 5)).astype(dtype)
    path = save_image(Image(arr, oblique_flipped_affine()), tmp_path / f"lab{suffix}")
    lab = load_image(path, label_map=True)
    assert lab.array.dtype.kind in "iu"
    np.testing.assert_array_equal(lab.array, arr.astype(np.int64))


def test_four_d_with_one_volume_is_accepted(tmp_path):
    import nibabel as nib

    arr = np.random.default_rng(0).random((6, 7, 5, 1)).astype(np.float32)
    nib.save(nib.Nifti1Image(arr, AFFINES["las"]), tmp_path / "one.nii.gz")
    img = load_image(tmp_path / "one.nii.gz")
    assert img.shape == (6, 7, 5)
    np.testing.assert_allclose(img.array, arr[..., 0])


TABLE_CSV = "value,name,r,g,b\n0,Background,0,0,0\n17,Left-Hippocampus,220,216,20\n53,Right-Hippocampus,220,216,20\n"
TABLE_JSON = {"labels": [{"value": 17, "name": "Left-Hippocampus", "color": [220, 216, 20]},
                         {"value": 53, "name": "Right-Hippocampus", "color": "#DCD814"}]}
TABLE_CTBL = "# Slicer colour table\n0 Background 0 0 0 0\n17 Left-Hippocampus 220 216 20 255\n53 Right-Hippocampus 220 216 20 255\n"


def _write_table(path, kind):
    if kind == "csv":
        path.write_text(TABLE_CSV)
    elif kind == "json":
        path.write_text(json.dumps(TABLE_JSON))
    else:
        path.write_text(TABLE_CTBL)
    return path


def _check_table(table):
    assert table.name(17) == "Left-Hippocampus"
    assert table.name(53) == "Right-Hippocampus"
    np.testing.assert_allclose(table.color(17), (220 / 255, 216 / 255, 20 / 255), atol=1e-6)
    np.testing.assert_allclose(table.color(53), (220 / 255, 216 / 255, 20 / 255), atol=1e-6)


@pytest.mark.parametrize("kind", ["csv", "json", "ctbl"])
def test_label_table_formats(tmp_path, kind):
    _check_table(read_label_table(_write_table(tmp_path / f"table.{kind}", kind)))


@pytest.mark.parametrize("kind", ["csv", "json", "ctbl"])
def test_label_table_by_flag_and_beside_the_file(tmp_path, kind):
    arr = np.zeros((5, 6, 4), np.int16)
    arr[1:3, 2:4, 1:3] = 17
    arr[3:5, 2:4, 1:3] = 53
    lab_path = save_image(Image(arr, AFFINES["las"]), tmp_path / "seg.nii.gz")
    assert load_image(lab_path, label_map=True).label_table is None
    # given by flag (any name, any folder)
    elsewhere = tmp_path / "tables"
    elsewhere.mkdir()
    table = _write_table(elsewhere / f"my_colours.{kind}", kind)
    _check_table(load_image(lab_path, label_map=True, label_table=str(table)).label_table)
    # found beside the label file (<stem>.<ext>)
    _write_table(tmp_path / f"seg.{kind}", kind)
    _check_table(load_image(lab_path, label_map=True).label_table)
