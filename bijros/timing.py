"""Seconds per stage of a run, from process start to the last file written (report.json "seconds").

``process_age()`` is the time since the operating system started this process (Linux: /proc;
elsewhere: since bijros was first imported), so "startup" counts the interpreter and the
imports before ``main`` too. In a long-lived worker (``bijros batch``) each job starts the clock afresh
(:func:`start_job`): its "startup" is then 0 and "wall" runs from the job's start.
"""

from __future__ import annotations

import contextlib
import os
import time

_IMPORTED = time.perf_counter()
_JOB_START: float | None = None


def start_job() -> None:
    """From now on :func:`process_age` counts from this moment (a batch worker's next job)."""
    global _JOB_START
    _JOB_START = time.perf_counter()


def process_age() -> float:
    """Seconds since this process started (or since bijros was imported where /proc is missing), or since
    :func:`start_job` in a batch worker."""
    if _JOB_START is not None:
        return time.perf_counter() - _JOB_START
    try:
        with open(f"/proc/{os.getpid()}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        start_ticks = float(fields[19])  # field 22 of stat: start time in clock ticks after boot
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter() - _IMPORTED


class Stages:
    """An ordered record ``{stage: seconds}``; ``with stages("warp"): ...`` adds to one."""

    def __init__(self, seconds: dict[str, float] | None = None):
        self.seconds: dict[str, float] = dict(seconds or {})

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}
