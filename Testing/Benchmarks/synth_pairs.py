"""What a training config's synthetic pairs ask of the network: how far apart they are, and from what.

    python Testing/Benchmarks/synth_pairs.py bijros/data/train_eoir_2mm.json --pairs 24

For the config's label maps and synthesis options (``bijros.training.synth``) it draws pairs with a known true
displacement (same map; the fixed crop moved by the random affine and deformation, the moving crop
by the random affine only) three times: with the config's options, with the deformation switched off
(the random affines alone) and with the random affines switched off (the deformation alone). Per row
it prints the RMS true displacement inside the brain (voxels and mm), the soft Dice of the label maps
before registration (zero flow) and after warping by the true displacement (the best a network could
do on these pairs), plus the zero-flow Dice of inter-subject pairs (two different maps), the case the
network meets after the engine's affine stage. A config whose displacement is mostly the random affine
teaches the network to undo affines that the engine has already removed at inference.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bijros.models.spatial import warp
from bijros.training.losses import one_hot_labels, soft_dice_loss
from bijros.training.synth import SynthGenerator, SynthOptions, load_label_maps
from bijros.training.trainer import TrainConfig


def measure(maps, options: SynthOptions, pairs: int, seed: int) -> dict[str, float]:
    gen = SynthGenerator(maps, dataclasses.replace(options, flow_pairs_prob=1.0),
                         generator=torch.Generator().manual_seed(seed))
    rms, zero, oracle = [], [], []
    for _ in range(pairs):
        b = gen.sample(1)
        moving, fixed = one_hot_labels(b["moving_labels"], gen.num_classes), one_hot_labels(b["fixed_labels"], gen.num_classes)
        brain = b["fixed_labels"][:, 0] > 0
        rms.append(float((b["flow"] ** 2).sum(1)[brain].mean().sqrt()))
        zero.append(1 - float(soft_dice_loss(moving, fixed)))
        oracle.append(1 - float(soft_dice_loss(warp(moving, b["flow"]), fixed)))
    return {"rms": float(np.mean(rms)), "zero": float(np.mean(zero)), "oracle": float(np.mean(oracle))}


def inter_subject_zero_flow(maps, options: SynthOptions, pairs: int, seed: int) -> float:
    gen = SynthGenerator(maps, dataclasses.replace(options, flow_pairs_prob=0.0, same_map_prob=0.0),
                         generator=torch.Generator().manual_seed(seed))
    dice = []
    for _ in range(pairs):
        b = gen.sample(1)
        dice.append(1 - float(soft_dice_loss(one_hot_labels(b["moving_labels"], gen.num_classes),
                                             one_hot_labels(b["fixed_labels"], gen.num_classes))))
    return float(np.mean(dice))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", type=Path, help="a train-registration config (JSON)")
    p.add_argument("--pairs", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    cfg = TrainConfig.load(args.config)
    opts = SynthOptions(**cfg.synth)
    maps = load_label_maps(cfg.labelmaps, cfg.spacing_mm, cfg.max_maps, align=cfg.align_maps)
    rows = {
        "config as is": opts,
        "random affine only": dataclasses.replace(opts, deform_max_std_vox=0.0),
        "deformation only": dataclasses.replace(opts, max_rotation_deg=0.0, max_scale=0.0, max_shift_vox=0.0),
    }
    lines = [f"{args.config} ({len(maps)} maps at {cfg.spacing_mm:g} mm, {args.pairs} pairs per row)", "",
             "| same-map pairs | RMS true displacement, vox (mm) | Dice, zero flow | Dice, true flow |",
             "|---|---|---|---|"]
    for name, o in rows.items():
        m = measure(maps, o, args.pairs, args.seed)
        lines.append(f"| {name} | {m['rms']:.2f} ({m['rms'] * cfg.spacing_mm:.1f}) | {m['zero']:.3f} | "
                     f"{m['oracle']:.3f} |")
    lines += ["", f"Inter-subject pairs (two maps, config as is): Dice at zero flow "
                  f"{inter_subject_zero_flow(maps, opts, args.pairs, args.seed):.3f}"]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
