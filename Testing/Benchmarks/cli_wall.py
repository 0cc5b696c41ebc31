#!/usr/bin/env python
"""What a user waits for: the whole `bijros propagate` command, process start to last file written,
stage by stage, beside ANTs SyN on the same pairs in the same run.

Each pair runs `bijros propagate` as a fresh process (one per method) and reads the stage seconds from
its report.json; the wall time is measured outside the process (start to exit). ANTs runs twice: in a
warm process (`ants.registration` + label warp only: its in-process time) and as a whole script
(import, read, register, warp labels, write the warp and the labels: the same span as ours).

    python Testing/Benchmarks/cli_wall.py --dataset malf --pairs 3 --methods io,learned
    python Testing/Benchmarks/cli_wall.py --dataset hippocampus --pairs 20 --methods io
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
STAGES = ("startup", "import", "read", "prepare", "affine", "learned", "deformable", "compose", "warp",
          "jacobian", "write", "qc_png")
EXCLUDE = {"malf": "0,15,65,66,74,126,127", "hippocampus": "0"}

ANTS_SCRIPT = """
import sys, time, ants
t0 = time.perf_counter()
fixed, moving, labels, out = sys.argv[1:5]
f, m, lab = ants.image_read(fixed), ants.image_read(moving), ants.image_read(labels)
reg = ants.registration(f, m, type_of_transform=sys.argv[5], outprefix=out + "/tx_")
warped = ants.apply_transforms(f, lab, reg["fwdtransforms"], interpolator="genericLabel")
ants.image_write(warped, out + "/labels.nii.gz")
ants.image_write(reg["warpedmovout"], out + "/warped.nii.gz")
"""


def pairs(dataset: str, count: int) -> list[tuple[str, str, str, str, str]]:
    """(name, atlas image, atlas labels, target image, target labels), atlas fixed, targets in order."""
    if dataset == "malf":
        ids = sorted(p.name.split("_")[0] for p in (DATA / "malf").glob("*_t1.nii.gz"))
        atlas, targets = ids[0], ids[1:1 + count]
        return [(t, f"{DATA}/malf/{atlas}_t1.nii.gz", f"{DATA}/malf/{atlas}_labels.nii.gz",
                 f"{DATA}/malf/{t}_t1.nii.gz", f"{DATA}/malf/{t}_labels.nii.gz") for t in targets]
    names = sorted(p.name for p in (DATA / "hippocampus" / "images").glob("*.nii.gz"))
    atlas, targets = names[0], names[1:1 + count]
    root = DATA / "hippocampus"
    return [(t.split(".")[0], f"{root}/images/{atlas}", f"{root}/labels/{atlas}", f"{root}/images/{t}",
             f"{root}/labels/{t}") for t in targets]


def run_bijros(pair, method: str, out: str, extra: list[str]) -> dict:
    _name, atlas, atlas_labels, target, _truth = pair
    cmd = [sys.executable, "-m", "bijros", "propagate", "--atlas", atlas, "--atlas-labels", atlas_labels,
           "--target", target, "--out", out, "--method", method, "--device", "cpu", "--progress", "none", *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    report = json.loads(Path(out, "report.json").read_text())
    return {"wall": wall, "stages": report["seconds"]}


def dice(pred: str, truth: str, exclude: str) -> float:
    from bijros.io import load_image
    from bijros.metrics import evaluate_labels

    t = load_image(truth, label_map=True)
    ev = evaluate_labels(load_image(pred, label_map=True).array, t.array, t.spacing,
                         exclude=tuple(int(v) for v in exclude.split(",")), with_hd95=False)
    return float(ev["mean_dice"])


def run_ants_process(pair, out: str, transform: str) -> float:
    _name, atlas, atlas_labels, target, _truth = pair
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", ANTS_SCRIPT, target, atlas, atlas_labels, out, transform], check=True)
    return time.perf_counter() - t0


def run_ants_in_process(pair, out: str, transform: str) -> float:
    import ants

    _name, atlas, atlas_labels, target, _truth = pair
    f, m, lab = ants.image_read(target), ants.image_read(atlas), ants.image_read(atlas_labels)
    t0 = time.perf_counter()
    reg = ants.registration(f, m, type_of_transform=transform, outprefix=out + "/tx_")
    warped = ants.apply_transforms(f, lab, reg["fwdtransforms"], interpolator="genericLabel")
    seconds = time.perf_counter() - t0
    ants.image_write(warped, out + "/labels.nii.gz")
    return seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=("malf", "hippocampus"), default="malf")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--methods", default="io,learned")
    p.add_argument("--ants", default="SyN", help="ANTs type_of_transform ('' to skip ANTs)")
    p.add_argument("--extra", default="", help="extra bijros arguments, space-separated")
    p.add_argument("--json", type=Path, default=None, help="write the per-pair records here")
    args = p.parse_args(argv)
    for var in ("BIJROS_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS"):
        os.environ[var] = "2"
    methods = [m for m in args.methods.split(",") if m]
    records: dict[str, list] = {m: [] for m in methods}
    ants_rows: dict[str, list] = {"in-process": [], "whole script": []}
    ants_dice = []
    for pair in pairs(args.dataset, args.pairs):
        line = [pair[0]]
        for method in methods:
            with tempfile.TemporaryDirectory() as out:
                rec = run_bijros(pair, method, out, args.extra.split())
                rec["dice"] = dice(f"{out}/labels.nii.gz", pair[4], EXCLUDE[args.dataset])
            records[method].append(rec)
            line.append(f"{method} {rec['wall']:.2f} s Dice {rec['dice']:.4f}")
        if args.ants:
            with tempfile.TemporaryDirectory() as out:
                ants_rows["in-process"].append(run_ants_in_process(pair, out, args.ants))
                ants_dice.append(dice(f"{out}/labels.nii.gz", pair[4], EXCLUDE[args.dataset]))
            with tempfile.TemporaryDirectory() as out:
                ants_rows["whole script"].append(run_ants_process(pair, out, args.ants))
            line.append(f"ANTs {ants_rows['in-process'][-1]:.2f} s in-process, "
                        f"{ants_rows['whole script'][-1]:.2f} s whole, Dice {ants_dice[-1]:.4f}")
        print(" | ".join(line), flush=True)
    med = statistics.median
    print(f"\n{args.dataset}, {args.pairs} pairs, medians (s), 2 threads, CPU\n")
    print("| stage | " + " | ".join(methods) + " |\n|---|" + "---|" * len(methods))
    for stage in STAGES:
        if any(stage in r["stages"] for m in methods for r in records[m]):
            print(f"| {stage} | " + " | ".join(f"{med([r['stages'].get(stage, 0.0) for r in records[m]]):.2f}"
                                               for m in methods) + " |")
    print("| **wall, process start to exit** | " + " | ".join(f"**{med([r['wall'] for r in records[m]]):.2f}**"
                                                               for m in methods) + " |")
    print("| mean Dice | " + " | ".join(f"{statistics.mean([r['dice'] for r in records[m]]):.4f}"
                                       for m in methods) + " |")
    if args.ants:
        a_in, a_whole = med(ants_rows["in-process"]), med(ants_rows["whole script"])
        print(f"\nANTs {args.ants}: in-process {a_in:.2f} s, whole script {a_whole:.2f} s, "
              f"mean Dice {statistics.mean(ants_dice):.4f}")
        for m in methods:
            w = med([r["wall"] for r in records[m]])
            print(f"{m}: wall / ANTs in-process = {w / a_in:.3f}; "
                  f"wall / ANTs whole script = {w / a_whole:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"methods": records, "ants": ants_rows, "ants_dice": ants_dice}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
