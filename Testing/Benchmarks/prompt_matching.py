#!/usr/bin/env python
"""Prompt matching accuracy: each prompt of prompt_synonyms.csv (synonyms, plurals, lay terms, side words;
written for this benchmark, not used by the matcher) against the MALF label table, restricted to the labels the
MALF label maps hold. A prompt counts as matched when the labels found are exactly the expected ones (right
structures, right sides).

    python Testing/Benchmarks/prompt_matching.py
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "malf"
LIST = Path(__file__).with_name("prompt_synonyms.csv")
OUT = Path(__file__).with_name("results") / "prompt_matching.md"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--list", type=Path, default=LIST, help="the prompts (CSV: prompt,expected with '|' between names)")
    args = p.parse_args(argv)
    if not (args.data / "labels.csv").is_file():
        sys.exit(f"prompt_matching: MALF folder not found: {args.data}")
    import nibabel as nib
    import numpy as np

    sys.path.insert(0, str(REPO))
    from bijros.errors import InputError
    from bijros.io.label_tables import read_label_table
    from bijros.text.encoder import Embeddings
    from bijros.text.match import match_prompt

    table = read_label_table(args.data / "labels.csv")
    present = set()
    for path in sorted(args.data.glob("*_labels.nii.gz"))[:3]:
        present |= set(np.unique(np.asarray(nib.load(str(path)).dataobj)).astype(int).tolist())
    entries = [(e.value, e.name) for e in table if e.value in present]
    rows = list(csv.DictReader(args.list.open(encoding="utf-8")))
    embed = Embeddings()
    t0 = time.perf_counter()
    results, hits = [], 0
    for row in rows:
        expected = set(row["expected"].split("|"))
        try:
            found = {lab["name"] for lab in match_prompt(row["prompt"], entries, embed)["labels"]}
        except InputError:
            found = set()
        ok = found == expected
        hits += ok
        results.append((row["prompt"], ok, sorted(expected - found), sorted(found - expected)))
    seconds = time.perf_counter() - t0
    lines = ["# Prompt matching on the MALF label table", "",
             f"- {len(rows)} prompts (Testing/Benchmarks/{args.list.name}) against {len(entries)} labels; "
             f"exact match (right labels, right sides): **{hits} of {len(rows)} ({100 * hits / len(rows):.0f} %)**; "
             f"{seconds:.1f} s for all, {embed.computed} texts embedded by the model", "",
             "| prompt | exact | missed | extra |", "|---|---|---|---|"]
    lines += [f"| {pr} | {'yes' if ok else 'no'} | {', '.join(m) or '-'} | {', '.join(x) or '-'} |"
              for pr, ok, m, x in results]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
