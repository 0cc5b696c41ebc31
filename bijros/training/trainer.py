"""Training of the learned registration models on SynthMorph-style synthetic pairs.

    bijros train-registration --config bijros/data/train_eoir_2mm.json --out runs/eoir_2mm

The config is a JSON object (keys below, see :class:`TrainConfig`; keys starting with ``_`` are
comments). The run is resumable: ``OUT/checkpoint.pt`` (plain tensors, dicts and lists, loaded with
``torch.load(weights_only=True)``) holds the model, the optimiser, the step, the random state and the
loss history; running the same command again continues from it (raise ``steps`` to train longer).
Outputs: ``loss.csv``, ``loss.png``, and at the end ``model.safetensors`` with ``model.json``, a
catalog entry that :func:`bijros.models.weights.load_model` accepts. With ``validation_maps`` > 0 the last
maps are held out (:mod:`bijros.training.validation`): every checkpoint is scored on fixed inter-subject pairs
made from them (``validation.csv``, the right axis of ``loss.png``, step 0 = zero flow) and the
exported weights are those of the best-scoring checkpoint (its step is in ``model.json``).

Loss: ``dice * (1 - soft Dice of the warped one-hot moving labels vs the fixed labels, foreground
classes) + smooth * diffusion(displacement) [+ image * LNCC(warped moving, fixed)] [+ flow * squared
error to the true displacement, on the synthetic pairs where it is known (bijros.training.synth flow pairs)]``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import torch

from bijros.errors import InputError
from bijros.training.losses import registration_loss


@dataclasses.dataclass
class TrainConfig:
    model: str = "eoir"
    model_config: dict = dataclasses.field(default_factory=dict)
    labelmaps: str = "../shared/data/synthseg_labelmaps/training_seg_*.nii.gz"  # glob, relative to the current folder
    max_maps: int | None = None
    align_maps: bool = False  # affinely align the maps to the first one at load (bijros.training.synth.align_label_maps)
    spacing_mm: float = 2.0
    synth: dict = dataclasses.field(default_factory=dict)  # bijros.training.synth.SynthOptions keyword arguments
    steps: int = 1000
    batch_size: int = 1
    learning_rate: float = 1e-4
    loss: dict = dataclasses.field(default_factory=lambda: {"dice": 1.0, "smooth": 1.0, "image": 0.0})
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast, on CUDA only
    checkpoint_every: int = 100
    name: str | None = None
    data_license: str = "unknown (set data_license in the config)"
    data_source: str = ""  # where the label maps come from (recorded in model.json)
    validation_maps: int = 0  # hold out the last N label maps (sorted by name): never trained on, scored instead
    validation_pairs: int = 16  # fixed pairs per validation set (two sets: same contrast, independent contrasts)
    init_from: str | None = None  # start from a model's weights (catalog name or model.json): fine-tuning, or a
    # new head on a trained backbone (the keys the two share; the new ones keep their initialisation)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        cfg = config_from_dict(cls, data, "training config")
        bad = sorted(set(cfg.loss) - {"dice", "smooth", "image", "flow"})
        if bad:
            raise InputError(f"unknown loss terms {bad}; use dice, smooth, image, flow")
        if cfg.steps < 0 or cfg.batch_size < 1 or cfg.checkpoint_every < 1:
            raise InputError("steps must be >= 0, batch_size and checkpoint_every >= 1")
        if cfg.validation_maps < 0 or cfg.validation_pairs < 1:
            raise InputError("validation_maps must be >= 0 and validation_pairs >= 1")
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(read_config(path, "training config"))


def read_config(path: str | Path, what: str) -> dict:
    """A config file's JSON object; InputError naming ``what`` when it cannot be read or is not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the {what} {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{what} {path} must be a JSON object")
    return data


def config_from_dict(cls, data: dict, what: str):
    """``cls(**data)`` without the ``_`` comment keys; InputError listing unknown keys (and the known ones)."""
    data = {k: v for k, v in data.items() if not k.startswith("_")}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown {what} keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return cls(**data)


def running_mean(values: list[float], parts: int) -> tuple[list[float], int]:
    """(the running mean of ``values`` over a window of ``len(values) // parts`` (at least 1), that window)."""
    window = max(1, len(values) // parts)
    return [sum(values[max(0, i - window + 1): i + 1]) / len(values[max(0, i - window + 1): i + 1])
            for i in range(len(values))], window


def save_figure(fig, path: Path, dpi: int = 100) -> None:
    """Save a matplotlib figure to ``path`` atomically (a temporary file renamed into place) and close it."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)


def _plot(history: list[list[float]], path: Path, validation: list[list[float]] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if history:
        steps = [h[0] for h in history]
        for col, label in ((1, "loss"), (2, "1 - Dice")):
            values = [h[col] for h in history]
            smooth, window = running_mean(values, 50)
            ax.plot(steps, values, alpha=0.25)
            ax.plot(steps, smooth, label=f"{label} (running mean of {window})")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(loc="upper left")
    if validation:
        right = ax.twinx()
        right.plot([v[0] for v in validation], [v[3] for v in validation], "k.-", label="held-out Dice (mean of sets)")
        right.set_ylabel("held-out Dice")
        right.legend(loc="upper right")
    fig.tight_layout()
    save_figure(fig, path)


HEADER = ["step", "loss", "dice_loss", "smooth", "image", "seconds", "flow"]


def _write_csv(history: list[list[float]], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for row in history:
            writer.writerow([int(row[0]), *(f"{v:.6g}" for v in row[1:])])
    os.replace(tmp, path)


def _state_dict(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _save_checkpoint(path: Path, model, optim, step: int, gen: torch.Generator, history, cfg: TrainConfig,
                     val: dict) -> None:
    state = {
        "step": step,
        "model": _state_dict(model),
        "optimizer": optim.state_dict(),
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": history,
        "config": json.dumps(dataclasses.asdict(cfg)),
        "validation": val["history"],
        "best": val["best"],
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _export(model, cfg: TrainConfig, out: Path, history, command: str, n_maps: int, num_classes: int,
            val: dict, parallel: dict | None = None) -> dict:
    """Write model.safetensors (the best held-out checkpoint when validating, else the last) and model.json."""
    from safetensors.torch import save_file

    import bijros
    from bijros.models.weights import sha256_file

    weights_path = out / "model.safetensors"
    state = val["best"]["model"] if val["best"] else model.state_dict()
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    save_file(tensors, str(weights_path), metadata={"architecture": cfg.model})
    tail = history[-max(1, len(history) // 10):]
    entry = {
        "name": cfg.name or f"{cfg.model}-{cfg.spacing_mm:g}mm",
        "file": weights_path.name,
        "sha256": sha256_file(weights_path),
        "architecture": cfg.model,
        "config": cfg.model_config,
        "input_spacing_mm": cfg.spacing_mm,
        "input": "fixed and moving (B, 1, D, H, W), intensities min-max normalised to [0, 1], same grid",
        "output": "displacement (B, 3, D, H, W) in voxels of the input grid, components (i, j, k), "
                  "moving sampled at x + u(x)",
        "training_data": f"{cfg.data_source or cfg.labelmaps} ({n_maps} label maps)",
        "training_data_license": cfg.data_license,
        "training": {"steps": len(history) and int(history[-1][0]), "batch_size": cfg.batch_size,
                     "crop": cfg.synth.get("crop"), "dice_classes": num_classes, "seed": cfg.seed,
                     "final_loss_mean_last_10pct": sum(h[1] for h in tail) / len(tail) if tail else None,
                     "config": dataclasses.asdict(cfg), "validation": _validation_summary(cfg, val),
                     "parallel": parallel},
        "command": command,
        "benchmark": None,
        "bijros_version": bijros.__version__,
        "torch_version": torch.__version__,
    }
    if val["best"]:
        entry["training"]["steps_of_exported_weights"] = val["best"]["step"]
    tmp = out / "model.json.tmp"
    tmp.write_text(json.dumps(entry, indent=1), encoding="utf-8")
    os.replace(tmp, out / "model.json")
    return entry


def _validation_summary(cfg: TrainConfig, val: dict) -> dict | None:
    if not val["history"]:
        return None
    names = ("same_contrast", "cross_contrast", "score")
    row = lambda r: {"step": int(r[0]), **{n: round(v, 4) for n, v in zip(names, r[1:])}}  # noqa: E731
    best = max(val["history"], key=lambda r: r[3])
    return {"held_out_maps": cfg.validation_maps, "pairs_per_set": cfg.validation_pairs,
            "metric": "mean soft Dice of warped label maps, foreground classes, inter-subject pairs",
            "start_model" if cfg.init_from else "zero_flow": row(val["history"][0]), "best": row(best),
            "last": row(val["history"][-1])}


def _write_validation_csv(rows: list[list[float]], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", "same_contrast", "cross_contrast", "score"])
        for row in rows:
            writer.writerow([int(row[0]), *(f"{v:.5f}" for v in row[1:])])
    os.replace(tmp, path)


def ckpt_path_of(out: Path) -> Path:
    return out / "checkpoint.pt"


def _prepare_regions(model, names: list[str], device) -> None:
    """The TextSCF head's training regions: text embeddings of their names (text variant) or a check that the
    learned table has one row per region."""
    if not names:
        raise InputError('a model with a region head needs region maps: set "regions": "aseg" in "synth"')
    if model.embedding == "text":
        from bijros.text.regions import region_table

        model.set_regions(torch.as_tensor(region_table(names), device=device))
    elif model.table.shape[0] != len(names):
        raise InputError(f"the learned region table has {model.table.shape[0]} rows, the training maps "
                         f"{len(names)} regions")


def _init_from(model, source: str, device) -> None:
    """Load the weights of ``source`` (catalog name or model.json) that ``model`` shares with it."""
    from safetensors.torch import load_file

    from bijros.models.library import resolve_entry
    from bijros.models.weights import verified_weights_path

    entry, folder = resolve_entry(source)
    state = load_file(str(verified_weights_path(entry, folder)), device=str(device))
    _missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or not set(state) - set(unexpected):
        raise InputError(f"init_from '{source}' does not fit model '{type(model).__name__}': unexpected keys "
                         f"{sorted(unexpected)[:5]}")


def train(cfg: TrainConfig, out_dir: str | Path, command: str = "", progress: bool = True) -> dict:
    """Train (or resume) into ``out_dir``; returns ``{"step", "loss", "out", "resumed_from"}``."""
    from tqdm import tqdm

    from bijros.models import build_model, count_parameters
    from bijros.training import distributed
    from bijros.training.synth import SynthGenerator, SynthOptions, load_label_maps

    dp, device = distributed.setup(cfg.device)
    out = Path(out_dir)
    options = SynthOptions(**cfg.synth)
    maps = load_label_maps(cfg.labelmaps, cfg.spacing_mm, cfg.max_maps, align=cfg.align_maps)
    held_out = []
    if cfg.validation_maps:
        if cfg.validation_maps < 2 or len(maps) - cfg.validation_maps < 1:
            raise InputError(f"validation_maps={cfg.validation_maps} needs at least 2 held-out maps and 1 to train "
                             f"on; '{cfg.labelmaps}' has {len(maps)}")
        maps, held_out = maps[: -cfg.validation_maps], maps[-cfg.validation_maps:]
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)
    synth = SynthGenerator(maps, options, device, torch.Generator(device=device).manual_seed(cfg.seed))
    if synth.region_names and "region_names" not in cfg.model_config:  # the TextSCF head: its training regions
        cfg.model_config = {**cfg.model_config, "region_names": synth.region_names}
    model = build_model(cfg.model, cfg.model_config).to(device)
    if getattr(model, "uses_regions", False):
        _prepare_regions(model, synth.region_names, device)
    if cfg.init_from and not ckpt_path_of(out).exists():
        _init_from(model, cfg.init_from, device)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    step, history, resumed_from = 0, [], None
    parallel = distributed.describe(dp, cfg.batch_size, cfg.learning_rate, "DistributedDataParallel")
    val: dict = {"history": [], "best": None}
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        saved = json.loads(state["config"])
        for key in ("model", "model_config", "spacing_mm"):
            if saved[key] != dataclasses.asdict(cfg)[key]:
                raise InputError(f"{ckpt_path} was trained with {key}={saved[key]!r}, the config says "
                                 f"{dataclasses.asdict(cfg)[key]!r}; use another --out folder")
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        step, history = int(state["step"]), [list(map(float, h)) for h in state["history"]]
        val["history"] = [list(map(float, v)) for v in state.get("validation", [])]
        val["best"] = state.get("best")
        resumed_from = step
    distributed.rank_generator(gen, cfg.seed, dp, step)
    synth.gen = gen
    net = distributed.wrap(model, dp, device)  # under torchrun: DDP averages the gradients in backward()
    val_sets, val_classes = None, 0
    if held_out:
        from bijros.training.validation import validate, validation_pairs

        val_sets, val_classes = validation_pairs(held_out, options, device, cfg.seed + 1000, cfg.validation_pairs)

        def run_validation() -> None:
            scores = validate(model, val_sets, val_classes)
            val["history"].append([step, scores["same_contrast"], scores["cross_contrast"], scores["score"]])
            if val["best"] is None or scores["score"] > val["best"]["score"]:
                val["best"] = {"step": step, "score": scores["score"], "model": _state_dict(model)}
            bar.write(f"step {step}: held-out Dice same contrast {scores['same_contrast']:.4f}, "
                      f"cross contrast {scores['cross_contrast']:.4f}")

    use_amp = cfg.amp and device.type == "cuda"
    weights = {"dice": 1.0, "smooth": 1.0, "image": 0.0, **cfg.loss}

    bar = tqdm(total=cfg.steps, initial=min(step, cfg.steps), disable=not progress or not dp.main, dynamic_ncols=True,
               desc=f"{cfg.model} ({count_parameters(model) / 1e6:.2f} M params) on {device}")
    start = time.monotonic() - (history[-1][5] if history else 0.0)
    model.train()
    if val_sets is not None and not val["history"] and dp.main:
        run_validation()  # step 0: the untrained model returns zero flow, the no-registration baseline
    try:
        while step < cfg.steps:
            batch = synth.sample(cfg.batch_size)
            optim.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                terms = registration_loss(net, batch, weights, synth.num_classes)
            loss = terms["loss"]
            if not math.isfinite(loss.item()):
                raise InputError(f"the loss became {loss.item()} at step {step + 1}; lower learning_rate")
            loss.backward()
            optim.step()
            step += 1
            history.append([step, loss.item(), terms["dice"].item(), terms["smooth"].item(),
                            terms["image"].item() if "image" in terms else 0.0, time.monotonic() - start,
                            terms["flow"].item() if "flow" in terms else 0.0])
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", dice=f"{1 - terms['dice'].item():.3f}")
            if (step % cfg.checkpoint_every == 0 or step == cfg.steps) and dp.main:
                if val_sets is not None:
                    run_validation()
                    _write_validation_csv(val["history"], out / "validation.csv")
                _save_checkpoint(ckpt_path, model, optim, step, gen, history, cfg, val)
                _write_csv(history, out / "loss.csv")
    except KeyboardInterrupt:
        if dp.main:
            _save_checkpoint(ckpt_path, model, optim, step, gen, history, cfg, val)
            _write_csv(history, out / "loss.csv")
        raise
    finally:
        bar.close()
    if not dp.main:  # rank 0 writes the run's files
        distributed.finish(dp)
        return {"step": step, "loss": history[-1][1] if history else None, "out": str(out),
                "resumed_from": resumed_from}
    if not ckpt_path.exists():  # steps == 0
        _save_checkpoint(ckpt_path, model, optim, step, gen, history, cfg, val)
    _write_csv(history, out / "loss.csv")
    if val["history"]:
        _write_validation_csv(val["history"], out / "validation.csv")
    _plot(history, out / "loss.png", val["history"])
    model.eval()
    _export(model, cfg, out, history, command, len(maps), synth.num_classes, val, parallel)
    distributed.finish(dp)
    return {"step": step, "loss": history[-1][1] if history else None, "out": str(out), "resumed_from": resumed_from}
