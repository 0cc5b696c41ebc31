"""One-shot cohort learning (bijros.oneshot): the bi-level step, the hyper-gradient coefficient, S3P, resume,
bad input, and the CLI end to end on three hippocampus crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bijros.models.bijros_net import BiJROSNet
from bijros.oneshot import bilevel, brbs

HIPPO = Path(__file__).resolve().parents[3] / "shared" / "data" / "hippocampus"


def blob_volume(shape=(16, 16, 16), centre=(8, 8, 8), radius=4.0):
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    dist = np.sqrt(sum((idx[i] - centre[i]) ** 2 for i in range(3)))
    labels = (dist < radius).astype(np.int16) + (dist < radius / 2).astype(np.int16)
    image = (0.2 + 0.4 * (dist < radius) + 0.4 * (dist < radius / 2)).astype(np.float32)
    return image, labels


def tiny_net_and_pair(classes=3):
    torch.manual_seed(0)
    net = BiJROSNet(classes, (4, 8))
    a_img, a_lab = blob_volume()
    t_img, _ = blob_volume(centre=(9, 7, 8), radius=4.5)
    atlas = torch.as_tensor(a_img)[None, None]
    target = torch.as_tensor(t_img)[None, None]
    onehot = bilevel.one_hot(torch.as_tensor(a_lab).long(), classes)
    return net, atlas, onehot, target


def snapshot(params):
    return [p.detach().clone() for p in params]


def changed(before, params):
    return any(not torch.equal(b, p.detach()) for b, p in zip(before, params))


def test_bilevel_step_updates_both_decoders_and_not_the_encoder():
    net, atlas, onehot, target = tiny_net_and_pair()
    for p in net.encoder.parameters():
        p.requires_grad_(False)
    enc, seg, reg = (snapshot(net.encoder.parameters()), snapshot(net.seg_decoder.parameters()),
                     snapshot(net.reg_decoder.parameters()))
    seg_opt = torch.optim.Adam(net.segmentation_parameters(), lr=1e-3)
    reg_opt = torch.optim.Adam(net.registration_parameters(), lr=1e-3)
    terms = bilevel.bilevel_step(net, atlas, onehot, target, seg_opt, reg_opt, torch.Generator().manual_seed(0),
                                 bilevel.BiLevelWeights())
    assert changed(seg, net.seg_decoder.parameters())
    assert changed(reg, net.reg_decoder.parameters())
    assert not changed(enc, net.encoder.parameters())
    assert np.isfinite(terms["c"]) and np.isfinite(terms["loss"])


def test_projection_coefficient_hand_computed():
    g_r = [torch.tensor([1.0, 2.0]), None, torch.tensor([[0.5]])]
    g_s = [torch.tensor([3.0, 4.0]), torch.tensor([1.0]), torch.tensor([[2.0]])]
    # <g_R, g_S> = 3 + 8 + 1 = 12 (the None gradient counts as zero); <g_S, g_S> = 9 + 16 + 1 + 4 = 30
    assert bilevel.projection_coefficient(g_r, g_s) == pytest.approx(12 / 30)
    assert bilevel.projection_coefficient(g_r, [None, None, None]) == 0.0


def test_bilevel_step_uses_the_projection_of_the_two_seg_gradients():
    """c of a step equals <dL_U/dseg, dL_L/dseg> / |dL_L/dseg|^2 computed separately on the same losses."""
    net, atlas, onehot, target = tiny_net_and_pair()
    for p in net.encoder.parameters():
        p.requires_grad_(False)
    w = bilevel.BiLevelWeights()
    lower, upper, _ = bilevel.bilevel_losses(net, atlas, onehot, target, torch.Generator().manual_seed(3), w)
    params = net.segmentation_parameters()
    g_s = torch.autograd.grad(lower, params, retain_graph=True, allow_unused=True)
    g_r = torch.autograd.grad(upper, params, allow_unused=True)

    def flat(grads):
        return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])

    expected = float(flat(g_r) @ flat(g_s) / (flat(g_s) @ flat(g_s)))
    terms = bilevel.bilevel_step(net, atlas, onehot, target, torch.optim.SGD(params, lr=0.0),
                                 torch.optim.SGD(net.registration_parameters(), lr=0.0),
                                 torch.Generator().manual_seed(3), w)
    assert terms["c"] == pytest.approx(expected, rel=1e-4, abs=1e-8)


def test_s3p_shapes_and_ranges():
    _, atlas, onehot, target = tiny_net_and_pair()
    gen = torch.Generator().manual_seed(0)
    flow = torch.randn(1, 3, 16, 16, 16, generator=gen)
    image, label = brbs.s3p(atlas, onehot, target, flow, beta=0.7, alpha=0.4)
    assert image.shape == atlas.shape and label.shape == onehot.shape
    assert float(image.min()) >= 0.0 - 1e-6 and float(image.max()) <= 1.0 + 1e-6
    assert torch.allclose(label.sum(1), torch.ones(1, 16, 16, 16), atol=1e-5)
    same, same_label = brbs.s3p(atlas, onehot, target, flow, beta=0.0, alpha=0.0)
    assert torch.allclose(same, atlas, atol=1e-4) and torch.allclose(same_label, onehot, atol=1e-4)
    draws = [brbs.beta_sample(0.3, gen) for _ in range(400)]
    assert all(0 < d < 1 for d in draws)
    assert 0.4 < np.mean(draws) < 0.6 and np.mean([d < 0.1 or d > 0.9 for d in draws]) > 0.3  # U-shaped Beta(0.3)


def test_invert_flow_undoes_a_smooth_flow():
    z = torch.linspace(-1, 1, 16)
    flow = 1.5 * torch.sin(3.14 * z).view(1, 1, 16, 1, 1).expand(1, 3, 16, 16, 16).clone()
    from bijros.models.spatial import compose

    inv = brbs.invert_flow(flow)
    assert float(compose(inv, flow).abs()[..., 2:-2, 2:-2, 2:-2].max()) < 0.1


# --- training runs on tiny synthetic volumes -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory):
    from bijros.io import save_image
    from bijros.io.image import Image

    folder = tmp_path_factory.mktemp("cohort")
    affine = np.eye(4)
    img, lab = blob_volume((24, 24, 24), (12, 12, 12), 6.0)
    save_image(Image(img, affine, name="atlas"), folder / "atlas.nii.gz")
    save_image(Image(lab, affine, name="labels"), folder / "atlas_labels.nii.gz")
    (folder / "images").mkdir()
    for i, (c, r) in enumerate([((11, 13, 12), 6.5), ((13, 12, 11), 5.5), ((12, 11, 13), 6.0)]):
        im, _ = blob_volume((24, 24, 24), c, r)
        save_image(Image(im, affine, name=f"s{i}"), folder / "images" / f"s{i}.nii.gz")
    return folder


def _cfg(**kw):
    from bijros.oneshot.train import OneShotConfig

    base = {"channels": (4, 8), "iterations": 6, "pretrain_fraction": 0.34, "device": "cpu", "checkpoint_every": 2,
            "pseudo_labels": "decoder"}
    base.update(kw)
    return OneShotConfig(**base)


def _train(cohort, out, cfg, **kw):
    from bijros.oneshot.train import train_oneshot

    return train_oneshot(cohort / "atlas.nii.gz", cohort / "atlas_labels.nii.gz", cohort / "images", out, cfg,
                         bar=False, **kw)


@pytest.mark.parametrize("recipe", ["bijros", "brbs"])
def test_resume_continues_the_same_run(tiny_cohort, tmp_path, recipe):
    """Stopped after step 3 (as Ctrl-C does) and run again: steps 4-6 have the uninterrupted run's losses."""
    whole = _train(tiny_cohort, tmp_path / "whole", _cfg(recipe=recipe))
    assert whole["step"] == 6 and not whole["interrupted"]

    def stop_at_3(fraction, message):
        if " step 3:" in message:
            raise KeyboardInterrupt

    first = _train(tiny_cohort, tmp_path / "resumed", _cfg(recipe=recipe), progress=stop_at_3)
    assert first == {"step": 3, "out": str(tmp_path / "resumed"), "interrupted": True}
    assert not (tmp_path / "resumed" / "model.json").exists()
    _train(tiny_cohort, tmp_path / "resumed", _cfg(recipe=recipe))
    a = json.loads((tmp_path / "whole" / "checkpoint.json").read_text())["history"]
    b = json.loads((tmp_path / "resumed" / "checkpoint.json").read_text())["history"]
    assert [r[:2] for r in a] == [r[:2] for r in b]
    np.testing.assert_allclose([r[2] for r in a[3:]], [r[2] for r in b[3:]], rtol=1e-5)
    entry = json.loads((tmp_path / "resumed" / "model.json").read_text())
    assert entry["task"] == "oneshot" and entry["recipe"] == recipe and entry["values"] == [0, 1, 2]
    assert (tmp_path / "resumed" / "loss.png").stat().st_size > 1000
    # the exported segmentation network is the average of its weights, kept across the resume
    from bijros.oneshot.checkpoint import load_tensors

    assert entry["training"]["segmentation_weights"] == "ema"
    w_whole, w_resumed = (load_tensors(tmp_path / r, "model", "model")[0] for r in ("whole", "resumed"))
    last = load_tensors(tmp_path / "whole", "checkpoint", "checkpoint")[0]
    seg = [k for k in w_whole if k.startswith("seg_")]
    assert seg and all(torch.allclose(w_whole[k], w_resumed[k], atol=1e-6) for k in seg)
    assert any(not torch.equal(w_whole[k], last[f"model.{k}"]) for k in seg if k.endswith("weight"))
    assert all(torch.equal(w_whole[k], last[f"model.{k}"]) for k in w_whole if k.startswith(("encoder.", "reg_")))


def test_ema_warm_up_forgets_the_first_weights():
    """The t-th update uses min(decay, (1 + t) / (10 + t)): hand-computed on one weight, and after 100 updates of a
    weight that jumped from 0 to 1 the average is near 1 (plain 0.99 decay would still be 0.63)."""
    from bijros.oneshot.train import update_ema

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.seg_decoder = torch.nn.Linear(1, 1, bias=False)
            self.encoder = torch.nn.Linear(1, 1, bias=False)

    net, ema = Net(), {}
    with torch.no_grad():
        net.seg_decoder.weight.fill_(0.0)
        update_ema(ema, net, 0.99, 0)
        assert set(ema) == {"seg_decoder.weight"} and float(ema["seg_decoder.weight"]) == 0.0
        net.seg_decoder.weight.fill_(1.0)
        update_ema(ema, net, 0.99, 1)  # decay 2/11
        assert float(ema["seg_decoder.weight"]) == pytest.approx(9 / 11)
        for t in range(2, 101):
            update_ema(ema, net, 0.99, t)
    assert float(ema["seg_decoder.weight"]) > 0.99


def test_without_ema_the_last_weights_are_exported(tiny_cohort, tmp_path):
    from bijros.oneshot.checkpoint import load_tensors

    _train(tiny_cohort, tmp_path / "run", _cfg(ema=None, iterations=4))
    weights = load_tensors(tmp_path / "run", "model", "model")[0]
    last = load_tensors(tmp_path / "run", "checkpoint", "checkpoint")[0]
    assert all(torch.equal(v, last[f"model.{k}"]) for k, v in weights.items())
    assert json.loads((tmp_path / "run" / "model.json").read_text())["training"]["segmentation_weights"] == "last"


def test_run_folder_of_another_recipe_is_refused(tiny_cohort, tmp_path):
    from bijros.errors import InputError

    _train(tiny_cohort, tmp_path / "run", _cfg(iterations=2))
    with pytest.raises(InputError, match="recipe 'bijros'"):
        _train(tiny_cohort, tmp_path / "run", _cfg(iterations=2, recipe="brbs"))


def test_corrupted_checkpoint_and_weights_are_refused(tiny_cohort, tmp_path):
    from bijros.errors import InputError
    from bijros.oneshot.segment import load_oneshot_model

    _train(tiny_cohort, tmp_path / "run", _cfg(iterations=2))
    for name in ("checkpoint.safetensors", "model.safetensors"):
        path = tmp_path / "run" / name
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256"):
        _train(tiny_cohort, tmp_path / "run", _cfg(iterations=4))
    with pytest.raises(InputError, match="sha256"):
        load_oneshot_model(tmp_path / "run", torch.device("cpu"))


def test_bad_cohorts_and_atlases(tiny_cohort, tmp_path, capsys):
    from bijros.errors import InputError
    from bijros.io import load_image, save_image
    from bijros.io.image import Image
    from bijros.oneshot.train import train_oneshot

    listing = tmp_path / "list.txt"
    (tmp_path / "broken.nii.gz").write_bytes(b"not an image")
    listing.write_text(f"# cohort\n{tiny_cohort / 'images' / 's0.nii.gz'}\nbroken.nii.gz\n"
                       f"{tiny_cohort / 'images' / 's1.nii.gz'}\n")
    result = train_oneshot(tiny_cohort / "atlas.nii.gz", tiny_cohort / "atlas_labels.nii.gz", listing,
                           tmp_path / "run", _cfg(iterations=1), bar=False)
    assert result["step"] == 1
    assert "skipped cohort image" in capsys.readouterr().err and "broken.nii.gz" in \
        json.loads((tmp_path / "run" / "model.json").read_text())["cohort"]["skipped"][0]
    listing.write_text(f"{tiny_cohort / 'images' / 's0.nii.gz'}\nbroken.nii.gz\n")
    with pytest.raises(InputError, match="at least 2"):
        train_oneshot(tiny_cohort / "atlas.nii.gz", tiny_cohort / "atlas_labels.nii.gz", listing, tmp_path / "r2",
                      _cfg(iterations=1), bar=False)
    labels = load_image(tiny_cohort / "atlas_labels.nii.gz", label_map=True)
    save_image(Image(np.zeros_like(labels.array), labels.ijk_to_ras, name="empty"), tmp_path / "empty.nii.gz")
    with pytest.raises(InputError, match="empty"):
        train_oneshot(tiny_cohort / "atlas.nii.gz", tmp_path / "empty.nii.gz", tiny_cohort / "images",
                      tmp_path / "r3", _cfg(iterations=1), bar=False)
    save_image(Image(labels.array[:20], labels.ijk_to_ras, name="cut"), tmp_path / "cut.nii.gz")
    with pytest.raises(InputError, match="not on the atlas grid"):
        train_oneshot(tiny_cohort / "atlas.nii.gz", tmp_path / "cut.nii.gz", tiny_cohort / "images",
                      tmp_path / "r4", _cfg(iterations=1), bar=False)
    assert not (tmp_path / "r2" / "model.json").exists() and not (tmp_path / "r3" / "model.json").exists()


def test_gpu_out_of_memory_falls_back_to_the_cpu(monkeypatch, capsys):
    from bijros.oneshot.commands import _with_cpu_fallback

    calls = []

    def run(device):
        calls.append(device)
        if device != "cpu":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return "ok"

    assert _with_cpu_fallback(run, "cuda") == "ok" and calls == ["cuda", "cpu"]
    assert "ran out of memory; continuing on the CPU" in capsys.readouterr().err


@pytest.mark.skipif(not HIPPO.is_dir(), reason="needs ../shared/data/hippocampus")
def test_cli_end_to_end_on_three_hippocampus_crops(tmp_path):
    from bijros.cli import main
    from bijros.io import load_image

    names = ["hippocampus_001.nii.gz", "hippocampus_003.nii.gz", "hippocampus_004.nii.gz"]
    listing = tmp_path / "cohort.txt"
    listing.write_text("\n".join(str(HIPPO / "images" / n) for n in names[1:]) + "\n")
    code = main(["train-oneshot", "--atlas", str(HIPPO / "images" / names[0]), "--atlas-labels",
                 str(HIPPO / "labels" / names[0]), "--images", str(listing), "--out", str(tmp_path / "model"),
                 "--iterations", "4", "--channels", "4,8,16", "--progress", "none", "--device", "cpu"])
    assert code == 0
    entry = json.loads((tmp_path / "model" / "model.json").read_text())
    assert entry["grid"]["spacing_mm"] == 1.0 and entry["cohort"]["images"] == 2
    target = HIPPO / "images" / names[2]
    assert main(["segment", "--model", str(tmp_path / "model"), "--image", str(target), "--out",
                 str(tmp_path / "seg"), "--progress", "none", "--device", "cpu"]) == 0
    image = load_image(target)
    for name in ("labels.nii.gz", "labels_propagated.nii.gz"):
        labels = load_image(tmp_path / "seg" / name, label_map=True)
        assert labels.same_grid(image) and set(np.unique(labels.array)) <= {0, 1, 2}
    propagated = load_image(tmp_path / "seg" / "labels_propagated.nii.gz", label_map=True).array
    truth = load_image(HIPPO / "labels" / names[2], label_map=True).array
    assert 2 * ((propagated > 0) & (truth > 0)).sum() / ((propagated > 0).sum() + (truth > 0).sum()) > 0.6
    report = json.loads((tmp_path / "seg" / "report.json").read_text())
    assert [s["value"] for s in report["structures"]] == [1, 2] and report["propagation_qc"]["folding_fraction"] < 0.01
    # a registration model folder is not a one-shot model
    other = tmp_path / "reg"
    other.mkdir()
    (other / "model.json").write_text(json.dumps({"name": "x", "architecture": "eoir"}))
    assert main(["segment", "--model", str(other), "--image", str(target), "--out", str(tmp_path / "s2")]) == 2


def test_self_training_refresh_replaces_the_io_pseudo_labels_and_resumes(tiny_cohort, tmp_path):
    from bijros.oneshot.checkpoint import load_tensors
    from bijros.oneshot.cohort import Cohort

    cfg = _cfg(pseudo_labels="io", iterations=4, pretrain_fraction=0.25, pseudo_refresh=0.5)
    _train(tiny_cohort, tmp_path / "run", cfg)
    tensors, meta = load_tensors(tmp_path / "run", "checkpoint", "checkpoint")
    io = Cohort.load(tmp_path / "run", None).pseudo  # the cohort file keeps the io labels
    assert meta["pseudo_refreshed"] and tensors["pseudo"].shape == io.shape
    _train(tiny_cohort, tmp_path / "run", _cfg(pseudo_labels="io", iterations=5, pretrain_fraction=0.25,
                                               pseudo_refresh=0.5))
    assert load_tensors(tmp_path / "run", "checkpoint", "checkpoint")[1]["step"] == 5


def test_train_oneshot_resamples_atlas_labels_from_another_grid(tiny_cohort, tmp_path, capsys):
    """Labels on a finer grid (as a library atlas's are): refused with the fix, then resampled exactly onto the
    atlas grid with --resample-labels; --atlas-name and --atlas together are refused."""
    from bijros.cli import main
    from bijros.io import load_image, save_image
    from bijros.io.image import Image

    labels = load_image(tiny_cohort / "atlas_labels.nii.gz", label_map=True)
    fine = labels.array.repeat(2, 0).repeat(2, 1).repeat(2, 2)  # 0.5 mm voxels, the same world positions
    affine = labels.ijk_to_ras.copy()
    affine[:3, :3] *= 0.5
    affine[:3, 3] -= 0.25
    save_image(Image(fine, affine), tmp_path / "fine_labels.nii.gz")
    base = ["train-oneshot", "--atlas", str(tiny_cohort / "atlas.nii.gz"), "--atlas-labels",
            str(tmp_path / "fine_labels.nii.gz"), "--images", str(tiny_cohort / "images"), "--iterations", "1",
            "--channels", "4,8", "--pseudo-labels", "decoder", "--device", "cpu", "--progress", "none"]
    assert main([*base, "--out", str(tmp_path / "refused")]) == 2
    assert "--resample-labels" in capsys.readouterr().err and not (tmp_path / "refused" / "model.json").exists()
    assert main([*base, "--out", str(tmp_path / "model"), "--resample-labels"]) == 0
    kept = load_image(tmp_path / "model" / "atlas_labels.nii.gz", label_map=True)
    assert kept.same_grid(labels) and np.array_equal(kept.array, labels.array)
    assert main([*base, "--out", str(tmp_path / "x"), "--atlas-name", "mni152-desikan-killiany"]) == 2
    assert "not both" in capsys.readouterr().err


def test_a_time_budget_overshot_by_one_step_still_finishes_the_model(tiny_cohort, tmp_path):
    result = _train(tiny_cohort, tmp_path / "run", _cfg(iterations=None, minutes=0.0005))  # 0.03 s: one step
    assert not result["interrupted"] and (tmp_path / "run" / "model.json").is_file()


# --- pseudo labels through the cohort (bijros.oneshot.paths) ----------------------------------------------------


def test_cohort_paths_outvote_a_wrong_direct_propagation(monkeypatch):
    import bijros.registration.deformable as deformable
    from bijros.io.image import Image
    from bijros.oneshot.cohort import Aligner
    from bijros.oneshot.paths import fused_pseudo_labels, neighbours

    img, lab = blob_volume((24, 24, 24), (12, 12, 12), 6.0)
    aligner = Aligner(Image(img, np.eye(4)), 1.0, torch.device("cpu"), multiple=4)
    classes = aligner.labels_on_grid(Image(lab, np.eye(4)), [0, 1, 2])
    onehot = torch.nn.functional.one_hot(classes, 3).permute(3, 0, 1, 2).float()
    images = aligner.atlas.repeat(3, 1, 1, 1)
    images[2] = images[2] ** 2  # scan 2: another contrast, the same anatomy
    assert neighbours(images, 1)[0] == [1]  # scan 1 is scan 0's copy
    pseudo = torch.stack([torch.zeros_like(classes), classes, classes])  # scan 0's direct labels: all wrong
    # the scans are aligned already: the paths' registrations are the identity here (io on a 28-voxel toy
    # blob is not; the fusion, not the registration, is under test)
    monkeypatch.setattr(deformable, "deformable_register",
                        lambda fixed, moving, grid, options: (torch.zeros((1, 3, *grid.shape)), grid))
    flows = torch.zeros((3, 3, *classes.shape))
    fused = fused_pseudo_labels(aligner, onehot, images, pseudo, flows, k=2)
    assert fused.shape == pseudo.shape
    for c in (1, 2):
        a, b = fused[0] == c, classes == c
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.95  # two paths of three carry it to scan 0
    assert (fused[1] == classes).float().mean() > 0.99


def test_train_with_cohort_paths_records_them_and_refuses_another_count(tiny_cohort, tmp_path):
    from bijros.errors import InputError

    _train(tiny_cohort, tmp_path / "run", _cfg(pseudo_labels="io", iterations=3, pseudo_paths=1))
    entry = json.loads((tmp_path / "run" / "model.json").read_text())
    assert entry["training"]["config"]["pseudo_paths"] == 1
    with pytest.raises(InputError, match="pseudo_paths"):
        _train(tiny_cohort, tmp_path / "run", _cfg(pseudo_labels="io", iterations=4, pseudo_paths=2))
    with pytest.raises(InputError, match="pseudo-paths"):
        _cfg(pseudo_paths=-1).validate()
