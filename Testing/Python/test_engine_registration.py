"""Registration accuracy on small real brains (CPU, a few seconds each).

* an image registered to itself gives (near) zero displacement and Dice 1 for its labels;
* a known affine (rotation + translation + scaling, written into the header) is recovered;
* a known smooth deformation is recovered: propagated labels beat identity and affine-only Dice.
"""

from __future__ import annotations

import numpy as np
from conftest import rotation
from scipy import ndimage

from bijros.io.image import Image
from bijros.metrics import dice_per_label
from bijros.registration.pipeline import RegistrationOptions, register

FAST = {"preset": "fast", "device": "cpu"}


def tissue_labels(image: Image) -> Image:
    """Three intensity classes inside the head (a crude but real tissue map): 0 background, 1..3."""
    arr = image.array.astype(np.float32)
    smooth = ndimage.gaussian_filter(arr, 0.7)
    head = smooth > np.percentile(smooth, 35)
    cuts = np.percentile(smooth[head], [40, 75])
    labels = np.zeros(arr.shape, np.int16)
    labels[head] = 1 + np.digitize(smooth[head], cuts)
    return Image(labels, image.ijk_to_ras.copy(), name="tissue")


def brain_points(image: Image, percentile: float = 60) -> np.ndarray:
    """RAS points (N, 4 homogeneous) of the brighter voxels (the brain, not the background)."""
    ijk = np.argwhere(image.array > np.percentile(image.array, percentile))
    return np.c_[ijk, np.ones(len(ijk))] @ image.ijk_to_ras.T


def test_self_registration_gives_near_zero_displacement_and_dice_one(small_brain):
    labels = tissue_labels(small_brain)
    result = register(small_brain, small_brain, labels, RegistrationOptions(spacing=3.0, **FAST))
    inside = small_brain.array > np.percentile(small_brain.array, 60)
    magnitude = np.linalg.norm(result.displacement_ras_mm, axis=-1)[inside]
    assert np.median(magnitude) < 0.25, f"median |d| {np.median(magnitude):.2f} mm on an identical pair"
    assert magnitude.max() < 1.0, f"max |d| {magnitude.max():.2f} mm on an identical pair"
    dice = dice_per_label(result.labels.array, labels.array, [1, 2, 3])
    assert min(dice.values()) > 0.98, dice
    assert result.report["qc"]["folding_fraction"] == 0.0
    core = (slice(3, -3),) * 3  # away from the field-of-view edges, which the brain touches
    warped = result.warped.array[core].ravel()
    original = small_brain.array[core].ravel().astype(np.float32)
    assert np.corrcoef(warped, original)[0, 1] > 0.995


def test_self_registration_affine_is_identity(small_brain):
    result = register(small_brain, small_brain, None, RegistrationOptions(method="affine", spacing=3.0, **FAST))
    pts = brain_points(small_brain)
    err = np.linalg.norm((pts @ result.affine_ras.T - pts)[:, :3], axis=1)
    assert err.max() < 0.5, f"identity not kept: max {err.max():.2f} mm"


def test_known_affine_is_recovered(small_brain):
    centre = small_brain.ijk_to_ras @ np.r_[(np.array(small_brain.shape) - 1) / 2.0, 1.0]
    to_centre, from_centre = np.eye(4), np.eye(4)
    to_centre[:3, 3], from_centre[:3, 3] = -centre[:3], centre[:3]
    shift = np.eye(4)
    shift[:3, 3] = [6.0, -4.0, 4.0]  # 8.2 mm
    scale = np.diag([1.05, 0.97, 1.03, 1.0])
    truth = shift @ from_centre @ rotation(2, 10.0) @ rotation(0, -5.0) @ scale @ to_centre
    # the moving image holds the same voxels with a moved header: its world content is truth(x)
    moving = Image(small_brain.array.astype(np.float32), truth @ small_brain.ijk_to_ras, name="moved")
    result = register(small_brain, moving, None, RegistrationOptions(method="affine", spacing=3.0, **FAST))
    pts = brain_points(small_brain)
    err = np.linalg.norm((pts @ result.affine_ras.T - pts @ truth.T)[:, :3], axis=1)
    moved_by = np.linalg.norm((pts @ truth.T - pts)[:, :3], axis=1)
    assert moved_by.mean() > 8.0  # the test moves points a lot ...
    assert err.mean() < 1.2, f"mean error {err.mean():.2f} mm"  # ... and they come back within ~1 voxel
    assert err.max() < 2.5, f"max error {err.max():.2f} mm"
    assert np.isfinite(result.displacement_ras_mm).all()


def smooth_random_displacement(shape, spacing_mm: float, max_mm: float, seed: int = 0) -> np.ndarray:
    """(I, J, K, 3) smooth random field in mm (Gaussian-filtered noise scaled to ``max_mm``)."""
    rng = np.random.default_rng(seed)
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 6.0) for _ in range(3)], -1)
    return (field * (max_mm / np.abs(field).max())).astype(np.float32)


def test_known_smooth_deformation_is_recovered_with_higher_dice(small_brain):
    labels = tissue_labels(small_brain)
    disp = smooth_random_displacement(small_brain.shape, 2.0, 4.0)
    # the fixed image (and its true labels) is the original sampled at x + d(x); for this grid,
    # whose axes are aligned to RAS up to sign, the index offset is d / (signed spacing)
    signed_spacing = np.diag(small_brain.ijk_to_ras)[:3]
    ijk = np.indices(small_brain.shape).astype(np.float32) + np.moveaxis(disp / signed_spacing, -1, 0)
    fixed = Image(ndimage.map_coordinates(small_brain.array.astype(np.float32), ijk, order=1, mode="nearest"),
                  small_brain.ijk_to_ras.copy(), name="deformed")
    truth = ndimage.map_coordinates(labels.array, ijk, order=0, mode="nearest")
    classes = [1, 2, 3]

    identity_dice = np.mean(list(dice_per_label(labels.array, truth, classes).values()))
    affine = register(fixed, small_brain, labels, RegistrationOptions(method="affine", spacing=3.0, **FAST))
    affine_dice = np.mean(list(dice_per_label(affine.labels.array, truth, classes).values()))
    io = register(fixed, small_brain, labels, RegistrationOptions(method="io", preset="default", spacing=2.0,
                                                                  device="cpu"))
    io_dice = np.mean(list(dice_per_label(io.labels.array, truth, classes).values()))

    assert io_dice > identity_dice + 0.03, (identity_dice, affine_dice, io_dice)
    assert io_dice > affine_dice + 0.03, (identity_dice, affine_dice, io_dice)
    inside = small_brain.array > np.percentile(small_brain.array, 60)
    before = np.linalg.norm(disp, axis=-1)[inside].mean()
    after = np.linalg.norm(io.displacement_ras_mm - disp, axis=-1)[inside].mean()
    assert after < 0.6 * before, f"displacement error {after:.2f} mm vs {before:.2f} mm unregistered"
    assert io.report["qc"]["folding_fraction"] < 0.01


def test_mutual_information_affine_handles_inverted_contrast(small_brain):
    """MI aligns an image to a contrast-inverted, shifted copy (the multi-modal case, e.g. CT to MR)."""
    arr = small_brain.array.astype(np.float32)
    inverted = np.where(arr > arr.max() * 0.1, arr.max() - arr, 0).astype(np.float32)
    truth = np.eye(4)
    truth[:3, 3] = [5.0, -4.0, 3.0]
    moving = Image(inverted, truth @ small_brain.ijk_to_ras, name="inverted")
    result = register(small_brain, moving, None,
                      RegistrationOptions(method="affine", spacing=2.0, affine_metric="mi", device="cpu"))
    pts = brain_points(small_brain)
    err = np.linalg.norm((pts @ result.affine_ras.T - pts @ truth.T)[:, :3], axis=1)
    assert err.mean() < 0.5, f"mean error {err.mean():.2f} mm"


def test_diffeomorphic_mode_keeps_the_jacobian_positive(small_brain):
    """--diffeomorphic: a large smooth deformation is recovered with det(J) > 0 everywhere."""
    labels = tissue_labels(small_brain)
    disp = smooth_random_displacement(small_brain.shape, 2.0, 6.0, seed=3)
    signed_spacing = np.diag(small_brain.ijk_to_ras)[:3]
    ijk = np.indices(small_brain.shape).astype(np.float32) + np.moveaxis(disp / signed_spacing, -1, 0)
    fixed = Image(ndimage.map_coordinates(small_brain.array.astype(np.float32), ijk, order=1, mode="nearest"),
                  small_brain.ijk_to_ras.copy(), name="deformed")
    truth = ndimage.map_coordinates(labels.array, ijk, order=0, mode="nearest")
    result = register(fixed, small_brain, labels,
                      RegistrationOptions(spacing=2.0, diffeomorphic=True, device="cpu"))
    assert result.report["diffeomorphic"] is True
    assert result.jacobian.array.min() > 0, result.jacobian.array.min()
    before = np.mean(list(dice_per_label(labels.array, truth, [1, 2, 3]).values()))
    after = np.mean(list(dice_per_label(result.labels.array, truth, [1, 2, 3]).values()))
    assert after > before + 0.02, (before, after)


def test_fixed_mask_restricts_the_similarity_to_the_masked_region(small_brain):
    """Two blobs that move apart. Without a mask both are matched; with a mask around blob A on the
    fixed image only A counts: A is still matched and B is left where the smooth field puts it."""
    ijk_to_ras = np.diag([2.0, 2.0, 2.0, 1.0])
    shape = (48, 40, 40)
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")

    def blobs(shift_a, shift_b):
        a = ((i - 14 - shift_a) ** 2 + (j - 20) ** 2 + (k - 20) ** 2) < 36
        b = ((i - 34 - shift_b) ** 2 + (j - 20) ** 2 + (k - 20) ** 2) < 36
        return ndimage.gaussian_filter((a * 100.0 + b * 60.0).astype(np.float32), 1.0)

    fixed = Image(blobs(0, 0), ijk_to_ras, name="fixed")
    moving = Image(blobs(2, -2), ijk_to_ras, name="moving")  # blob A 4 mm one way, blob B 4 mm the other
    mask = Image((((i - 14) ** 2 + (j - 20) ** 2 + (k - 20) ** 2) < 100).astype(np.uint8), ijk_to_ras, name="maskA")
    options = RegistrationOptions(method="io", spacing=2.0, **FAST)

    def error(result, centre_ijk, shift_mm):
        mapped = np.array(centre_ijk) * 2.0 + result.displacement_ras_mm[tuple(centre_ijk)]
        return float(np.linalg.norm(mapped - (np.array(centre_ijk) * 2.0 + [shift_mm, 0, 0])))

    plain = register(fixed, moving, None, options)
    masked = register(fixed, moving, None, options, fixed_mask=mask)
    a, b = (14, 20, 20), (34, 20, 20)
    assert error(plain, a, 4.0) < 1.5 and error(plain, b, -4.0) < 1.5
    assert error(masked, a, 4.0) < 1.5
    assert error(masked, b, -4.0) > error(plain, b, -4.0) + 1.5
    assert masked.report["fixed_mask"]["working_voxels_inside"] > 27
