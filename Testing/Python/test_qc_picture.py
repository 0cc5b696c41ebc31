"""qc.png: the expected size and panels, each panel showing its content (checkerboard of two images,
label contours in the labels' colours, the Jacobian colour map with folded voxels in yellow)."""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage

from bijros.io.image import Image, LabelTable
from bijros.qc.picture import COLUMNS, HEADER, PANEL, ROWS, write_qc_png


def make_images():
    shape = (40, 48, 36)
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    ball = ((i - 20) ** 2 + (j - 24) ** 2 + (k - 18) ** 2 < 15**2).astype(np.float32)
    affine = np.diag([1.2, 1.0, 1.5, 1.0])
    fixed = Image(ball * (60 + 2 * i), affine, name="fixed")
    warped = Image(np.roll(ball, 3, axis=0) * (40 + j), affine, name="warped")
    labels_arr = ball.astype(np.int16) + (ball * (i + j + k > 62)).astype(np.int16)  # cut through every view
    table = LabelTable()
    table.add(1, "left part", (0.0, 1.0, 0.0))
    table.add(2, "right part", (1.0, 0.0, 1.0))
    labels = Image(labels_arr, affine, table, name="labels")
    jac = np.ones(shape, np.float32)
    jac[i + j + k < 58] = 2.0  # growing: red, in every view
    jac[(i > 30) & (j > 30)] = 0.5  # shrinking: blue
    jac[18:23, 22:27, 16:21] = -0.1  # folded: yellow
    return fixed, warped, labels, Image(jac, affine, name="jacobian")


def test_qc_png_has_its_panels(tmp_path):
    fixed, warped, labels, jac = make_images()
    report = {"method": "io", "moving": {"name": "atlas"},
              "qc": {"folding_fraction": 0.001, "sdlogj": 0.1, "jacobian_min": -0.1, "jacobian_max": 2.0}}
    layout = write_qc_png(tmp_path / "qc.png", fixed, warped, jac, labels, report)
    png = np.asarray(PILImage.open(tmp_path / "qc.png").convert("RGB")).astype(int)
    assert png.shape[1] == PANEL * len(COLUMNS) and png.shape[0] == layout["size"][1] > HEADER + 3 * PANEL
    assert set(layout["panels"]) == {f"{r}/{c}" for r in ROWS for c in COLUMNS}

    def crop(name):
        x0, y0, x1, y1 = layout["panels"][name]
        return png[y0 + 24:y1 - 24, x0 + 4:x1 - 4]  # leave the titles out

    for row in ROWS:
        contours = crop(f"{row}/labels").reshape(-1, 3)
        assert ((contours == [0, 255, 0]).all(1)).sum() > 20  # label 1's colour
        assert ((contours == [255, 0, 255]).all(1)).sum() > 20  # label 2's colour
        overlay = crop(f"{row}/overlay").reshape(-1, 3)
        assert len(np.unique(overlay[:, 0])) > 5  # grey levels of both images
        jac_px = crop(f"{row}/jacobian").reshape(-1, 3)
        red = (jac_px[:, 0] > 180) & (jac_px[:, 2] < 80)
        assert red.sum() > 100
    axial = crop("axial/jacobian").reshape(-1, 3)
    assert ((axial == [255, 216, 0]).all(1)).sum() > 25  # folded voxels in yellow
    assert ((axial[:, 2] > 180) & (axial[:, 0] < 80)).sum() > 20  # shrinking in blue
    x0, y0, x1, _y1 = layout["colorbar"]
    bar = png[y0 + 7, x0:x1]
    assert bar[0, 2] > bar[0, 0] and bar[-1, 0] > bar[-1, 2]  # blue at J = 0.5, red at J = 2


def test_qc_png_without_labels_shows_edges(tmp_path):
    fixed, warped, _labels, jac = make_images()
    layout = write_qc_png(tmp_path / "qc.png", fixed, warped, jac, None, None)
    png = np.asarray(PILImage.open(tmp_path / "qc.png").convert("RGB")).astype(int)
    x0, y0, x1, y1 = layout["panels"]["axial/labels"]
    panel = png[y0 + 24:y1 - 24, x0 + 4:x1 - 4].reshape(-1, 3)
    assert ((panel[:, 0] > 200) & (panel[:, 1] > 170) & (panel[:, 2] < 60)).sum() > 20  # yellow edges


def test_a_jacobian_on_the_coarser_displacement_grid_lands_where_it_belongs(tmp_path):
    """The written Jacobian lives on every 2nd fixed voxel; the picture reads it at the fixed voxels, so the
    same map at full and at half resolution draws the same panel (up to the half-voxel rims)."""
    fixed, warped, labels, jac = make_images()
    coarse = Image(jac.array[::2, ::2, ::2].copy(), jac.ijk_to_ras @ np.diag([2.0, 2, 2, 1]), name="jacobian")
    full_layout = write_qc_png(tmp_path / "full.png", fixed, warped, jac, labels, None)
    write_qc_png(tmp_path / "coarse.png", fixed, warped, coarse, labels, None)
    full, half = (np.asarray(PILImage.open(tmp_path / n).convert("RGB")).astype(int) for n in ("full.png", "coarse.png"))
    for row in ROWS:
        x0, y0, x1, y1 = full_layout["panels"][f"{row}/jacobian"]
        a, b = full[y0 + 24:y1 - 24, x0 + 4:x1 - 4], half[y0 + 24:y1 - 24, x0 + 4:x1 - 4]
        assert (np.abs(a - b).max(-1) < 10).mean() > 0.9, row
