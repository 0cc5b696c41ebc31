"""A CT-sized target (512 x 512 x 400 voxels, 0.8 x 0.8 x 1 mm) registers on the CPU under a memory cap.

The command runs in a child process whose writable data segment is limited (RLIMIT_DATA, 8 GiB: a
third of the 24 GiB the engine must fit in): an allocation beyond it fails the run. The full-resolution
work (warping the image and labels, the Jacobian, writing) is the same for every method; the fast
preset keeps the deformable part short (the default preset's full run is in the README: ~2 min, 5.6 GB).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import numpy as np
import pytest

from bijros.io import save_image
from bijros.io.image import Image

CAP_GIB = 8


def synthetic_ct(shape=(512, 512, 400), spacing=(0.8, 0.8, 1.0)):
    i, j, k = np.ogrid[: shape[0], : shape[1], : shape[2]]
    x, y, z = (i - 256) * spacing[0], (j - 256) * spacing[1], (k - 200) * spacing[2]
    vol = np.full(shape, -1000, np.int16)
    vol[np.broadcast_to((x / 170.0) ** 2 + (y / 120.0) ** 2 < 1.0, shape)] = 40  # body
    vol[((x - 50) / 60.0) ** 2 + ((y + 10) / 45.0) ** 2 + (z / 90.0) ** 2 < 1.0] = 120  # an organ
    vol[np.broadcast_to(x**2 + (y - 80) ** 2 < 400, shape)] = 700  # the spine
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-204.8, -204.8, -200.0]
    return vol, affine


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA caps memory on Linux")
def test_ct_sized_target_completes_under_a_memory_cap(tmp_path):
    vol, affine = synthetic_ct()
    save_image(Image(vol, affine), tmp_path / "ct.nii.gz")
    atlas_affine = affine.copy()
    atlas_affine[:3, :3] *= 2
    atlas_affine[:3, 3] += [4.0, -3.0, 2.0]
    small = np.ascontiguousarray(vol[::2, ::2, ::2])
    save_image(Image(small, atlas_affine), tmp_path / "atlas.nii.gz")
    labels = ((small == 120) * 1 + (small == 700) * 2).astype(np.int16)
    save_image(Image(labels, atlas_affine), tmp_path / "atlas_labels.nii.gz")
    del vol, small

    def cap():
        resource.setrlimit(resource.RLIMIT_DATA, (CAP_GIB << 30, CAP_GIB << 30))

    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "bijros", "propagate", "--atlas", str(tmp_path / "atlas.nii.gz"), "--atlas-labels",
         str(tmp_path / "atlas_labels.nii.gz"), "--target", str(tmp_path / "ct.nii.gz"), "--out", str(out),
         "--preset", "fast", "--device", "cpu", "--progress", "none", "--no-qc"],
        preexec_fn=cap, capture_output=True, text=True, timeout=600,
        env={**os.environ, "BIJROS_NUM_THREADS": os.environ.get("BIJROS_NUM_THREADS", "2")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    assert peak_gib < CAP_GIB
    report = json.loads((out / "report.json").read_text())
    assert report["fixed"]["shape"] == [512, 512, 400]
    assert report["displacement_grid"]["factor"] == 2 and report["displacement_grid"]["shape"] == [257, 257, 201]
    assert report["qc"]["folding_fraction"] < 0.001
    from bijros.io import load_image

    warped = load_image(out / "warped.nii.gz")
    assert warped.array.dtype == np.int16 and warped.shape == (512, 512, 400)  # CT stays in HU
