"""Diffeomorphic mode: levels chain velocities (not displacements), and a starting displacement (the
learned model's) is turned into its velocity first, so the first step starts from that displacement."""

from __future__ import annotations

import numpy as np
import torch

from bijros.registration.deformable import DeformableOptions, Level, deformable_register, exp_field, log_field
from bijros.registration.grid import Grid


def blobs(shift: float = 0.0) -> torch.Tensor:
    i, j, k = np.meshgrid(*[np.arange(24)] * 3, indexing="ij")
    vol = np.exp(-((i - 12 - shift) ** 2 + (j - 11) ** 2 + (k - 12) ** 2) / 20.0)
    vol += 0.6 * np.exp(-((i - 6) ** 2 + (j - 16) ** 2 + (k - 8 - shift) ** 2) / 8.0)
    return torch.as_tensor(vol, dtype=torch.float32)[None]


GRID = Grid((24, 24, 24), np.diag([2.0, 2.0, 2.0, 1.0]))


def run(levels, init=None):
    opts = DeformableOptions(levels=tuple(levels), reg_weight=0.0, diffeomorphic=True, learning_rate=0.5,
                             min_samples=1000, max_samples=4000, seed=3)
    return deformable_register(blobs(), blobs(2.0), GRID, opts, init=init)


def test_a_level_with_no_iterations_keeps_the_previous_levels_mapping():
    one, grid_one = run([Level(4, 4, 15, "lcn")])
    two, grid_two = run([Level(4, 4, 15, "lcn"), Level(4, 4, 0, "lcn")])
    assert grid_one.shape == grid_two.shape
    assert one.abs().max() > 0.5  # it did move (mm)
    # chaining exp(v) as if it were a velocity would give exp(exp(v)) != exp(v)
    torch.testing.assert_close(two, one, atol=1e-3, rtol=0)


def test_log_field_inverts_exp_for_a_smooth_field():
    torch.manual_seed(0)
    v = torch.nn.functional.avg_pool3d(torch.randn(1, 3, 16, 16, 16) * 3, 5, stride=1, padding=2)
    d = exp_field(v, 6)
    assert (d - v).abs().max() > 0.01  # a field where exp differs from the identity map
    assert (exp_field(log_field(d, 6), 6) - d).abs().max() < 0.1 * (d - v).abs().max()


def test_a_starting_displacement_is_reproduced_before_any_step():
    start, grid = run([Level(4, 4, 12, "lcn")])
    again, _ = run([Level(4, 4, 0, "lcn")], init=(start, grid))
    torch.testing.assert_close(again, start, atol=0.05 * float(start.abs().max()), rtol=0)
