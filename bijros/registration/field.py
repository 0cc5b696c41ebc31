"""Total mapping on the fixed grid: composition, resampling of images and labels, Jacobian QC.

The total mapping is ``phi(x) = A @ (x + u(x))`` for fixed RAS points ``x``: ``u`` is the
deformable displacement (RAS mm) on its own (coarse, axis-aligned) grid and ``A`` the
fixed->moving affine.
The stored displacement is ``phi(x) - x`` on a *displacement grid*: the fixed image's grid, or one
``factor`` times coarser along each axis whose nodes are every ``factor``-th fixed voxel centre and
which covers all of them (:func:`displacement_grid`). The mapping at full resolution is by
definition the trilinear interpolation of that field (:func:`upsample_displacement`), which is what
ITK, ANTs and Slicer compute from the written file, so the warped image, the labels and the Jacobian
use exactly the mapping the file holds. The Jacobian is evaluated at the displacement grid's nodes: there,
central differences of the interpolated field (over one fixed voxel) equal those of the coarse field (over
one node), so it is the full-resolution Jacobian read at every ``factor``-th voxel.
"""

from __future__ import annotations

import numpy as np
import torch

from bijros.io.image import Image
from bijros.registration.grid import Grid, sample, slab_points


def total_displacement(
    fixed_grid: Grid, affine: np.ndarray, field_mm: torch.Tensor | None, field_grid: Grid | None, device="cpu"
) -> torch.Tensor:
    """``phi(x) - x`` in RAS mm on ``fixed_grid``: (I, J, K, 3) float32, slab by slab along i.

    ``field_mm`` (1, 3, X, Y, Z) is the deformable displacement on ``field_grid`` (None: affine only).
    """
    a = torch.as_tensor(affine, dtype=torch.float32, device=device)
    out = torch.empty((*fixed_grid.shape, 3), dtype=torch.float32, device=device)
    for s, e, x in slab_points(fixed_grid, 2_000_000, device):
        y = x
        if field_mm is not None and field_grid is not None:
            u = sample(field_mm[0], field_grid, x, padding_mode="border")  # (3, slab, J, K)
            y = x + u.permute(1, 2, 3, 0)
        out[s:e] = y @ a[:3, :3].T + a[:3, 3] - x
    return out


def displacement_factor(fixed_spacing: np.ndarray, field_mm: float | None) -> int:
    """Coarsening of the written field: 2 when the deformable field lives on a grid at least twice as
    coarse as the fixed voxels (the default 2 mm field on 1 mm scans), else 1 (full resolution)."""
    if field_mm is None:  # affine only: a linear field, exactly reproduced from any grid
        return 2 if min(fixed_spacing) * 2 <= 8.0 else 1
    return 2 if field_mm >= 2 * float(max(fixed_spacing)) - 1e-6 else 1


def displacement_grid(fixed_grid: Grid, factor: int) -> Grid:
    """The fixed grid with every ``factor``-th voxel centre as nodes, covering all fixed voxel centres."""
    if factor == 1:
        return fixed_grid
    shape = tuple(-(-(n - 1) // factor) + 1 for n in fixed_grid.shape)
    scale = np.diag([factor, factor, factor, 1.0])
    return Grid(shape, fixed_grid.ijk_to_ras @ scale)  # type: ignore[arg-type]


def at_nodes(array: np.ndarray, factor: int, grid_shape: tuple[int, int, int]) -> np.ndarray:
    """``array`` on the fixed grid read at the nodes of :func:`displacement_grid` (every ``factor``-th
    voxel; a last node past the image repeats the last voxel): shape ``grid_shape``."""
    if factor == 1:
        return array
    idx = [np.minimum(np.arange(n) * factor, size - 1) for n, size in zip(grid_shape, array.shape)]
    return array[np.ix_(*idx)]


def upsample_displacement(coarse: torch.Tensor, factor: int, shape: tuple[int, int, int],
                          start: int = 0, end: int | None = None) -> torch.Tensor:
    """Trilinear interpolation of a (I', J', K', 3) field on :func:`displacement_grid` at the fixed
    voxels ``[start, end)`` along i: (end - start, J, K, 3). Separable, so exact and cheap."""
    if factor == 1:
        return coarse[start:end]
    end = shape[0] if end is None else end
    out = coarse
    for axis, (lo, hi) in enumerate(((start, end), (0, shape[1]), (0, shape[2]))):
        pos = torch.arange(lo, hi, device=coarse.device, dtype=torch.float32) / factor
        i0 = torch.floor(pos).long().clamp(max=out.shape[axis] - 1)
        i1 = (i0 + 1).clamp(max=out.shape[axis] - 1)
        w = (pos - i0.float()).view([-1 if a == axis else 1 for a in range(4)])
        out = torch.index_select(out, axis, i0) * (1 - w) + torch.index_select(out, axis, i1) * w
    return out


class DenseField:
    """``phi(x) - x`` at the fixed voxels, produced slab by slab along i from the written field (a
    (I', J', K', 3) tensor on :func:`displacement_grid` with ``factor``): the full-resolution field is
    never held whole. A plain (I, J, K, 3) array or tensor is a field with ``factor`` 1."""

    def __init__(self, field, factor: int = 1, shape: tuple[int, int, int] | None = None):
        self.field = torch.as_tensor(field, dtype=torch.float32)
        self.factor = int(factor)
        self.shape = tuple(shape) if shape is not None else tuple(self.field.shape[:3])
        self.device = self.field.device

    def slab(self, start: int, end: int) -> torch.Tensor:
        return upsample_displacement(self.field, self.factor, self.shape, start, end)

    def chunk(self) -> int:
        """Slab thickness keeping a slab near 1 M voxels, at least 2 slices: temporaries stay below glibc's
        mmap threshold, so they are reused instead of being faulted in afresh per slab."""
        return max(2, min(self.shape[0], 1_000_000 // max(1, self.shape[1] * self.shape[2])))


def _as_field(displacement) -> DenseField:
    return displacement if isinstance(displacement, DenseField) else DenseField(displacement)


def source_ijk_slabs(source_ijk_to_ras: np.ndarray, fixed_grid: Grid, displacement, chunk: int | None = None):
    """Yield ``(start, end, ijk)``: source-image voxel coordinates (end - start, J, K, 3) of the fixed
    voxels of slabs ``[start, end)`` along i, sampled at ``x + displacement(x)``.

    ``ijk_src = R (M ijk_fixed + t + d)``: the fixed grid's matrix is folded into one affine, so no
    full-size array of world points is ever built.
    """
    field = _as_field(displacement)
    chunk = chunk or field.chunk()
    dev = field.device
    ras_to_ijk = torch.as_tensor(np.linalg.inv(source_ijk_to_ras), dtype=torch.float32, device=dev)
    m = torch.as_tensor(fixed_grid.ijk_to_ras, dtype=torch.float32, device=dev)
    lin = ras_to_ijk[:3, :3] @ m[:3, :3]
    off = ras_to_ijk[:3, :3] @ m[:3, 3] + ras_to_ijk[:3, 3]
    ni, nj, nk = fixed_grid.shape
    jj, kk = torch.meshgrid(torch.arange(nj, device=dev, dtype=torch.float32),
                            torch.arange(nk, device=dev, dtype=torch.float32), indexing="ij")
    plane = jj[..., None] * lin[:, 1] + kk[..., None] * lin[:, 2] + off  # (J, K, 3): the same on every slice
    for s in range(0, ni, chunk):
        e = min(s + chunk, ni)
        ii = torch.arange(s, e, device=dev, dtype=torch.float32)[:, None] * lin[:, 0]  # (slab, 3)
        out = field.slab(s, e) @ ras_to_ijk[:3, :3].T
        out += plane
        out += ii[:, None, None, :]
        yield s, e, out


def warp_image(moving: Image, fixed_grid: Grid, displacement, chunk: int | None = None) -> np.ndarray:
    """Trilinear resampling of ``moving`` at ``x + displacement`` (a :class:`DenseField` or an (I, J, K, 3)
    array; slab by slab to bound memory; 0 outside)."""
    return warp_volumes(fixed_grid, displacement, image=moving, chunk=chunk)[0]


def warp_labels(labels: Image, fixed_grid: Grid, displacement, chunk: int | None = None) -> np.ndarray:
    """Label resampling equal to trilinear one-hot interpolation + argmax (see :class:`LabelVote`)."""
    return warp_volumes(fixed_grid, displacement, labels=labels, chunk=chunk)[1]


def warp_volumes(fixed_grid: Grid, displacement, image: Image | None = None, labels: Image | None = None,
                 chunk: int | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(warped image, warped labels)`` (None for what is not given) in one pass over the slabs when both
    sources share a grid (the sampling points are computed once), else one pass each."""
    if image is not None and labels is not None and not labels.same_grid(image):
        return warp_volumes(fixed_grid, displacement, image=image, chunk=chunk)[0], \
            warp_volumes(fixed_grid, displacement, labels=labels, chunk=chunk)[1]
    field = _as_field(displacement)
    dev = field.device
    source = image if image is not None else labels
    if source is None:
        return None, None
    warped = vol = size = vote = warped_labels = None
    if image is not None:
        vol = torch.as_tensor(np.asarray(image.array, dtype=np.float32), device=dev)[None, None]
        size = torch.tensor([max(n - 1, 1) for n in image.shape], device=dev, dtype=torch.float32)
        warped = torch.empty(fixed_grid.shape, dtype=torch.float32, device=dev)
    if labels is not None:
        vote = LabelVote(np.asarray(labels.array), dev)
        warped_labels = torch.zeros(fixed_grid.shape, dtype=torch.int32, device=dev)
    for s, e, ijk in source_ijk_slabs(source.ijk_to_ras, fixed_grid, field, chunk):
        if vol is not None:
            coords = (2.0 * ijk / size - 1.0).flip(-1)  # grid_sample order (k, j, i), align_corners=True
            warped[s:e] = torch.nn.functional.grid_sample(vol, coords[None], mode="bilinear", padding_mode="zeros",
                                                          align_corners=True)[0, 0]
        if vote is not None:
            warped_labels[s:e] = vote(ijk.reshape(-1, 3)).view(ijk.shape[:3])
    return (warped.cpu().numpy() if warped is not None else None,
            warped_labels.cpu().numpy() if warped_labels is not None else None)


class LabelVote:
    """Labels at fractional source voxel coordinates, equal to trilinear one-hot interpolation + argmax
    without one-hot volumes: the 8 surrounding source voxels vote with their trilinear weights and the
    label with the largest summed weight wins (0 outside the source). Cubes of 8 voxels that hold one
    label (most of them) are found once, up front, and their voxels skip the vote."""

    CORNERS = tuple(((c >> 2) & 1, (c >> 1) & 1, c & 1) for c in range(8))

    def __init__(self, array: np.ndarray, device):
        src = torch.as_tensor(np.asarray(array, dtype=np.int32), device=device)
        padded = torch.nn.functional.pad(src, (1, 1, 1, 1, 1, 1))  # zero border: outside reads label 0
        ps = padded.shape
        uniform = torch.zeros(ps, dtype=torch.bool, device=device)  # cube with corner (a, b, c) holds one label
        inner = uniform[:-1, :-1, :-1]
        inner.fill_(True)
        low = padded[:-1, :-1, :-1]
        for di, dj, dk in self.CORNERS[1:]:
            inner &= low == padded[di:ps[0] - 1 + di, dj:ps[1] - 1 + dj, dk:ps[2] - 1 + dk]
        self.flat, self.uniform = padded.reshape(-1), uniform.reshape(-1)
        self.n = torch.tensor(src.shape, device=device, dtype=torch.int32)
        self.strides = torch.tensor([ps[1] * ps[2], ps[2], 1], device=device, dtype=torch.int32)
        corners = torch.tensor(self.CORNERS, device=device, dtype=torch.int32)
        self.offsets = (corners * self.strides).sum(-1, dtype=torch.int32)

    def __call__(self, ijk: torch.Tensor) -> torch.Tensor:
        """(N,) int32 labels at (N, 3) source voxel coordinates."""
        base = torch.floor(ijk)
        ib = base.int()  # int32 indices: half the memory traffic of int64, ample for any volume
        far = ((ib < -1) | (ib > self.n - 1)).any(-1)
        ib += 1
        torch.minimum(ib.clamp_(min=0), self.n, out=ib)
        first = (ib * self.strides).sum(-1, dtype=torch.int32)
        result = torch.where(far, 0, self.flat[first])
        mixed = torch.nonzero(~(self.uniform[first] | far))[:, 0]
        if mixed.numel():
            lm = self.flat[first[mixed, None] + self.offsets]  # (M, 8)
            f = ijk[mixed] - base[mixed]
            wi, wj, wk = (torch.stack([1 - f[:, a], f[:, a]], 1) for a in range(3))  # (M, 2) per axis
            w = (wi[:, :, None, None] * wj[:, None, :, None] * wk[:, None, None, :]).reshape(-1, 8)  # CORNERS order
            score = torch.zeros_like(w)  # score[c]: the summed weight of the corners holding corner c's label
            for c in range(8):
                score += (lm == lm[:, c:c + 1]) * w[:, c:c + 1]
            result[mixed] = torch.gather(lm, 1, score.argmax(1, keepdim=True))[:, 0]
        return result


def jacobian_determinant(displacement, ijk_to_ras: np.ndarray, chunk: int | None = None) -> np.ndarray:
    """det(d phi / d x) for phi(x) = x + displacement(x), on a grid with ``ijk_to_ras``.

    Central differences in index space (one-sided at the borders, as ``torch.gradient``), converted
    to physical derivatives with the inverse of the grid's 3x3 direction-spacing matrix; computed
    slab by slab along i (one voxel of overlap), so memory stays small on large images.
    ``displacement``: a :class:`DenseField` or an (I, J, K, 3) array. Returns (I, J, K) float32.
    """
    field = _as_field(displacement)
    chunk = chunk or field.chunk()
    inv = torch.as_tensor(np.linalg.inv(ijk_to_ras[:3, :3]), dtype=torch.float32, device=field.device)
    n = field.shape[0]
    out = np.empty(field.shape, np.float32)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        lo, hi = max(s - 1, 0), min(e + 1, n)
        d = field.slab(lo, hi)
        g0 = torch.gradient(d, dim=0)[0] if d.shape[0] > 1 else torch.zeros_like(d)
        g1, g2 = torch.gradient(d, dim=(1, 2))
        grads = torch.stack([g0, g1, g2], dim=-1)[s - lo:s - lo + (e - s)]  # (slab, J, K, 3 comp, 3 ijk)
        j = grads @ inv + torch.eye(3, device=d.device)
        # explicit 3x3 determinant: much faster than batched linalg.det on millions of small matrices
        det = (
            j[..., 0, 0] * (j[..., 1, 1] * j[..., 2, 2] - j[..., 1, 2] * j[..., 2, 1])
            - j[..., 0, 1] * (j[..., 1, 0] * j[..., 2, 2] - j[..., 1, 2] * j[..., 2, 0])
            + j[..., 0, 2] * (j[..., 1, 0] * j[..., 2, 1] - j[..., 1, 1] * j[..., 2, 0])
        )
        out[s:e] = det.cpu().numpy()
    return out


def folding_stats(jac: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Folding fraction (|J| <= 0) and SDlogJ (std of log J, J clipped at 1e-9)."""
    values = jac[mask] if mask is not None else jac.ravel()
    log_j = np.log(np.clip(values, 1e-9, None))
    return {
        "folding_fraction": float(np.mean(values <= 0)),
        "sdlogj": float(np.std(log_j)),
        "jacobian_min": float(values.min()),
        "jacobian_max": float(values.max()),
    }
