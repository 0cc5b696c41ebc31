"""Adam with a cosine learning-rate schedule, in a few tensor operations.

The same update as ``torch.optim.Adam`` (betas 0.9 / 0.999, eps 1e-8, bias correction) followed by
``CosineAnnealingLR``, without torch.optim: its first ``step()`` imports torch._dynamo, which costs
about 0.8 s of every run's wall time on a CPU; a registration needs none of it.
"""

from __future__ import annotations

import math

import torch


class CosineAdam:
    """``groups``: [(tensor, lr), ...]; ``iterations``: schedule length; lr decays to ``eta_min`` (absolute)
    or, when ``eta_min_ratio`` is given, to that fraction of each group's lr."""

    def __init__(self, groups, iterations: int, eta_min: float = 0.0, eta_min_ratio: float | None = None,
                 betas=(0.9, 0.999), eps: float = 1e-8):
        self.groups = [(p, float(lr)) for p, lr in groups]
        self.iterations = max(int(iterations), 1)
        self.eta_min = [lr * eta_min_ratio if eta_min_ratio is not None else eta_min for _p, lr in self.groups]
        self.b1, self.b2 = betas
        self.eps = eps
        self.t = 0
        self.m = [torch.zeros_like(p) for p, _lr in self.groups]
        self.v = [torch.zeros_like(p) for p, _lr in self.groups]

    def zero_grad(self) -> None:
        for p, _lr in self.groups:
            p.grad = None

    def lr(self, index: int) -> float:
        base, low = self.groups[index][1], self.eta_min[index]
        return low + (base - low) * (1 + math.cos(math.pi * self.t / self.iterations)) / 2

    @torch.no_grad()
    def step(self) -> None:
        lrs = [self.lr(i) for i in range(len(self.groups))]  # the schedule's value for this step
        self.t += 1
        c1, c2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        for (p, _base), m, v, lr in zip(self.groups, self.m, self.v, lrs):
            if p.grad is None:
                continue
            g = p.grad
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            denom = (v.sqrt() / math.sqrt(c2)).add_(self.eps)
            p.addcdiv_(m, denom, value=-lr / c1)
