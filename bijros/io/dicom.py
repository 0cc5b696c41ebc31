"""Reading a DICOM series folder (SimpleITK's GDCM series reader), geometry kept like any image.

A folder holding exactly one series is read as one 3D volume; a folder with several series is an
error that lists them (series UID, description and slice count) and says how to pick one:
``FOLDER::SERIES_UID``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bijros.errors import InputError

SERIES_SEPARATOR = "::"


def split_series(path: str) -> tuple[Path, str | None]:
    """``folder::uid`` -> (folder, uid); a plain folder -> (folder, None)."""
    text = str(path)
    if SERIES_SEPARATOR in text:
        folder, uid = text.rsplit(SERIES_SEPARATOR, 1)
        return Path(folder), uid.strip() or None
    return Path(text), None


def is_dicom_folder(path: Path) -> bool:
    """True for a folder that holds at least one DICOM series."""
    return path.is_dir() and bool(_series_ids(path))


def _series_ids(folder: Path) -> list[str]:
    import SimpleITK as sitk

    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])


def _describe(folder: Path, uid: str) -> str:
    import SimpleITK as sitk

    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
    description = ""
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(files[0])
        reader.ReadImageInformation()
        for key in ("0008|103e", "0008|0060"):  # series description, modality
            if reader.HasMetaDataKey(key):
                description += f" {reader.GetMetaData(key).strip()}"
    except RuntimeError:
        pass
    return f"{uid} ({len(files)} slices{',' if description else ''}{description})"


def read_dicom_series(path: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(array [i, j, k], ijk->RAS 4x4, name) of the one series in a folder (or ``folder::uid``)."""
    import SimpleITK as sitk

    from bijros.io.images import LPS_TO_RAS

    folder, uid = split_series(path)
    if not folder.is_dir():
        raise InputError(f"DICOM folder not found: {folder}.")
    series = _series_ids(folder)
    if not series:
        raise InputError(f"{folder} holds no DICOM series (no readable DICOM slices); give a folder of one series' "
                         ".dcm files, or an image file (.nii, .nii.gz, .nrrd, .mha).")
    if uid is None and len(series) > 1:
        listing = "\n  ".join(_describe(folder, s) for s in series)
        raise InputError(f"{folder} holds {len(series)} DICOM series:\n  {listing}\nPick one as "
                         f"'{folder}{SERIES_SEPARATOR}<series UID>', or put each series in its own folder.")
    uid = uid or series[0]
    if uid not in series:
        raise InputError(f"{folder} has no DICOM series {uid}; it holds: {', '.join(series)}.")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
    if len(files) < 2:
        raise InputError(f"DICOM series {uid} in {folder} has a single slice; BiJROS needs a 3D volume.")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    image = reader.Execute()  # rescale slope/intercept applied (e.g. CT in HU)
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise InputError(f"DICOM series {uid} in {folder} is a colour series; give a greyscale one.")
    arr = np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)))
    spacing = np.array(image.GetSpacing())
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * spacing[None, :]
    ijk_to_lps[:3, 3] = image.GetOrigin()
    return arr, LPS_TO_RAS @ ijk_to_lps, folder.name
