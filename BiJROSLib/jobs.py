"""One engine run seen from Slicer: what it was asked to make, and its child process.

``RegistrationJob`` wraps a :class:`~BiJROSLib.process.ProcessRunner` and the temporary folder
that holds the inputs exported for the engine and its outputs.
"""

from __future__ import annotations

import dataclasses
import shutil
import weakref
from pathlib import Path

from .process import CANCELLED, CANCELLING, FAILED, RUNNING, ProcessRunner


@dataclasses.dataclass
class JobRequest:
    """What a job was asked to make (kept until its results are imported)."""

    kind: str  # "registration" | "propagation" | "multi-atlas" | "ranking" | "library"
    fixedVolume: object
    movingVolume: object | None
    movingSegmentation: object | None
    outputTransform: object | None
    method: str
    createWarpedVolume: bool
    createSegmentation: bool
    createJacobian: bool
    createTransform: bool
    fixedName: str
    movingName: str
    segmentationName: str
    labelTable: object | None = None
    terminology: dict = dataclasses.field(default_factory=dict)
    warnings: list = dataclasses.field(default_factory=list)  # shown with the result (e.g. cross-contrast)
    createConfidence: bool = False  # multi-atlas: the fused labels' confidence as a volume


class ChildJob:
    """What every job run in a child process shows: the runner's state, progress, message and log."""

    state = property(lambda self: self.runner.state)
    fraction = property(lambda self: self.runner.fraction)
    message = property(lambda self: self.runner.message)
    error = property(lambda self: self.runner.error)
    result = property(lambda self: self.runner.result)
    log = property(lambda self: self.runner.log)

    @property
    def running(self) -> bool:
        return self.state in (RUNNING, CANCELLING)


class RegistrationJob(ChildJob):
    """One engine run: ``state``, ``fraction``, ``message``, ``error``, ``result``; ``poll()``,
    ``cancel()``, ``wait()``. Its temporary folder is removed when it fails, is cancelled, or
    its results have been imported by ``finishJob``."""

    runName = "BiJROS run"  # in the messages of a cancelled run

    def __init__(self, runner: ProcessRunner, workdir: Path, request: JobRequest):
        self.runner = runner
        self.workdir = Path(workdir)
        self.request = request
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(workdir), True)

    @property
    def outputDir(self) -> Path:
        return self.workdir / "out"

    def poll(self) -> list[dict]:
        """New progress events (non-blocking); removes the work files once failed/cancelled."""
        events = self.runner.poll()
        if self.state in (FAILED, CANCELLED):
            self.cleanup()
        return events

    def cancel(self) -> None:
        """Stop the engine (kills its process tree) and remove the work files."""
        self.runner.cancel()
        self.runner.wait(10)
        self.cleanup()

    def wait(self, timeout: float | None = None) -> str:
        """Block until the engine ends (or ``timeout`` s pass); returns the state."""
        state = self.runner.wait(timeout)
        if state in (FAILED, CANCELLED):
            self.cleanup()
        return state

    def cleanup(self) -> None:
        """Remove the temporary folder (inputs exported for the engine and its outputs)."""
        self._finalizer()


class InstallJob(ChildJob):
    """``python -m pip install ...`` in a child process (Slicer's ``PythonSlicer``), so the GUI stays
    responsive: the same ``state`` / ``poll()`` / ``cancel()`` / ``wait()`` as :class:`RegistrationJob`.
    ``then`` is what the panel runs when the install succeeded (e.g. the registration it was asked for)."""

    kind = "install"

    def __init__(self, runner: ProcessRunner, workdir: Path, then=None):
        self.runner = runner
        self.workdir = Path(workdir)
        self.then = then

    def poll(self) -> list[dict]:
        return self.runner.poll()

    def cancel(self) -> None:
        self.runner.cancel()
        self.runner.wait(10)

    def wait(self, timeout: float | None = None) -> str:
        return self.runner.wait(timeout)

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def startInstall(pipArguments: list[str], then=None) -> InstallJob:
    """Start ``pip <pipArguments>`` with Slicer's Python in a child process (returns at once)."""
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="BiJROS-pip-"))
    runner = ProcessRunner()
    job = InstallJob(runner, workdir, then)
    runner.start(pipArguments, workdir, module="pip")
    return job
