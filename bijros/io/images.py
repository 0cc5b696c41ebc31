"""Reading and writing images with their geometry.

NIfTI (.nii, .nii.gz) goes through nibabel (its affine is ijk->RAS already); NRRD (.nrrd,
.nhdr) and MetaImage (.mha, .mhd) go through SimpleITK, whose geometry is in LPS and is
converted here. Everything returned is an :class:`bijros.io.image.Image` in RAS.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bijros.errors import InputError
from bijros.io.image import Image
from bijros.io.label_tables import find_label_table, read_label_table

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
SUPPORTED = NIFTI_SUFFIXES + ITK_SUFFIXES
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def file_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".nii.gz", *SUPPORTED):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def file_stem(path: Path) -> str:
    suffix = file_suffix(path)
    return path.name[: -len(suffix)] if suffix and path.name.lower().endswith(suffix) else path.stem


def load_image(path: str | os.PathLike, *, label_map: bool = False, label_table: str | None = None) -> Image:
    """Read a 3D image (or label map) keeping its ijk->RAS geometry.

    ``path``: an image file, or a folder holding one DICOM series (``folder::SERIES_UID`` picks one
    of several; see :mod:`bijros.io.dicom`).

    Raises :class:`InputError` for a missing or unreadable file, a format we do not read,
    an image that is not 3D (4D with a single volume is accepted), or (for label maps)
    non-integer values.
    """
    from bijros.io.dicom import SERIES_SEPARATOR, read_dicom_series, split_series

    if SERIES_SEPARATOR in str(path) or Path(path).is_dir():
        folder, _uid = split_series(str(path))
        if not folder.is_dir():
            raise InputError(f"DICOM folder not found: {folder}. Check the path (it is relative to {Path.cwd()}).")
        try:
            array, ijk_to_ras, name = read_dicom_series(str(path))
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"Cannot read the DICOM series in {folder}: {exc}") from exc
        return _finish(array, ijk_to_ras, name, folder, label_map, label_table)
    from bijros import memo

    path = Path(path)
    if not path.exists():
        raise InputError(f"File not found: {path}. Check the path (it is relative to {Path.cwd()}).")
    key = memo.file_key(path)
    table_key = memo.file_key(label_table) if label_table else None
    return memo.cached(None if key is None else ("image", key, label_map, table_key),
                       lambda: _read_file(path, label_map, label_table), _copy, lambda image: image.array.nbytes)


def _copy(image: Image) -> Image:
    import copy

    return Image(image.array.copy(), image.ijk_to_ras.copy(), copy.deepcopy(image.label_table), image.name)


def _read_file(path: Path, label_map: bool, label_table: str | None) -> Image:
    suffix = file_suffix(path)
    if suffix not in SUPPORTED:
        raise InputError(
            f"Cannot read {path.name}: unsupported format '{suffix}'. Supported: {', '.join(SUPPORTED)}."
        )
    try:
        array, ijk_to_ras = _read_nifti(path) if suffix in NIFTI_SUFFIXES else _read_itk(path)
    except InputError:
        raise
    except Exception as exc:  # the readers raise many kinds of errors on corrupt files
        raise InputError(f"Cannot read {path}: the file is damaged or not a valid {suffix} image ({exc}).") from exc

    return _finish(array, ijk_to_ras, file_stem(path), path, label_map, label_table)


def _finish(array, ijk_to_ras, name: str, path: Path, label_map: bool, label_table: str | None) -> Image:
    array = _squeeze_to_3d(array, path)
    image = Image(array=array, ijk_to_ras=ijk_to_ras, name=name)
    if not np.isfinite(np.linalg.det(image.ijk_to_ras[:3, :3])) or abs(np.linalg.det(image.ijk_to_ras[:3, :3])) < 1e-9:
        raise InputError(f"{path.name} has a degenerate voxel-to-world matrix (zero spacing); fix its header.")
    if label_map:
        image.array = as_label_array(image.array, path.name)
        image.label_table = read_label_table(label_table) if label_table else find_label_table(path)
    return image


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    array = np.asanyarray(img.dataobj)
    # apply scl_slope/inter only for non-integer data; label maps keep their values
    if img.dataobj.slope not in (None, 1.0) or img.dataobj.inter not in (None, 0.0):
        array = np.asarray(img.get_fdata(dtype=np.float32))
    array = np.asarray(array)
    if not array.dtype.isnative:  # big-endian files: SimpleITK and torch need native byte order
        array = array.astype(array.dtype.newbyteorder("="))
    return array, np.asarray(img.affine, dtype=np.float64)


def _read_itk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    if img.GetDimension() == 2:
        raise InputError(f"{path.name} is a 2D image; BiJROS needs a 3D volume.")
    if img.GetNumberOfComponentsPerPixel() > 1:
        raise InputError(
            f"{path.name} has {img.GetNumberOfComponentsPerPixel()} components per voxel (a vector or colour image); "
            "give a single-component 3D scalar volume."
        )
    dim = img.GetDimension()
    arr = sitk.GetArrayFromImage(img)  # (k, j, i) or (t, k, j, i)
    arr = np.ascontiguousarray(np.transpose(arr, tuple(range(arr.ndim))[::-1]))
    spacing = np.array(img.GetSpacing()[:3])
    direction = np.array(img.GetDirection()).reshape(dim, dim)[:3, :3]
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = direction * spacing[None, :]
    ijk_to_lps[:3, 3] = img.GetOrigin()[:3]
    return arr, LPS_TO_RAS @ ijk_to_lps


def _squeeze_to_3d(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim == 5 and array.shape[3] == 1 and array.shape[4] == 1:
        array = array[..., 0, 0]
    if array.ndim == 2 or (array.ndim == 3 and min(array.shape) == 1):
        raise InputError(f"{path.name} is a 2D image (shape {array.shape}); BiJROS needs a 3D volume.")
    if array.ndim == 4:
        raise InputError(
            f"{path.name} is 4D with {array.shape[3]} volumes; extract one 3D volume first "
            "(for example with `fslroi` or Slicer's Sequences module)."
        )
    if array.ndim != 3:
        raise InputError(f"{path.name} has {array.ndim} dimensions (shape {array.shape}); BiJROS needs a 3D volume.")
    if array.dtype.kind == "c" or array.dtype.fields is not None:
        raise InputError(f"{path.name} holds complex or RGB voxels; give a scalar 3D volume.")
    return array


def as_label_array(array: np.ndarray, what: str = "label map") -> np.ndarray:
    """Return integer label values, refusing maps with non-integer values."""
    if array.dtype.kind in "iu":
        return array.astype(np.int32, copy=False) if array.dtype.itemsize > 4 or array.dtype.kind == "u" else array
    if array.dtype.kind == "b":
        return array.astype(np.int32)
    finite = np.isfinite(array)
    if not finite.all():
        raise InputError(f"{what}: the label map contains NaN or infinite values; a label map holds whole numbers.")
    if not np.all(np.equal(np.mod(array, 1), 0)):
        raise InputError(
            f"{what}: the label map has non-integer values (e.g. {array[np.mod(array, 1) != 0].flat[0]:.3g}); "
            "give an integer label map, not an intensity image or a probability map."
        )
    return array.astype(np.int32)


def save_image(image: Image, path: str | os.PathLike) -> Path:
    """Write an image to NIfTI (nibabel) or NRRD/MHA (SimpleITK), keeping its geometry."""
    path = Path(path)
    suffix = file_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        import nibabel as nib

        nib.save(nifti_image(np.asarray(image.array), image.ijk_to_ras), str(path))
    elif suffix in ITK_SUFFIXES:
        import SimpleITK as sitk

        sitk.WriteImage(to_sitk(image), str(path), True)
    else:
        raise InputError(f"Cannot write {path.name}: unsupported format '{suffix}'. Use one of {', '.join(SUPPORTED)}.")
    return path


def nifti_image(array: np.ndarray, ijk_to_ras: np.ndarray):
    """A nibabel NIfTI-1 image of ``array`` with ``ijk_to_ras`` as both its sform and qform (code 1)."""
    import nibabel as nib

    nii = nib.Nifti1Image(array, ijk_to_ras)
    nii.set_sform(ijk_to_ras, code=1)
    nii.set_qform(ijk_to_ras, code=1)
    return nii


def sitk_geometry(ijk_to_ras: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """(origin, spacing, direction) in ITK's LPS convention for an ijk->RAS matrix."""
    ijk_to_lps = LPS_TO_RAS @ np.asarray(ijk_to_ras, float)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    direction = ijk_to_lps[:3, :3] / spacing[None, :]
    return tuple(ijk_to_lps[:3, 3]), tuple(spacing), tuple(direction.ravel())


def to_sitk(image: Image, array: np.ndarray | None = None, is_vector: bool = False):
    """SimpleITK image with the geometry of ``image`` (array in [i, j, k(, c)] order)."""
    import SimpleITK as sitk

    data = np.asarray(image.array if array is None else array)
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    axes = (2, 1, 0, 3) if is_vector else (2, 1, 0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, axes)), isVector=is_vector)
    origin, spacing, direction = sitk_geometry(image.ijk_to_ras)
    img.SetOrigin(origin)
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    return img
