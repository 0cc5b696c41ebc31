"""Writing a registration's results to a folder, all or nothing.

Files (see README "Outputs"): displacement.nii.gz (ITK/ANTs displacement field: vectors in
LPS millimetres, resampling convention), affine.tfm (ITK text transform, same convention),
warped.nii.gz, labels.nii.gz (+ labels.csv), jacobian.nii.gz, report.json.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bijros.errors import InputError
from bijros.io import LPS_TO_RAS, save_image, write_label_table
from bijros.io.images import nifti_image
from bijros.timing import Stages, process_age

OUTPUT_FILES = ("displacement.nii.gz", "affine.tfm", "warped.nii.gz", "labels.nii.gz", "labels_propagated.nii.gz",
                "labels.csv",
                "jacobian.nii.gz", "confidence.nii.gz", "atlases.json", "library.json", "qc.png", "report.json")


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """Check that ``out_dir`` can be created or written, without creating anything in it.

    Run before any work: an existing folder gets a write test (a temporary file, removed
    at once); a missing one needs its nearest existing parent to be a writable folder.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is a file; give a folder path.")
    if out.is_dir():
        return prepare_out_dir(out)
    parent = out.absolute().parent
    while not parent.exists() and not parent.is_file() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(
            f"Cannot create the output folder {out}: {parent} is a file, not a folder. Choose a writable folder."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"Cannot create the output folder {out}: {parent} is not writable. Choose a writable folder.")
    return out


def prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` if needed and check we can write there."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is a file; give a folder path.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".bijros-write-test-"):
            pass
    except OSError as exc:
        raise InputError(f"Cannot write to the output folder {out}: {exc.strerror or exc}. Choose a writable folder.") from exc
    return out


def write_displacement(displacement_ras_mm: np.ndarray, ijk_to_ras: np.ndarray, path: Path) -> None:
    """ITK displacement field (float32 vectors in LPS mm, as ANTs writes) on the grid ``ijk_to_ras``.

    Written through nibabel (a NIfTI vector image, intent "vector", shape (I, J, K, 1, 3), as ITK and
    ANTs write them) into a gzip stream without compression: float displacements shrink by only about a
    third even at level 1, which costs more time than any other file (0.15 s on a brain); every gzip
    reader reads it as usual.
    """
    import gzip

    import nibabel as nib

    lps = displacement_ras_mm.astype(np.float32) * np.array([-1.0, -1.0, 1.0], dtype=np.float32)
    nii = nifti_image(lps[:, :, :, None, :], ijk_to_ras)
    # intent "vector" (1007) with LPS vectors: what SimpleITK writes for a vector image and what ITK, ANTs and
    # Slicer read as LPS (with 1006, "displacement vector", ITK 5.4 reads the vectors as RAS and flips them)
    nii.header.set_intent("vector")
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=0, mtime=0) as stream:
        nii.to_file_map({"image": nib.FileHolder(fileobj=stream)})


def write_itk_affine(affine_ras: np.ndarray, path: Path) -> None:
    """A fixed->moving RAS 4x4 matrix as an ITK text transform (``AffineTransform_double_3_3``, LPS, centre 0):
    the four lines SimpleITK's ``WriteTransform`` writes, without importing SimpleITK (0.05 s) for them."""
    lps = LPS_TO_RAS @ np.asarray(affine_ras, dtype=np.float64) @ LPS_TO_RAS  # the flip is its own inverse
    values = [*lps[:3, :3].ravel(), *lps[:3, 3]]
    Path(path).write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n"
                          f"Parameters: {' '.join(_itk_number(v) for v in values)}\nFixedParameters: 0 0 0\n",
                          encoding="ascii")


def _itk_number(value) -> str:
    """Shortest round-tripping text of a double, as ITK writes it (``12``, not ``12.0``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _staging_folder(out: Path, prefix: str) -> Path:
    """A new hidden folder beside ``out`` (same file system, so renames are atomic), else inside it."""
    try:
        return Path(tempfile.mkdtemp(prefix=f".{out.name}{prefix}", dir=out.parent))
    except OSError:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=out))


def write_outputs(result, out_dir: str | os.PathLike, stages: Stages | None = None, qc_png: bool = True) -> dict[str, Path]:
    """Write a registration's outputs into ``out_dir`` (see :func:`write_files`).

    ``qc_png``: also draw ``qc.png`` (:mod:`bijros.qc.picture`; needs Pillow, else the report says why not).

    ``stages``: the run's stage timer; each file's writing is timed into it and report.json, written
    last, carries its record (``seconds``), with ``wall``: process start to the last file before it.
    """
    writers = {
        "displacement.nii.gz": lambda path: write_displacement(result.field_ras_mm, result.field_grid.ijk_to_ras, path),
        "affine.tfm": lambda path: write_itk_affine(result.affine_ras, path),
        "warped.nii.gz": lambda path: save_image(result.warped, path),
        "jacobian.nii.gz": lambda path: save_image(result.jacobian, path),
    }
    _label_writers(writers, result.labels)
    if qc_png:
        _qc_writer(writers, result)
    writers["report.json"] = lambda path: write_report(result.report, path, stages)
    return write_files(writers, out_dir, stages)


def _qc_writer(writers: dict, result) -> None:
    try:
        import PIL  # noqa: F401
    except ImportError:
        result.report["qc_png"] = "not written: Pillow is not installed (pip install pillow)"
        return

    def write(path: Path) -> None:
        from bijros.qc.picture import write_qc_png

        result.report["qc_png"] = write_qc_png(path, result.fixed, result.warped, result.jacobian, result.labels,
                                               result.report)

    writers["qc.png"] = write


def write_multi_atlas_outputs(result, out_dir: str | os.PathLike, stages: Stages | None = None) -> dict[str, Path]:
    """Write a multi-atlas propagation: fused labels (+ table), confidence, the ranking, qc.png, the report."""
    writers = {"confidence.nii.gz": lambda path: save_image(result.confidence, path)}
    _label_writers(writers, result.labels)
    writers["atlases.json"] = lambda path: write_json({"ranking": result.ranking}, path)
    writers["qc.png"] = lambda path: _fusion_qc(result, path)
    writers["report.json"] = lambda path: write_report(result.report, path, stages)
    return write_files(writers, out_dir, stages)


def _fusion_qc(result, path: Path) -> None:
    from bijros.qc.picture import write_fusion_qc_png

    write_fusion_qc_png(path, result.target, result.labels, result.confidence, result.report)


def _label_writers(writers: dict, labels) -> None:
    if labels is None:
        return
    writers["labels.nii.gz"] = lambda path: save_image(labels, path)
    if labels.label_table is not None:
        present = sorted(int(v) for v in np.unique(labels.array))
        writers["labels.csv"] = lambda path: write_label_table(labels.label_table.subset(present), path)


def write_json(data: dict, path: Path) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def write_report(report: dict, path: Path, stages: Stages | None) -> None:
    """report.json with the run's stage seconds (rounded) up to this moment, ``wall`` from process start."""
    if stages is not None:
        report["seconds"] = stages.rounded()
        report["seconds"]["wall"] = round(process_age(), 3)
    elif isinstance(report.get("seconds"), dict):
        report["seconds"] = {k: round(v, 3) for k, v in report["seconds"].items()}
    write_json(report, path)


def write_files(writers: dict, out_dir: str | os.PathLike, stages: Stages | None = None) -> dict[str, Path]:
    """Write every output into ``out_dir``, all or nothing; a failed rerun keeps the earlier results.

    ``writers``: output file name (one of ``OUTPUT_FILES``) -> function writing it to a given path.
    The files are written into a hidden staging folder beside ``out_dir``; only when all are
    written are they swapped in: each earlier output file (also one this run does not make, e.g.
    labels.nii.gz, so the folder never mixes two runs) is first moved into a backup folder, then the
    new file renamed into place. If anything fails, the new files are removed and the backed-up
    ones moved back, so the folder holds exactly the earlier run's results; a folder that this call
    created is removed. Other files in ``out_dir`` are never touched.
    """
    out = Path(out_dir)
    created = not out.exists()
    out = prepare_out_dir(out)
    stage = _staging_folder(out, ".bijros-partial-")
    backup: Path | None = None
    written: dict[str, Path] = {}
    moved_aside: list[str] = []
    try:
        t0 = time.perf_counter()
        files = [name for name in writers if name != "report.json"]
        # gzip and PNG compression release the GIL: the files are written side by side
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
            for future in [pool.submit(writers[name], stage / name) for name in files]:
                future.result()
        if stages is not None:
            stages.add("write", time.perf_counter() - t0)
        if "report.json" in writers:  # last: it carries the stage seconds up to here
            writers["report.json"](stage / "report.json")
        # swap: earlier outputs aside first, then the new ones in
        earlier = [name for name in OUTPUT_FILES if (out / name).is_file()]
        if earlier:
            backup = _staging_folder(out, ".bijros-previous-")
            for name in earlier:
                os.replace(out / name, backup / name)
                moved_aside.append(name)
        for name in OUTPUT_FILES:
            if (stage / name).exists():
                os.replace(stage / name, out / name)
                written[name] = out / name
    except BaseException:
        for path in written.values():
            path.unlink(missing_ok=True)
        for name in moved_aside:  # the earlier run's results go back where they were
            os.replace(backup / name, out / name)
        shutil.rmtree(stage, ignore_errors=True)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    shutil.rmtree(stage, ignore_errors=True)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return written
