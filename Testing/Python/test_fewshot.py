"""Few-shot segmentation from a few annotated slices (GMRD, issue 12, engine part).

* the descriptors and logits have the documented shapes; an empty support mask is a clear error;
* the annotated slices and their axis are found (or taken from --slices);
* the 3D result is on the query's grid with its geometry, the annotated slices kept exactly (same volume);
* training on synthetic episodes exports a catalog entry that loads; registration refuses a few-shot model;
* the shape prior interpolates between annotated slices and tapers beyond them; the fusion with it and the
  test-time fine-tuning change the result as documented, the cached model stays untouched;
* slices painted in two orientations are a clear error;
* the command line end to end on a hippocampus crop, the same volume and another one by registration
  (skips without ../shared/data).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import shared_data_path
from safetensors.torch import save_file
from test_learned import blob_labels

from bijros.errors import InputError
from bijros.fewshot.annotation import MixedOrientationError, annotated_slices
from bijros.fewshot.gmrd import GMRD, episode_loss
from bijros.fewshot.infer import FewShotOptions, segment
from bijros.models.weights import sha256_file

ENV = {**os.environ, "BIJROS_NUM_THREADS": "2"}
TINY = {"channels": 16, "depth": 3, "k_fg": 4, "k_bg": 6, "mixture_size": 6}


def tiny_model_json(folder):
    torch.manual_seed(0)
    model = GMRD(**TINY)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "m.safetensors"))
    entry = {"name": "tiny-gmrd", "file": "m.safetensors", "sha256": sha256_file(folder / "m.safetensors"),
             "architecture": "gmrd", "task": "fewshot", "config": TINY, "input_spacing_mm": 1.0}
    (folder / "model.json").write_text(json.dumps(entry))
    return folder / "model.json", model


def test_descriptor_and_logit_shapes_and_the_empty_mask():
    model = GMRD(**TINY)
    support, query = torch.rand(2, 1, 30, 26), torch.rand(2, 1, 30, 26)
    mask = torch.zeros(2, 1, 30, 26)
    mask[:, :, 8:20, 6:18] = 1
    feats = model.encoder(support)
    assert feats.shape == (2, 16, 15, 13)
    fg, bg = model.descriptors(feats, torch.nn.functional.adaptive_avg_pool2d(mask, feats.shape[2:]))
    assert fg.shape == (2, TINY["k_fg"] + 2, 16) and bg.shape == (2, TINY["k_bg"] + 2, 16)
    assert model(support, mask, query).shape == (2, 2, 30, 26)
    terms = episode_loss(model, support, mask, query, mask)
    assert torch.isfinite(terms["loss"]) and terms["loss"].requires_grad
    empty = mask.clone()
    empty[1] = 0
    with pytest.raises(ValueError, match="support mask is empty"):
        model(support, empty, query)


def test_annotated_slices_and_their_axis():
    labels = np.zeros((20, 24, 22), np.int16)
    labels[5:15, 6, 5:15] = 1
    labels[5:15, 12, 5:15] = 1
    labels[5:15, 17, 5:15] = 2
    assert annotated_slices(labels, 1) == (1, [6, 12])
    assert annotated_slices(labels, 2) == (1, [17])
    assert annotated_slices(labels, 1, (1, [6, 17])) == (1, [6])  # a label uses the given slices that hold it
    with pytest.raises(InputError, match="none of the slices"):
        annotated_slices(labels, 2, (1, [6, 12]))
    with pytest.raises(InputError, match="support mask of label 3 is empty"):
        annotated_slices(labels, 3)


def test_the_volume_result_keeps_the_annotated_slices_and_the_query_grid(tmp_path):
    _, model = tiny_model_json(tmp_path / "m")
    rng = np.random.default_rng(0)
    image = rng.random((18, 20, 16)).astype(np.float32)
    truth = blob_labels(1, shape=(18, 20, 16), n_labels=2)
    sparse = np.zeros_like(truth)
    sparse[:, :, [4, 8, 12]] = truth[:, :, [4, 8, 12]]
    out, report = segment(model, image, sparse, image, same_volume=True)
    assert out.shape == image.shape and out.dtype == sparse.dtype
    assert np.array_equal(out[:, :, [4, 8, 12]], truth[:, :, [4, 8, 12]])
    assert report["labels"]["1"] == {"axis": 2, "annotated_slices": [4, 8, 12], "voxels": int((out == 1).sum())}
    other, _ = segment(model, image, sparse, rng.random((18, 22, 14)).astype(np.float32))  # another volume
    assert other.shape == (18, 22, 14)
    with pytest.raises(InputError, match="support labels are empty"):
        segment(model, image, np.zeros_like(sparse), image)
    with pytest.raises(InputError, match="3D support and query"):
        segment(model, image, sparse, image[0])


def test_training_exports_a_fewshot_entry_that_loads(tmp_path):
    from bijros.fewshot.model_library import get_fewshot_model
    from bijros.fewshot.train import FewShotConfig, train_fewshot
    from bijros.registration.pipeline import RegistrationOptions

    maps = tmp_path / "maps"
    maps.mkdir()
    for i in range(3):
        nib.save(nib.Nifti1Image(blob_labels(i, shape=(24, 24, 24)), np.diag([2.0, 2.0, 2.0, 1.0])),
                 maps / f"seg_{i}.nii.gz")
    cfg = FewShotConfig(name="t", model_config=TINY, labelmaps=str(maps / "seg_*.nii.gz"), spacing_mm=2.0,
                        synth={"crop": [20, 20, 20], "dice_labels": "all"}, episodes={"min_pixels": 4}, steps=3,
                        batch_size=2, checkpoint_every=3, validation_maps=1, validation_batches=2, device="cpu")
    train_fewshot(cfg, tmp_path / "run", progress=False)
    entry = json.loads((tmp_path / "run" / "model.json").read_text())
    assert entry["task"] == "fewshot" and entry["training"]["validation"][0][0] == 0
    model, loaded = get_fewshot_model(str(tmp_path / "run" / "model.json"), "cpu")
    assert isinstance(model, GMRD) and loaded["name"] == "t"
    with pytest.raises(InputError, match="not a registration model"):
        RegistrationOptions(method="learned", model=str(tmp_path / "run" / "model.json")).validate()
    with pytest.raises(InputError, match="not a few-shot model"):
        get_fewshot_model("eoir-synth-2mm", "cpu")


def test_the_shape_prior_interpolates_and_tapers():
    from bijros.fewshot.prior import signed_distance, signed_distance_stack, soft_prior

    masks = np.zeros((11, 30, 30), bool)
    masks[2, 10:14, 10:14] = True  # a 4 x 4 square ...
    masks[8, 5:25, 5:25] = True  # ... grows to 20 x 20
    d = signed_distance(masks[2])
    assert d[12, 12] < 0 < d[0, 0] and abs(d[10, 12] + 0.5) < 1e-6 and abs(d[9, 12] - 0.5) < 1e-6
    stack = signed_distance_stack(masks, [8, 2], taper=1.0)
    inside = stack < 0
    assert np.array_equal(inside[2], masks[2]) and np.array_equal(inside[8], masks[8])
    widths = [int(inside[j, 15].sum()) for j in range(2, 9)]
    assert widths == sorted(widths) and 4 < widths[3] < 20  # the contour moves from one to the other
    assert inside[9, 15].sum() == 18 and inside[10, 15].sum() == 16  # beyond the last slice: 1 px per slice
    assert inside[1].sum() < masks[2].sum() and not inside[0].any()
    p = soft_prior(stack)
    assert p.min() >= 0 and p.max() <= 1 and p[8, 15, 15] > 0.99 and p[2, 0, 0] < 0.01


def test_fusion_and_fine_tuning_change_the_result_as_documented(tmp_path):
    _, model = tiny_model_json(tmp_path / "m")
    rng = np.random.default_rng(1)
    truth = np.zeros((16, 24, 24), np.int16)
    truth[2:14, 6:18, 6:18] = 1
    image = (rng.random(truth.shape) * 0.2 + 0.7 * truth).astype(np.float32)
    sparse = np.zeros_like(truth)
    sparse[[4, 8, 12]] = truth[[4, 8, 12]]
    shape_only, _ = segment(model, image, sparse, image, same_volume=True, options=FewShotOptions(prior_weight=1))
    inside = np.zeros_like(truth)
    inside[4:13, 6:18, 6:18] = 1  # between the annotated slices: the interpolated square
    assert np.array_equal(shape_only[4:13], inside[4:13])
    fused, report = segment(model, image, sparse, image, same_volume=True)
    assert report["options"]["prior_weight"] == 0.5 and report["options"]["finetune_steps"] == 30
    assert np.array_equal(fused[[4, 8, 12]], truth[[4, 8, 12]])
    far = np.ones(truth.shape, bool)
    far[:, 6 - 5:18 + 5, 6 - 5:18 + 5] = False
    assert not fused[far].any()  # never beyond the band around the interpolated shape
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned, report = segment(model, image, sparse, image, same_volume=True,
                            options=FewShotOptions(prior_weight=0, finetune_steps=5))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the cached model untouched
    plain, _ = segment(model, image, sparse, image, same_volume=True,
                       options=FewShotOptions(prior_weight=0, finetune_steps=0))
    assert report["options"]["finetune_steps"] == 5 and not np.array_equal(tuned, plain)
    assert FewShotOptions().finetune_steps == 30  # on by default: the benchmark's better row
    with pytest.raises(InputError, match="prior weight"):
        FewShotOptions(prior_weight=2)


def test_slices_painted_in_two_orientations_are_refused():
    labels = np.zeros((30, 30, 30), np.int16)
    labels[5, 10:20, 8:22] = labels[15, 9:21, 8:22] = labels[25, 11:19, 9:20] = 1
    assert annotated_slices(labels, 1) == (0, [5, 15, 25])
    labels[4:27, 10:20, 15] = 1  # one more slice, painted in another view
    with pytest.raises(MixedOrientationError, match="more than one orientation"):
        annotated_slices(labels, 1)
    assert annotated_slices(labels, 1, (0, [5, 15, 25])) == (0, [5, 15, 25])  # named slices: taken as given
    full = np.zeros_like(labels)
    full[5:25, 10:20, 8:22] = 1  # a labelled volume: every slice holding the label counts
    assert len(annotated_slices(full, 1)[1]) == 10


def test_fewshot_cli_on_a_hippocampus_crop(tmp_path):
    image = shared_data_path("hippocampus", "images", "hippocampus_003.nii.gz")
    labels = nib.load(shared_data_path("hippocampus", "labels", "hippocampus_003.nii.gz"))
    truth = np.asarray(labels.dataobj).astype(np.int16)
    sparse = np.zeros_like(truth)
    sparse[[10, 16, 24]] = truth[[10, 16, 24]]
    nib.save(nib.Nifti1Image(sparse, labels.affine), tmp_path / "painted.nii.gz")
    model_json, _ = tiny_model_json(tmp_path / "m")
    base = [sys.executable, "-m", "bijros", "fewshot", "--support-image", str(image), "--support-labels",
            str(tmp_path / "painted.nii.gz"), "--query", str(image), "--model", str(model_json), "--progress", "none"]
    run = subprocess.run([*base, "--out", str(tmp_path / "o")], capture_output=True, text=True, env=ENV, timeout=300)
    assert run.returncode == 0, run.stderr
    out = nib.load(tmp_path / "o" / "labels.nii.gz")
    assert out.shape == truth.shape and np.allclose(out.affine, labels.affine)
    assert np.array_equal(np.asarray(out.dataobj)[[10, 16, 24]], truth[[10, 16, 24]])
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["same_volume"] and report["labels"]["1"]["axis"] == 0
    nib.save(nib.Nifti1Image(np.zeros_like(truth), labels.affine), tmp_path / "empty.nii.gz")
    empty = subprocess.run([*base[:7], str(tmp_path / "empty.nii.gz"), *base[8:], "--out", str(tmp_path / "e")],
                           capture_output=True, text=True, env=ENV, timeout=300)
    assert empty.returncode == 2 and "support labels are empty" in empty.stderr and not (tmp_path / "e").exists()
    bad = subprocess.run([*base, "--slices", "x:1", "--out", str(tmp_path / "b")], capture_output=True, text=True,
                         env=ENV, timeout=300)
    assert bad.returncode == 2 and "--slices 'x:1' must be AXIS:i,j,k" in bad.stderr
    other = shared_data_path("hippocampus", "images", "hippocampus_004.nii.gz")
    query = [*base[:8], "--query", str(other), *base[10:], "--progress", "json"]
    run = subprocess.run([*query, "--out", str(tmp_path / "r")], capture_output=True, text=True, env=ENV, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["stage"] == "result" and result["files"] == ["labels.nii.gz", "report.json"]
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["transfer"]["method"] == "registration" and report["transfer"]["support_filled_voxels"] > 0
    out = nib.load(tmp_path / "r" / "labels.nii.gz")
    assert out.shape == nib.load(other).shape and np.allclose(out.affine, nib.load(other).affine)
    assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1, 2} and np.asarray(out.dataobj).any()


def test_fewshot_cli_refuses_a_2d_query_and_a_changed_model(tmp_path):
    image = shared_data_path("hippocampus", "images", "hippocampus_003.nii.gz")
    labels = nib.load(shared_data_path("hippocampus", "labels", "hippocampus_003.nii.gz"))
    sparse = np.zeros(labels.shape, np.int16)
    sparse[[10, 16, 24]] = np.asarray(labels.dataobj)[[10, 16, 24]]
    nib.save(nib.Nifti1Image(sparse, labels.affine), tmp_path / "painted.nii.gz")
    flat = np.asarray(nib.load(image).dataobj)[:, :, 10].astype(np.float32)
    nib.save(nib.Nifti1Image(flat, labels.affine), tmp_path / "slice.nii.gz")
    model_json, _ = tiny_model_json(tmp_path / "m")
    base = [sys.executable, "-m", "bijros", "fewshot", "--support-image", str(image), "--support-labels",
            str(tmp_path / "painted.nii.gz"), "--model", str(model_json), "--progress", "none"]
    run = subprocess.run([*base, "--query", str(tmp_path / "slice.nii.gz"), "--out", str(tmp_path / "a")],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert run.returncode == 2 and "is a 2D image" in run.stderr and not (tmp_path / "a").exists()
    weights = tmp_path / "m" / "m.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 1  # one bit of the weights changed
    weights.write_bytes(bytes(data))
    run = subprocess.run([*base, "--query", str(image), "--out", str(tmp_path / "b")], capture_output=True, text=True,
                         env=ENV, timeout=300)
    assert run.returncode == 2 and "damaged or was changed: sha256" in run.stderr and not (tmp_path / "b").exists()
