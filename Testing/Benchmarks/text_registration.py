#!/usr/bin/env python
"""Text prompts in registration, on the MALF brains (issue 11), in one run, side by side:

(a) prompt-steered instance optimisation: for each prompt, the Dice of the structures it names and the
    whole-brain mean Dice, unprompted (io) vs prompted (io + ``--prompt``);
(b) the TextSCF head: ``text`` (text filters) vs its ablations on the same training budget (a learnable region
    table, no head: the backbone trained as long) vs the shipped learned model vs our best method (io),
    alone and as the start of instance optimisation (+io); mean Dice and folding.

Atlas 1000 (T1 + manual labels, the MALF label table) is registered to each target; all rows of a target share
the first row's affine (``affine_ras``), so they differ only in what the row is about. Seconds are the
engine's own (register(), affine excluded), one process, 2 threads.

    python Testing/Benchmarks/text_registration.py                        # both parts, 7 targets
    python Testing/Benchmarks/text_registration.py --part a --targets 1007
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "malf"
OUT = REPO / "Testing" / "Benchmarks" / "results" / "text_registration.md"
TARGETS = ["1007", "1008", "1009", "1010", "1011", "1012", "1013"]
PROMPTS = ["hippocampus and amygdala", "thalamus", "caudate and putamen", "the lateral ventricles",
           "left hippocampus"]
EXCLUDE = (0, 15, 65, 66, 74, 126, 127)  # background and six rare labels (as malf_propagation.py)
# (b): row name -> RegistrationOptions keywords; models by catalog name or model.json path
HEAD_ROWS = {  # title -> (what it is, RegistrationOptions keywords)
    "bijros:io": ("io, our best single-atlas method (no model)", {"method": "io"}),
    "bijros:learned": ("learned: the shipped eoir-synth-2mm", {"method": "learned"}),
    "no-head:learned": ("no head: the backbone trained the same +1000 steps", {
        "method": "learned", "model": "runs/eoir_ft_2mm/model.json"}),
    "learnable:text": ("learnable region table instead of text, +1000 steps", {
        "method": "text", "model": "runs/textscf_learned_2mm/model.json"}),
    "bijros:text": ("text: the TextSCF head, +1000 steps", {"method": "text"}),
    "no-head:learned+io": ("no head, then io", {"method": "learned+io", "model": "runs/eoir_ft_2mm/model.json"}),
    "learnable:text+io": ("learnable table, then io", {
        "method": "text+io", "model": "runs/textscf_learned_2mm/model.json"}),
    "bijros:text+io": ("text, then io", {"method": "text+io"}),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--part", default="ab", help="a, b or ab")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def dice(pred: np.ndarray, truth: np.ndarray, values) -> dict[int, float]:
    out = {}
    for v in values:
        a, b = pred == v, truth == v
        total = a.sum() + b.sum()
        if total:
            out[int(v)] = float(2 * np.logical_and(a, b).sum() / total)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["BIJROS_NUM_THREADS"] = str(args.threads)
    from bijros.io import load_image
    from bijros.registration.pipeline import RegistrationOptions, register

    table = str(DATA / "labels.csv")
    atlas = load_image(DATA / "1000_t1.nii.gz")
    atlas_lab = load_image(DATA / "1000_labels.nii.gz", label_map=True, label_table=table)
    records = []
    json_path = args.out.with_suffix(".json")
    for target_id in args.targets.split(","):
        target = load_image(DATA / f"{target_id}_t1.nii.gz")
        truth = load_image(DATA / f"{target_id}_labels.nii.gz", label_map=True).array
        values = [int(v) for v in np.unique(truth) if int(v) not in EXCLUDE]
        base = register(target, atlas, atlas_lab, RegistrationOptions(method="io"))
        affine = base.affine_ras
        base_dice = dice(base.labels.array, truth, values)
        record = {"target": target_id, "io_mean": float(np.mean(list(base_dice.values()))), "prompts": {}, "heads": {}}
        if "a" in args.part:
            for prompt in PROMPTS:
                t0 = time.perf_counter()
                res = register(target, atlas, atlas_lab, RegistrationOptions(method="io", prompt=prompt),
                               affine_ras=affine)
                seconds = time.perf_counter() - t0
                named = [lab["value"] for lab in res.report["prompt"]["labels"] if lab["value"] in base_dice]
                d = dice(res.labels.array, truth, values)
                record["prompts"][prompt] = {
                    "labels": [lab["name"] for lab in res.report["prompt"]["labels"]],
                    "named_unprompted": float(np.mean([base_dice[v] for v in named])),
                    "named_prompted": float(np.mean([d[v] for v in named])),
                    "mean_unprompted": record["io_mean"], "mean_prompted": float(np.mean(list(d.values()))),
                    "seconds": seconds, "prompt_seconds": res.report["seconds"].get("prompt"),
                    "folding": res.report["qc"]["folding_fraction"]}
                r = record["prompts"][prompt]
                print(f"{target_id} '{prompt}': named {r['named_unprompted']:.4f} -> {r['named_prompted']:.4f}, "
                      f"whole {r['mean_unprompted']:.4f} -> {r['mean_prompted']:.4f}, {seconds:.0f} s", flush=True)
        if "b" in args.part:
            for name, (_what, kw) in HEAD_ROWS.items():
                if kw.get("model") and not (REPO / kw["model"]).exists():
                    continue
                opts = RegistrationOptions(**{**kw, "model": str(REPO / kw["model"]) if kw.get("model") else None})
                t0 = time.perf_counter()
                res = register(target, atlas, atlas_lab, opts, affine_ras=affine)
                seconds = time.perf_counter() - t0
                d = dice(res.labels.array, truth, values)
                record["heads"][name] = {"mean": float(np.mean(list(d.values()))), "seconds": seconds,
                                         "folding": res.report["qc"]["folding_fraction"]}
                print(f"{target_id} {name}: {record['heads'][name]['mean']:.4f}, {seconds:.1f} s", flush=True)
        records.append(record)
        json_path.write_text(json.dumps({"environment": environment(args.threads), "summary": summary(records),
                                         "records": records}, indent=1))
        args.out.write_text(markdown(records))
    print(markdown(records))
    return 0


def environment(threads: int) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_report

    return bench_report.environment(threads, "cpu")


def summary(records: list[dict]) -> list[dict]:
    """(b) rows in the form publish-model stores with a model (bijros.models.library.benchmark_figures)."""
    rows = []
    for name in (records[0]["heads"] if records else []):
        values = [r["heads"][name] for r in records if name in r["heads"]]
        rows.append({"title": name, "pairs": len(values), "mean_dice": float(np.mean([v["mean"] for v in values])),
                     "sd_dice": float(np.std([v["mean"] for v in values])), "mean_hd95_mm": None,
                     "folding_pct": float(100 * np.mean([v["folding"] for v in values])),
                     "median_s": float(np.median([v["seconds"] for v in values])), "median_cpu_s": None})
    return rows


def markdown(records: list[dict]) -> str:
    lines = [f"# Text prompts in registration: MALF atlas 1000 onto {len(records)} targets "
             f"({', '.join(r['target'] for r in records)})", ""]
    if records and records[0]["prompts"]:
        lines += ["## (a) Prompt-steered instance optimisation (io vs io + --prompt)", "",
                  "| prompt | labels matched | named Dice unprompted | named Dice prompted | gain | whole-brain "
                  "unprompted | whole-brain prompted | change | median s (whole run) | folding % max |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for prompt in records[0]["prompts"]:
            rows = [r["prompts"][prompt] for r in records if prompt in r["prompts"]]
            nu, npr = np.mean([x["named_unprompted"] for x in rows]), np.mean([x["named_prompted"] for x in rows])
            mu, mp = np.mean([x["mean_unprompted"] for x in rows]), np.mean([x["mean_prompted"] for x in rows])
            lines.append(f"| {prompt} | {', '.join(rows[0]['labels'])} | {nu:.4f} | {npr:.4f} | {npr - nu:+.4f} | "
                         f"{mu:.4f} | {mp:.4f} | {mp - mu:+.4f} | {np.median([x['seconds'] for x in rows]):.0f} | "
                         f"{100 * max(x['folding'] for x in rows):.3f} |")
        lines.append("")
    if records and records[0]["heads"]:
        lines += ["## (b) The TextSCF head and its ablations (same training budget)", "",
                  "| row | mean Dice | sd over targets | folding % mean / max | median s |", "|---|---|---|---|---|"]
        for name in records[0]["heads"]:
            rows = [r["heads"][name] for r in records if name in r["heads"]]
            what = HEAD_ROWS[name][0]
            m = [x["mean"] for x in rows]
            f = [100 * x["folding"] for x in rows]
            lines.append(f"| {what} (`{name}`) | {np.mean(m):.4f} | {np.std(m):.4f} | {np.mean(f):.3f} / {max(f):.3f} | "
                         f"{np.median([x['seconds'] for x in rows]):.1f} |")
        lines.append("")
    lines.append("Dice over the 132 MALF labels scored in malf_propagation.py (background and six rare labels left "
                 "out); named Dice: mean over the labels the prompt matched. Seconds: register() with the affine "
                 "given (the same for every row of a target).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
