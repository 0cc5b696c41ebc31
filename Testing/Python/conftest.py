"""Shared pytest fixtures: data locations and small real images.

Tests that need ../shared/data skip with a reason when it is absent (a fresh clone);
everything else uses data that pip packages ship (nibabel's and nilearn's brains).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("BIJROS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def shared_data_path(*parts: str) -> Path:
    """Path under ../shared/data, skipping the calling test when it is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs the development data {path} (../shared/data is absent on a fresh clone)")
    return path


def rotation(axis: int, degrees: float) -> np.ndarray:
    """4x4 rotation by ``degrees`` about voxel/world axis 0, 1 or 2 (for test geometries)."""
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    r = np.eye(4)
    r[i, i] = r[j, j] = c
    r[i, j], r[j, i] = -s, s
    return r


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



@contextlib.contextmanager
def mrml_scene_context():
    """A real MRML scene (slicer-core) set up as Slicer's startup does, set as ``slicer.mrmlScene``.

    Application logic, subject hierarchy, default colour nodes, segmentation converter rules and
    the transform / segmentation / volumes module logics; the previous ``slicer.mrmlScene`` is
    restored on exit.
    """
    slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")
    scene = slicer.vtkMRMLScene()
    appLogic = slicer.vtkSlicerApplicationLogic()
    appLogic.SetMRMLScene(scene)
    logics = [appLogic]
    for cls in (slicer.vtkSlicerSubjectHierarchyModuleLogic, slicer.vtkSlicerColorLogic,
                slicer.vtkSlicerSegmentationsModuleLogic, slicer.vtkSlicerTransformLogic,
                slicer.vtkSlicerVolumesLogic):
        logic = cls()
        logic.SetMRMLApplicationLogic(appLogic)
        logic.SetMRMLScene(scene)
        logics.append(logic)
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if not factory.GetConverterRules():
        for rule in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
                     slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule):
            factory.RegisterConverterRule(rule())
    scene.GetSubjectHierarchyNode()
    previous = getattr(slicer, "mrmlScene", None)
    slicer.mrmlScene = scene
    try:
        yield scene
    finally:
        slicer.mrmlScene = previous
        scene.Clear(True)
        del logics


@pytest.fixture
def mrml_scene():
    """``mrml_scene_context()`` as a fixture."""
    with mrml_scene_context() as scene:
        yield scene


def pytest_unconfigure(config):
    """Leave without the interpreter's teardown once pytest has reported everything (its exit status kept).

    With many Qt widgets (PySide6) and VTK objects (slicer-core) alive, the interpreter's final garbage
    collection can abort in one of those C extensions ("none_dealloc: deallocating None"), after every test
    has passed and been reported; real Slicer (PythonQt) never runs that teardown. The exit status is the one
    pytest computed, so a failed test still fails the run.
    """
    import sys

    session = getattr(config, "_bijros_session", None)
    if session is None or os.environ.get("BIJROS_TEST_TEARDOWN") == "1":
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(session.exitstatus))


def pytest_sessionstart(session):
    session.config._bijros_session = session
