#!/usr/bin/env python
"""One-shot cohort learning (issue 14): one labelled atlas, a cohort of unlabelled scans, scored on further cases.

Hippocampus (``--dataset hippocampus``): atlas = hippocampus_001, cohort = the next ``--cohort`` cases (images
only), scored on the ``--test`` cases after them (Dice of anterior 1, posterior 2 and their mean, on each case's
own grid). Each recipe is trained with ``bijros.oneshot.train.train_oneshot`` (what ``bijros train-oneshot``
runs) for ``--minutes`` of training (plus the cohort's alignment), into ``--runs`` (an existing finished run
there is reused, so rerunning only scores); every case is then segmented with ``bijros.oneshot.segment`` (what
``bijros segment`` runs). Rows: the atlas propagated by our best registration (io), by the trained registration
decoder, the Bi-JROS segmentation decoder (pseudo labels from io, and from the registration decoder), the BRBS
segmentation network; ``bijros-io-selftrain`` adds one round of self-training (at 60 % of the budget the pseudo
labels become the segmentation decoder's own predictions on the cohort); ``bijros-io-inner8`` runs 7
segmentation-only steps between two bi-level steps instead of 3; ``bijros-io-direct`` trains on the direct io
pseudo labels (no cohort paths fused in); ``bijros-io-last`` exports the last step's weights (no average). One process, 2 threads, seeds fixed.

MALF (``--dataset malf``): the whole-brain labels grouped into 33 structures (``bijros/data/
label_groups_malf_coarse.json``), atlas = subject 1000, the other 14 subjects split into ``--folds`` folds: each
fold is scored by a model whose unlabelled cohort is the other folds' subjects (``--folds 14``: leave-one-out),
at the trainer's working grid (2 mm for whole brains on a CPU), Dice of the 33 structures on each subject's grid.

    python Testing/Benchmarks/oneshot_cohort.py --minutes 25
    python Testing/Benchmarks/oneshot_cohort.py --dataset malf --folds 2 --minutes 20 --variants bijros-io
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
OUT = REPO / "Testing" / "Benchmarks" / "results"
VARIANTS = {"bijros-io": ("bijros", "io", {}), "bijros-io-direct": ("bijros", "io", {"pseudo_paths": 0}), "bijros-decoder": ("bijros", "decoder", {}),
            "brbs-io": ("brbs", "io", {}), "bijros-io-selftrain": ("bijros", "io", {"pseudo_refresh": 0.6}),
            "bijros-io-inner8": ("bijros", "io", {"inner_steps": 8}),
            "bijros-io-last": ("bijros", "io", {"ema": None})}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="hippocampus", choices=["hippocampus", "malf"])
    p.add_argument("--folds", type=int, default=2, help="malf: folds of the 14 subjects (14: leave-one-out)")
    p.add_argument("--cohort", type=int, default=40)
    p.add_argument("--test", type=int, default=40)
    p.add_argument("--minutes", type=float, default=25.0, help="training minutes per recipe (CPU)")
    p.add_argument("--variants", default="bijros-io,bijros-decoder,brbs-io", help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "oneshot_bench")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def dice(pred: np.ndarray, truth: np.ndarray, values: list[int]) -> list[float]:
    out = []
    for v in values:
        a, b = pred == v, truth == v
        denom = a.sum() + b.sum()
        out.append(float(2 * (a & b).sum() / denom) if denom else 1.0)
    return out


def hippocampus_setup(root: Path, args):
    """Atlas hippocampus_001, cohort the next ``--cohort``, scored on the ``--test`` after them."""
    from bijros.io import load_image

    cases = sorted(p.name for p in (root / "images").iterdir())
    cohort = [root / "images" / c for c in cases[1: 1 + args.cohort]]
    test = [root / "images" / c for c in cases[1 + args.cohort: 1 + args.cohort + args.test]]
    return (cases[0], root / "images" / cases[0], root / "labels" / cases[0], [1, 2], [(cohort, test)],
            lambda p: load_image(root / "labels" / p.name, label_map=True).array)


def malf_setup(root: Path, args):
    """Atlas 1000 with its labels grouped (33 structures); the other subjects in ``--folds`` folds."""
    from bijros.io import load_image, save_image
    from bijros.io.label_groups import group_labels, load_label_groups

    groups = load_label_groups("malf_coarse")
    ids = sorted(p.name.split("_")[0] for p in root.glob("*_t1.nii.gz"))
    atlas_id, others = ids[0], ids[1:]
    grouped = args.runs / "malf_atlas_grouped"
    grouped.mkdir(parents=True, exist_ok=True)
    labels_path = grouped / f"{atlas_id}_labels_coarse.nii.gz"
    if not labels_path.is_file():
        save_image(group_labels(load_image(root / f"{atlas_id}_labels.nii.gz", label_map=True), groups), labels_path)
    k = max(1, min(args.folds, len(others)))
    folds = []
    for f in range(k):
        test = [s for i, s in enumerate(others) if i % k == f]
        folds.append(([root / f"{s}_t1.nii.gz" for s in others if s not in test], [root / f"{s}_t1.nii.gz" for s in test]))
    names_of.extend(g["name"] for g in groups["groups"])

    def truth(path: Path):
        return group_labels(load_image(root / path.name.replace("_t1", "_labels"), label_map=True), groups).array

    return (atlas_id, root / f"{atlas_id}_t1.nii.gz", labels_path, [g["value"] for g in groups["groups"]], folds, truth)


names_of: list[str] = []


def main(argv=None) -> int:
    args = parse_args(argv)
    from bijros.device import resolve_device
    from bijros.io import load_image
    from bijros.oneshot.segment import load_oneshot_model, segment
    from bijros.oneshot.train import OneShotConfig, train_oneshot

    root = DATA / args.dataset
    if not root.is_dir():
        print(f"{root} is missing: this benchmark needs ../shared/data", file=sys.stderr)
        return 2
    setup = malf_setup(root, args) if args.dataset == "malf" else hippocampus_setup(root, args)
    atlas_name, atlas, atlas_labels, values, folds, truth_of = setup
    rows, times, trained = {}, {}, {}
    variants = args.variants.split(",")
    for variant, (fold, (cohort, test)) in [(v, f) for v in variants for f in enumerate(folds)]:
        recipe, pseudo, extra = VARIANTS[variant]
        tag = f"_fold{fold + 1}of{len(folds)}" if len(folds) > 1 else ""
        run = args.runs / f"{args.dataset}_{variant}_{len(cohort) if len(folds) > 1 else args.cohort}_{args.minutes:g}min{tag}"
        t0 = time.perf_counter()
        if not (run / "model.json").is_file():
            cfg = OneShotConfig(recipe=recipe, pseudo_labels=pseudo, minutes=args.minutes, device=args.device, **extra)
            train_oneshot(atlas, atlas_labels, cohort, run, cfg, bar=False)
            (run / "benchmark_wall.json").write_text(json.dumps({"wall_s": round(time.perf_counter() - t0, 1)}))
        entry = json.loads((run / "model.json").read_text())
        wall = json.loads((run / "benchmark_wall.json").read_text())["wall_s"] if (run / "benchmark_wall.json").is_file() \
            else None  # a run trained by an earlier call keeps its own figure
        trained[variant + tag] = {"steps": entry["training"]["steps"], "train_s": entry["training"]["seconds"],
                                  "wall_s": wall}
        model = load_oneshot_model(run, resolve_device(args.device))
        first = variant == variants[0]
        for image_path in test:
            name = image_path.name
            image = load_image(image_path)
            truth = truth_of(image_path)
            t1 = time.perf_counter()
            res = segment(model, image, propagation=first, decoder_registration=variant == "bijros-io")
            times.setdefault(variant + tag, []).append(res["report"]["seconds"]["align"] + res["report"]["seconds"]["segment"])
            rows.setdefault(f"{variant}: segmentation network", []).append(dice(res["labels"].array, truth, values))
            if res["labels_decoder_registration"] is not None:
                rows.setdefault(f"{variant}: registration decoder propagation", []).append(
                    dice(res["labels_decoder_registration"].array, truth, values))
            if res["labels_propagated"] is not None:
                rows.setdefault("io propagation (our best registration)", []).append(
                    dice(res["labels_propagated"].array, truth, values))
                times.setdefault("io", []).append(res["report"]["seconds"]["propagate"])
            scores = rows[f"{variant}: segmentation network"][-1]
            shown = scores if len(scores) <= 4 else f"mean {np.mean(scores):.4f}"
            print(f"{variant} {name}: {shown} ({time.perf_counter() - t1:.1f} s)", file=sys.stderr)
    scored = sum(len(test) for _, test in folds)
    cohorts = sorted({len(cohort) for cohort, _ in folds})
    lines = [f"# One-shot cohort learning on {args.dataset}: atlas {atlas_name}, cohort {cohorts} unlabelled, "
             f"scored on {scored} further cases" + (f" ({len(folds)} folds)" if len(folds) > 1 else ""), "",
             f"Training budget {args.minutes:g} min per recipe (and fold) on {args.device} (2 threads), after the "
             f"cohort's alignment; seeds fixed. Dice on each case's own grid, {len(values)} structures.", ""]
    if len(values) == 2:
        lines += ["| method | anterior | posterior | mean | sd of mean |", "|---|---|---|---|---|"]
    else:
        lines += ["| method | mean Dice | sd over cases | worst structure (mean Dice) |", "|---|---|---|---|"]
    for name, scores in sorted(rows.items(), key=lambda kv: -np.mean(kv[1])):
        s = np.asarray(scores)
        if len(values) == 2:
            lines.append(f"| {name} | {s[:, 0].mean():.4f} | {s[:, 1].mean():.4f} | {s.mean():.4f} | "
                         f"{s.mean(1).std():.4f} |")
        else:
            worst = int(np.argmin(s.mean(0)))
            lines.append(f"| {name} | {s.mean():.4f} | {s.mean(1).std():.4f} | {names_of[worst]} "
                         f"({s.mean(0)[worst]:.3f}) |")
    lines += ["", "| run | steps | training s | wall s (align + train) | segment s per scan (align + network) |",
              "|---|---|---|---|---|"]
    for variant, t in trained.items():
        lines.append(f"| {variant} | {t['steps']} | {t['train_s']} | {t['wall_s']} | {np.mean(times[variant]):.2f} |")
    if "io" in times:
        lines.append(f"| io propagation | | | | {np.mean(times['io']):.2f} (registration, affine given) |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or OUT / f"oneshot_{args.dataset}.md"
    out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
