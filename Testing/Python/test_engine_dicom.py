"""DICOM series input: a series written by SimpleITK reads back with its geometry; two series in one
folder give an error listing both; ``folder::UID`` picks one; the CLI takes a series folder."""

from __future__ import annotations

import numpy as np
import pytest

from bijros.errors import InputError
from bijros.io import load_image


def write_series(folder, array_kji: np.ndarray, spacing, origin, direction, uid: str, description: str) -> None:
    """One DICOM file per slice, with the tags ITK needs to rebuild the geometry."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    volume = sitk.GetImageFromArray(array_kji.astype(np.int16))
    volume.SetSpacing(spacing)
    volume.SetOrigin(origin)
    volume.SetDirection(direction)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = direction
    orientation = "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    for k in range(volume.GetDepth()):
        s = volume[:, :, k]
        for key, value in (("0020|000e", uid), ("0008|103e", description), ("0008|0060", "CT"),
                           ("0020|0037", orientation),
                           ("0020|0032", "\\".join(f"{v:.6f}" for v in volume.TransformIndexToPhysicalPoint((0, 0, k)))),
                           ("0020|0013", str(k + 1)), ("0028|0030", f"{spacing[1]:.6f}\\{spacing[0]:.6f}"),
                           ("0018|0050", f"{spacing[2]:.6f}")):
            s.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{uid[-4:]}_{k:03d}.dcm"))
        writer.Execute(s)


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    return (rng.random((12, 20, 16)) * 1000).astype(np.int16)  # (k, j, i)


# an oblique direction (rotation about the LPS z axis by 20 degrees)
C, S = np.cos(np.deg2rad(20)), np.sin(np.deg2rad(20))
DIRECTION = (C, -S, 0.0, S, C, 0.0, 0.0, 0.0, 1.0)


def test_series_round_trips_its_geometry(tmp_path, volume):
    import SimpleITK as sitk

    write_series(tmp_path / "ct", volume, (0.8, 0.9, 2.5), (-50.0, 20.0, 100.0), DIRECTION, "1.2.826.0.1.3680043.2.1125.1", "abdomen")
    image = load_image(tmp_path / "ct")
    assert image.shape == (16, 20, 12)
    np.testing.assert_array_equal(image.array, volume.transpose(2, 1, 0))
    # the same geometry SimpleITK gives the volume in memory, converted LPS -> RAS
    ref = sitk.GetImageFromArray(volume)
    ref.SetSpacing((0.8, 0.9, 2.5))
    ref.SetOrigin((-50.0, 20.0, 100.0))
    ref.SetDirection(DIRECTION)
    for ijk in [(0, 0, 0), (15, 19, 11), (3, 7, 5)]:
        lps = np.array(ref.TransformIndexToPhysicalPoint(ijk))
        ras = image.ijk_to_ras @ np.array([*ijk, 1.0])
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-3)


def test_two_series_in_a_folder_are_listed_and_one_can_be_picked(tmp_path, volume):
    a, b = "1.2.826.0.1.3680043.2.1125.11", "1.2.826.0.1.3680043.2.1125.22"
    write_series(tmp_path / "study", volume, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), a, "arterial")
    write_series(tmp_path / "study", volume[:6], (1.0, 1.0, 3.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), b, "venous")
    with pytest.raises(InputError) as err:
        load_image(tmp_path / "study")
    text = str(err.value)
    assert "2 DICOM series" in text and a in text and b in text and "arterial" in text and "venous" in text
    assert "12 slices" in text and "6 slices" in text
    picked = load_image(f"{tmp_path / 'study'}::{b}")
    assert picked.shape == (16, 20, 6) and np.allclose(picked.spacing, (1.0, 1.0, 3.0))


def test_folder_without_dicom_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM series"):
        load_image(tmp_path / "empty")


def test_cli_registers_a_dicom_series_folder(tmp_path, volume):
    from bijros.cli import main

    smooth = np.zeros((12, 20, 16), np.int16)
    smooth[3:9, 5:15, 4:12] = 800
    write_series(tmp_path / "fixed", smooth, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1),
                 "1.2.826.0.1.3680043.2.1125.5", "fixed")
    moving = np.roll(smooth, 1, axis=2)
    write_series(tmp_path / "moving", moving, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1),
                 "1.2.826.0.1.3680043.2.1125.6", "moving")
    rc = main(["register", "--fixed", str(tmp_path / "fixed"), "--moving", str(tmp_path / "moving"), "--method",
               "affine", "--out", str(tmp_path / "out"), "--progress", "none", "--device", "cpu", "--no-qc"])
    assert rc == 0
    warped = load_image(tmp_path / "out" / "warped.nii.gz")
    assert warped.shape == (16, 20, 12)
