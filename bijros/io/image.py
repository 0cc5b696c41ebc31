"""In-memory image with its world geometry, and label tables.

Conventions
-----------
* ``array`` is indexed ``[i, j, k]`` (voxel index order, as nibabel and Slicer's
  ``arrayFromVolume`` transposed); shape ``(I, J, K)``.
* ``ijk_to_ras`` is the 4x4 matrix mapping a voxel index (i, j, k, 1) to RAS millimetres
  (the NIfTI / Slicer convention). ITK and SimpleITK use LPS: see ``io.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np


@dataclasses.dataclass
class LabelEntry:
    value: int
    name: str
    color: tuple[float, float, float]  # RGB in [0, 1]


@dataclasses.dataclass
class LabelTable:
    """Label value -> name and colour (a Slicer colour table / FreeSurfer LUT in memory)."""

    entries: dict[int, LabelEntry] = dataclasses.field(default_factory=dict)

    def __iter__(self) -> Iterator[LabelEntry]:
        return iter(sorted(self.entries.values(), key=lambda e: e.value))

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, value: int) -> bool:
        return int(value) in self.entries

    def name(self, value: int) -> str:
        entry = self.entries.get(int(value))
        return entry.name if entry else f"Label {int(value)}"

    def color(self, value: int) -> tuple[float, float, float]:
        entry = self.entries.get(int(value))
        return entry.color if entry else default_color(int(value))

    def add(self, value: int, name: str, color: tuple[float, float, float] | None = None) -> None:
        self.entries[int(value)] = LabelEntry(int(value), name, color or default_color(int(value)))

    def subset(self, values: list[int]) -> LabelTable:
        table = LabelTable()
        for v in values:
            table.add(v, self.name(v), self.color(v))
        return table


def remap_values(array: np.ndarray, keys, values, default: int = 0) -> np.ndarray:
    """``array`` with each value in ``keys`` (ascending) replaced by the matching ``values`` entry and every
    other value by ``default`` (a sorted lookup, one pass; same shape)."""
    keys, values = np.asarray(keys), np.asarray(values)
    index = np.clip(np.searchsorted(keys, array), 0, len(keys) - 1)
    return np.where(keys[index] == array, values[index], default)


def default_color(value: int) -> tuple[float, float, float]:
    """A stable, well-spread colour for a label value without one (golden-angle hues)."""
    if value == 0:
        return (0.0, 0.0, 0.0)
    import colorsys

    hue = (value * 0.618033988749895) % 1.0
    return colorsys.hsv_to_rgb(hue, 0.65, 0.95)


@dataclasses.dataclass
class Image:
    """A 3D image (or label map) and its voxel-to-RAS geometry."""

    array: np.ndarray
    ijk_to_ras: np.ndarray
    label_table: LabelTable | None = None
    name: str = ""

    def __post_init__(self) -> None:
        self.ijk_to_ras = np.asarray(self.ijk_to_ras, dtype=np.float64).reshape(4, 4)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape[:3])  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along i, j, k."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def is_label_map(self) -> bool:
        return self.array.dtype.kind in "iub"

    def corners_ras(self) -> np.ndarray:
        """The 8 corner voxel centres in RAS, shape (8, 3)."""
        n = np.array(self.shape) - 1
        ijk = np.array([[a, b, c] for a in (0, n[0]) for b in (0, n[1]) for c in (0, n[2])], float)
        return ijk @ self.ijk_to_ras[:3, :3].T + self.ijk_to_ras[:3, 3]

    def same_grid(self, other: Image, tol: float = 1e-3) -> bool:
        return self.shape == other.shape and np.allclose(self.ijk_to_ras, other.ijk_to_ras, atol=tol)
