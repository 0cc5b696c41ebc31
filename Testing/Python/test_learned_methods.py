"""The learned methods end to end: the shipped model library, Fast (learned) and Accurate (learned + io).

* every catalog entry is complete, within the size limit, verified by sha256 and loads;
* the learned field is converted from model voxels to RAS millimetres along the grid's axes;
* instance optimisation starts from a given field;
* both presets run end to end (engine API and command line) on a small real brain;
* on a real MALF pair the shipped model beats affine-only alignment by a clear margin (skips without ../shared);
* a missing library is a clear error and leaves --out untouched; publish-model builds a library.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, shared_data_path
from test_engine_registration import smooth_random_displacement, tissue_labels

from bijros.errors import InputError
from bijros.io.image import Image
from bijros.metrics import dice_per_label
from bijros.models.library import list_models, models_dir, publish_model, resolve_entry
from bijros.models.weights import load_model, sha256_file
from bijros.registration.grid import Grid
from bijros.registration.learned import get_model, learned_register
from bijros.registration.pipeline import RegistrationOptions, register

ENV = {**os.environ, "BIJROS_NUM_THREADS": "2"}


def test_catalog_entries_are_complete_verified_and_small():
    folder = models_dir()
    assert folder == REPO_ROOT / "Resources" / "Models"
    catalog = json.loads((folder / "catalog.json").read_text())
    assert catalog["default"] in [e["name"] for e in catalog["models"]]
    for entry in list_models():
        path = folder / entry["file"]
        assert path.suffix == ".safetensors" and path.stat().st_size <= 20e6, entry["name"]
        assert sha256_file(path) == entry["sha256"]
        for key in ("architecture", "config", "input_spacing_mm", "training_data", "training_data_license",
                    "command", "benchmark"):
            assert entry.get(key), f"{entry['name']} lacks {key}"
        assert "Apache-2.0" in entry["training_data_license"] and "malf" not in entry["training_data"].lower()
        if entry.get("task") == "fewshot":
            assert entry["command"].startswith("bijros train-fewshot --config")
            fused = [r for r in entry["benchmark"]["rows"] if r["title"].startswith("GMRD + shape interpolation")]
            fill = [r for r in entry["benchmark"]["rows"] if r["title"] == "Fill between slices" and r["part"] == "a"]
            assert fused and fill and max(r["mean_dice"] for r in fused) >= fill[0]["mean_dice"] + 0.03
            model = load_model(entry, folder)
            with torch.no_grad():
                mask = (torch.rand(1, 1, 32, 32) > 0.5).float()
                assert model(torch.rand(1, 1, 32, 32), mask, torch.rand(1, 1, 32, 32)).shape == (1, 2, 32, 32)
            continue
        assert entry["command"].startswith("bijros train-registration --config")
        methods = {"bijros:text", "bijros:text+io"} if entry["architecture"] == "textscf" else {
            "bijros:learned", "bijros:learned+io"}
        assert {r["title"] for r in entry["benchmark"]["rows"]} >= methods, entry["name"]
        model = load_model(entry, folder)
        with torch.no_grad():
            assert model(torch.rand(1, 1, 24, 20, 16), torch.rand(1, 1, 24, 20, 16)).shape == (1, 3, 24, 20, 16)


class ConstantFlow(torch.nn.Module):
    """A stand-in network whose output is +1 voxel along i everywhere (to check the unit conversion)."""

    def forward(self, fixed, moving):
        flow = torch.zeros((1, 3, *fixed.shape[2:]))
        flow[:, 0] = 1.0
        return flow


def test_learned_field_is_in_mm_along_the_model_grid():
    grid = Grid((32, 24, 16), np.diag([1.0, 1.0, 1.0, 1.0]))
    image = torch.rand(1, 32, 24, 16)
    disp_mm, model_grid = learned_register(image, image, grid, ConstantFlow(), input_spacing_mm=2.0)
    assert model_grid.shape == (16, 12, 8) and np.allclose(model_grid.spacing, 2.0)
    assert torch.allclose(disp_mm[:, 0], torch.full_like(disp_mm[:, 0], 2.0))  # 1 voxel of 2 mm along R
    assert torch.count_nonzero(disp_mm[:, 1:]) == 0
    # a 3 mm working grid cannot be pooled to 2 mm: it is resampled onto a 2 mm grid over the same box
    coarse = Grid((20, 16, 10), np.diag([3.0, 3.0, 3.0, 1.0]))
    disp_mm, model_grid = learned_register(torch.rand(1, 20, 16, 10), torch.rand(1, 20, 16, 10), coarse,
                                           ConstantFlow(), input_spacing_mm=2.0)
    assert model_grid.shape == (30, 24, 15) and np.allclose(model_grid.spacing, 2.0)
    assert torch.allclose(disp_mm[:, 0], torch.full_like(disp_mm[:, 0], 2.0))


def test_instance_optimisation_starts_from_the_given_field():
    from bijros.registration.deformable import DeformableOptions, Level, deformable_register

    grid = Grid((16, 16, 16), np.eye(4) * [2, 2, 2, 1])
    image = torch.rand(1, 16, 16, 16)
    start = torch.full((1, 3, 16, 16, 16), 1.5)
    opts = DeformableOptions(levels=(Level(2.0, 2.0, 0),), smooth_size=1)
    disp, out_grid = deformable_register(image, image, grid, opts, init=(start, grid))
    assert out_grid.shape == grid.shape and torch.allclose(disp, start)


@pytest.fixture(scope="module")
def deformed_pair(small_brain):
    labels = tissue_labels(small_brain)
    disp = smooth_random_displacement(small_brain.shape, 2.0, 4.0)
    from scipy import ndimage

    ijk = np.indices(small_brain.shape).astype(np.float32) + np.moveaxis(
        disp / np.diag(small_brain.ijk_to_ras)[:3], -1, 0)
    fixed = Image(ndimage.map_coordinates(small_brain.array.astype(np.float32), ijk, order=1, mode="nearest"),
                  small_brain.ijk_to_ras.copy(), name="deformed")
    truth = ndimage.map_coordinates(labels.array, ijk, order=0, mode="nearest")
    return fixed, labels, truth


@pytest.mark.parametrize("method", ["learned", "learned+io"])
def test_fast_and_accurate_presets_end_to_end(small_brain, deformed_pair, method):
    fixed, labels, truth = deformed_pair
    result = register(fixed, small_brain, labels, RegistrationOptions(method=method, device="cpu"))
    report = result.report
    assert report["method"] == method and report["model"] == resolve_entry(None)[0]["name"]
    assert report["preset"] == ("fast" if method == "learned" else "default")
    assert "learned" in report["seconds"] and ("deformable" in report["seconds"]) == (method == "learned+io")
    assert result.labels.shape == fixed.shape and report["qc"]["folding_fraction"] < 0.01
    assert np.isfinite(result.displacement_ras_mm).all()
    # the model's field is part of the mapping: it differs from the affine-only result on the same grid
    preset = report["preset"]
    affine = register(fixed, small_brain, labels, RegistrationOptions(method="affine", preset=preset, device="cpu"))
    assert np.abs(result.displacement_ras_mm - affine.displacement_ras_mm).max() > 0.01
    if method == "learned+io":  # Accurate recovers the known deformation
        dice = np.mean(list(dice_per_label(result.labels.array, truth, [1, 2, 3]).values()))
        identity = np.mean(list(dice_per_label(labels.array, truth, [1, 2, 3]).values()))
        assert dice > identity + 0.03, (dice, identity)


def test_learned_method_from_the_command_line(small_brain_path, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "bijros", "register", "--fixed", str(small_brain_path), "--moving",
                           str(small_brain_path), "--method", "learned", "--device", "cpu", "--out", str(out),
                           "--progress", "json"], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    stages = {json.loads(line)["stage"] for line in proc.stdout.splitlines()}
    assert "learned" in stages and "deformable" not in stages
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "learned" and report["qc"]["folding_fraction"] == 0.0


def test_missing_model_library_is_a_clear_error(small_brain_path, tmp_path):
    out = tmp_path / "out"
    env = {**ENV, "BIJROS_MODELS_DIR": str(tmp_path / "nowhere")}
    proc = subprocess.run([sys.executable, "-m", "bijros", "register", "--fixed", str(small_brain_path), "--moving",
                           str(small_brain_path), "--method", "learned+io", "--out", str(out), "--progress", "none"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "learned model library was not found" in proc.stderr and "--method io" in proc.stderr
    assert not out.exists()
    with pytest.raises(InputError, match="unknown model 'nope'"):
        resolve_entry("nope")


def test_shipped_model_beats_the_affine_on_an_unseen_malf_pair():
    """MALF brains were never used in training (SynthSeg label maps only). On the benchmark's 14 pairs the
    model adds about 0.09 mean Dice to the same affine; a unit or sign error in applying its field, or a
    model that learned nothing, would fail the 0.04 margin asserted here."""
    from bijros.io import load_image

    malf = shared_data_path("malf")
    atlas, atlas_labels = load_image(malf / "1000_t1.nii.gz"), load_image(malf / "1000_labels.nii.gz", label_map=True)
    target, truth = load_image(malf / "1001_t1.nii.gz"), load_image(malf / "1001_labels.nii.gz", label_map=True)
    scored = [v for v in np.unique(truth.array) if v not in (0, 15, 65, 66, 74, 126, 127)]
    dice = {}
    for method in ("affine", "learned"):
        result = register(target, atlas, atlas_labels, RegistrationOptions(method=method, preset="fast", device="cpu"))
        dice[method] = np.mean(list(dice_per_label(result.labels.array, truth.array, scored).values()))
    assert dice["learned"] > dice["affine"] + 0.04, dice
    assert result.report["qc"]["folding_fraction"] < 0.001


def test_publish_model_builds_a_library(tmp_path):
    from test_learned import _config, _write_maps

    from bijros.training.trainer import TrainConfig, train

    _write_maps(tmp_path / "maps")
    cfg = TrainConfig.load(_config(tmp_path, 1))
    train(cfg, tmp_path / "run", command="bijros train-registration --config cfg.json --out run", progress=False)
    lib = tmp_path / "lib"
    entry = publish_model(tmp_path / "run", lib, REPO_ROOT / "Testing/Benchmarks/results/malf_propagation.json")
    catalog = json.loads((lib / "catalog.json").read_text())
    assert catalog["default"] == entry["name"] and (lib / f"{entry['name']}.safetensors").is_file()
    assert entry["benchmark"]["rows"] and "Dice" in entry["benchmark"]["summary"]
    os.environ["BIJROS_MODELS_DIR"] = str(lib)
    try:
        model, got = get_model(None, torch.device("cpu"))
        assert got["sha256"] == entry["sha256"] and not model.training
    finally:
        del os.environ["BIJROS_MODELS_DIR"]
