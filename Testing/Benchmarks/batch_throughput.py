"""Throughput of ``bijros batch`` against a shell loop of single commands, and torchrun with 1 vs 2 processes.

One MALF atlas (1000 by default) propagated onto every other MALF scan, on the CPU with 2 threads in all:

* a shell loop (``for ...; do bijros propagate ...; done``): a fresh process per job, 2 torch threads;
* ``bijros batch`` with 1 worker (2 threads) and with 2 workers (1 thread each);
* ``torchrun --nproc-per-node 1`` and ``2`` (gloo) ``-m bijros batch``: 1 worker of 2 threads per rank, or 1
  worker of 1 thread per rank (the default on 1 core per rank).

Each configuration runs once, one after the other, nothing else running; the time is the whole command's,
from its start to its exit (the last file written). The mean Dice (138 labels, against the manual labels)
shows that every configuration computes the same registrations.

    python Testing/Benchmarks/batch_throughput.py [--methods io,learned] [--atlas 1000] [--targets 14]
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
MALF = Path(os.environ.get("BIJROS_SHARED_DATA", REPO.parent / "shared" / "data")) / "malf"


def manifest(path: Path, atlas: str, targets: list[str], method: str) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["kind", "job", "atlas", "atlas_labels", "target", "method", "reference"])
        for t in targets:
            w.writerow(["propagate", t, MALF / f"{atlas}_t1.nii.gz", MALF / f"{atlas}_labels.nii.gz",
                        MALF / f"{t}_t1.nii.gz", method, MALF / f"{t}_labels.nii.gz"])


def timed(cmd: list[str] | str, env: dict, shell: bool = False) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, shell=shell, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode not in (0,):
        sys.exit(f"failed ({proc.returncode}): {cmd}\n{proc.stderr[-3000:]}")
    return seconds


def batch_dice(out: Path) -> float:
    with open(out / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert all(r["status"] == "ok" for r in rows), rows
    return float(np.mean([float(r["dice"]) for r in rows]))


def loop_dice(out: Path, targets: list[str]) -> float:
    from bijros.io import load_image
    from bijros.metrics import evaluate_labels

    scores = []
    for t in targets:
        pred = load_image(out / t / "labels.nii.gz", label_map=True)
        truth = load_image(MALF / f"{t}_labels.nii.gz", label_map=True)
        scores.append(evaluate_labels(pred.array, truth.array, truth.spacing, with_hd95=False)["mean_dice"])
    return float(np.mean(scores))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="io")
    ap.add_argument("--atlas", default="1000")
    ap.add_argument("--targets", type=int, default=14)
    ap.add_argument("--work", default=str(REPO / "runs" / "batch_bench"))
    args = ap.parse_args()
    ids = sorted(p.name.split("_")[0] for p in MALF.glob("*_t1.nii.gz"))
    targets = [i for i in ids if i != args.atlas][: args.targets]
    work = Path(args.work)
    bijros = shutil.which("bijros") or sys.exit("the bijros command is not on PATH (pip install -e .)")
    base = {k: v for k, v in os.environ.items() if k not in ("BIJROS_NUM_THREADS", "OMP_NUM_THREADS")}
    two = {**base, "BIJROS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    print(f"MALF atlas {args.atlas} onto {len(targets)} scans, CPU, 2 threads in all "
          f"({len(os.sched_getaffinity(0))} cores)\n")
    for method in args.methods.split(","):
        folder = work / method
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        man = folder / "manifest.csv"
        manifest(man, args.atlas, targets, method)
        rows = []
        loop = "\n".join(shlex.join([bijros, "propagate", "--atlas", str(MALF / f"{args.atlas}_t1.nii.gz"),
                                     "--atlas-labels", str(MALF / f"{args.atlas}_labels.nii.gz"),
                                     "--target", str(MALF / f"{t}_t1.nii.gz"), "--method", method,
                                     "--device", "cpu", "--progress", "none", "--out", str(folder / "loop" / t)])
                         for t in targets)
        seconds = timed(["bash", "-c", f"set -e\n{loop}"], two)
        rows.append(("shell loop of `bijros propagate` (2 threads)", seconds, loop_dice(folder / "loop", targets)))
        configs = [
            ("`bijros batch`, 1 worker x 2 threads", [bijros], ["--jobs-per-device", "1"], two),
            ("`bijros batch` (default here: 2 workers x 1 thread)", [bijros], [], base),
            ("torchrun 1 process (gloo), 1 worker x 2 threads", [*torchrun, "--nproc-per-node", "1", "-m", "bijros"],
             ["--jobs-per-device", "1"], base),
            ("torchrun 2 processes (gloo), 1 thread each", [*torchrun, "--nproc-per-node", "2", "-m", "bijros"], [],
             base),
        ]
        for i, (label, prefix, extra, env) in enumerate(configs):
            out = folder / f"batch{i}"
            seconds = timed([*prefix, "batch", "--manifest", str(man), "--out", str(out), "--device", "cpu",
                             "--progress", "none", *extra], env)
            rows.append((label, seconds, batch_dice(out)))
        loop_rate = 3600 * len(targets) / rows[0][1]
        print(f"### --method {method}\n")
        print("| configuration | wall s (whole command) | jobs per hour | vs shell loop | mean Dice |")
        print("|---|---|---|---|---|")
        for label, seconds, dice in rows:
            rate = 3600 * len(targets) / seconds
            print(f"| {label} | {seconds:.1f} | {rate:.0f} | {rate / loop_rate:.2f}x | {dice:.4f} |")
        print(flush=True)


if __name__ == "__main__":
    main()
