"""Data-parallel training: 2 gloo processes keep one model, and the three trainers run under torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

TINY_EOIR = {"channels": 8, "encoder_depth": 2, "levels": 3, "head_channels": 16, "head_layers": 1}
ENV = {**os.environ, "BIJROS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inputs(rank: int):
    gen = torch.Generator().manual_seed(100 + rank)  # each rank its own data
    return torch.rand(1, 1, 16, 16, 16, generator=gen), torch.rand(1, 1, 16, 16, 16, generator=gen)


def _model():
    from bijros.models import build_model

    torch.manual_seed(0)
    return build_model("eoir", TINY_EOIR)


def _loss(model, fixed, moving):
    return (model(fixed, moving) - (fixed - moving)).square().mean()  # a non-zero gradient at the zero-flow start


def _rank(rank: int, port: int, folder: str) -> None:
    import torch.distributed as dist

    from bijros.training import distributed

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    dp = distributed.DataParallel(rank, 2, rank, 2, "gloo")
    results = {}
    for how in ("ddp", "synced"):
        model = _model()
        net = distributed.wrap(model, dp, torch.device("cpu")) if how == "ddp" else model
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        if how == "synced":
            opt = distributed.synced(opt, dp)
        for _ in range(2):
            opt.zero_grad()
            _loss(net, *_inputs(rank)).backward()
            opt.step()
        results[how] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.save(results, os.path.join(folder, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_gloo_processes_keep_one_model_with_the_mean_gradient(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_rank, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # the single-process reference: each update from the mean of the two ranks' gradients
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        (0.5 * sum(_loss(model, *_inputs(r)) for r in (0, 1))).backward()
        opt.step()
    reference = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    start = torch.cat([p.detach().reshape(-1) for p in _model().parameters()])
    for how in ("ddp", "synced"):
        assert torch.equal(r0[how], r1[how])  # one model on both processes
        torch.testing.assert_close(r0[how], reference, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(r0[how], start)


def _maps(folder, n=3):
    from test_learned import blob_labels

    folder.mkdir()
    for i in range(n):
        nib.save(nib.Nifti1Image(blob_labels(i, shape=(24, 24, 24)), np.diag([2.0, 2.0, 2.0, 1.0])),
                 folder / f"seg_{i}.nii.gz")
    return str(folder / "seg_*.nii.gz")


def _run(args, timeout=240):
    proc = subprocess.run([*TORCHRUN, "-m", "bijros", *map(str, args), "--progress", "none"], capture_output=True,
                          text=True, env=ENV, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_train_registration_under_torchrun_states_the_effective_batch_and_resumes(tmp_path):
    maps = _maps(tmp_path / "maps")
    out = tmp_path / "run"

    def config(steps):
        path = tmp_path / f"cfg{steps}.json"
        path.write_text(json.dumps({"model": "eoir", "model_config": TINY_EOIR, "labelmaps": maps,
                                    "spacing_mm": 2.0, "synth": {"crop": [16, 16, 16], "dice_labels": "all"},
                                    "steps": steps, "batch_size": 1, "learning_rate": 1e-3, "checkpoint_every": 2,
                                    "device": "cpu", "data_license": "synthetic test maps"}))
        return path

    _run(["train-registration", "--config", config(3), "--out", out])
    entry = json.loads((out / "model.json").read_text())
    assert entry["training"]["parallel"] == {"processes": 2, "backend": "gloo",
                                             "gradient_averaging": "DistributedDataParallel", "batch_per_process": 1,
                                             "effective_batch": 2, "learning_rate": 1e-3,
                                             "learning_rate_scaling": "none"}
    assert len((out / "loss.csv").read_text().splitlines()) == 1 + 3  # rank 0 writes, once
    second = _run(["train-registration", "--config", config(5), "--out", out])
    assert "resumed from step 3" in second.stderr
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 5
    from bijros.models.weights import load_model

    model = load_model(out / "model.json")
    with torch.no_grad():
        assert model(torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)


def test_train_fewshot_under_torchrun(tmp_path):
    maps = _maps(tmp_path / "maps")
    cfg = tmp_path / "gmrd.json"
    cfg.write_text(json.dumps({"name": "t", "model_config": {"channels": 16, "depth": 3, "k_fg": 4, "k_bg": 6,
                                                                "mixture_size": 6},
                               "labelmaps": maps, "spacing_mm": 2.0,
                               "synth": {"crop": [20, 20, 20], "dice_labels": "all"}, "episodes": {"min_pixels": 4},
                               "steps": 3, "batch_size": 2, "checkpoint_every": 3, "validation_maps": 1,
                               "validation_batches": 2, "device": "cpu"}))
    _run(["train-fewshot", "--config", cfg, "--out", tmp_path / "run"])
    parallel = json.loads((tmp_path / "run" / "model.json").read_text())["training"]["parallel"]
    assert parallel["processes"] == 2 and parallel["effective_batch"] == 4


def test_train_oneshot_under_torchrun(tmp_path):
    from test_oneshot import blob_volume

    from bijros.io import save_image
    from bijros.io.image import Image

    img, lab = blob_volume((24, 24, 24), (12, 12, 12), 6.0)
    save_image(Image(img, np.eye(4)), tmp_path / "atlas.nii.gz")
    save_image(Image(lab, np.eye(4)), tmp_path / "atlas_labels.nii.gz")
    (tmp_path / "images").mkdir()
    for i, (c, r) in enumerate([((11, 13, 12), 6.5), ((13, 12, 11), 5.5), ((12, 11, 13), 6.0)]):
        save_image(Image(blob_volume((24, 24, 24), c, r)[0], np.eye(4)), tmp_path / "images" / f"s{i}.nii.gz")
    out = tmp_path / "model"
    _run(["train-oneshot", "--atlas", tmp_path / "atlas.nii.gz", "--atlas-labels", tmp_path / "atlas_labels.nii.gz",
          "--images", tmp_path / "images", "--out", out, "--iterations", "4", "--channels", "4,8",
          "--pseudo-labels", "decoder", "--device", "cpu"])
    entry = json.loads((out / "model.json").read_text())
    assert entry["training"]["steps"] == 4
    assert entry["training"]["parallel"]["processes"] == 2
    assert entry["training"]["parallel"]["gradient_averaging"].startswith("all_reduce")


@pytest.mark.parametrize("world", [1, 3])
def test_one_process_setup_is_a_no_op(world, monkeypatch):
    from bijros.training import distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dp, device = distributed.setup("cpu")
    assert not dp.active and device.type == "cpu"
    assert distributed.describe(dp, 2, 1e-3, "x")["effective_batch"] == 2
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    distributed.rank_generator(gen, 0, dp, 10)
    assert torch.equal(gen.get_state(), state)  # one process keeps its exact stream
    dp3 = distributed.DataParallel(1, world, 1, world, "gloo")
    if dp3.active:
        distributed.rank_generator(gen, 0, dp3, 10)
        assert not torch.equal(gen.get_state(), state)
