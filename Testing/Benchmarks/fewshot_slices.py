#!/usr/bin/env python
"""Few-shot segmentation from a few painted slices: what a Slicer user gets today (issue 12's baselines).

(a) Same volume: for each hippocampus crop and each voxel axis in turn, the slices at 1/6, 1/2 and 5/6 of the
    labelled range along that axis are "painted" (their manual labels kept); the rest of the case is filled and
    scored on every slice not painted (Dice per label, anterior 1 and posterior 2, and of the whole
    hippocampus). Rows: Segment Editor's *Fill between slices* (ITK's MorphologicalContourInterpolator, the
    filter that effect runs, interpolating along the painted axis) and copying the nearest painted slice.
(b) Other volumes: one support case painted the same way (axis 0), filled between slices, then propagated by
    bijros's one-shot 3D registration (io) onto each query case; reference row: the support fully labelled.
(c) Same volume on MALF brains (1 mm T1, whole heads): four structures of a few scans painted as in (a).
(w) What a user waits for: the whole ``bijros fewshot`` command (process start to the last file written) on the
    support case of (b), same volume and another volume, with its defaults (3 runs each, median).

GMRD rows: bijros's few-shot model (``--model``, default the catalog's) on the same painted slices, through
``bijros.fewshot.infer.segment`` (what ``bijros fewshot`` runs). One process, 2 threads.

    pip install -e ".[bench]"
    python Testing/Benchmarks/fewshot_slices.py                 # (a) on 40 cases, (b) one support -> 40 queries
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "hippocampus"
OUT = REPO / "Testing" / "Benchmarks" / "results" / "fewshot_slices.md"
FRACTIONS = (1 / 6, 1 / 2, 5 / 6)
MALF = REPO.parent / "shared" / "data" / "malf"
MALF_CASES = ("1000", "1001", "1002", "1006", "1007", "1008", "1009", "1010")
MALF_STRUCTURES = {48: "Left Hippocampus", 37: "Left Caudate", 57: "Right Putamen", 60: "Left Thalamus"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=40, help="cases of (a), and queries of (b)")
    p.add_argument("--support", default="hippocampus_001", help="(b): the support case")
    p.add_argument("--part", default="abcw",
                   help="a: same volume, b: other volumes, c: same volume on MALF brains, w: the whole command's wall time")
    p.add_argument("--malf-cases", type=int, default=4, help="(c): MALF scans")
    p.add_argument("--model", default=None, help="few-shot model (catalog name or model.json); 'none': no GMRD rows")
    p.add_argument("--finetune-steps", type=int, default=30, help="the fine-tuned GMRD rows' steps")
    p.add_argument("--out", type=Path, default=OUT)
    return p.parse_args(argv)


def painted_slices(labels: np.ndarray, axis: int) -> list[int]:
    other = tuple(a for a in range(3) if a != axis)
    idx = np.where(np.any(labels > 0, axis=other))[0]
    lo, hi = int(idx.min()), int(idx.max())
    return sorted({round(lo + f * (hi - lo)) for f in FRACTIONS})


def sparse_and_mask(labels: np.ndarray, axis: int, picks: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(labels on the painted slices only, mask of the voxels to score: every slice not painted)."""
    sparse, keep = np.zeros_like(labels), np.ones(labels.shape, bool)
    for p in picks:
        index = [slice(None)] * 3
        index[axis] = p
        sparse[tuple(index)] = labels[tuple(index)]
        keep[tuple(index)] = False
    return sparse, keep


def fill_between_slices(sparse: np.ndarray, axis: int) -> np.ndarray:
    import itk

    image = itk.image_from_array(np.ascontiguousarray(sparse.astype(np.uint8)))  # ITK axes are reversed
    interpolator = itk.MorphologicalContourInterpolator.New(image)
    interpolator.SetAxis(2 - axis)
    interpolator.Update()
    return itk.array_from_image(interpolator.GetOutput()).astype(sparse.dtype)


def shape_only(sparse: np.ndarray, axis: int, picks: list[int]) -> np.ndarray:
    """bijros's shape prior alone (signed-distance interpolation, tapered beyond the end slices), per label."""
    from bijros.fewshot.prior import signed_distance_stack

    out = np.zeros_like(sparse)
    for value in (int(v) for v in np.unique(sparse) if v):
        masks = np.moveaxis(sparse == value, axis, 0)
        holding = [p for p in picks if masks[p].any()]
        inside = np.moveaxis(signed_distance_stack(masks, holding) < 0, 0, axis)
        out[inside & (out == 0)] = value
    return out


def nearest_slice(sparse: np.ndarray, axis: int, picks: list[int]) -> np.ndarray:
    out = np.zeros_like(sparse)
    for i in range(sparse.shape[axis]):
        nearest = min(picks, key=lambda p: abs(p - i))
        src, dst = [slice(None)] * 3, [slice(None)] * 3
        src[axis], dst[axis] = nearest, i
        out[tuple(dst)] = sparse[tuple(src)]
    return out


def same_volume_runs(image: np.ndarray, truth: np.ndarray, axis: int, gmrd, variants: dict):
    """(a) and (c): the slices at 1/6, 1/2, 5/6 along ``axis`` painted -> (voxels to score, row -> filling)."""
    picks = painted_slices(truth, axis)
    sparse, keep = sparse_and_mask(truth, axis, picks)
    runs = {"Fill between slices": functools.partial(fill_between_slices, sparse, axis),
            "nearest painted slice": functools.partial(nearest_slice, sparse, axis, picks),
            "shape interpolation alone (bijros prior, no image)": functools.partial(shape_only, sparse, axis, picks)}
    runs.update({row: functools.partial(gmrd, image, sparse, image, True, axis, picks, options)
                 for row, options in variants.items()})
    return keep, runs


def dice(pred: np.ndarray, truth: np.ndarray, keep: np.ndarray) -> dict[str, float]:
    out = {}
    for name, (a, b) in {"anterior": (pred == 1, truth == 1), "posterior": (pred == 2, truth == 2),
                         "whole": (pred > 0, truth > 0)}.items():
        a, b = a & keep, b & keep
        total = a.sum() + b.sum()
        out[name] = float(2 * (a & b).sum() / total) if total else 1.0
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("BIJROS_NUM_THREADS", "2")
    from bijros.io import load_image

    names = sorted(p.name.replace(".nii.gz", "") for p in (DATA / "labels").glob("hippocampus_*.nii.gz"))
    load = lambda n: load_image(DATA / "labels" / f"{n}.nii.gz", label_map=True)  # noqa: E731
    results: dict = {"a": {}, "b": {}}
    model = None
    if args.model != "none":
        from bijros.fewshot.model_library import get_fewshot_model

        model, _entry = get_fewshot_model(args.model, "cpu")

    from bijros.fewshot.infer import FewShotOptions

    def gmrd(support_img, sparse_labels, query_img, same, axis, picks, options=None):
        from bijros.fewshot.infer import segment

        return segment(model, support_img, sparse_labels, query_img, slices=(axis, picks), same_volume=same,
                       options=options)[0]

    ft = args.finetune_steps
    variants_a = {  # row -> FewShotOptions of bijros fewshot in the same volume
        "GMRD alone (--prior-weight 0)": FewShotOptions(prior_weight=0, finetune_steps=0),
        f"GMRD alone, fine-tuned ({ft} steps)": FewShotOptions(prior_weight=0, finetune_steps=ft),
        "GMRD + shape interpolation, not fine-tuned": FewShotOptions(finetune_steps=0),
        f"GMRD + shape interpolation, fine-tuned ({ft} steps)": FewShotOptions(finetune_steps=ft),
    }
    if "a" in args.part:
        rows: dict[str, list] = {"Fill between slices": [], "nearest painted slice": [],
                                 "shape interpolation alone (bijros prior, no image)": []}
        if model is not None:
            rows.update({k: [] for k in variants_a})
        seconds: dict[str, list] = {k: [] for k in rows}
        for name in names[: args.cases]:
            truth = np.asarray(load(name).array)
            image = np.asarray(load_image(DATA / "images" / f"{name}.nii.gz").array)
            for axis in range(3):
                keep, runs = same_volume_runs(image, truth, axis, gmrd, variants_a)
                for row in rows:
                    run = runs[row]
                    t0 = time.perf_counter()
                    pred = run()
                    seconds[row].append(time.perf_counter() - t0)
                    rows[row].append({"case": name, "axis": axis, **dice(pred, truth, keep)})
            print(name, {r: round(rows[r][-1]["whole"], 3) for r in rows}, flush=True)
        results["a"] = {r: {"records": v, "median_s": float(np.median(seconds[r][1:] or seconds[r]))}
                        for r, v in rows.items()}
    if "b" in args.part:
        from bijros.registration.pipeline import RegistrationOptions, register

        support_img = load_image(DATA / "images" / f"{args.support}.nii.gz")
        support_lab = load(args.support)
        truth_s = np.asarray(support_lab.array)
        picks = painted_slices(truth_s, 0)
        filled = fill_between_slices(sparse_and_mask(truth_s, 0, picks)[0], 0)
        from bijros.io.image import Image

        variants = {"Fill between slices, then io propagation": Image(filled, support_lab.ijk_to_ras, name="filled"),
                    "support fully labelled, io propagation (reference)": support_lab}
        if model is not None:
            variants.update({"GMRD (--transfer model) from the 3 slices": FewShotOptions(finetune_steps=0),
                             f"GMRD (--transfer model), fine-tuned ({ft} steps)": FewShotOptions(finetune_steps=ft),
                             "bijros fewshot default: GMRD + shape fill (fine-tuned), then io propagation": "fill"})
        sparse_s = sparse_and_mask(truth_s, 0, picks)[0]
        rows = {k: [] for k in variants}
        seconds = {k: [] for k in variants}
        queries = [n for n in names if n != args.support][: args.cases]
        filled_gmrd = None
        for name in queries:
            query = load_image(DATA / "images" / f"{name}.nii.gz")
            truth = np.asarray(load(name).array)
            for row, labels in variants.items():
                t0 = time.perf_counter()
                if isinstance(labels, FewShotOptions):
                    pred = gmrd(np.asarray(support_img.array), sparse_s, np.asarray(query.array), False, 0, picks,
                                labels)
                elif isinstance(labels, str):  # what bijros fewshot --transfer registration does
                    if filled_gmrd is None:
                        s_arr = np.asarray(support_img.array)
                        filled_gmrd = Image(gmrd(s_arr, sparse_s, s_arr, True, 0, picks), support_lab.ijk_to_ras)
                    pred = register(query, support_img, filled_gmrd, RegistrationOptions(method="io")).labels.array
                else:
                    pred = register(query, support_img, labels, RegistrationOptions(method="io")).labels.array
                seconds[row].append(time.perf_counter() - t0)
                rows[row].append({"case": name, **dice(pred, truth, np.ones(truth.shape, bool))})
            print(name, {r: round(rows[r][-1]["whole"], 3) for r in rows}, flush=True)
        results["b"] = {r: {"records": v, "median_s": float(np.median(seconds[r]))} for r, v in rows.items()}
        results["b_support"] = {"case": args.support, "painted_axis0": picks}
    if "c" in args.part:
        results["c"] = malf_part(args, model, gmrd, variants_a)
    if "w" in args.part and model is not None:
        results["w"] = wall_part(args, names)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    args.out.write_text(markdown(results, args))
    print(markdown(results, args))
    return 0


def wall_part(args, names, runs: int = 3) -> dict:
    """(w) ``bijros fewshot`` as a user runs it: its defaults, a fresh process each time, seconds from start to exit
    (the support case of (b): its remaining slices and another case, beside the peer for another case: the
    support filled between slices, then ``bijros propagate --method io``; a structure on a whole MALF scan)."""
    import subprocess
    import tempfile

    import nibabel as nib

    truth = nib.load(DATA / "labels" / f"{args.support}.nii.gz")
    labels = np.asarray(truth.dataobj)
    picks = painted_slices(labels, 0)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        painted = Path(tmp) / "painted.nii.gz"
        nib.save(nib.Nifti1Image(sparse_and_mask(labels, 0, picks)[0].astype(np.int16), truth.affine), painted)
        other = next(n for n in names if n != args.support)
        support, other_image = DATA / "images" / f"{args.support}.nii.gz", DATA / "images" / f"{other}.nii.gz"
        model = ["--model", args.model] if args.model else []

        def fewshot(image, labels_path, query):
            return ["fewshot", "--support-image", str(image), "--support-labels", str(labels_path), "--query",
                    str(query), "--device", "cpu", *model]

        filled = Path(tmp) / "filled.nii.gz"  # the peer: Segment Editor's Fill between slices, then propagation
        nib.save(nib.Nifti1Image(fill_between_slices(sparse_and_mask(labels, 0, picks)[0].astype(np.int16), 0),
                                 truth.affine), filled)
        cases = {"same volume (the remaining slices)": fewshot(support, painted, support),
                 f"another volume ({other}, --transfer registration)": fewshot(support, painted, other_image),
                 f"peer: Fill between slices (in Slicer), then bijros propagate --method io onto {other}":
                     ["propagate", "--atlas", str(support), "--atlas-labels", str(filled), "--target",
                      str(other_image), "--method", "io", "--device", "cpu"]}
        brain = MALF / f"{MALF_CASES[1]}_labels.nii.gz"
        if brain.is_file():  # a structure painted on a whole-head scan
            labels_b = nib.load(brain)
            whole = (np.asarray(labels_b.dataobj) == 48).astype(np.int16)
            painted_b = Path(tmp) / "painted_brain.nii.gz"
            nib.save(nib.Nifti1Image(sparse_and_mask(whole, 2, painted_slices(whole, 2))[0], labels_b.affine),
                     painted_b)
            scan = MALF / f"{MALF_CASES[1]}_t1.nii.gz"
            cases[f"same volume, MALF {MALF_CASES[1]} whole scan (left hippocampus, 3 slices)"] = fewshot(
                scan, painted_b, scan)
        for row, command in cases.items():
            seconds = []
            for i in range(runs):
                cmd = [sys.executable, "-m", "bijros", *command, "--out", str(Path(tmp) / f"out{len(out)}-{i}")]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                seconds.append(time.perf_counter() - t0)
            out[row] = {"seconds": seconds, "median_s": float(np.median(seconds))}
            print(row, [round(x, 2) for x in seconds], flush=True)
    return out


def malf_part(args, model, gmrd, variants_a) -> dict:
    """(c) Same volume on MALF brains: each structure of MALF_STRUCTURES painted on 3 slices along each axis of the
    whole scan (as a user paints it in Slicer), scored on every voxel of the slices not painted."""
    from bijros.io import load_image

    rows = ["Fill between slices", "nearest painted slice", "shape interpolation alone (bijros prior, no image)"]
    if model is not None:
        rows += [r for r in variants_a if "shape" in r]
    records: dict[str, list] = {r: [] for r in rows}
    seconds: dict[str, list] = {r: [] for r in rows}
    for case in MALF_CASES[: args.malf_cases]:
        image = np.asarray(load_image(MALF / f"{case}_t1.nii.gz").array)
        labels = np.asarray(load_image(MALF / f"{case}_labels.nii.gz", label_map=True).array)
        for value, structure in MALF_STRUCTURES.items():
            truth = (labels == value).astype(np.int16)
            for axis in range(3):
                keep, runs = same_volume_runs(image, truth, axis, gmrd, variants_a)
                for row in rows:
                    t0 = time.perf_counter()
                    pred = runs[row]()
                    seconds[row].append(time.perf_counter() - t0)
                    a, b = (pred > 0) & keep, (truth > 0) & keep
                    records[row].append({"case": case, "structure": structure, "axis": axis,
                                         "dice": float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))})
            print(case, structure, {r: round(np.mean([x["dice"] for x in records[r][-3:]]), 3) for r in rows},
                  flush=True)
    return {r: {"records": v, "median_s": float(np.median(seconds[r]))} for r, v in records.items()}


def markdown(results: dict, args) -> str:
    lines = ["# Few-shot from painted slices: GMRD and today's baselines (hippocampus crops, MALF brains)", ""]
    if results["a"]:
        lines += [f"## (a) Same volume: 3 painted slices (1/6, 1/2, 5/6 of the labelled range) -> the rest, "
                  f"{args.cases} cases x 3 axes", "",
                  "| row | whole hippocampus Dice | anterior | posterior | Dice by axis 0 / 1 / 2 | median s |",
                  "|---|---|---|---|---|---|"]
        for row, data in results["a"].items():
            rec = data["records"]
            by_axis = " / ".join(f"{np.mean([r['whole'] for r in rec if r['axis'] == a]):.3f}" for a in range(3))
            lines.append(f"| {row} | {np.mean([r['whole'] for r in rec]):.4f} | "
                         f"{np.mean([r['anterior'] for r in rec]):.4f} | {np.mean([r['posterior'] for r in rec]):.4f} "
                         f"| {by_axis} | {data['median_s']:.3f} |")
        lines.append("")
    if results["b"]:
        lines += [f"## (b) Other volumes: support {args.support} (3 slices along axis 0) -> "
                  f"{len(next(iter(results['b'].values()))['records'])} query cases", "",
                  "| row | whole hippocampus Dice | anterior | posterior | median s |", "|---|---|---|---|---|"]
        for row, data in results["b"].items():
            rec = data["records"]
            lines.append(f"| {row} | {np.mean([r['whole'] for r in rec]):.4f} | "
                         f"{np.mean([r['anterior'] for r in rec]):.4f} | {np.mean([r['posterior'] for r in rec]):.4f} "
                         f"| {data['median_s']:.2f} |")
        lines.append("")
    if results.get("c"):
        structures = list(MALF_STRUCTURES.values())
        lines += [f"## (c) Same volume, MALF brains (whole scans): {args.malf_cases} scans x {len(structures)} "
                  "structures x 3 axes, 3 painted slices each", "",
                  "| row | mean Dice | " + " | ".join(structures) + " | median s |",
                  "|---|---|" + "---|" * len(structures) + "---|"]
        for row, data in results["c"].items():
            rec = data["records"]
            per = " | ".join(f"{np.mean([r['dice'] for r in rec if r['structure'] == s]):.3f}" for s in structures)
            lines.append(f"| {row} | {np.mean([r['dice'] for r in rec]):.4f} | {per} | {data['median_s']:.2f} |")
        lines.append("")
    if results.get("w"):
        lines += ["## (w) The whole command a user waits for, its defaults (start to exit, median of 3, CPU)", "",
                  "| query | median s |", "|---|---|"]
        lines += [f"| {row} | {data['median_s']:.1f} |" for row, data in results["w"].items()]
        lines.append("")
    lines.append("bijros fewshot's defaults: GMRD + shape interpolation, fine-tuned 30 steps (same volume); the "
                 "support filled that way, then io propagation (another volume). Scored on every voxel of the slices "
                 "not painted (a, c) or of the whole query (b). Seconds in (a)-(c): the filling (a, c) or register() "
                 "with label warping (b), in this process.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
