"""bijros.models.conv.Conv3d: the oneDNN path where PyTorch would take its slow one, with the same results."""

from __future__ import annotations

import torch
from torch import nn

from bijros.models import conv


def test_conv3d_matches_torch_forward_and_backward_on_a_small_batch_of_one():
    torch.manual_seed(0)
    ref = nn.Conv3d(8, 8, 3, padding=1)
    ours = conv.Conv3d(8, 8, 3, padding=1)
    ours.load_state_dict(ref.state_dict())  # the same parameter names: saved weights load unchanged
    x = torch.randn(1, 8, 10, 12, 10, requires_grad=True)  # 1 * 8 * 10 * 12 < 20480: PyTorch's slow_conv3d
    assert conv._direct(ours, x)
    y_ref, y = ref(x), ours(x)
    assert torch.allclose(y, y_ref, atol=1e-5)
    g_ref = torch.autograd.grad(y_ref.square().sum(), [x, ref.weight, ref.bias])
    g = torch.autograd.grad(y.square().sum(), [x, ours.weight, ours.bias])
    for a, b in zip(g, g_ref):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-3)


def test_conv3d_leaves_other_cases_to_torch():
    ours = conv.Conv3d(2, 2, 3, padding=1, padding_mode="replicate")
    assert not conv._direct(ours, torch.randn(1, 2, 4, 4, 4))
    assert not conv._direct(conv.Conv3d(2, 2, 3, padding=1), torch.randn(1, 2, 4, 4, 4, dtype=torch.float64))
    assert ours(torch.randn(1, 2, 4, 4, 4)).shape == (1, 2, 4, 4, 4)
