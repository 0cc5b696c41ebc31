"""Slicer's own slice views, headless (slicer-core slice logic + segmentation displayable manager, Mesa EGL):
a propagation result renders as target + Jacobian foreground + label outlines (README screenshot script)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, shared_data_path


def test_slice_views_render_a_result(tmp_path):
    pytest.importorskip("slicer", reason="needs the slicer-core wheel")
    images, labels = shared_data_path("hippocampus", "images"), shared_data_path("hippocampus", "labels")
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "bijros", "propagate", "--atlas", str(images / "hippocampus_003.nii.gz"),
                    "--atlas-labels", str(labels / "hippocampus_003.nii.gz"), "--target",
                    str(images / "hippocampus_001.nii.gz"), "--out", str(out), "--progress", "none", "--no-qc"],
                   check=True)
    png = tmp_path / "views.png"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "Testing" / "Screenshots" / "slice_views.py"), str(out),
                           str(images / "hippocampus_001.nii.gz"), str(png)], capture_output=True, text=True)
    if proc.returncode != 0 and ("EGL" in proc.stderr or proc.returncode < 0):
        pytest.skip(f"no offscreen OpenGL (Mesa EGL) on this machine: rc {proc.returncode}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert rgb.shape == (420, 3 * 420, 3)
    for view in range(3):
        tile = rgb[:, view * 420:(view + 1) * 420].reshape(-1, 3)
        saturated = (tile.max(1) - tile.min(1)) > 120  # label outline colours over a grey / pastel background
        assert saturated.sum() > 30, f"view {view} shows no outlines"
