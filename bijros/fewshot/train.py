"""Episodic training of the few-shot model (GMRD) on self-supervised synthetic episodes, resumable.

    bijros train-fewshot --config bijros/data/train_gmrd_1mm.json --out runs/gmrd_1mm

``OUT/checkpoint.pt`` (plain tensors and lists, read with ``torch.load(weights_only=True)``) holds the model,
the optimiser, the step and the random state; running the command again continues. Every ``checkpoint_every``
steps the model is scored on fixed episodes from held-out label maps (mean Dice of the query); the best
checkpoint is exported as ``model.safetensors`` + ``model.json`` (a model catalog entry, ``task`` "fewshot").
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from bijros.errors import InputError


@dataclasses.dataclass
class FewShotConfig:
    name: str = "gmrd"
    model_config: dict = dataclasses.field(default_factory=dict)
    labelmaps: str = "../shared/data/synthseg_labelmaps/training_seg_*.nii.gz"
    max_maps: int | None = None
    spacing_mm: float = 1.0
    synth: dict = dataclasses.field(default_factory=dict)  # bijros.training.synth.SynthOptions keywords
    episodes: dict = dataclasses.field(default_factory=dict)  # bijros.fewshot.episodes.SliceEpisodes keywords
    steps: int = 1000
    batch_size: int = 4
    learning_rate: float = 1e-3
    align_weight: float = 1.0
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 250
    validation_maps: int = 4
    validation_batches: int = 16
    data_license: str = "unknown (set data_license in the config)"
    data_source: str = ""

    @classmethod
    def load(cls, path: str | Path) -> FewShotConfig:
        from bijros.training.trainer import config_from_dict, read_config

        return config_from_dict(cls, read_config(path, "few-shot training config"), "few-shot training config")


def _dice(logits: torch.Tensor, mask: torch.Tensor) -> float:
    pred = (logits.argmax(1, keepdim=True) == 1).float()
    return float((2 * (pred * mask).sum() / (pred.sum() + mask.sum()).clamp_min(1)).item())


def train_fewshot(cfg: FewShotConfig, out_dir: str | Path, command: str = "", progress: bool = True) -> dict:
    from safetensors.torch import save_file
    from tqdm import tqdm

    import bijros
    from bijros.fewshot.episodes import SliceEpisodes
    from bijros.fewshot.gmrd import GMRD, episode_loss
    from bijros.models.weights import sha256_file
    from bijros.training import distributed
    from bijros.training.synth import SynthGenerator, SynthOptions, load_label_maps

    dp, device = distributed.setup(cfg.device)
    maps = load_label_maps(cfg.labelmaps, cfg.spacing_mm, cfg.max_maps)
    if cfg.validation_maps and len(maps) - cfg.validation_maps < 1:
        raise InputError(f"validation_maps={cfg.validation_maps} leaves no map to train on ({len(maps)} maps)")
    train_maps, held_out = (maps[: -cfg.validation_maps], maps[-cfg.validation_maps:]) if cfg.validation_maps \
        else (maps, [])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = GMRD(**cfg.model_config).to(device)
    optim = distributed.synced(torch.optim.Adam(model.parameters(), lr=cfg.learning_rate), dp)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    options = SynthOptions(**cfg.synth)
    episodes = SliceEpisodes(SynthGenerator(train_maps, options, device, gen), **cfg.episodes)
    val_batches = []
    if held_out:
        val_gen = SynthGenerator(held_out, options, device, torch.Generator(device=device).manual_seed(cfg.seed + 1))
        val_episodes = SliceEpisodes(val_gen, **cfg.episodes)
        val_batches = [val_episodes.sample(cfg.batch_size) for _ in range(cfg.validation_batches)]
    step, history, validation, best = 0, [], [], None
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        step, history, validation, best = int(state["step"]), state["history"], state["validation"], state["best"]
    distributed.rank_generator(gen, cfg.seed, dp, step)  # under torchrun: each process its own episodes

    def validate() -> float:
        model.eval()
        with torch.no_grad():
            scores = [_dice(model(b["support"], b["support_mask"], b["query"]), b["query_mask"]) for b in val_batches]
        model.train()
        return sum(scores) / len(scores)

    def save() -> None:
        state = {"step": step, "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                 "optimizer": optim.state_dict(), "generator": gen.get_state(), "history": history,
                 "validation": validation, "best": best}
        torch.save(state, out / "checkpoint.pt.tmp")
        os.replace(out / "checkpoint.pt.tmp", ckpt)

    if val_batches and not validation and dp.main:
        validation.append([0, validate()])
    bar = tqdm(total=cfg.steps, initial=min(step, cfg.steps), disable=not progress or not dp.main, desc="gmrd")
    start = time.monotonic()
    while step < cfg.steps:
        b = episodes.sample(cfg.batch_size)
        terms = episode_loss(model, b["support"], b["support_mask"], b["query"], b["query_mask"], cfg.align_weight)
        optim.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optim.step()
        step += 1
        history.append([step, float(terms["loss"].item()), float(terms["query"].item())])
        bar.update(1)
        bar.set_postfix(loss=f"{terms['loss'].item():.4f}")
        if (step % cfg.checkpoint_every == 0 or step == cfg.steps) and dp.main:
            if val_batches:
                score = validate()
                validation.append([step, score])
                bar.write(f"step {step}: held-out query Dice {score:.4f}")
                if best is None or score > best["score"]:
                    best = {"step": step, "score": score,
                            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            save()
    bar.close()
    if not dp.main:
        distributed.finish(dp)
        return {"step": step, "out": str(out), "best": None}
    weights = best["model"] if best else model.state_dict()
    path = out / "model.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(path),
              metadata={"architecture": "gmrd"})
    entry = {"name": cfg.name, "file": path.name, "sha256": sha256_file(path), "architecture": "gmrd",
             "task": "fewshot", "config": cfg.model_config, "input_spacing_mm": cfg.spacing_mm,
             "input": "support slice (1, 1, H, W) in [0, 1], its mask, query slice (1, 1, H, W) in [0, 1]",
             "output": "logits (1, 2, H, W), channel 1 the structure",
             "training_data": f"{cfg.data_source or cfg.labelmaps} ({len(train_maps)} label maps)",
             "training_data_license": cfg.data_license, "command": command,
             "training": {"steps": step, "seconds": round(time.monotonic() - start, 1),
                          "config": dataclasses.asdict(cfg), "validation": validation,
                          "steps_of_exported_weights": best["step"] if best else step,
                          "parallel": distributed.describe(dp, cfg.batch_size, cfg.learning_rate,
                                                           "all_reduce of the gradients in the optimizer step")},
             "benchmark": None, "bijros_version": bijros.__version__, "torch_version": torch.__version__}
    (out / "model.json").write_text(json.dumps(entry, indent=1), encoding="utf-8")
    distributed.finish(dp)
    return {"step": step, "out": str(out), "best": best["score"] if best else None}
