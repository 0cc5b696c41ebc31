"""What a batch knows of each job between runs: ``OUT/.bijros-batch/<job>.json``, written when the job ends.

A job counts as complete (and is skipped on a rerun) when its record says ``ok`` for the same command
line and reference, and every file it wrote is still there with the size recorded. Anything less (no
record, a failure, a crash halfway, a file removed or changed since) and the job runs again; the single
commands write their folders all or nothing, so a rerun never mixes two runs' files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

RECORDS = ".bijros-batch"


def record_path(batch_out, name: str) -> Path:
    return Path(batch_out) / RECORDS / f"{name}.json"


def output_files(out: str) -> dict[str, int]:
    """The job folder's output files (those the single commands write) and their sizes."""
    from bijros.io.outputs import OUTPUT_FILES

    folder = Path(out)
    return {name: (folder / name).stat().st_size for name in OUTPUT_FILES if (folder / name).is_file()}


def write_record(batch_out, name: str, record: dict) -> None:
    path = record_path(batch_out, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_record(batch_out, name: str) -> dict | None:
    try:
        return json.loads(record_path(batch_out, name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def complete(batch_out, job) -> dict | None:
    """The job's record when its outputs from an earlier run are complete, else None."""
    record = read_record(batch_out, job.name)
    if not record or record.get("status") != "ok" or record.get("argv") != job.argv:
        return None
    if record.get("reference") != job.reference:
        return None
    files = record.get("files") or {}
    if "report.json" not in files:
        return None
    try:
        if any((Path(job.out) / name).stat().st_size != size for name, size in files.items()):
            return None
    except OSError:
        return None
    return record
