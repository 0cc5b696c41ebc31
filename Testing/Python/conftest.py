"""Shared pytest fixtures: data locations and small real images.

Tests that need ../shared/data skip with a reason when it is absent (a fresh clone);
everything else uses data that pip packages ship (nibabel's and nilearn's brains).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("BIJROS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def shared_data_path(*parts: str) -> Path:
    """Path under ../shared/data, skipping the calling test when it is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs the development data {path} (../shared/data is absent on a fresh clone)")
    return path


@pytest.fixture
def shared_data():
    return shared_data_path


@pytest.fixture(scope="session")
def small_brain_path() -> Path:
    """A small real T1 brain (33x41x25 voxels, 2 mm, LAS) shipped with nibabel."""
    import nibabel

    return Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"


@pytest.fixture(scope="session")
def small_brain(small_brain_path):
    from bijros.io import load_image

    return load_image(small_brain_path)
