"""Bad input: exit code 2, a message naming the problem, and nothing written in --out."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from bijros import cli
from bijros.errors import InputError
from bijros.io import save_image
from bijros.io.image import Image

LAS = np.array([[-2.0, 0, 0, 32], [0, 2, 0, -40], [0, 0, 2, -16], [0, 0, 0, 1]])
QUICK = ["--preset", "fast", "--spacing", "4", "--iterations", "5,5", "--device", "cpu", "--progress", "none"]


@pytest.fixture
def brain(small_brain, tmp_path):
    return save_image(Image(small_brain.array.astype(np.float32), small_brain.ijk_to_ras), tmp_path / "brain.nii.gz")


def run(args, capsys):
    code = cli.main([str(a) for a in args])
    return code, capsys.readouterr().err


def assert_refused(args, out, capsys, *words):
    code, err = run(args, capsys)
    assert code == 2, err
    assert "bijros: error:" in err
    for word in words:
        assert word.lower() in err.lower(), f"'{word}' not in: {err}"
    assert not out.exists() or not any(out.iterdir()), f"left in --out: {list(out.iterdir())}"


def register_args(fixed, moving, out, *extra):
    return ["register", "--fixed", fixed, "--moving", moving, "--out", out, *QUICK, *extra]


def test_missing_file(brain, tmp_path, capsys):
    out = tmp_path / "out"
    assert_refused(register_args(brain, tmp_path / "nope.nii.gz", out), out, capsys, "not found", "nope.nii.gz")
    assert not out.exists()


@pytest.mark.parametrize("name,content", [("bad.nii.gz", b"this is not an image" * 20),
                                          ("bad.nii", b"\x00" * 100),
                                          ("bad.nrrd", b"NRRD0004\ngarbage\n")])
def test_unreadable_file(brain, tmp_path, capsys, name, content):
    bad = tmp_path / name
    bad.write_bytes(content)
    out = tmp_path / "out"
    assert_refused(register_args(brain, bad, out), out, capsys, "cannot read", name)
    assert not out.exists()


def test_truncated_nifti(brain, tmp_path, capsys):
    data = gzip.decompress(brain.read_bytes())
    bad = tmp_path / "truncated.nii"
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert_refused(register_args(brain, bad, out), out, capsys, "truncated.nii")


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 1)])
def test_2d_image(brain, tmp_path, capsys, shape):
    import nibabel as nib

    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random(shape).astype(np.float32), LAS), path)
    out = tmp_path / "out"
    assert_refused(register_args(brain, path, out), out, capsys, "2D", "flat.nii.gz")


def test_2d_image_itk(brain, tmp_path, capsys):
    import SimpleITK as sitk

    path = tmp_path / "flat.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((20, 30), np.float32)), str(path))
    out = tmp_path / "out"
    assert_refused(register_args(brain, path, out), out, capsys, "2D")


def test_4d_with_several_volumes(brain, tmp_path, capsys):
    import nibabel as nib

    path = tmp_path / "series.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((10, 12, 8, 3)).astype(np.float32), LAS), path)
    out = tmp_path / "out"
    assert_refused(register_args(brain, path, out), out, capsys, "4D", "3 volumes")


def test_4d_with_one_volume_runs(small_brain, tmp_path, capsys):
    import nibabel as nib

    path = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(small_brain.array.astype(np.float32)[..., None], small_brain.ijk_to_ras), path)
    out = tmp_path / "out"
    code, err = run(register_args(path, path, out, "--method", "affine"), capsys)
    assert code == 0, err
    assert (out / "warped.nii.gz").exists()


@pytest.mark.parametrize("kind,fill,words", [("empty", 0.0, ("empty",)), ("constant", 7.0, ("constant",)),
                                              ("nan", np.nan, ("NaN",))])
def test_bad_intensities(brain, small_brain, tmp_path, capsys, kind, fill, words):
    arr = small_brain.array.astype(np.float32)
    if kind == "nan":
        arr[10:12, 10:12, 10:12] = np.nan
    else:
        arr[:] = fill
    path = save_image(Image(arr, small_brain.ijk_to_ras), tmp_path / f"{kind}.nii.gz")
    out = tmp_path / "out"
    assert_refused(register_args(brain, path, out), out, capsys, *words, kind)
    assert_refused(register_args(path, brain, out), out, capsys, "fixed", *words)
    assert not out.exists()


def _labels(small_brain, affine=None, shape=None):
    arr = (small_brain.array > np.percentile(small_brain.array, 60)).astype(np.int16)
    if shape is not None:
        arr = arr[: shape[0], : shape[1], : shape[2]]
    return Image(arr, small_brain.ijk_to_ras if affine is None else affine)


def test_labels_off_grid_refused_then_resampled(brain, small_brain, tmp_path, capsys):
    shifted = small_brain.ijk_to_ras.copy()
    shifted[:3, 3] += [1.0, 0.0, 0.0]
    lab = save_image(_labels(small_brain, affine=shifted, shape=(30, 41, 25)), tmp_path / "lab.nii.gz")
    out = tmp_path / "out"
    args = register_args(brain, brain, out, "--moving-labels", lab)
    assert_refused(args, out, capsys, "not on the grid", "--resample-labels")
    code, err = run([*args, "--resample-labels"], capsys)
    assert code == 0, err
    assert (out / "labels.nii.gz").exists()


def test_non_integer_label_map(brain, small_brain, tmp_path, capsys):
    lab = save_image(Image(small_brain.array.astype(np.float32) / 7.3, small_brain.ijk_to_ras),
                     tmp_path / "prob.nii.gz")
    out = tmp_path / "out"
    assert_refused(register_args(brain, brain, out, "--moving-labels", lab), out, capsys, "non-integer", "prob.nii.gz")


def test_output_folder_not_writable(brain, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "out"
    assert_refused(register_args(brain, brain, out), out, capsys, "output folder", "a_file")
    assert blocker.read_text() == "not a folder"
    # --out naming an existing file
    assert_refused(register_args(brain, brain, blocker), tmp_path / "none", capsys, "is a file")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present: --device cuda is valid here")
def test_cuda_without_cuda(brain, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["register", "--fixed", brain, "--moving", brain, "--out", out, "--device", "cuda", "--progress", "none"]
    assert_refused(args, out, capsys, "cuda", "not available")
    assert not out.exists()


def test_failure_while_writing_leaves_nothing(brain, tmp_path, capsys, monkeypatch):
    import bijros.io.outputs

    calls = []

    def failing_save(image, path):
        calls.append(path)
        raise InputError("disk full (simulated)")

    monkeypatch.setattr(bijros.io.outputs, "save_image", failing_save)
    out = tmp_path / "out"
    code, err = run(register_args(brain, brain, out, "--method", "affine"), capsys)
    assert code == 2 and "disk full" in err
    assert calls  # the writer was reached after displacement.nii.gz and affine.tfm were written
    assert not out.exists()

    # into an existing folder with earlier results: those stay, no new file and no temp folder appear
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = run(register_args(brain, brain, out, "--method", "affine"), capsys)
    assert code == 2
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_failure_while_moving_files_rolls_back(brain, small_brain, tmp_path, monkeypatch):
    import os

    import bijros.io.outputs
    from bijros.registration.pipeline import RegistrationOptions, register

    result = register(small_brain, small_brain, None,
                      RegistrationOptions(method="affine", preset="fast", spacing=4.0, device="cpu"))
    real_replace = os.replace
    moved = []

    def flaky_replace(src, dst):
        if len(moved) == 2:
            raise OSError(28, "No space left on device")
        moved.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(bijros.io.outputs.os, "replace", flaky_replace)
    out = tmp_path / "out"
    with pytest.raises(OSError):
        bijros.io.outputs.write_outputs(result, out)
    assert len(moved) == 2
    assert not out.exists()


def test_interrupted_rerun_keeps_the_earlier_results(small_brain, tmp_path, monkeypatch):
    """A rerun that fails while swapping its files in leaves the earlier run's files byte for byte."""
    import os

    import bijros.io.outputs
    from bijros.io.image import Image
    from bijros.registration.pipeline import RegistrationOptions, register

    options = RegistrationOptions(method="affine", preset="fast", spacing=4.0, device="cpu")
    labels = Image((small_brain.array > small_brain.array.mean()).astype("int16"), small_brain.ijk_to_ras.copy(),
                   name="labels")
    first = register(small_brain, small_brain, labels, options)
    out = tmp_path / "out"
    bijros.io.outputs.write_outputs(first, out)
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "labels.nii.gz" in before

    second = register(small_brain, small_brain, None, options)  # no labels: the swap would also drop labels.nii.gz
    second.report["marker"] = "second run"
    real_replace = os.replace
    calls = []

    def replace_failing_once(src, dst):
        calls.append(dst)
        if len(calls) == len(before) + 1:  # after the earlier files went aside, while the new ones move in
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(bijros.io.outputs.os, "replace", replace_failing_once)
    with pytest.raises(OSError):
        bijros.io.outputs.write_outputs(second, out)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or backup folder left beside it

    monkeypatch.setattr(bijros.io.outputs.os, "replace", real_replace)
    bijros.io.outputs.write_outputs(second, out)  # the same rerun, when nothing fails, replaces them
    assert "labels.nii.gz" not in {p.name for p in out.iterdir()}
    assert "second run" in (out / "report.json").read_text()
    assert (out / "notes.txt").read_text() == "mine"


def test_empty_or_outside_fixed_mask_is_refused(brain, small_brain_path, tmp_path, capsys):
    import numpy as np

    from bijros.io import load_image, save_image
    from bijros.io.image import Image

    image = load_image(small_brain_path)
    empty = tmp_path / "empty_mask.nii.gz"
    save_image(Image(np.zeros(image.shape, np.uint8), image.ijk_to_ras.copy()), empty)
    out = tmp_path / "out"
    code, err = run(register_args(brain, brain, out, "--method", "affine", "--fixed-mask", str(empty)), capsys)
    assert code == 2 and "mask" in err and "empty" in err
    far = image.ijk_to_ras.copy()
    far[:3, 3] += 1000.0
    outside = tmp_path / "outside_mask.nii.gz"
    save_image(Image(np.ones(image.shape, np.uint8), far), outside)
    code, err = run(register_args(brain, brain, out, "--method", "affine", "--fixed-mask", str(outside)), capsys)
    assert code == 2 and "outside" in err
    assert not out.exists()
