"""Reading and writing images with their geometry, and label tables.

NIfTI (.nii, .nii.gz) goes through nibabel (its affine is ijk->RAS already); NRRD (.nrrd,
.nhdr) and MetaImage (.mha, .mhd) go through SimpleITK, whose geometry is in LPS and is
converted here. Everything returned is an :class:`bijros.image.Image` in RAS.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from bijros.errors import InputError
from bijros.image import Image, LabelTable

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
SUPPORTED = NIFTI_SUFFIXES + ITK_SUFFIXES
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".nii.gz", *SUPPORTED):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _stem(path: Path) -> str:
    suffix = _suffix(path)
    return path.name[: -len(suffix)] if suffix and path.name.lower().endswith(suffix) else path.stem


def load_image(path: str | os.PathLike, *, label_map: bool = False, label_table: str | None = None) -> Image:
    """Read a 3D image (or label map) keeping its ijk->RAS geometry.

    Raises :class:`InputError` for a missing or unreadable file, a format we do not read,
    an image that is not 3D (4D with a single volume is accepted), or (for label maps)
    non-integer values.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"File not found: {path}. Check the path (it is relative to {Path.cwd()}).")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image file. Give a .nii/.nii.gz/.nrrd/.mha file.")
    suffix = _suffix(path)
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

    array = _squeeze_to_3d(array, path)
    image = Image(array=array, ijk_to_ras=ijk_to_ras, name=_stem(path))
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
    suffix = _suffix(path)
    if suffix in NIFTI_SUFFIXES:
        import nibabel as nib

        nii = nib.Nifti1Image(np.asarray(image.array), image.ijk_to_ras)
        nii.set_sform(image.ijk_to_ras, code=1)
        nii.set_qform(image.ijk_to_ras, code=1)
        nib.save(nii, str(path))
    elif suffix in ITK_SUFFIXES:
        import SimpleITK as sitk

        sitk.WriteImage(to_sitk(image), str(path), True)
    else:
        raise InputError(f"Cannot write {path.name}: unsupported format '{suffix}'. Use one of {', '.join(SUPPORTED)}.")
    return path


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


# ----------------------------------------------------------------------------------- label tables

LABEL_TABLE_SUFFIXES = (".csv", ".json", ".ctbl", ".txt")


def find_label_table(label_path: Path) -> LabelTable | None:
    """Look beside a label file for its table: <stem>.csv/.json/.ctbl/.txt, then labels.csv."""
    stem = _stem(label_path)
    candidates = [label_path.with_name(stem + s) for s in LABEL_TABLE_SUFFIXES]
    candidates += [label_path.with_name(n) for n in ("labels.csv", "labels.json", "labels.ctbl")]
    for candidate in candidates:
        if candidate.is_file():
            try:
                return read_label_table(candidate)
            except InputError:
                continue
    return None


def read_label_table(path: str | os.PathLike) -> LabelTable:
    """Read a label table: CSV (value,name[,r,g,b | color]), JSON, or a Slicer colour table."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Label table not found: {path}.")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            table = _table_from_json(json.loads(text))
        elif suffix == ".csv":
            table = _table_from_csv(text)
        else:
            table = _table_from_ctbl(text)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise InputError(f"Cannot read label table {path.name}: {exc}. Expected columns value,name[,r,g,b].") from exc
    if not len(table):
        raise InputError(f"Label table {path.name} has no entries.")
    return table


def _rgb(values: list) -> tuple[float, float, float]:
    rgb = [float(v) for v in values[:3]]
    if max(rgb) > 1.0:
        rgb = [v / 255.0 for v in rgb]
    return (rgb[0], rgb[1], rgb[2])


def _table_from_json(data) -> LabelTable:
    table = LabelTable()
    items = data.get("labels", data) if isinstance(data, dict) else data
    if isinstance(items, dict):  # {"1": "name"} or {"1": {"name":..., "color": [...]}}
        items = [{"value": k, **(v if isinstance(v, dict) else {"name": v})} for k, v in items.items()]
    for item in items:
        color = item.get("color")
        if isinstance(color, str):
            color = [int(color.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4)]
        table.add(int(item["value"]), str(item["name"]), _rgb(color) if color else None)
    return table


def _table_from_csv(text: str) -> LabelTable:
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
    header = [c.strip().lower() for c in rows[0]]
    has_header = not header[0].lstrip("-").isdigit()
    if has_header:
        value_col = next(i for i, h in enumerate(header) if h in ("value", "index", "label number", "label", "id", "label_value"))
        name_col = next((i for i, h in enumerate(header) if "name" in h or h in ("structure", "description")), value_col + 1)
        rgb_cols = [header.index(c) for c in ("r", "g", "b")] if all(c in header for c in ("r", "g", "b")) else None
        color_col = header.index("color") if "color" in header else None
        rows = rows[1:]
    else:
        value_col, name_col, rgb_cols, color_col = 0, 1, ([2, 3, 4] if len(rows[0]) >= 5 else None), None
    table = LabelTable()
    for row in rows:
        color = None
        if rgb_cols:
            color = _rgb([row[c] for c in rgb_cols])
        elif color_col is not None and row[color_col].strip():
            hexa = row[color_col].strip().lstrip("#")
            color = _rgb([int(hexa[i : i + 2], 16) for i in (0, 2, 4)])
        table.add(int(float(row[value_col])), row[name_col].strip(), color)
    return table


def _table_from_ctbl(text: str) -> LabelTable:
    """Slicer colour table / FreeSurfer LUT: `value name r g b a` per line, '#' comments."""
    table = LabelTable()
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        table.add(int(parts[0]), parts[1], _rgb(parts[2:5]) if len(parts) >= 5 else None)
    return table


def write_label_table(table: LabelTable, path: str | os.PathLike) -> Path:
    """Write value,name,r,g,b (0-255) CSV."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["value", "name", "r", "g", "b"])
        for e in table:
            writer.writerow([e.value, e.name, *(round(c * 255) for c in e.color)])
    return path
