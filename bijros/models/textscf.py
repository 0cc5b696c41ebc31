"""TextSCF head on the EOIR backbone: spatially covariant flow filters generated from region embeddings
(after Zhang et al., "Spatially Covariant Image Registration with Text Prompts").

Every level of :class:`bijros.models.eoir.EOIR` has a flow estimator whose hidden features ``h`` (B, C, ...)
end in a plain convolution to 3 flow channels. Here each region ``r`` of a region map on the fixed image also
gets, per level, a (3, C) filter ``W_r`` made from the region's embedding ``e_r`` by one MLP (d -> hidden ->
levels * 3 * C, its last layer zero-initialised, so a fresh head adds nothing and the model starts as its
backbone), and the level's refinement becomes ``conv(h)(x) + W_{r(x)} h(x)``: regions with related names get
related filters, and the flow can change character across region boundaries.

``embedding``:
* ``"text"``: ``e_r`` are text embeddings of the region names (:mod:`bijros.text.regions`), set for each
  label table with :meth:`TextSCF.set_regions`; any label table works at inference.
* ``"learned"``: the ablation without text: a learnable (num_regions, d) table for the training regions
  (``region_names``); a new label table is mapped onto them (:func:`bijros.registration.text.region_lut`).

Shapes: ``forward(fixed, moving, regions)`` with fixed, moving (B, 1, D, H, W) and regions (B, 1, D, H, W)
int64 row indices (0 = background); without ``regions`` it is the plain backbone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bijros.models.eoir import EOIR


class TextSCF(EOIR):
    """EOIR with the spatially covariant head. Extra arguments (the rest are EOIR's):

    embedding: "text" or "learned" (see the module docstring); embed_dim: the embedding width (384 for MiniLM);
    mlp_hidden: the filter MLP's hidden width; region_names: the training regions, row order (row 0 background);
    num_regions: rows of the learned table (default: len(region_names)).
    """

    uses_regions = True

    def __init__(self, embedding: str = "text", embed_dim: int = 384, mlp_hidden: int = 256,
                 region_names: list[str] | None = None, num_regions: int | None = None, **backbone):
        super().__init__(**backbone)
        if embedding not in ("text", "learned"):
            raise ValueError(f"embedding must be 'text' or 'learned', got {embedding!r}")
        self.embedding = embedding
        self.region_names = list(region_names or [])
        hidden = self.heads[0].out.in_channels
        self.filter_shape = (self.levels, 3, hidden)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, mlp_hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(mlp_hidden, self.levels * 3 * hidden))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        if embedding == "learned":
            rows = num_regions or len(self.region_names)
            if rows < 1:
                raise ValueError("a learned region table needs num_regions or region_names")
            self.table = nn.Parameter(torch.randn(rows, embed_dim) / embed_dim ** 0.5)
        else:
            self.register_buffer("table", torch.zeros(0, embed_dim), persistent=False)

    def set_regions(self, table: torch.Tensor) -> None:
        """The text variant's region embeddings (R, d) for the label table the region maps index."""
        if self.embedding != "text":
            raise ValueError("only the text variant takes region embeddings; the learned one has its own table")
        self.table = table.to(self.mlp[0].weight.device, torch.float32)

    def filters(self) -> torch.Tensor:
        """(R, levels, 3, C) per-region filters."""
        if self.table.shape[0] == 0:
            raise ValueError("no region embeddings: call set_regions(table) first")
        return self.mlp(self.table).view(self.table.shape[0], *self.filter_shape)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor, regions: torch.Tensor | None = None) -> torch.Tensor:
        if regions is None:
            return super().forward(fixed, moving)
        if fixed.shape != moving.shape or fixed.dim() != 5 or regions.shape[2:] != fixed.shape[2:]:
            raise ValueError(f"fixed {tuple(fixed.shape)}, moving {tuple(moving.shape)} and regions "
                             f"{tuple(regions.shape)} must be (B, 1, D, H, W) on one grid")
        filters = self.filters()
        if int(regions.max()) >= filters.shape[0] or int(regions.min()) < 0:
            raise ValueError(f"region indices must lie in 0..{filters.shape[0] - 1}")

        def refine(level, y, warped, flow):
            head = self.heads[level]
            hidden = head.hidden(y, warped, flow)
            index = F.interpolate(regions.float(), size=tuple(y.shape[2:]), mode="nearest")[:, 0].long()  # (B, ...)
            local = filters[:, level][index]  # (B, D, H, W, 3, C): each voxel its region's filter
            return head.out(hidden) + torch.einsum("bxyzdc,bcxyz->bdxyz", local, hidden.to(local.dtype))

        return self.coarse_to_fine(fixed, moving, refine)
