"""Self-supervised few-shot episodes from synthetic volumes (no real scans, no manual labels).

Each batch takes one synthetic volume of :class:`bijros.training.synth.SynthGenerator` (a SynthSeg label map,
randomly deformed and painted with random contrasts, so the network never sees a real contrast), one slice
direction, and for each episode one structure of the map as the pseudo-class (as GMRD uses supervoxels): the
support is one slice through it with its mask, the query a nearby slice (1 to ``max_offset`` slices away) with
its mask. Shapes: ``support``, ``support_mask``, ``query``, ``query_mask`` (B, 1, H, W) float32, masks 0/1.
"""

from __future__ import annotations

import torch

from bijros.errors import InputError


class SliceEpisodes:
    def __init__(self, generator, max_offset: int = 3, min_pixels: int = 12, tries: int = 50):
        self.gen = generator
        self.max_offset = max_offset
        self.min_pixels = min_pixels
        self.tries = tries

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.gen.gen, device=self.gen.device))

    def sample(self, batch: int = 4) -> dict[str, torch.Tensor]:
        for _ in range(self.tries):
            volume = self.gen.sample(1)
            axis = self._randint(3)
            image = volume["fixed"][0, 0].movedim(axis, 0)  # (N, h, w)
            labels = volume["fixed_labels"][0, 0].movedim(axis, 0)
            classes = [int(c) for c in torch.unique(labels) if int(c) > 0]
            picked = [p for p in (self._episode(image, labels, classes) for _ in range(batch * 4)) if p][:batch]
            if len(picked) == batch:
                return {k: torch.stack([p[k] for p in picked])[:, None] for k in picked[0]}
        raise InputError("the label maps give no structure large enough for few-shot episodes; use larger crops")

    def _episode(self, image: torch.Tensor, labels: torch.Tensor, classes: list[int]) -> dict | None:
        if not classes:
            return None
        c = classes[self._randint(len(classes))]
        area = (labels == c).flatten(1).sum(1)  # pixels per slice
        slices = torch.nonzero(area >= self.min_pixels)[:, 0]
        if slices.numel() < 2:
            return None
        s = int(slices[self._randint(slices.numel())])
        offset = 1 + self._randint(self.max_offset)
        q = s + offset if self._randint(2) else s - offset
        if not 0 <= q < labels.shape[0] or int(area[q]) < self.min_pixels // 2:
            return None
        return {"support": image[s], "support_mask": (labels[s] == c).float(),
                "query": image[q], "query_mask": (labels[q] == c).float()}
