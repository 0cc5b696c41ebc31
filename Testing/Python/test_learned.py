"""Learned registration: models, synthetic pairs, map alignment, training, safe weight loading.

Everything runs on tiny volumes on the CPU (a few seconds in all); no shipped weights are involved.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from bijros.errors import InputError
from bijros.models import MODELS, build_model, count_parameters
from bijros.models.spatial import warp
from bijros.models.weights import load_model
from bijros.training.losses import registration_loss
from bijros.training.synth import SynthGenerator, SynthOptions
from bijros.training.trainer import TrainConfig, train

ENV = {**os.environ, "BIJROS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
TINY = {"eoir": {"channels": 8, "encoder_depth": 2, "levels": 3, "head_channels": 16, "head_layers": 1},
        "unet": {"enc": [8, 16, 16], "dec": [16, 16, 16, 8]}}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def blob_labels(seed: int, shape=(24, 24, 24), n_labels: int = 4) -> np.ndarray:
    """A label map of nested, randomly shifted ellipsoids: 0 background, 1..n_labels-1 inside."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    centre = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    radius = np.linalg.norm((grid - centre) / (np.array(shape) * rng.uniform(0.3, 0.4, 3)), axis=-1)
    labels = np.zeros(shape, np.int16)
    for k in range(1, n_labels):
        labels[radius < 1.0 - (k - 1) / n_labels] = k
    return labels


@pytest.mark.parametrize("name", ["eoir", "unet"])
def test_forward_shape_and_zero_init_identity(name):
    model = build_model(name, TINY[name])
    fixed, moving = torch.rand(2, 1, 20, 18, 16), torch.rand(2, 1, 20, 18, 16)
    with torch.no_grad():
        disp = model(fixed, moving)
    assert disp.shape == (2, 3, 20, 18, 16)
    assert torch.count_nonzero(disp) == 0  # zero-initialised flow layers: identity
    assert torch.allclose(warp(moving, disp), moving, atol=1e-5)


def test_default_models_size():
    for name, cls in MODELS.items():
        n = count_parameters(cls())
        assert 0.1e6 <= n <= 0.9e6, (name, n)
    with pytest.raises(InputError, match="unknown model"):
        build_model("nope")


def test_warp_convention_matches_deformable():
    """Same displacement convention (voxels, components i, j, k) as the engine's instance optimisation."""
    from bijros.registration.deformable import warp_normalized
    from bijros.registration.grid import identity_normalized

    vol = torch.rand(1, 1, 12, 10, 8)
    disp = torch.randn(1, 3, 12, 10, 8)
    ref = warp_normalized(vol, disp, identity_normalized((12, 10, 8), "cpu"))
    assert torch.allclose(warp(vol, disp), ref, atol=1e-6)
    shift = torch.zeros(1, 3, 12, 10, 8)
    shift[:, 0] = 1.0  # sample one voxel further along i
    assert torch.allclose(warp(vol, shift)[:, :, :-1], vol[:, :, 1:], atol=1e-5)


def test_synth_pairs():
    maps = [blob_labels(0), blob_labels(1, (26, 22, 24))]
    gen = SynthGenerator(maps, SynthOptions(crop=(16, 20, 12), dice_labels="all"),
                         generator=torch.Generator().manual_seed(3))
    assert gen.num_classes == 4
    batch = gen.sample(2)
    for key in ("fixed", "moving", "fixed_labels", "moving_labels"):
        assert batch[key].shape == (2, 1, 16, 20, 12), key
    for key in ("fixed", "moving"):
        assert batch[key].dtype == torch.float32
        assert batch[key].min() >= 0 and batch[key].max() <= 1
    for key in ("fixed_labels", "moving_labels"):
        assert batch[key].dtype == torch.int64
        assert batch[key].min() >= 0 and batch[key].max() < gen.num_classes
        assert len(torch.unique(batch[key])) > 1
    again = SynthGenerator(maps, SynthOptions(crop=(16, 20, 12), dice_labels="all"),
                           generator=torch.Generator().manual_seed(3)).sample(2)
    assert torch.equal(again["fixed"], batch["fixed"])  # fixed seed, same pairs


def test_synth_freesurfer_classes_merge_left_right():
    lab = np.zeros((12, 12, 12), np.int32)
    lab[2:6], lab[6:10], lab[10:], lab[:2] = 17, 53, 502, 502  # left / right hippocampus, extra-cerebral
    gen = SynthGenerator([lab], SynthOptions(crop=(12, 12, 12), max_rotation_deg=0, max_scale=0, max_shift_vox=0,
                                             deform_max_std_vox=0))
    out = gen.sample(1)["fixed_labels"][0, 0]
    hippocampus = gen.class_names.index("hippocampus")
    assert set(torch.unique(out).tolist()) == {0, hippocampus}
    assert torch.equal(out[2:10], torch.full_like(out[2:10], hippocampus))


def test_training_lowers_the_loss_on_one_pair():
    torch.manual_seed(0)
    gen = SynthGenerator([blob_labels(0), blob_labels(1)], SynthOptions(crop=(24, 24, 24), dice_labels="all"),
                         generator=torch.Generator().manual_seed(0))
    batch = gen.sample(1)
    model = build_model("eoir", TINY["eoir"])
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        optim.zero_grad()
        terms = registration_loss(model, batch, {"dice": 1.0, "smooth": 0.1}, gen.num_classes)
        terms["loss"].backward()
        optim.step()
        losses.append(terms["loss"].item())
    assert np.mean(losses[-3:]) < losses[0] - 0.02, losses


def _write_maps(folder):
    folder.mkdir()
    for i in range(2):
        nib.save(nib.Nifti1Image(blob_labels(i), np.diag([2.0, 2.0, 2.0, 1.0])), folder / f"seg_{i}.nii.gz")


def _config(tmp_path, steps):
    cfg = {"model": "eoir", "model_config": TINY["eoir"], "labelmaps": str(tmp_path / "maps" / "seg_*.nii.gz"),
           "spacing_mm": 2.0, "synth": {"crop": [16, 16, 16], "dice_labels": "all"}, "steps": steps,
           "learning_rate": 1e-3, "checkpoint_every": 2, "device": "cpu",
           "data_license": "synthetic test maps"}
    path = tmp_path / f"cfg_{steps}.json"
    path.write_text(json.dumps(cfg))
    return path


def test_train_registration_cli_end_to_end_and_resume(tmp_path):
    _write_maps(tmp_path / "maps")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bijros", "train-registration", "--out", str(out), "--progress", "none"]
    first = subprocess.run([*cmd, "--config", str(_config(tmp_path, 3))], capture_output=True, text=True, env=ENV,
                           timeout=120)
    assert first.returncode == 0, first.stderr
    for name in ("checkpoint.pt", "loss.csv", "loss.png", "model.safetensors", "model.json"):
        assert (out / name).is_file(), name
    entry = json.loads((out / "model.json").read_text())
    assert entry["architecture"] == "eoir" and entry["training"]["steps"] == 3
    assert "train-registration" in entry["command"] and len(entry["sha256"]) == 64
    assert len((out / "loss.csv").read_text().splitlines()) == 1 + 3

    second = subprocess.run([*cmd, "--config", str(_config(tmp_path, 5))], capture_output=True, text=True, env=ENV,
                            timeout=120)
    assert second.returncode == 0, second.stderr
    assert "resumed from step 3" in second.stderr
    rows = (out / "loss.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4, 5]
    assert json.loads((out / "model.json").read_text())["training"]["steps"] == 5
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 5

    model = load_model(out / "model.json")  # verified, safetensors only
    with torch.no_grad():
        assert model(torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)


def test_training_validates_on_held_out_maps_and_exports_the_best_checkpoint(tmp_path):
    folder = tmp_path / "maps"
    folder.mkdir()
    for i in range(4):
        nib.save(nib.Nifti1Image(blob_labels(i), np.diag([2.0, 2.0, 2.0, 1.0])), folder / f"seg_{i}.nii.gz")
    cfg = TrainConfig(model="eoir", model_config=TINY["eoir"], labelmaps=str(folder / "seg_*.nii.gz"),
                      synth={"crop": [16, 16, 16], "dice_labels": "all"}, steps=4, learning_rate=3e-3,
                      checkpoint_every=2, device="cpu", validation_maps=2, validation_pairs=3)
    train(cfg, tmp_path / "run", progress=False)
    rows = (tmp_path / "run" / "validation.csv").read_text().splitlines()
    assert rows[0] == "step,same_contrast,cross_contrast,score"
    assert [int(r.split(",")[0]) for r in rows[1:]] == [0, 2, 4]  # step 0 = the untrained model (zero flow)
    entry = json.loads((tmp_path / "run" / "model.json").read_text())
    summary = entry["training"]["validation"]
    assert summary["held_out_maps"] == 2 and summary["zero_flow"]["step"] == 0
    assert "(2 label maps)" in entry["training_data"]  # the held-out maps are not training data
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    best = ckpt["best"]
    assert best["step"] == summary["best"]["step"] == entry["training"]["steps_of_exported_weights"]
    exported = load_model(tmp_path / "run" / "model.json").state_dict()
    assert all(torch.equal(exported[k], best["model"][k]) for k in exported)

    with pytest.raises(InputError, match="validation_maps=4 needs at least 2 held-out maps and 1 to train on"):
        train(dataclasses.replace(cfg, validation_maps=4), tmp_path / "bad", progress=False)


def test_tampered_weights_are_refused(tmp_path):
    from safetensors.torch import save_file

    from bijros.models.weights import sha256_file

    model = build_model("unet", TINY["unet"])
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    entry = {"name": "t", "file": "model.safetensors", "sha256": sha256_file(path), "architecture": "unet",
             "config": TINY["unet"]}
    load_model(entry, base_dir=tmp_path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"damaged or was changed: sha256 .* expected"):
        load_model(entry, base_dir=tmp_path)


def test_bad_training_config(tmp_path):
    with pytest.raises(InputError, match="unknown training config keys: stepz"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(InputError, match="no label maps match"):
        train(TrainConfig(labelmaps=str(tmp_path / "none_*.nii.gz"), steps=1, device="cpu"), tmp_path / "o",
              progress=False)


def test_label_maps_are_affinely_aligned_to_the_first():
    """Training pairs should look like pairs after the engine's affine stage: maps are aligned at load."""
    from bijros.training.synth import align_label_maps

    brain = np.array([0, 3, 2, 4], np.int32)[blob_labels(0, (32, 32, 32))]  # cortex, white matter, ventricle
    moved = np.roll(brain, (4, -3, 2), axis=(0, 1, 2))

    def overlap(a, b):
        return 2 * ((a > 0) & (b > 0)).sum() / ((a > 0).sum() + (b > 0).sum())

    aligned = align_label_maps([brain, moved], 2.0)
    assert aligned[0] is brain and aligned[1].shape == brain.shape
    assert overlap(brain, moved) < 0.8 < 0.95 < overlap(brain, aligned[1])
    assert set(np.unique(aligned[1])) <= {0, 2, 3, 4}  # nearest neighbour: no new values


def test_flow_pairs_carry_the_true_displacement():
    """Same-map pairs whose moving crop is not deformed have an exact displacement: warping the moving
    labels by it reproduces the fixed labels far better than no warp (dense supervision for training)."""
    from bijros.training.losses import soft_dice_loss

    maps = [blob_labels(0, (32, 32, 32))]
    opts = SynthOptions(crop=(24, 24, 24), dice_labels="all", flow_pairs_prob=1.0, max_rotation_deg=15,
                        max_scale=0.1, max_shift_vox=2, deform_max_std_vox=2.0, deform_control_vox=6)
    batch = SynthGenerator(maps, opts, generator=torch.Generator().manual_seed(1)).sample(2)
    assert batch["flow"].shape == (2, 3, 24, 24, 24) and batch["flow_weight"].tolist() == [1.0, 1.0]
    onehot = {k: torch.nn.functional.one_hot(batch[k][:, 0], 4).permute(0, 4, 1, 2, 3).float()
              for k in ("fixed_labels", "moving_labels")}
    before = 1 - soft_dice_loss(onehot["moving_labels"], onehot["fixed_labels"]).item()
    after = 1 - soft_dice_loss(warp(onehot["moving_labels"], batch["flow"]), onehot["fixed_labels"]).item()
    assert after > before + 0.05 and after > 0.85, (before, after)
    plain = SynthGenerator(maps, SynthOptions(crop=(24, 24, 24), dice_labels="all")).sample(1)
    assert plain["flow_weight"].tolist() == [0.0] and not plain["flow"].any()
