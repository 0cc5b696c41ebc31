"""``bijros batch``: manifests, sharding, resume after a kill, and torchrun (2 gloo processes) on tiny brains."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bijros.batch.shard import shard
from bijros.io import load_image, save_image
from bijros.io.image import Image

ENV = {**os.environ, "BIJROS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
COLUMNS = "kind,atlas,atlas_labels,target,preset,spacing,device,reference,job\n"


def bijros(*args, launcher=(), timeout=300, wait=True):
    cmd = [sys.executable, *launcher, "-m", "bijros", *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def cohort(small_brain_path, tmp_path_factory):
    """An atlas (the small brain, shifted, with 3 tissue labels) and 4 targets (the brain shifted and scaled)."""
    tmp = tmp_path_factory.mktemp("cohort")
    brain = load_image(small_brain_path)
    arr = brain.array.astype(np.float32)
    labels = np.zeros(arr.shape, np.int16)
    for value, cut in enumerate(np.percentile(arr, [50, 75, 90]), 1):
        labels[arr > cut] = value
    affine = brain.ijk_to_ras.copy()
    affine[:3, 3] += [2.0, -3.0, 1.0]
    save_image(Image(arr, affine), tmp / "atlas.nii.gz")
    save_image(Image(labels, affine), tmp / "atlas_labels.nii.gz")
    for i in range(4):
        moved = brain.ijk_to_ras.copy()
        moved[:3, :3] *= 1.0 + 0.03 * i
        moved[:3, 3] += [i, -i, 0.5 * i]
        save_image(Image(arr * (1 + 0.1 * i), moved), tmp / f"t{i}.nii.gz")
        save_image(Image(labels, moved), tmp / f"t{i}_labels.nii.gz")
    return tmp


def write_manifest(folder: Path, rows: list[str], name="manifest.csv") -> Path:
    path = folder / name
    path.write_text(COLUMNS + "".join(r + "\n" for r in rows))
    return path


def good_row(i: int) -> str:
    return f"propagate,atlas.nii.gz,atlas_labels.nii.gz,t{i}.nii.gz,fast,3,cpu,t{i}_labels.nii.gz,"


def summary(out: Path) -> list[dict]:
    with open(out / "summary.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def outputs(folder: Path) -> dict[str, bytes]:
    """A job folder's files, report.json without its timings (the only part that differs between runs)."""
    files = {}
    for p in sorted(folder.iterdir()):
        data = p.read_bytes()
        if p.name == "report.json":
            report = json.loads(data)
            report.pop("seconds", None)
            data = json.dumps(report, sort_keys=True).encode()
        files[p.name] = data
    return files


def test_sharding_is_a_balanced_partition():
    rng = np.random.default_rng(0)
    for n, ranks in [(0, 2), (1, 3), (7, 2), (50, 4), (13, 13), (5, 8)]:
        works = [int(w) for w in rng.integers(1, 1000, n)]
        parts = shard(works, ranks)
        assert len(parts) == ranks
        assert sorted(i for p in parts for i in p) == list(range(n))  # every job exactly once
        loads = [sum(works[i] for i in p) for p in parts]
        if n >= ranks:
            assert max(loads) - min(loads) <= max(works)
        assert shard(works, ranks) == parts  # deterministic: every rank computes the same split


def test_batch_runs_rows_as_the_single_commands_and_fails_bad_rows_by_line(cohort, tmp_path):
    manifest = write_manifest(cohort, [good_row(0), "propagate,atlas.nii.gz,atlas_labels.nii.gz,missing.nii.gz,,,,,",
                                       "warp,atlas.nii.gz,,t1.nii.gz,,,,,", good_row(1)], "rows.csv")
    out = tmp_path / "batch"
    proc = bijros("batch", "--manifest", manifest, "--out", out, "--progress", "json")
    assert proc.returncode == 1, proc.stderr  # some rows failed; the others ran
    rows = summary(out)
    assert [r["status"] for r in rows] == ["ok", "failed", "failed", "ok"]
    assert "line 3" in rows[1]["message"] and "missing.nii.gz" in rows[1]["message"]
    assert "line 4" in rows[2]["message"] and "unknown job kind 'warp'" in rows[2]["message"]
    assert float(rows[0]["dice"]) > 0.5 and rows[0]["folding_percent"] != ""
    events = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.strip()]
    assert events[-1]["stage"] == "result" and events[-2]["fraction"] == 1.0

    single = tmp_path / "single"
    proc = bijros("propagate", "--atlas", cohort / "atlas.nii.gz", "--atlas-labels", cohort / "atlas_labels.nii.gz",
                  "--target", cohort / "t0.nii.gz", "--preset", "fast", "--spacing", "3", "--device", "cpu",
                  "--out", single, "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    assert outputs(out / "t0") == outputs(single)  # byte for byte what the single command writes


def test_bad_manifests_are_refused_before_anything_runs(cohort, tmp_path):
    shared = write_manifest(cohort, [good_row(0) + "same", good_row(1) + "same"], "shared.csv")  # one job name
    out = tmp_path / "b"
    proc = bijros("batch", "--manifest", shared, "--out", out)
    assert proc.returncode == 2 and "share the job name 'same'" in proc.stderr
    assert not out.exists()

    same_out = cohort / "same_out.csv"
    same_out.write_text("kind,atlas,atlas_labels,target,out\n"
                        "propagate,atlas.nii.gz,atlas_labels.nii.gz,t0.nii.gz,res\n"
                        "propagate,atlas.nii.gz,atlas_labels.nii.gz,t1.nii.gz,./res\n")
    proc = bijros("batch", "--manifest", same_out, "--out", out)
    assert proc.returncode == 2 and "lines 2, 3 write to the same output folder" in proc.stderr
    assert not out.exists() and not (cohort / "res").exists()

    typo = cohort / "typo.csv"
    typo.write_text("kind,atlas,atlas_lables,target\npropagate,atlas.nii.gz,atlas_labels.nii.gz,t0.nii.gz\n")
    proc = bijros("batch", "--manifest", typo, "--out", out)
    assert proc.returncode == 2 and "unknown column(s) atlas_lables" in proc.stderr


def test_resume_skips_complete_jobs_and_redoes_partial_ones(cohort, tmp_path):
    manifest = write_manifest(cohort, [good_row(i) for i in range(3)], "resume.csv")
    out = tmp_path / "batch"
    assert bijros("batch", "--manifest", manifest, "--out", out).returncode == 0
    first = {i: outputs(out / f"t{i}") for i in range(3)}
    (out / "t1" / "labels.nii.gz").unlink()  # a job left half-written
    proc = bijros("batch", "--manifest", manifest, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert [r["status"] for r in summary(out)] == ["skipped", "ok", "skipped"]
    assert {i: outputs(out / f"t{i}") for i in range(3)} == first


def test_a_killed_batch_finishes_only_the_rest_with_identical_outputs(cohort, tmp_path):
    manifest = write_manifest(cohort, [good_row(i) for i in range(4)], "kill.csv")
    whole = tmp_path / "whole"
    assert bijros("batch", "--manifest", manifest, "--out", whole, "--progress", "none").returncode == 0

    out = tmp_path / "killed"
    proc = bijros("batch", "--manifest", manifest, "--out", out, "--progress", "none", wait=False)
    records = out / ".bijros-batch"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(records.glob("*.json")) if records.is_dir() else []) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # no clean-up at all: the workers die with it
    proc.wait(timeout=30)
    done_before = {p.stem for p in records.glob("*.json")}
    assert 2 <= len(done_before) < 4
    assert not (out / "summary.csv").exists()

    proc = bijros("batch", "--manifest", manifest, "--out", out, "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    status = {r["job"]: r["status"] for r in summary(out)}
    assert {j for j, s in status.items() if s == "skipped"} == done_before
    assert all(s in ("ok", "skipped") for s in status.values())
    for i in range(4):
        assert outputs(out / f"t{i}") == outputs(whole / f"t{i}")


def test_torchrun_with_two_gloo_processes_gives_the_same_summary_as_one(cohort, tmp_path):
    manifest = write_manifest(cohort, [good_row(i) for i in range(4)], "ranks.csv")
    one = tmp_path / "one"
    assert bijros("batch", "--manifest", manifest, "--out", one, "--jobs-per-device", "2",
                  "--progress", "none").returncode == 0
    two = tmp_path / "two"
    proc = bijros("batch", "--manifest", manifest, "--out", two, "--progress", "none",
                  launcher=("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"))
    assert proc.returncode == 0, proc.stderr
    rows_one, rows_two = summary(one), summary(two)
    assert {r["rank"] for r in rows_two} == {"0", "1"}  # both ranks ran jobs

    def same(rows):
        return [{k: v for k, v in r.items() if k not in ("seconds", "rank", "out")} for r in rows]

    assert same(rows_one) == same(rows_two)
    for i in range(4):
        assert outputs(one / f"t{i}") == outputs(two / f"t{i}")


def test_a_json_lines_manifest_mixes_register_segment_and_fewshot(cohort, tmp_path):
    from test_fewshot import tiny_model_json
    from test_oneshot import _cfg, _train

    fewshot_model, _ = tiny_model_json(tmp_path / "gmrd")
    sparse = np.zeros_like(load_image(cohort / "atlas_labels.nii.gz", label_map=True).array)
    full = load_image(cohort / "atlas_labels.nii.gz", label_map=True)
    sparse[:, :, [8, 12, 16]] = full.array[:, :, [8, 12, 16]]  # three painted slices
    save_image(Image(sparse, full.ijk_to_ras), tmp_path / "painted.nii.gz")
    _train(cohort_images(cohort, tmp_path), tmp_path / "oneshot", _cfg(iterations=3))
    rows = [{"kind": "register", "job": "reg", "fixed": str(cohort / "t0.nii.gz"), "moving": str(cohort / "atlas.nii.gz"),
             "moving_labels": str(cohort / "atlas_labels.nii.gz"), "preset": "fast", "spacing": 3,
             "diffeomorphic": True, "no_qc": False},
            {"kind": "segment", "job": "seg", "model": str(tmp_path / "oneshot"), "image": str(cohort / "t1.nii.gz"),
             "no_propagation": True},
            {"kind": "fewshot", "job": "fs", "support_image": str(cohort / "atlas.nii.gz"), "support_labels":
             str(tmp_path / "painted.nii.gz"), "query": str(cohort / "atlas.nii.gz"), "model": str(fewshot_model),
             "label": 2}]
    manifest = tmp_path / "mixed.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "batch"
    proc = bijros("batch", "--manifest", manifest, "--out", out, "--jobs-per-device", "1")
    assert proc.returncode == 0, proc.stderr
    assert [r["status"] for r in summary(out)] == ["ok", "ok", "ok"]
    assert json.loads((out / "reg" / "report.json").read_text())["diffeomorphic"] is True
    assert (out / "reg" / "displacement.nii.gz").is_file() and (out / "reg" / "qc.png").is_file()
    assert (out / "seg" / "labels.nii.gz").is_file() and not (out / "seg" / "labels_propagated.nii.gz").exists()
    single = tmp_path / "fs_single"
    proc = bijros("fewshot", "--support-image", cohort / "atlas.nii.gz", "--support-labels", tmp_path / "painted.nii.gz",
                  "--query", cohort / "atlas.nii.gz", "--model", fewshot_model, "--label", "2", "--out", single,
                  "--device", "cpu", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    assert (out / "fs" / "labels.nii.gz").read_bytes() == (single / "labels.nii.gz").read_bytes()


def cohort_images(cohort: Path, tmp_path: Path) -> Path:
    """The cohort laid out as test_oneshot's trainer expects: atlas.nii.gz, atlas_labels.nii.gz, images/."""
    folder = tmp_path / "oneshot_cohort"
    (folder / "images").mkdir(parents=True)
    for name in ("atlas.nii.gz", "atlas_labels.nii.gz"):
        (folder / name).write_bytes((cohort / name).read_bytes())
    for i in range(3):
        (folder / "images" / f"t{i}.nii.gz").write_bytes((cohort / f"t{i}.nii.gz").read_bytes())
    return folder
