"""Resampling onto a grid whose voxels lie on the source's lattice is an exact copy by indexing, equal to
trilinear interpolation (any axis permutation and flip, crop and zero padding)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from bijros.registration.grid import Grid, lattice_map, points_ras, resample_to_grid, sample


@pytest.mark.parametrize("perm,signs", [((0, 1, 2), (1, 1, 1)), ((2, 0, 1), (-1, 1, -1)), ((1, 2, 0), (1, -1, 1))])
def test_lattice_copy_equals_interpolation(perm, signs):
    rng = np.random.default_rng(0)
    src_m = np.eye(4)
    src_m[:3, :3] = np.diag([1.5, 1.5, 1.5])[:, list(perm)] * np.array(signs)
    src_m[:3, 3] = [10.0, -4.0, 7.0]
    src = Grid((9, 7, 11), src_m)
    vol = torch.as_tensor(rng.random((1, 9, 7, 11)), dtype=torch.float32)
    dst_m = np.diag([1.5, 1.5, 1.5, 1.0])
    centre = src_m @ np.array([4.0, 3.0, 5.0, 1.0])
    desired = np.append(centre[:3] - 1.5 * np.array([5.5, 3.5, 4.5]), 1.0)  # larger than the source: padding
    dst_m[:3, 3] = (src_m @ np.append(np.round(np.linalg.inv(src_m) @ desired)[:3], 1.0))[:3]
    dst = Grid((12, 8, 10), dst_m)
    assert lattice_map(src, dst) is not None
    fast = resample_to_grid(vol, src, dst)
    slow = sample(vol, src, points_ras(dst))
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    assert (fast == 0).any() and (fast != 0).any()


def test_off_lattice_falls_back_to_interpolation():
    src = Grid((6, 6, 6), np.eye(4))
    dst_m = np.eye(4)
    dst_m[:3, 3] = 0.5
    dst = Grid((4, 4, 4), dst_m)
    assert lattice_map(src, dst) is None
    vol = torch.arange(216, dtype=torch.float32).reshape(1, 6, 6, 6)
    torch.testing.assert_close(resample_to_grid(vol, src, dst), sample(vol, src, points_ras(dst)))


def test_every_signed_permutation_is_recognised():
    for perm in itertools.permutations(range(3)):
        m = np.eye(4)
        m[:3, :3] = np.eye(3)[:, list(perm)] * -1
        assert lattice_map(Grid((3, 3, 3), m), Grid((2, 2, 2), np.eye(4))) is not None
