"""Our Adam + cosine schedule takes the same steps as torch.optim.Adam + CosineAnnealingLR."""

from __future__ import annotations

import torch

from bijros.registration.optim import CosineAdam


def test_same_steps_as_torch_optim():
    torch.manual_seed(0)
    target = torch.randn(5, 4)
    a = torch.zeros(5, 4, requires_grad=True)
    b = torch.zeros(5, 4, requires_grad=True)
    w1 = torch.zeros(3, requires_grad=True)
    w2 = torch.zeros(3, requires_grad=True)
    ours = CosineAdam([(a, 0.3), (w1, 0.05)], iterations=12, eta_min_ratio=0.1)
    theirs = torch.optim.Adam([{"params": [b], "lr": 0.3}, {"params": [w2], "lr": 0.05}])
    sched = torch.optim.lr_scheduler.LambdaLR(
        theirs, lambda t: 0.1 + 0.9 * (1 + torch.cos(torch.tensor(torch.pi * t / 12)).item()) / 2)
    for _ in range(12):
        for p, w, opt in ((a, w1, ours), (b, w2, theirs)):
            opt.zero_grad()
            (((p - target) ** 2).sum() + ((w - 1) ** 4).sum()).backward()
            opt.step()
        sched.step()
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(w1, w2, atol=1e-6, rtol=1e-5)
    assert (a - torch.zeros(5, 4)).abs().max() > 0.5  # it did move
