"""Splitting a batch over torchrun ranks: deterministic and balanced by image size.

Every rank computes the same split from the same manifest (no messages needed): jobs are taken largest
first (ties by manifest line) and each goes to the rank with the least work so far (ties: the lowest rank),
the longest-processing-time rule. Work is the main input's voxel count (read from the header), times the
number of atlases for a library propagation.
"""

from __future__ import annotations

import os
from pathlib import Path

LIBRARY_FACTOR = 10  # a library propagation registers several atlases: count it as this many pairs


def voxels(path: str | None) -> int:
    """Voxel count from the image header (NIfTI via nibabel, NRRD/MHA via SimpleITK), else the file's bytes."""
    if not path:
        return 1
    p = Path(path.split("::")[0])
    try:
        name = p.name.lower()
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            shape = nib.load(str(p)).header.get_data_shape()
        elif name.endswith((".nrrd", ".nhdr", ".mha", ".mhd")):
            import SimpleITK as sitk

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(p))
            reader.ReadImageInformation()
            shape = reader.GetSize()
        elif p.is_dir():
            return sum(1 for _ in os.scandir(p)) * 512 * 512
        else:
            return max(1, p.stat().st_size)
        n = 1
        for s in shape[:3]:
            n *= int(s)
        return max(1, n)
    except Exception:  # unreadable headers are the job's own error to report; here it only weighs
        return 1


def job_work(job) -> int:
    work = voxels(job.main_input)
    return work * LIBRARY_FACTOR if "--atlas-library" in job.argv else work


def shard(works: list[int], ranks: int) -> list[list[int]]:
    """Indices of ``works`` for each rank: a partition (each index exactly once), balanced greedily."""
    if ranks < 1:
        raise ValueError("ranks must be >= 1")
    loads = [0] * ranks
    parts: list[list[int]] = [[] for _ in range(ranks)]
    for i in sorted(range(len(works)), key=lambda i: (-works[i], i)):
        r = min(range(ranks), key=lambda r: (loads[r], r))
        parts[r].append(i)
        loads[r] += works[i]
    return parts
