"""``bijros batch``: argument parser and command (the CLI stays thin)."""

from __future__ import annotations

import json
import sys


def add_parser(sub) -> None:
    b = sub.add_parser("batch", help="run a manifest of register/propagate/segment/fewshot jobs with long-lived "
                                     "workers; resumable; shards over ranks under torchrun")
    b.add_argument("--manifest", required=True,
                   help="CSV with a header (or JSON lines, .jsonl): a 'kind' column and one column per long option "
                        "of that subcommand without the dashes, _ for - (e.g. kind,atlas,atlas_labels,target,out); "
                        "optional 'job' (name) and 'reference' (labels for a Dice in the summary); relative paths "
                        "are read from the manifest's folder")
    b.add_argument("--out", required=True, help="batch folder: summary.csv, .bijros-batch/ (job records), and the "
                                                "job folders of rows without an 'out'")
    b.add_argument("--jobs-per-device", type=int, default=None,
                   help="worker processes per device; on the CPU the cores are split between them (default: 1 per GPU; "
                        "on the CPU 2 where it has 2 cores or more: one job's reading, writing and single-threaded "
                        "steps then overlap the other's arithmetic)")
    b.add_argument("--device", default="auto",
                   help="auto (default: under torchrun each rank its local GPU cuda:LOCAL_RANK, else the CPU), cpu, "
                        "cuda:N; a row's own 'device' cell wins")
    b.add_argument("--progress", default="bar", choices=["bar", "json", "none"])


def cmd_batch(args) -> int:
    from bijros.batch.run import run_batch
    from bijros.training.distributed import environment

    rows = run_batch(args.manifest, args.out, args.jobs_per_device, args.device, args.progress)
    if not environment().main:
        return 0 if all(r["status"] != "failed" for r in rows) else 1
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "skipped", "failed")}
    message = (f"{len(rows)} jobs: {counts['ok']} ok, {counts['skipped']} skipped (complete before), "
               f"{counts['failed']} failed; wrote {args.out}/summary.csv")
    if args.progress == "json":
        print(json.dumps({"stage": "result", "fraction": 1.0, "message": message, "out": str(args.out),
                          "counts": counts}))
    else:
        print(message, file=sys.stderr)
        for r in rows:
            if r["status"] == "failed":
                print(f"  failed: {r['job']}: {r['message']}", file=sys.stderr)
    return 0 if counts["failed"] == 0 else 1
