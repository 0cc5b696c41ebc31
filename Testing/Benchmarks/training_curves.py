"""Compare learned-registration training runs at equal steps (same seed = the same synthetic pairs).

    python Testing/Benchmarks/training_curves.py runs/eoir_2mm_400 runs/unet_2mm --every 100 \\
        --out Testing/Benchmarks/results/eoir_vs_unet_training.md

For each run folder (``loss.csv`` + ``model.json`` from ``bijros train-registration``) it prints, per
window of ``--every`` steps, the mean training Dice (1 - Dice loss) and smoothness term, plus the
parameter count and seconds per step. Runs with the same config seed and synthesis options saw exactly
the same pairs, so the windows compare like with like.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def read_run(folder: Path) -> tuple[dict, list[dict]]:
    entry = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    with open(folder / "loss.csv", newline="") as fh:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]
    return entry, rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--out", type=Path, default=None, help="also write the table as markdown here")
    args = p.parse_args(argv)
    runs = [(folder, *read_run(folder)) for folder in args.runs]
    steps = min(int(rows[-1]["step"]) for _, _, rows in runs)
    windows = [(a, min(a + args.every, steps)) for a in range(0, steps, args.every)]
    head = "| run | architecture | parameters | s/step | " + " | ".join(f"Dice steps {a + 1}-{b}" for a, b in windows)
    lines = [head + " |", "|" + "---|" * (4 + len(windows))]
    for folder, entry, rows in runs:
        from bijros.models import build_model, count_parameters

        params = count_parameters(build_model(entry["architecture"], entry["config"]))
        cells = []
        for a, b in windows:
            part = [r for r in rows if a < r["step"] <= b]
            cells.append(f"{sum(1 - r['dice_loss'] for r in part) / len(part):.4f}")
        sec = rows[steps - 1]["seconds"] / steps
        lines.append(f"| {folder.name} | {entry['architecture']} | {params:,} | {sec:.2f} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text("# Training curves at equal steps\n\nMean training Dice (1 - soft Dice loss) of the "
                            "warped synthetic label maps per window; the runs share the seed, so they saw the same "
                            f"pairs.\n\n{table}", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
