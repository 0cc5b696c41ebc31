#!/usr/bin/env python
"""One-shot label propagation on the MALF brains: bijros vs ANTs SyN vs elastix, side by side.

Atlas 1000's T1 (moving) is registered to each target T1 (fixed) and its manual labels are warped
onto the target grid; the result is scored against the target's manual labels (Dice per label, mean
Dice, mean HD95 in mm with the true spacing) and the folding of the total mapping is measured inside
the target's brain (T1 > 0). Methods run interleaved per pair, in one process, with the same thread
count, so load changes hit all of them alike. Per-pair lines are printed as they come; the markdown
table and a JSON with the per-pair numbers are rewritten after every pair, so a partial run is usable.

    source /work/venv/bin/activate
    python Testing/Benchmarks/malf_propagation.py                      # full run, 14 targets
    python Testing/Benchmarks/malf_propagation.py --limit 1 --methods bijros:fast,ants,elastix
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
from pathlib import Path

import bench_methods
import bench_report
import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "malf"
DEFAULT_OUT = REPO / "Testing" / "Benchmarks" / "results" / "malf_propagation.md"
DEFAULT_TARGETS = [
    "1001",
    "1002",
    "1006",
    "1007",
    "1008",
    "1009",
    "1010",
    "1011",
    "1012",
    "1013",
    "1014",
    "1015",
    "1017",
    "1036",
]
EXCLUDE = (0, 15, 65, 66, 74, 126, 127)  # background and six rare labels

NOTES = [
    "Timed: registration + warping of the atlas labels onto the target grid (ANTs and bijros also warp the T1 "
    "inside that call, elastix writes its result image as by default); reading files, scoring and the QC "
    "Jacobian are not timed. CPU s is the process CPU time of the same span (all threads).",
    "Time ratio: ratio of median seconds per pair (wall, then process CPU); bijros rows are bijros / ANTs SyN, "
    "peer rows are the first bijros method / that method.",
    "bijros methods: `bijros:<method>` runs `RegistrationOptions(method=<method>)` with the method's own preset "
    "(learned: 2 mm working grid; learned+io and io: 1 mm); `bijros:fast` is io with the fast preset. The "
    "learned model is loaded and its sha256 checked once per process before the first pair (not timed; "
    "about 0.05 s), as in a Slicer session.",
    "Folding %: voxels with Jacobian determinant <= 0 of the total mapping (affine then deformable) among the "
    "target's voxels with T1 > 0, averaged over pairs. bijros: the Jacobian of its stored field's trilinear interpolation at every target voxel (`result.jacobian` is on the displacement grid); "
    "the report's `qc.folding_fraction` uses a normalised-intensity > 0.05 mask and is kept in the JSON). "
    "ANTs: warp + affine composed into one displacement field on the target grid "
    "(`apply_transforms(compose=...)`), then `create_jacobian_determinant_image`. elastix: transformix "
    "`ComputeDeterminantOfSpatialJacobian` of the whole transform chain (affine + B-spline).",
    "ANTs SyN: `ants.registration(type_of_transform='SyN')` with antspyx defaults, labels with `genericLabel`.",
    "elastix: itk-elastix default `affine` then `bspline` parameter maps, plus a centre-of-gravity transform "
    "initialisation (the MALF brains are in native space; the default affine map starts from the identity), "
    "see `elastix_parameters.json`; labels through transformix with FinalBSplineInterpolationOrder 0. Its "
    "threads come from ITK's global default (`SetNumberOfThreads` on the registration filter crashes in "
    "itk-elastix 0.25.4).",
    "Threads: torch via BIJROS_NUM_THREADS, ITK (ANTs and elastix) via ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS, "
    "OMP/MKL/OpenBLAS via their variables, all set before the packages load.",
]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"MALF folder (default {DEFAULT_DATA})")
    p.add_argument("--atlas", default="1000", help="atlas subject id (default 1000)")
    p.add_argument(
        "--targets", nargs="+", default=DEFAULT_TARGETS, help="target subject ids (default: the 14 others)"
    )
    p.add_argument(
        "--methods",
        default="bijros,ants,elastix",
        help="comma-separated: bijros, bijros:<preset> (fast, accurate, ...), ants, ants:<type_of_transform>, elastix",
    )
    p.add_argument("--threads", type=int, default=2, help="threads per method (default 2)")
    p.add_argument("--device", default="cpu", help="bijros device: cpu (default), cuda, auto")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown report; the JSON goes beside it")
    p.add_argument("--limit", type=int, default=None, help="only the first N targets (quick check)")
    args = p.parse_args(argv)
    args.targets = [t for chunk in args.targets for t in chunk.replace(",", " ").split()]
    if args.limit is not None:
        args.targets = args.targets[: args.limit]
    try:
        args.methods = [bench_methods.parse_method(m) for m in args.methods.split(",") if m.strip()]
    except ValueError as exc:
        p.error(str(exc))
    return args


def set_thread_environment(threads: int) -> None:
    """Must run before torch, antspyx or itk are imported."""
    for var in (
        "BIJROS_NUM_THREADS",
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
    ):
        os.environ[var] = str(threads)


def subject_files(data: Path, subject: str) -> tuple[Path, Path]:
    t1, labels = data / f"{subject}_t1.nii.gz", data / f"{subject}_labels.nii.gz"
    missing = [str(p) for p in (t1, labels) if not p.is_file()]
    if missing:
        sys.exit(f"malf_propagation: missing MALF file(s): {', '.join(missing)}")
    return t1, labels


def check_inputs(args: argparse.Namespace) -> None:
    if not args.data.is_dir():
        sys.exit(
            f"malf_propagation: MALF data folder not found: {args.data}\n"
            "Pass --data DIR (a folder with <id>_t1.nii.gz and <id>_labels.nii.gz per subject)."
        )
    for subject in [args.atlas, *args.targets]:
        subject_files(args.data, subject)


def score(output: bench_methods.MethodOutput, truth, brain: np.ndarray) -> dict:
    """Dice / HD95 against the target's manual labels and folding % inside the target brain."""
    from bijros.metrics import evaluate_labels

    if output.labels.shape != truth.shape or output.jacobian.shape != truth.shape:
        raise ValueError(
            f"output grid {output.labels.shape} / Jacobian {output.jacobian.shape} != target grid {truth.shape}"
        )
    ev = evaluate_labels(output.labels, truth.array, truth.spacing, exclude=EXCLUDE)
    return {
        "mean_dice": ev["mean_dice"],
        "mean_hd95_mm": ev["mean_hd95_mm"],
        "folding_pct": 100.0 * float(np.mean(output.jacobian[brain] <= 0)),
        "jacobian_min": float(np.min(output.jacobian[brain])),
        "labels_scored": len(ev["labels"]),
        "dice": ev["dice"],
        "hd95_mm": ev["hd95_mm"],
    }


def run_pair(spec, pair: bench_methods.Pair, truth, brain: np.ndarray, target: str, args) -> dict:
    record = {"target": target, "method": spec.name}
    try:
        output = bench_methods.run_method(spec, pair, args.threads, args.device)
        record.update(seconds=output.seconds, cpu_seconds=output.cpu_seconds, info=output.info)
        record.update(score(output, truth, brain))
    except Exception as exc:  # one failure must not end a long run
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()
    return record


def write_outputs(args, env: dict, setup: dict, records: list[dict]) -> list[dict]:
    rows = bench_report.summarize(records, args.methods)
    notes = list(NOTES)
    if setup["labels_missing_in_atlas"]:
        notes.append(
            f"Scored labels absent from the atlas (Dice 0 for every method): {setup['labels_missing_in_atlas']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(bench_report.markdown(env, setup, rows, notes), encoding="utf-8")
    payload = {"environment": env, "setup": setup, "summary": rows, "pairs": records, "notes": notes}
    args.out.with_suffix(".json").write_text(
        json.dumps(payload, indent=1, default=_json_default), encoding="utf-8"
    )
    return rows


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def warm_up(device: str) -> None:
    """Initialise CUDA outside the timed span when bijros runs on a GPU."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        torch.zeros(1, device="cuda").sum().item()


def main(argv=None) -> int:
    args = parse_args(argv)
    check_inputs(args)
    set_thread_environment(args.threads)
    from bijros.io import load_image

    env = bench_report.environment(args.threads, args.device)
    warm_up(args.device)
    atlas_t1, atlas_labels = subject_files(args.data, args.atlas)
    atlas, atlas_lab = load_image(atlas_t1), load_image(atlas_labels, label_map=True)
    atlas_values = {int(v) for v in np.unique(atlas_lab.array)}
    setup = {
        "data": str(args.data),
        "atlas": args.atlas,
        "targets": args.targets,
        "methods": [m.name for m in args.methods],
        "exclude": list(EXCLUDE),
        "labels_union": [],
        "labels_per_pair": math.nan,
        "labels_missing_in_atlas": {},
    }
    print(
        f"MALF propagation: atlas {args.atlas} -> {len(args.targets)} target(s); methods "
        f"{', '.join(m.name for m in args.methods)}; {args.threads} threads; {env['cpu']}",
        flush=True,
    )
    records: list[dict] = []
    rows: list[dict] = []
    union: set[int] = set()
    counts: list[int] = []
    for n, target in enumerate(args.targets, 1):
        target_t1, target_labels = subject_files(args.data, target)
        fixed, truth = load_image(target_t1), load_image(target_labels, label_map=True)
        if not truth.same_grid(fixed):
            sys.exit(f"malf_propagation: {target_labels} is not on the grid of {target_t1}")
        scored = {int(v) for v in np.unique(truth.array)} - set(EXCLUDE)
        union |= scored
        counts.append(len(scored))
        if scored - atlas_values:
            setup["labels_missing_in_atlas"][target] = sorted(scored - atlas_values)
        brain = fixed.array > 0
        pair = bench_methods.Pair(atlas_t1, atlas_labels, target_t1, atlas, atlas_lab, fixed)
        print(f"[{n}/{len(args.targets)}] target {target} ({len(scored)} labels scored)", flush=True)
        for spec in args.methods:
            record = run_pair(spec, pair, truth, brain, target, args)
            records.append(record)
            print(bench_report.pair_line(record), flush=True)
        setup.update(labels_union=sorted(union), labels_per_pair=round(float(np.mean(counts)), 1))
        rows = write_outputs(args, env, setup, records)
    print("\n" + bench_report.table(rows), flush=True)
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}", flush=True)
    return 1 if any("error" in r for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
