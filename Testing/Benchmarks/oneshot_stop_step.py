#!/usr/bin/env python
"""How much the one-shot segmentation decoder's Dice depends on the step its budget stops at (issue 14).

One training run per variant (the hippocampus setup of oneshot_cohort.py: atlas hippocampus_001, cohort 40,
scored on the 40 cases after them), with snapshots of the segmentation decoder taken every ``--every`` steps
from ``--from`` of the budget on. Every snapshot, the last step's weights (the checkpoint's), the exported ones
(the trainer's moving average, ``OneShotConfig.ema``, warmed up), the same average without the warm-up (plain
decay from the first training step, kept here through ``on_step``) and the ensemble of all snapshots'
probabilities are scored on the same test cases (each case aligned once), so one run shows the spread a single
stop step hides. ``--iterations N`` budgets steps instead of minutes (the same training on any machine).

    python Testing/Benchmarks/oneshot_stop_step.py --minutes 20 --variants bijros-io-direct,bijros-io
    python Testing/Benchmarks/oneshot_stop_step.py --iterations 150 --variants bijros-io --out runs/ema_150.md
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oneshot_cohort import DATA, OUT, REPO, VARIANTS, dice


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--iterations", type=int, default=None, help="a budget in steps instead of --minutes")
    p.add_argument("--variants", default="bijros-io-direct,bijros-io")
    p.add_argument("--every", type=int, default=25)
    p.add_argument("--from", dest="start", type=float, default=0.6, help="snapshots from this budget fraction on")
    p.add_argument("--seed", type=int, default=0, help="the trainer's seed (OneShotConfig.seed)")
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "oneshot_stop")
    p.add_argument("--out", type=Path, default=OUT / "oneshot_hippocampus_stop_step.md")
    args = p.parse_args(argv)

    import torch

    from bijros.device import resolve_device
    from bijros.io import load_image
    from bijros.oneshot.segment import load_oneshot_model, to_image_grid
    from bijros.oneshot.train import OneShotConfig, train_oneshot, update_ema

    torch.set_num_threads(2)
    root = DATA / "hippocampus"
    if not root.is_dir():
        print(f"{root} is missing: this benchmark needs ../shared/data", file=sys.stderr)
        return 2
    cases = sorted(q.name for q in (root / "images").iterdir())
    cohort = [root / "images" / c for c in cases[1:41]]
    test = cases[41:81]
    budget = f"{args.iterations} steps" if args.iterations else f"{args.minutes:g} min"
    lines = [f"# One-shot decoder vs its stop step: hippocampus, atlas {cases[0]}, cohort 40, scored on 40 further "
             "cases", "", f"Training budget {budget} on cpu (2 threads); snapshots of the segmentation "
             f"decoder every {args.every} steps from {args.start:.0%} of the budget; trainer seed {args.seed}; EMA: the "
             "exported weights (decay warmed up); plain EMA: the same decay from the first training step, no warm-up. "
             "Mean Dice of anterior and posterior over the test cases.", "",
             "| variant | steps | last step | snapshots: mean (min - max) | EMA | plain EMA | ensemble of snapshots | io |",
             "|---|---|---|---|---|---|---|---|"]
    details: list[str] = []
    for variant in args.variants.split(","):
        recipe, pseudo, extra = VARIANTS[variant]
        run = args.runs / (f"{variant}_{budget.replace(' ', '')}" + (f"_seed{args.seed}" if args.seed else ""))
        snaps: list[tuple[int, dict]] = []
        plain: dict = {}  # the trainer's average without its warm-up, for comparison
        cfg = OneShotConfig(recipe=recipe, pseudo_labels=pseudo, minutes=None if args.iterations else args.minutes,
                            iterations=args.iterations, device="cpu", seed=args.seed, **extra)

        def on_step(step, fraction, phase, model, snaps=snaps, plain=plain, cfg=cfg):
            if phase == "train" and cfg.ema is not None:
                update_ema(plain, model, cfg.ema, updates=10**9)  # min(decay, ~1): the plain decay
            if phase == "train" and fraction >= args.start and step % args.every == 0:
                snaps.append((step, copy.deepcopy(model.seg_decoder.state_dict())))

        t0 = time.perf_counter()
        summary = train_oneshot(root / "images" / cases[0], root / "labels" / cases[0], cohort, run, cfg, bar=False,
                                on_step=on_step)
        print(f"{variant}: {summary['step']} steps, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        model = load_oneshot_model(run, resolve_device("cpu"))
        from bijros.oneshot.checkpoint import load_tensors

        # the last step's weights are the checkpoint's (model.safetensors holds the trainer's average by default)
        ckpt = load_tensors(run, "checkpoint", "checkpoint")[0]
        last = {k[len("model.seg_decoder."):]: v for k, v in ckpt.items() if k.startswith("model.seg_decoder.")}
        exported = copy.deepcopy(model.net.seg_decoder.state_dict())
        plain_dec = {k[len("seg_decoder."):]: v for k, v in plain.items() if k.startswith("seg_decoder.")}
        states = {"last": last, "ema": exported, **({"plain": plain_dec} if plain_dec else {}),
                  **{f"s{s}": st for s, st in snaps}}
        scores: dict[str, list[float]] = {k: [] for k in [*states, "plain", "ensemble", "io"]}
        for name in test:
            image = load_image(root / "images" / name)
            truth = load_image(root / "labels" / name, label_map=True).array
            work, affine = model.aligner.align(image)
            ens = None
            with torch.no_grad():
                feats = model.net.encode(work[None])
                for key, st in states.items():
                    model.net.seg_decoder.load_state_dict(st)
                    probs = torch.softmax(model.net.seg_decoder(feats), 1)[0]
                    if key.startswith("s"):
                        ens = probs if ens is None else ens + probs
                    lab = to_image_grid(probs, model.grid, image, affine, model.values)
                    scores[key].append(float(np.mean(dice(lab, truth, [1, 2]))))
                lab = to_image_grid(ens / len(snaps), model.grid, image, affine, model.values)
                scores["ensemble"].append(float(np.mean(dice(lab, truth, [1, 2]))))
            if variant == args.variants.split(",")[0]:
                from bijros.registration.pipeline import RegistrationOptions, propagate

                res = propagate(model.atlas, model.atlas_labels, image, RegistrationOptions(method="io", device="cpu"),
                                affine_ras=np.linalg.inv(affine))
                scores["io"].append(float(np.mean(dice(res.labels.array, truth, [1, 2]))))
        snap_means = [np.mean(scores[f"s{s}"]) for s, _ in snaps]
        io = f"{np.mean(scores['io']):.4f}" if scores["io"] else ""
        plain_s = f"{np.mean(scores['plain']):.4f}" if scores["plain"] else ""
        lines.append(f"| {variant} | {summary['step']} | {np.mean(scores['last']):.4f} | {np.mean(snap_means):.4f} "
                     f"({min(snap_means):.4f} - {max(snap_means):.4f}, {len(snaps)}) | {np.mean(scores['ema']):.4f} | {plain_s} | "
                     f"{np.mean(scores['ensemble']):.4f} | {io} |")
        details.append(f"{variant}, per snapshot (step: Dice): "
                       + ", ".join(f"{s}: {m:.4f}" for (s, _), m in zip(snaps, snap_means)))
        print(lines[-1], file=sys.stderr)
    text = "\n".join(lines + [""] + [d + "\n" for d in details])
    print(text)
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
