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
labels become the segmentation decoder's own predictions on the cohort). One process, 2 threads, seeds fixed.

    python Testing/Benchmarks/oneshot_cohort.py --minutes 25
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
VARIANTS = {"bijros-io": ("bijros", "io", {}), "bijros-decoder": ("bijros", "decoder", {}),
            "brbs-io": ("brbs", "io", {}), "bijros-io-selftrain": ("bijros", "io", {"pseudo_refresh": 0.6})}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="hippocampus", choices=["hippocampus"])
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
    cases = sorted(p.name for p in (root / "images").iterdir())
    atlas_name, cohort, test = cases[0], cases[1: 1 + args.cohort], cases[1 + args.cohort: 1 + args.cohort + args.test]
    atlas, atlas_labels = root / "images" / atlas_name, root / "labels" / atlas_name
    values = [1, 2]
    rows, times, trained = {}, {}, {}
    for variant in args.variants.split(","):
        recipe, pseudo, extra = VARIANTS[variant]
        run = args.runs / f"{args.dataset}_{variant}_{args.cohort}_{args.minutes:g}min"
        t0 = time.perf_counter()
        if not (run / "model.json").is_file():
            cfg = OneShotConfig(recipe=recipe, pseudo_labels=pseudo, minutes=args.minutes, device=args.device, **extra)
            train_oneshot(atlas, atlas_labels, [root / "images" / c for c in cohort], run, cfg, bar=False)
            (run / "benchmark_wall.json").write_text(json.dumps({"wall_s": round(time.perf_counter() - t0, 1)}))
        entry = json.loads((run / "model.json").read_text())
        wall = json.loads((run / "benchmark_wall.json").read_text())["wall_s"] if (run / "benchmark_wall.json").is_file() \
            else None  # a run trained by an earlier call keeps its own figure
        trained[variant] = {"steps": entry["training"]["steps"], "train_s": entry["training"]["seconds"], "wall_s": wall}
        model = load_oneshot_model(run, resolve_device(args.device))
        first = not rows
        for name in test:
            image = load_image(root / "images" / name)
            truth = load_image(root / "labels" / name, label_map=True).array
            t1 = time.perf_counter()
            res = segment(model, image, propagation=first, decoder_registration=variant == "bijros-io")
            times.setdefault(variant, []).append(res["report"]["seconds"]["align"] + res["report"]["seconds"]["segment"])
            rows.setdefault(f"{variant}: segmentation network", []).append(dice(res["labels"].array, truth, values))
            if res["labels_decoder_registration"] is not None:
                rows.setdefault(f"{variant}: registration decoder propagation", []).append(
                    dice(res["labels_decoder_registration"].array, truth, values))
            if res["labels_propagated"] is not None:
                rows.setdefault("io propagation (our best registration)", []).append(
                    dice(res["labels_propagated"].array, truth, values))
                times.setdefault("io", []).append(res["report"]["seconds"]["propagate"])
            print(f"{variant} {name}: {rows[f'{variant}: segmentation network'][-1]} ({time.perf_counter() - t1:.1f} s)",
                  file=sys.stderr)
    lines = [f"# One-shot cohort learning on {args.dataset}: atlas {atlas_name}, cohort {len(cohort)} unlabelled, "
             f"scored on {len(test)} further cases", "",
             f"Training budget {args.minutes:g} min per recipe on {args.device} (2 threads), after the cohort's "
             "alignment; seeds fixed. Dice on each case's own grid.", "",
             "| method | anterior | posterior | mean | sd of mean |", "|---|---|---|---|---|"]
    for name, scores in sorted(rows.items(), key=lambda kv: -np.mean(kv[1])):
        s = np.asarray(scores)
        lines.append(f"| {name} | {s[:, 0].mean():.4f} | {s[:, 1].mean():.4f} | {s.mean():.4f} | "
                     f"{s.mean(1).std():.4f} |")
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
