"""Run the engine's command line in a child process, with progress, cancel and a state machine.

The child is ``python -m bijros <subcommand> ... --progress json`` where ``python`` is Slicer's
``PythonSlicer`` inside Slicer (same packages as Slicer, but a separate process, so the GUI
never freezes and GPU memory is returned when it ends), else ``sys.executable``. A reader
thread turns the child's JSON lines into progress events; :meth:`ProcessRunner.poll` hands
them to the GUI (call it from a ``qt.QTimer``), :meth:`ProcessRunner.cancel` kills the whole
process tree and :meth:`ProcessRunner.wait` blocks (console, tests).

States: ``idle`` -> ``running`` -> ``done`` | ``failed`` | (``cancelling`` ->) ``cancelled``.

Console example::

    runner = ProcessRunner()
    runner.start(["register", "--fixed", "f.nii.gz", "--moving", "m.nii.gz", "--out", "out"], workdir)
    runner.wait()          # -> "done"
    runner.result["qc"]    # the engine's final {"stage": "result", ...} line
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

IDLE, RUNNING, CANCELLING, CANCELLED, FAILED, DONE = "idle", "running", "cancelling", "cancelled", "failed", "done"
FINISHED_STATES = (CANCELLED, FAILED, DONE)
EXIT_CANCELLED = 130


def pythonExecutable() -> str:
    """Slicer's ``PythonSlicer`` inside Slicer, else the Python running this code."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    try:
        import slicer

        app = getattr(slicer, "app", None)
        if app is not None:
            binDir = Path(str(app.applicationDirPath()))  # QCoreApplication::applicationDirPath()
            for name in ("PythonSlicer", "PythonSlicer.exe"):
                if (binDir / name).is_file():
                    return str(binDir / name)
    except (ImportError, AttributeError, TypeError):
        pass
    return sys.executable


def enginePath() -> str | None:
    """The folder that holds the ``bijros`` package: the one that holds this ``BiJROSLib`` (CMake installs
    both next to the scripted modules; a source checkout has both at its root), else wherever the
    parent imports it from. The child process gets this folder on PYTHONPATH and nothing else."""
    beside = Path(__file__).resolve().parents[1]
    if (beside / "bijros" / "__init__.py").is_file():
        return str(beside)
    import importlib.util

    spec = importlib.util.find_spec("bijros")
    if spec is not None and spec.origin:
        return str(Path(spec.origin).resolve().parent.parent)
    return None


def childEnvironment() -> dict[str, str]:
    """The parent's environment with ``bijros`` importable and unbuffered output."""
    env = dict(os.environ)
    engine = enginePath()
    if engine:
        parts = [engine] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != engine]
        env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


class ProcessRunner:
    """One engine run in a child process (see the module docstring)."""

    def __init__(self, python: str | None = None):
        self.python = python or pythonExecutable()
        self.state = IDLE
        self.fraction = 0.0
        self.message = ""
        self.stage = ""
        self.etaSeconds: float | None = None
        self.error = ""
        self.result: dict | None = None
        self.returnCode: int | None = None
        self.log: list[str] = []
        self.command: list[str] = []
        self._process: subprocess.Popen | None = None
        self._events: collections.deque[dict] = collections.deque()
        self._stderr: list[str] = []
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._cancelRequested = False
        self._threads: list[threading.Thread] = []
        self.module = "bijros"

    # -------------------------------------------------------------------- public API

    def start(self, args: list[str], workdir: str | os.PathLike, module: str = "bijros") -> None:
        """Start ``python -m bijros <args> --progress json`` in ``workdir`` (returns at once).

        ``module``: another ``python -m`` module to run instead, e.g. "pip" (no JSON progress is
        expected from it: it is done when it exits with 0, its output lines go to the log).
        """
        if self.state in (RUNNING, CANCELLING):
            raise RuntimeError("This engine run is still going; cancel it or wait for it first.")
        args = [str(a) for a in args]
        self.module = module
        if module == "bijros" and "--progress" not in args:
            args += ["--progress", "json"]
        self.command = [self.python, "-m", module, *args]
        self._reset()
        kwargs: dict = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # its own process group: cancel kills the whole tree
        try:
            self._process = subprocess.Popen(
                self.command, cwd=str(workdir), env=childEnvironment(), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                bufsize=1, **kwargs,
            )
        except OSError as exc:
            self._finish(FAILED, f"Could not start the BiJROS engine ({self.python}): {exc}")
            return
        self.state = RUNNING
        starting = "starting the BiJROS engine" if module == "bijros" else f"running {module} {' '.join(args[:1])}"
        self._push({"stage": "start", "fraction": 0.0, "message": starting, "eta_s": None})
        out = threading.Thread(target=self._readStdout, name="bijros-stdout", daemon=True)
        err = threading.Thread(target=self._readStderr, name="bijros-stderr", daemon=True)
        self._threads = [out, err]
        err.start()
        out.start()

    def poll(self) -> list[dict]:
        """New progress events since the last call (non-blocking). Each is a dict with
        ``stage``, ``fraction``, ``message`` (and ``eta_s``); the last one of a run has
        ``stage`` "result" (success), "failed" or "cancelled"."""
        with self._lock:
            events = list(self._events)
            self._events.clear()
        return events

    def cancel(self) -> None:
        """Kill the child and all its children; the state goes to ``cancelled``."""
        process = self._process
        if self.state not in (RUNNING, CANCELLING) or process is None:
            return
        with self._lock:
            self._cancelRequested = True
            self.state = CANCELLING
            self.message = "cancelling"
        killProcessTree(process)

    def wait(self, timeout: float | None = None) -> str:
        """Block until the run ends (or ``timeout`` seconds pass); returns the state."""
        if self.state == IDLE:
            return self.state
        self._finished.wait(timeout)
        return self.state

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    # -------------------------------------------------------------------- internals

    def _reset(self) -> None:
        self.state, self.fraction, self.message, self.stage = IDLE, 0.0, "", ""
        self.error, self.result, self.returnCode, self.etaSeconds = "", None, None, None
        self.log, self._stderr = [], []
        self._events.clear()
        self._finished.clear()
        self._cancelRequested = False

    def _push(self, event: dict) -> None:
        with self._lock:
            self._events.append(event)
            if event.get("stage") not in ("log",):
                fraction = event.get("fraction")
                if isinstance(fraction, (int, float)):
                    self.fraction = max(self.fraction, float(fraction))
                self.message = str(event.get("message") or event.get("stage") or self.message)
                self.stage = str(event.get("stage", self.stage))
                self.etaSeconds = event.get("eta_s")

    def _readStdout(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                if not isinstance(event, dict):
                    raise ValueError
            except ValueError:
                self.log.append(line)
                self._push({"stage": "log", "fraction": None, "message": line})
                continue
            if event.get("stage") == "result":
                self.result = event
            else:
                self._push(event)
        process.stdout.close()
        self._threads[1].join()
        self.returnCode = process.wait()
        self._conclude()

    def _readStderr(self) -> None:
        process = self._process
        assert process is not None and process.stderr is not None
        for line in process.stderr:
            line = line.rstrip("\r\n")
            if line.strip():
                self._stderr.append(line)
                self.log.append(line)
        process.stderr.close()

    def _conclude(self) -> None:
        code = self.returnCode
        if self._cancelRequested or code == EXIT_CANCELLED:
            self._finish(CANCELLED, "", "cancelled")
        elif code == 0 and self.module != "bijros":
            with self._lock:
                self.fraction = 1.0
            self._finish(DONE, "", "done", {"stage": "result", "fraction": 1.0, "message": "done"})
        elif code == 0 and self.result is not None:
            result = dict(self.result)
            with self._lock:
                self.fraction = 1.0
            self._finish(DONE, "", str(result.get("message", "done")), result)
        else:
            self._finish(FAILED, summarizeError(self._stderr, code), "failed")

    def _finish(self, state: str, error: str, message: str = "", result: dict | None = None) -> None:
        event = dict(result) if result else {"stage": state, "fraction": self.fraction, "message": error or message}
        with self._lock:
            self.error = error
            self.state = state
            self.message = message or error
            self._events.append(event)
        self._finished.set()


def summarizeError(stderrLines: list[str], returnCode: int | None) -> str:
    """The engine's ``bijros: error: ...`` message, else the last line of a traceback, with a fix."""
    for line in reversed(stderrLines):
        if line.startswith("bijros: error:"):
            return line[len("bijros: error:"):].strip()
    for line in reversed(stderrLines):
        if line.startswith("bijros: "):  # argparse usage errors: "bijros: error" is caught above
            return line[len("bijros: "):].strip()
    lastLine = next((line.strip() for line in reversed(stderrLines) if line.strip()), "")
    if "ModuleNotFoundError" in lastLine or "No module named" in lastLine:
        module = lastLine.split("'")[1] if "'" in lastLine else lastLine
        return (f"The BiJROS engine needs the Python package '{module}', which is not installed. "
                "Open the BiJROS module and accept the dependency installation, or run "
                f"slicer.util.pip_install('{module}') in the Python console.")
    if returnCode is not None and returnCode < 0:
        return f"The BiJROS engine stopped unexpectedly (signal {-returnCode}); it may have run out of memory. {lastLine}".strip()
    if lastLine:
        return f"The BiJROS engine failed (exit code {returnCode}): {lastLine}"
    return f"The BiJROS engine failed (exit code {returnCode}) without a message."


def killProcessTree(process: subprocess.Popen) -> None:
    """Kill ``process`` and everything it started (its process group / job tree)."""
    if process.poll() is not None:
        return
    if os.name == "nt":
        subprocess.run(["taskkill", "/PID", str(process.pid), "/T", "/F"], capture_output=True, check=False)
    else:
        try:
            os.killpg(os.getpgid(process.pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    deadline = time.monotonic() + 5.0
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
