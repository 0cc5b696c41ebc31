"""``bijros batch``: run a manifest's jobs with long-lived workers, resumably, on one machine or under torchrun.

One coordinator per torchrun rank (one in all without torchrun) takes its shard of the manifest
(:mod:`.shard`), skips the jobs already complete (:mod:`.records`), and hands the rest, largest first,
to ``--jobs-per-device`` worker processes on its device (:mod:`.worker`): the rank's local GPU
(``cuda:LOCAL_RANK``), else the CPU, whose cores are split between the workers of the machine. A worker
that dies (out of memory, a crash) fails its job only and is replaced. When every rank is done, rank 0
gathers the results over torch.distributed (gloo) and writes ``summary.csv``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import multiprocessing
import multiprocessing.connection
import os
import signal
from pathlib import Path

from bijros.errors import CancelledError, InputError

SUMMARY_COLUMNS = ("job", "line", "kind", "status", "seconds", "folding_percent", "sdlogj", "dice", "rank", "out",
                   "message")


def rank_device(requested: str, local_rank: int) -> str:
    import torch

    from bijros.device import resolve_device

    if requested == "auto":
        if torch.cuda.is_available():
            return f"cuda:{local_rank % torch.cuda.device_count()}"
        return "cpu"
    return str(resolve_device(requested))


class Workers:
    """``count`` worker processes (spawned: torch must not be forked) serving jobs one at a time."""

    def __init__(self, count: int, threads: int):
        self.ctx = multiprocessing.get_context("spawn")
        self.threads = threads
        self.slots = [self._start() for _ in range(count)]

    def _start(self):
        from bijros.batch.worker import worker_main

        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=worker_main, args=(child, self.threads), daemon=True)
        proc.start()
        child.close()
        return {"proc": proc, "conn": parent, "job": None, "ready": False}

    def run(self, jobs: list[dict], batch_out: str, device: str, on_result) -> None:
        queue = list(jobs)
        while queue or any(s["job"] is not None for s in self.slots):
            for slot in self.slots:
                if slot["ready"] and slot["job"] is None and queue:
                    slot["job"] = queue.pop(0)
                    slot["conn"].send({"job": slot["job"], "batch_out": batch_out, "device": device})
            waiting = {s["conn"]: s for s in self.slots} | {s["proc"].sentinel: s for s in self.slots}
            for ready in multiprocessing.connection.wait(list(waiting)):
                slot = waiting[ready]
                if ready is slot["conn"]:
                    try:
                        message = slot["conn"].recv()
                    except (EOFError, OSError):
                        continue  # the sentinel reports the death
                    if "ready" in message:
                        slot["ready"] = True
                        continue
                    slot["job"] = None
                    on_result(message)
                elif not slot["proc"].is_alive():
                    self._replace(slot, on_result, batch_out)

    def _replace(self, slot: dict, on_result, batch_out: str) -> None:
        from bijros.batch.records import write_record
        from bijros.batch.worker import job_result

        job = slot["job"]
        code = slot["proc"].exitcode
        if job is None and not slot["ready"]:
            raise InputError(f"a batch worker could not start (exit code {code}); run one job as a single command "
                             "to see why.")
        if job is not None:
            why = (f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}") + \
                  (" (out of memory?)" if code == -signal.SIGKILL else "")
            result = job_result(job, seconds=None, status="failed",
                                message=f"line {job['line']}: the worker running it died ({why})")
            write_record(batch_out, job["name"], result)
            on_result(result)
        slot.update(self._start())

    def close(self) -> None:
        for slot in self.slots:
            with contextlib.suppress(OSError, ValueError):
                slot["conn"].send(None)
        for slot in self.slots:
            slot["proc"].join(timeout=5)
            if slot["proc"].is_alive():
                slot["proc"].kill()

    def kill(self) -> None:
        for slot in self.slots:
            if slot["proc"].is_alive():
                slot["proc"].kill()


def default_jobs_per_device(device: str, local_world: int) -> int:
    """1 on a GPU; on the CPU 2 where each rank has 2 cores or more, else 1."""
    from bijros.device import available_cores

    if device != "cpu":
        return 1
    return 2 if available_cores() // max(1, local_world) >= 2 else 1


def run_batch(manifest, out, jobs_per_device: int | None = None, device: str = "auto",
              progress: str = "bar") -> list[dict]:
    """Run this rank's share of the manifest; rank 0 returns the whole summary (the others: their rows)."""
    from bijros.batch.manifest import load_manifest
    from bijros.batch.records import complete
    from bijros.batch.shard import job_work, shard
    from bijros.device import thread_count
    from bijros.io.outputs import check_out_dir, prepare_out_dir
    from bijros.training.distributed import environment

    if jobs_per_device is not None and jobs_per_device < 1:
        raise InputError("--jobs-per-device must be 1 or more.")
    place = environment()
    rank, size, local_rank, local_world = place.rank, place.world, place.local_rank, place.local_world
    check_out_dir(out)
    jobs = load_manifest(manifest, out)  # every rank reads and checks the same manifest
    dev = rank_device(device, local_rank)
    jobs_per_device = jobs_per_device or default_jobs_per_device(dev, local_world)
    prepare_out_dir(out)
    mine = [jobs[i] for i in shard([job_work(j) for j in jobs], size)[rank]]
    rows, todo = [], []
    for job in mine:
        if job.error:
            rows.append(_row(job, "failed", message=job.error))
        elif (record := complete(out, job)) is not None:
            rows.append(_row(job, "skipped", record=record))
        else:
            todo.append(job)
    bar = _Bar(progress, len(mine), rank, size)
    for row in rows:
        bar.update(row)
    if todo:
        workers = Workers(min(jobs_per_device, len(todo)), thread_count(jobs_per_device * local_world))
        stop = _stop_on_signals()
        try:
            workers.run([j.to_dict() for j in todo], str(out), dev,
                        lambda r: (rows.append(_result_row(r, rank)), bar.update(rows[-1])))
        except (KeyboardInterrupt, CancelledError):
            workers.kill()
            raise CancelledError("the batch was stopped; run the same command again to finish the remaining "
                                 "jobs (the finished ones are kept)") from None
        finally:
            stop()
        workers.close()
    for row in rows:
        row["rank"] = rank
    bar.close()
    rows = _gather(rows, size)
    if rank == 0:
        rows.sort(key=lambda r: r["line"])
        write_summary(rows, Path(out) / "summary.csv")
    return rows


def _row(job, status: str, record: dict | None = None, message: str = "") -> dict:
    record = record or {}
    return {"job": job.name, "line": job.line, "kind": job.kind, "status": status,
            "seconds": 0.0 if status == "skipped" else None, "folding_percent": record.get("folding_percent"),
            "sdlogj": record.get("sdlogj"), "dice": record.get("dice"), "rank": 0, "out": job.out,
            "message": message}


def _result_row(result: dict, rank: int) -> dict:
    return {c: result.get(c) for c in SUMMARY_COLUMNS} | {"rank": rank}


def _gather(rows: list[dict], size: int) -> list[dict]:
    if size == 1:
        return rows
    import torch.distributed as dist

    started = not dist.is_initialized()
    if started:  # gloo on every device: only these small rows travel; ranks may finish hours apart
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
    try:
        everything: list = [None] * size
        dist.all_gather_object(everything, rows)
    finally:
        if started:
            dist.destroy_process_group()
    return [r for part in everything for r in part]


def write_summary(rows: list[dict], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row[c] for c in SUMMARY_COLUMNS})
    os.replace(tmp, path)


def _stop_on_signals():
    """SIGTERM (a scheduler's cancel) stops the batch like Ctrl-C; returns the undo."""
    def handler(signum, frame):
        raise CancelledError(f"signal {signum}")

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, old)


class _Bar:
    """Progress over this rank's jobs: a tqdm bar, JSON lines ({"stage": "batch", ...}) or nothing."""

    def __init__(self, mode: str, total: int, rank: int, size: int):
        self.mode, self.total, self.done, self.failed = mode, total, 0, 0
        self.tqdm = None
        if mode == "bar":
            import sys

            from tqdm import tqdm

            self.tqdm = tqdm(total=total, file=sys.stderr, unit="job", position=rank if size > 1 else None,
                             desc=f"rank {rank}" if size > 1 else "batch")

    def update(self, row: dict) -> None:
        self.done += 1
        self.failed += row["status"] == "failed"
        if self.tqdm is not None:
            self.tqdm.set_postfix_str(f"{row['job']} {row['status']}, {self.failed} failed", refresh=False)
            self.tqdm.update(1)
        elif self.mode == "json":
            import json

            print(json.dumps({"stage": "batch", "fraction": round(self.done / max(1, self.total), 4),
                              "message": f"{row['job']}: {row['status']}", "job": row["job"],
                              "status": row["status"], "done": self.done, "total": self.total}), flush=True)

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
