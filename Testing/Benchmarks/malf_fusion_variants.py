#!/usr/bin/env python
"""Label-fusion variants on cached multi-atlas registrations (MALF, leave one out): what each change to the
fusion does to mean Dice, with the registrations done once.

Per target, every other subject is registered onto it (`register`, method io, its own affine) and the warped
images and labels are cached as one .npz in --cache (about 400 MB per target); then each variant fuses the
cached stack and is scored on the 138 labels of malf_propagation.py.

Variants (comma-separated):
* ``vote``; ``weighted[_sS][_pP]`` (local weighting, Gaussian sigma S mm, power P; defaults 2 and 2);
* ``jlf[_pP][_bB][_aA][_lnN][_sR]`` (joint label fusion, patch radius P, beta B, alpha A; ``lnN``: intensities
  first normalised to zero mean and unit variance over N^3 windows; ``sR``: local search within R voxels
  matching patches of radius Q (``qQ``, default 1), ``bijros.atlas.fusion.local_search``);
* ``jlf+intensityL`` (JLF, then each voxel where the atlases disagree re-chooses among their labels by
  log vote share + L x the log-likelihood of the target intensity under a Gaussian per label, fitted on the
  voxels the fusion is at least 90 % sure of).

    python Testing/Benchmarks/malf_fusion_variants.py --targets 1001,1006,1012 --variants vote,weighted,jlf,jlf_p2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "malf"
SUBJECTS = ["1000", "1001", "1002", "1006", "1007", "1008", "1009", "1010", "1011", "1012", "1013", "1014",
            "1015", "1017", "1036"]
EXCLUDE = (0, 15, 65, 66, 74, 126, 127)


def cached_stack(target: str, cache: Path):
    """(warped images (K, ...), warped labels (K, ...)) of every other subject registered onto ``target``."""
    import numpy as np

    path = cache / f"warps_{target}.npz"
    if path.is_file():
        z = np.load(path)
        return z["warped"], z["labels"]
    from bijros.io import load_image
    from bijros.registration.pipeline import RegistrationOptions, register

    fixed = load_image(DATA / f"{target}_t1.nii.gz")
    warped, labels = [], []
    for s in SUBJECTS:
        if s == target or not (DATA / f"{s}_t1.nii.gz").is_file():
            continue
        r = register(fixed, load_image(DATA / f"{s}_t1.nii.gz"), load_image(DATA / f"{s}_labels.nii.gz", label_map=True),
                     RegistrationOptions(method="io", device="cpu"))
        warped.append(np.asarray(r.warped.array, np.float32))
        labels.append(r.labels.array.astype(np.int16))
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, warped=np.stack(warped), labels=np.stack(labels))
    return np.stack(warped), np.stack(labels)


def local_standardise(image, size: int):
    import numpy as np
    from scipy import ndimage

    mean = ndimage.uniform_filter(image, size)
    sd = np.sqrt(np.clip(ndimage.uniform_filter(image * image, size) - mean * mean, 1e-6, None))
    return ((image - mean) / sd).astype(np.float32)


def options(variant: str) -> dict:
    out = {}
    for part in variant.split("_")[1:]:
        key = "ln" if part.startswith("ln") else part[0]
        out[key] = part[len(key):]
    return out


def intensity_refined(fused, confidence, target, labels, weights, lam: float):
    import numpy as np

    total = np.maximum(weights.sum(0), 1e-9)
    disagree = confidence < 0.999
    lab_d, tgt_d = labels[:, disagree], target[disagree]
    w_d = weights[:, disagree]
    share = np.stack([(np.where(lab_d == lab_d[i], w_d, 0).sum(0)) for i in range(labels.shape[0])]) / total[disagree]
    sure = confidence > 0.9
    n = int(labels.max()) + 1
    count = np.bincount(fused[sure], minlength=n).astype(np.float64)
    s1 = np.bincount(fused[sure], weights=target[sure], minlength=n)
    s2 = np.bincount(fused[sure], weights=target[sure] ** 2, minlength=n)
    mean = s1 / np.maximum(count, 1)
    sd = np.sqrt(np.clip(s2 / np.maximum(count, 1) - mean ** 2, 1e-4, None))
    sd[count < 20] = 1.0
    loglik = -0.5 * ((tgt_d[None] - mean[lab_d]) / sd[lab_d]) ** 2 - np.log(sd[lab_d])
    pick = np.argmax(np.log(np.maximum(share, 1e-6)) + lam * loglik, 0)
    out = fused.copy()
    out[disagree] = lab_d[pick, np.arange(lab_d.shape[1])]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", default="1001,1006,1012")
    p.add_argument("--variants", default="vote,weighted,jlf")
    p.add_argument("--cache", type=Path, default=Path("/tmp/bijros-fusion-cache"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    os.environ["BIJROS_NUM_THREADS"] = str(args.threads)
    if not DATA.is_dir():
        sys.exit(f"malf_fusion_variants: MALF folder not found: {DATA}")
    import numpy as np

    from bijros.atlas.fusion import fuse, jlf_weights, local_search, local_weights, normalise
    from bijros.io import load_image
    from bijros.metrics import evaluate_labels

    variants = args.variants.split(",")
    scores: dict[str, list[float]] = {v: [] for v in variants}
    for target in args.targets.split(","):
        warped, labels = cached_stack(target, args.cache)
        image = load_image(DATA / f"{target}_t1.nii.gz")
        truth = load_image(DATA / f"{target}_labels.nii.gz", label_map=True)
        t_norm = normalise(image.array.astype(np.float32))
        w_norm = np.stack([normalise(w) for w in warped])
        for variant in variants:
            t0 = time.perf_counter()
            opt = options(variant.split("+")[0])
            if variant == "vote":
                fused, _ = fuse(labels)
            elif variant.startswith("weighted"):
                w = local_weights(t_norm, w_norm, image.spacing, float(opt.get("s", 2)), float(opt.get("p", 2)))
                fused, _ = fuse(labels, w)
            else:
                t_in, w_in, lab_in = t_norm, w_norm, labels
                if "s" in opt:
                    w_in, lab_in = local_search(t_norm, w_norm, labels, int(opt["s"]), int(opt.get("q", 1)))
                if "ln" in opt:
                    t_in = local_standardise(t_norm, int(opt["ln"] or 5))
                    w_in = np.stack([local_standardise(x, int(opt["ln"] or 5)) for x in w_norm])
                w = jlf_weights(t_in, w_in, lab_in, patch=int(opt.get("p", 1)), beta=float(opt.get("b", 2)),
                                alpha=float(opt.get("a", 0.1)))
                fused, confidence = fuse(lab_in, w)
                if "+intensity" in variant:
                    fused = intensity_refined(fused, confidence, t_norm, lab_in, w, float(variant.split("+intensity")[1]))
            dice = evaluate_labels(fused, truth.array, truth.spacing, exclude=EXCLUDE, with_hd95=False)["mean_dice"]
            scores[variant].append(dice)
            print(f"{target} {variant}: Dice {dice:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print("\n| variant | targets | mean Dice |\n|---|---|---|")
    for variant in variants:
        print(f"| {variant} | {len(scores[variant])} | {np.mean(scores[variant]):.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
