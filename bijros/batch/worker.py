"""A batch worker: one long-lived process that runs job after job as the single commands do.

Each job is the same ``bijros.cli.main`` call a single command makes (same checks, same files, same
report.json), inside a process that has imported torch once and keeps what it has read
(:mod:`bijros.memo`: atlases, label maps; the learned models are kept by their own loaders). Its
messages are kept for the summary instead of being printed. A worker dies with its parent
(Linux: ``PR_SET_PDEATHSIG``), so a killed batch leaves no job running behind it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import time
import traceback
from pathlib import Path


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the worker notices the closed pipe after its job
        pass


def worker_main(conn, threads: int) -> None:
    """Serve jobs from ``conn`` until it sends None or closes."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the coordinator, which ends the workers
    os.environ["BIJROS_NUM_THREADS"] = str(threads)
    from bijros import memo
    from bijros.allocator import keep_freed_memory
    from bijros.device import configure_threads

    keep_freed_memory()
    configure_threads()
    memo.enable()
    import bijros.cli  # noqa: F401  (imported before the first job, not during it)

    conn.send({"ready": os.getpid()})
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        conn.send(run_job(message["job"], message["batch_out"], message["device"]))


def run_job(job: dict, batch_out: str, device: str) -> dict:
    """Run one job (a :class:`~bijros.batch.manifest.Job` as a dict); returns and records its result."""
    from bijros import timing
    from bijros.batch.records import output_files, write_record
    from bijros.cli import main

    argv = list(job["argv"])
    if "--device" not in argv:
        argv += ["--device", device]
    argv += ["--progress", "none"]
    out, err = io.StringIO(), io.StringIO()
    timing.start_job()
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 2
    except Exception as exc:  # an engine bug must not stop the batch: the job fails with the reason
        code = 1
        err.write(f"bijros: error: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}")
    result = job_result(job, seconds=round(time.perf_counter() - t0, 3), pid=os.getpid())
    if code == 0:
        result.update(status="ok", message="", **_figures(job))
        result["files"] = output_files(job["out"])
    else:
        result.update(status="failed", message=f"line {job['line']}: {_reason(err.getvalue(), code)}")
    write_record(batch_out, job["name"], result)
    return result


def job_result(job: dict, **fields) -> dict:
    """A job's record: what identifies the job (its completeness is checked against these), plus ``fields``."""
    return {"job": job["name"], "line": job["line"], "kind": job["kind"], "argv": job["argv"],
            "reference": job["reference"], "out": job["out"], **fields}


def _reason(stderr: str, code: int) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("bijros: error:", "bijros: cancelled:")):
            return ln.split(":", 2)[2].strip()
    return lines[-1] if lines else f"exit code {code}"


def _figures(job: dict) -> dict:
    """QC from the job's report.json, and the mean Dice against the row's reference."""
    figures: dict = {"folding_percent": None, "sdlogj": None, "dice": None}
    try:
        report = json.loads((Path(job["out"]) / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        report = {}
    qc = report.get("qc") or {}
    if "folding_fraction" in qc:
        figures["folding_percent"] = round(100 * float(qc["folding_fraction"]), 4)
    if "sdlogj" in qc:
        figures["sdlogj"] = round(float(qc["sdlogj"]), 4)
    if job.get("reference"):
        figures["dice"] = _dice(Path(job["out"]) / "labels.nii.gz", job["reference"])
    return figures


def _dice(pred_path: Path, truth_path: str):
    from bijros.errors import BijrosError
    from bijros.io import load_image
    from bijros.metrics import evaluate_labels

    try:
        pred = load_image(pred_path, label_map=True)
        truth = load_image(truth_path, label_map=True)
    except BijrosError as exc:
        return f"not measured: {exc}"
    if pred.shape != truth.shape:
        return f"not measured: the reference {truth.shape} is not on the result's grid {pred.shape}"
    return round(evaluate_labels(pred.array, truth.array, truth.spacing, with_hd95=False)["mean_dice"], 4)
