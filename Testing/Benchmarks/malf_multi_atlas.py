#!/usr/bin/env python
"""Atlas selection and multi-atlas fusion on the MALF brains, leave one out, side by side in one run.

Each target in turn; the other subjects are its atlas library. Per target: every atlas is affinely
aligned and ranked (NCC inside the target's foreground, `bijros.atlas.multi.rank_atlases`), every
atlas is then registered with the ranking's affine (`register(..., affine_ras=...)`, method io), and
these rows are scored against the target's manual labels (138 labels, as malf_propagation.py):

* random single atlas: the mean over the library's single atlases (what a random pick gets on average);
* best-ranked single atlas: the rank-1 atlas alone;
* top-k majority vote and top-k locally weighted voting (`bijros.atlas.fusion`) for each k given, and
  joint label fusion for the sizes in --jlf-k, without and with the local search;
* the whole library and its mirrors (`bijros.atlas.mirror`: every atlas flipped left to right, left and right
  labels swapped; 28 atlases): majority vote, weighted voting, and JLF with the local search (the default of
  `bijros propagate --atlas-library`);
* ANTs SyN with the best-ranked atlas (reference; needs antspyx, skipped with --no-ants).

Seconds per target: what `bijros propagate --atlas-library` spends for that row: ranking (one affine per
library atlas) + the deformable registrations of the atlases it fuses + the fusion (2 threads).

    python Testing/Benchmarks/malf_multi_atlas.py --targets 1000,1001,1002,1006 --k 1,3,5,all
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "malf"
OUT = REPO / "Testing" / "Benchmarks" / "results" / "malf_multi_atlas.md"
SUBJECTS = ["1000", "1001", "1002", "1006", "1007", "1008", "1009", "1010", "1011", "1012", "1013", "1014",
            "1015", "1017", "1036"]
EXCLUDE = (0, 15, 65, 66, 74, 126, 127)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--targets", default=",".join(SUBJECTS), help="comma-separated target ids (default: all 15)")
    p.add_argument("--k", default="1,3,5,7,all", help="fusion sizes to score")
    p.add_argument("--jlf-k", default="all", help="fusion sizes to score with joint label fusion too")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-ants", action="store_true")
    p.add_argument("--no-mirror", action="store_true", help="skip the rows with mirrored atlases")
    p.add_argument("--out", type=Path, default=OUT)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    for var in ("BIJROS_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if not args.data.is_dir():
        sys.exit(f"malf_multi_atlas: MALF folder not found: {args.data}")
    import numpy as np

    from bijros.atlas.fusion import fuse, jlf_weights, local_search, local_weights, normalise
    from bijros.atlas.mirror import MIRRORED_SUFFIX, with_mirrored
    from bijros.atlas.multi import LoadedAtlas, merged_label_table, rank_atlases
    from bijros.io import load_image
    from bijros.metrics import evaluate_labels
    from bijros.registration.pipeline import RegistrationOptions, register

    subjects = [s for s in SUBJECTS if (args.data / f"{s}_t1.nii.gz").is_file()]
    loaded = {s: LoadedAtlas(s, load_image(args.data / f"{s}_t1.nii.gz"),
                             load_image(args.data / f"{s}_labels.nii.gz", label_map=True)) for s in subjects}
    ants = None
    if not args.no_ants:
        try:
            import ants
        except ImportError:
            print("antspyx is not installed: the ANTs row is skipped", file=sys.stderr)
    options = RegistrationOptions(method="io", device="cpu")
    rows: dict[str, list] = {}
    per_target = []

    def add(row, target, labels, truth, seconds, hd95=True):
        ev = evaluate_labels(labels, truth.array, truth.spacing, exclude=EXCLUDE, with_hd95=hd95)
        rows.setdefault(row, []).append({"target": target, "dice": ev["mean_dice"],
                                         "hd95": ev.get("mean_hd95_mm"), "seconds": seconds})
        return ev["mean_dice"]

    for target in args.targets.split(","):
        truth = loaded[target].labels
        library = [loaded[s] for s in subjects if s != target]
        pool, _note = with_mirrored(library, merged_label_table(library), "off" if args.no_mirror else "on")
        t0 = time.perf_counter()
        ranked_pool = rank_atlases(loaded[target].image, pool, options)
        pool_rank_seconds = time.perf_counter() - t0
        ranked = [r for r in ranked_pool if not r[1].name.endswith(MIRRORED_SUFFIX)]
        rank_seconds = sum(r[3] for r in ranked)  # what ranking the library alone costs
        mirror_maps, mirror_warped, mirror_seconds = [], [], []
        maps, warped, reg_seconds, singles = [], [], [], []
        for _score, atlas, affine, _sec in ranked_pool:
            t1 = time.perf_counter()
            result = register(loaded[target].image, atlas.image, atlas.labels, options, affine_ras=affine)
            if atlas.name.endswith(MIRRORED_SUFFIX):
                mirror_seconds.append(time.perf_counter() - t1)
                mirror_maps.append(result.labels.array)
                mirror_warped.append(normalise(result.warped.array))
                continue
            reg_seconds.append(time.perf_counter() - t1)
            maps.append(result.labels.array)
            warped.append(normalise(result.warped.array))
            singles.append(evaluate_labels(result.labels.array, truth.array, truth.spacing, exclude=EXCLUDE,
                                           with_hd95=False)["mean_dice"])
        rows.setdefault("random single atlas (mean of the library)", []).append(
            {"target": target, "dice": float(np.mean(singles)), "hd95": None,
             "seconds": rank_seconds / len(library) + float(np.mean(reg_seconds))})
        add("best-ranked single atlas", target, maps[0], truth, rank_seconds + reg_seconds[0])
        target_norm = normalise(loaded[target].image.array.astype(np.float32))
        all_weights = local_weights(target_norm, np.stack(warped), loaded[target].image.spacing)
        sizes = [len(library) if k == "all" else int(k) for k in args.k.split(",")]
        jlf_sizes = {len(library) if k == "all" else int(k) for k in args.jlf_k.split(",") if k}
        line = {"target": target, "singles": singles, "ranking": [a.name for _s, a, _f, _t in ranked]}
        for k in sorted({s for s in sizes if s > 1}):
            stack = np.stack(maps[:k])
            t2 = time.perf_counter()
            voted, _ = fuse(stack)
            vote_s = time.perf_counter() - t2
            full = k == len(library)  # HD95 (slow on 138 labels) for the whole-library rows only
            line[f"vote{k}"] = add(f"top-{k} majority vote", target, voted, truth,
                                   rank_seconds + sum(reg_seconds[:k]) + vote_s, hd95=full)
            t3 = time.perf_counter()
            weighted, _ = fuse(stack, all_weights[:k])
            weighted_s = time.perf_counter() - t3
            line[f"weighted{k}"] = add(f"top-{k} weighted voting", target, weighted, truth,
                                       rank_seconds + sum(reg_seconds[:k]) + weighted_s, hd95=full)
            if k in jlf_sizes:
                t5 = time.perf_counter()
                jlf, _ = fuse(stack, jlf_weights(target_norm, np.stack(warped[:k]), stack))
                line[f"jlf{k}"] = add(f"top-{k} joint label fusion, no search", target, jlf, truth,
                                      rank_seconds + sum(reg_seconds[:k]) + time.perf_counter() - t5, hd95=full)
                t6 = time.perf_counter()  # the default: local search within one voxel first
                searched, s_stack = local_search(target_norm, np.stack(warped[:k]), stack, radius=1)
                jlf, _ = fuse(s_stack, jlf_weights(target_norm, searched, s_stack))
                del searched, s_stack
                line[f"jlf_search{k}"] = add(f"top-{k} joint label fusion with local search", target, jlf,
                                             truth, rank_seconds + sum(reg_seconds[:k]) + time.perf_counter() - t6,
                                             hd95=full)
        if mirror_maps:
            stack = np.stack(maps + mirror_maps)
            images = np.stack(warped + mirror_warped)
            base = pool_rank_seconds + sum(reg_seconds) + sum(mirror_seconds)
            n = len(stack)
            t7 = time.perf_counter()
            voted, _ = fuse(stack)
            line[f"vote{n}m"] = add(f"{len(maps)} atlases + {len(mirror_maps)} mirrored, majority vote", target, voted,
                                    truth, base + time.perf_counter() - t7, hd95=False)
            t8 = time.perf_counter()
            weighted, _ = fuse(stack, local_weights(target_norm, images, loaded[target].image.spacing))
            line[f"weighted{n}m"] = add(f"{len(maps)} atlases + {len(mirror_maps)} mirrored, weighted voting", target,
                                        weighted, truth, base + time.perf_counter() - t8, hd95=False)
            t9 = time.perf_counter()
            searched, s_stack = local_search(target_norm, images, stack, radius=1)
            jlf, _ = fuse(s_stack, jlf_weights(target_norm, searched, s_stack))
            del searched, s_stack, images
            line[f"jlf_search{n}m"] = add(f"{len(maps)} atlases + {len(mirror_maps)} mirrored, joint label fusion with "
                                          "local search (the default)", target, jlf, truth,
                                          base + time.perf_counter() - t9)
        if ants is not None:
            best = ranked[0][1]
            tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"malf_multi_{target}"
            tmp.mkdir(exist_ok=True)
            t4 = time.perf_counter()
            fixed = ants.image_read(str(args.data / f"{target}_t1.nii.gz"))
            moving = ants.image_read(str(args.data / f"{best.name}_t1.nii.gz"))
            reg = ants.registration(fixed, moving, type_of_transform="SyN", outprefix=f"{tmp}/tx_")
            lab = ants.apply_transforms(fixed, ants.image_read(str(args.data / f"{best.name}_labels.nii.gz")),
                                        reg["fwdtransforms"], interpolator="genericLabel")
            add("ANTs SyN, best-ranked single atlas", target, np.rint(lab.numpy()).astype(np.int32), truth,
                rank_seconds + time.perf_counter() - t4)
        line["best_ranked_beats_mean_single"] = singles[0] > float(np.mean(singles))
        per_target.append(line)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in line.items()
                          if k not in ("singles", "ranking")}), flush=True)
        write(args, rows, per_target)
    return 0


def write(args, rows, per_target) -> None:
    import numpy as np

    lines = ["# MALF atlas selection and multi-atlas fusion (leave one out)", "",
             f"- targets: {', '.join(p['target'] for p in per_target)} (each with the other {len(SUBJECTS) - 1} "
             "subjects as its library); 138 labels scored as in malf_propagation.md; CPU, "
             f"{args.threads} threads; registration: bijros io (1 mm), ranking: NCC after affine",
             f"- best-ranked single atlas beats the library's mean single atlas on "
             f"{sum(p['best_ranked_beats_mean_single'] for p in per_target)} of {len(per_target)} targets", "",
             "| row | targets | mean Dice (± sd) | mean HD95 mm | median s/target |", "|---|---|---|---|---|"]
    for row, values in rows.items():
        dice = [v["dice"] for v in values]
        hd = [v["hd95"] for v in values if v["hd95"] is not None]
        lines.append(f"| {row} | {len(values)} | {np.mean(dice):.4f} ± {np.std(dice):.4f} | "
                     f"{(f'{np.mean(hd):.2f}' if hd else '-')} | {np.median([v['seconds'] for v in values]):.0f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps({"rows": rows, "per_target": per_target}, indent=1) + "\n",
                                             encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
