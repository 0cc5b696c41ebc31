"""One-shot cohort learning (``bijros train-oneshot``): one labelled atlas + a study of unlabelled scans.

    bijros train-oneshot --atlas A.nii.gz --atlas-labels A_seg.nii.gz --images DIR --out MODEL_DIR \
        [--recipe bijros|brbs] [--iterations N | --minutes M]

Stages: the cohort is aligned to the atlas (:mod:`bijros.oneshot.cohort`, with our instance-optimisation
propagation onto each scan when ``pseudo_labels`` is "io"); then a registration pretraining share of the budget
(Bi-JROS's step 1: encoder + registration decoder, unsupervised, atlas <-> scan both ways); then the recipe:
``bijros`` (the bi-level step of :mod:`bijros.oneshot.bilevel`, encoder frozen, with ``inner_steps - 1``
segmentation-only steps between two bi-level steps) or ``brbs``
(:mod:`bijros.oneshot.brbs`, alternating registration and segmentation steps). Every ``checkpoint_every`` steps,
on Ctrl-C and on SIGTERM (Slicer's Cancel) the state is saved; running the same command again continues.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from pathlib import Path

import torch

from bijros.errors import InputError
from bijros.oneshot.checkpoint import flatten_optimizer, load_tensors, save_tensors, unflatten_optimizer

RECIPES = ("bijros", "brbs")
PSEUDO_LABELS = ("io", "decoder")


@dataclasses.dataclass
class OneShotConfig:
    recipe: str = "bijros"
    pseudo_labels: str = "io"  # io: our instance-optimisation propagation; decoder: the registration decoder's
    channels: tuple[int, ...] = (16, 32, 64, 128)
    spacing_mm: float | None = None  # working grid; None: chosen from the atlas (cohort.choose_spacing)
    iterations: int | None = None  # total steps (pretraining included); or minutes
    minutes: float | None = None
    pretrain_fraction: float = 0.2
    inner_steps: int = 4  # bijros: lower-level (segmentation) steps per bi-level step (1: every step bi-level)
    pseudo_paths: int = 8  # bijros + io: fuse each scan's pseudo labels with those of this many other scans
    # carried onto it (bijros.oneshot.paths; 0: the direct propagation alone)
    pseudo_refresh: float | None = None  # bijros + io: at this fraction of the budget the pseudo labels become the
    # segmentation decoder's own predictions on the cohort (one round of self-training); None: never
    learning_rate: float = 1e-3
    ema: float | None = 0.99  # the exported segmentation network: an exponential moving average of its weights
    # over the training phase with this decay (None: the last step's weights), warmed up: the t-th update uses
    # min(ema, (1 + t) / (10 + t)), so a short run is not dominated by its first steps
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 50

    def validate(self) -> None:
        if self.recipe not in RECIPES:
            raise InputError(f"--recipe {self.recipe!r}: choose one of {', '.join(RECIPES)}.")
        if self.pseudo_labels not in PSEUDO_LABELS:
            raise InputError(f"--pseudo-labels {self.pseudo_labels!r}: choose one of {', '.join(PSEUDO_LABELS)}.")
        if (self.iterations is None) == (self.minutes is None):
            raise InputError("give the training budget as either --iterations N or --minutes M.")
        if (self.iterations is not None and self.iterations < 1) or (self.minutes is not None and self.minutes <= 0):
            raise InputError("the training budget must be positive.")
        if self.pseudo_paths < 0:
            raise InputError(f"--pseudo-paths {self.pseudo_paths}: give 0 (the direct propagation alone) or more.")
        if self.ema is not None and not 0 <= self.ema < 1:
            raise InputError(f"ema {self.ema}: give a decay in [0, 1), or None for the last step's weights.")
        if not 0 <= self.pretrain_fraction < 1:
            raise InputError("pretrain_fraction must be in [0, 1).")


class Budget:
    """Fraction of the budget used, by steps or by seconds of training (kept across resumes)."""

    def __init__(self, cfg: OneShotConfig, step: int, seconds: float):
        self.cfg, self.step, self.seconds = cfg, step, seconds
        self.started = time.monotonic()
        self.base = seconds

    def tick(self) -> None:
        self.step += 1
        self.seconds = self.base + time.monotonic() - self.started

    @property
    def fraction(self) -> float:
        if self.cfg.iterations is not None:
            return self.step / self.cfg.iterations
        return self.seconds / (60.0 * float(self.cfg.minutes))


def _plot(history: list[list], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bijros.training.trainer import running_mean, save_figure

    fig, ax = plt.subplots(figsize=(7, 4))
    curves = [("pretrain", 2, "registration pretraining loss"), ("train", 2, "training loss (all terms)"),
              ("train", 3, "segmentation loss")]
    for phase, col, label in curves:
        rows = [h for h in history if h[1] == phase and len(h) > col]
        if rows:
            values = [r[col] for r in rows]
            smooth, window = running_mean(values, 40)
            ax.plot([r[0] for r in rows], values, alpha=0.2)
            ax.plot([r[0] for r in rows], smooth, label=f"{label} (running mean of {window})")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(loc="upper right")
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


class Stop:
    """Set by SIGTERM (Slicer's Cancel kills the child this way): the loop saves and leaves."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self.previous = None
        return self

    def _handle(self, *_):
        self.requested = True

    def __exit__(self, *_):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def _check_run_folder(out: Path, cfg: OneShotConfig) -> dict | None:
    """The checkpoint's meta when ``out`` holds this recipe's run; InputError when it holds another's."""
    meta_path = out / "checkpoint.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    old, new = meta.get("config", {}), json.loads(json.dumps(dataclasses.asdict(cfg)))  # as stored: lists
    for key in ("recipe", "pseudo_labels", "channels", "pseudo_paths"):
        if key in old and old[key] != new[key]:
            raise InputError(f"{out} holds a run with {key} {old[key]!r}, not {new[key]!r}: give another "
                             "--out folder, or the same options to continue that run.")
    return meta


def train_oneshot(atlas_path: str | Path, atlas_labels_path: str | Path, images, out_dir: str | Path,
                  cfg: OneShotConfig, command: str = "", progress=None, bar: bool = True, labels_table=None,
                  resample_labels: bool = False, on_step=None) -> dict:
    """Train (or continue) a one-shot run into ``out_dir``; returns a summary. ``progress``: (fraction, message).
    ``labels_table``: the atlas labels' table file (default: one beside them); ``resample_labels``: labels on
    another grid than the atlas image (a library atlas) are resampled onto it (nearest label). ``on_step``:
    called as ``on_step(step, fraction, phase, model)`` after every step (benchmarks look at the model there)."""
    from tqdm import tqdm

    import bijros
    from bijros.io import load_image, save_image, write_label_table
    from bijros.models.bijros_net import BiJROSNet
    from bijros.oneshot import bilevel, brbs
    from bijros.oneshot.cohort import Cohort, choose_spacing, list_images, prepare_cohort
    from bijros.training import distributed

    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = _check_run_folder(out, cfg)
    dp, device = distributed.setup(cfg.device)
    atlas = load_image(atlas_path)
    atlas_labels = load_image(atlas_labels_path, label_map=True, label_table=labels_table)
    if resample_labels:
        from bijros.oneshot.cohort import labels_onto

        atlas_labels = labels_onto(atlas_labels, atlas)
    report = progress or (lambda f, m: None)
    if not dp.main:  # under torchrun rank 0 prepares the cohort (its io propagations) once; the others read it
        distributed.barrier(dp)
    if (out / "cohort.json").is_file():
        cohort = Cohort.load(out, atlas_labels.label_table)
    else:
        from bijros.oneshot.cohort import check_atlas

        check_atlas(atlas, atlas_labels)
        paths = list_images(images)
        spacing = cfg.spacing_mm or choose_spacing(atlas, device)
        # the cohort's preparation (alignment, io labels, fused paths: minutes for tens of scans) gets its own bar
        prep_bar = tqdm(total=100, desc="cohort", unit="%", disable=not bar or not dp.main)

        def prep(fraction: float, message: str) -> None:
            report(0.1 * fraction, message)
            prep_bar.set_postfix_str(message, refresh=False)
            prep_bar.update(int(100 * fraction) - prep_bar.n)

        cohort = prepare_cohort(atlas, atlas_labels, paths, spacing, device, 2 ** (len(cfg.channels) - 1),
                                cfg.pseudo_labels == "io", progress=prep,
                                pseudo_paths=cfg.pseudo_paths if cfg.recipe == "bijros" else 0)
        prep_bar.close()
        cohort.save(out)
        cohort = Cohort.load(out, atlas_labels.label_table)  # as stored (half precision): a resumed run sees the same
        save_image(atlas, out / "atlas_image.nii.gz")
        save_image(atlas_labels, out / "atlas_labels.nii.gz")
        if atlas_labels.label_table is not None:
            write_label_table(atlas_labels.label_table, out / "labels.csv")
    if dp.main:
        distributed.barrier(dp)
    if cfg.pseudo_labels == "io" and cohort.pseudo is None:
        raise InputError(f"{out} was prepared without io pseudo labels; use another --out folder.")

    torch.manual_seed(cfg.seed)
    model = BiJROSNet(cohort.classes, cfg.channels, separate=cfg.recipe == "brbs").to(device)
    pre_params = list(model.encoder.parameters()) + model.registration_parameters()
    optim = {"pretrain": torch.optim.Adam(pre_params, lr=cfg.learning_rate),
             "seg": torch.optim.Adam(model.segmentation_parameters(), lr=cfg.learning_rate),
             "reg": torch.optim.Adam(model.registration_parameters() if cfg.recipe == "bijros" else pre_params,
                                     lr=cfg.learning_rate)}
    # under torchrun each step() first averages its parameters' gradients over the processes (the bi-level step's
    # hyper-gradients come from torch.autograd.grad, which DistributedDataParallel's hooks do not see)
    optim = {name: distributed.synced(opt, dp) for name, opt in optim.items()}
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    history: list[list] = []
    step, seconds = 0, 0.0
    ema: dict[str, torch.Tensor] = {}  # the segmentation network's averaged weights (training phase), by name
    if meta is not None:
        tensors, meta = load_tensors(out, "checkpoint", "checkpoint")
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        for name, opt in optim.items():
            opt.load_state_dict(unflatten_optimizer(name, tensors, meta["optimizers"][name]))
        gen.set_state(tensors["generator"])
        step, seconds, history = int(meta["step"]), float(meta["seconds"]), meta["history"]
        if "pseudo" in tensors:  # refreshed by self-training before the checkpoint
            cohort.pseudo = tensors["pseudo"].long()
        ema = {k[4:]: v.clone().to(device) for k, v in tensors.items() if k.startswith("ema.")}
    refreshed = bool(meta and meta.get("pseudo_refreshed"))
    ema_updates = sum(1 for row in history if row[1] == "train")  # one per training-phase step, resumed ones too
    distributed.rank_generator(gen, cfg.seed, dp, step)  # under torchrun: each process its own samples

    atlas_t = cohort.atlas[None].to(device)
    atlas_oh = bilevel.one_hot(cohort.atlas_classes, cohort.classes).to(device)
    n = len(cohort.names)
    w_bi, w_brbs = bilevel.BiLevelWeights(), brbs.BRBSWeights()

    def pick() -> int:
        return int(torch.randint(0, n, (1,), generator=gen, device=device).item())

    def image(i: int) -> torch.Tensor:
        return cohort.images[i][None, None].to(device)

    def save() -> None:
        if not dp.main:
            return
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        opt_meta = {}
        for name, opt in optim.items():
            t, m = flatten_optimizer(name, opt.state_dict())
            tensors.update(t)
            opt_meta[name] = m
        tensors["generator"] = gen.get_state()
        tensors.update({f"ema.{k}": v for k, v in ema.items()})
        if refreshed:
            tensors["pseudo"] = cohort.pseudo.to(torch.uint8 if cohort.classes < 256 else torch.int32)
        save_tensors(tensors, {"step": budget.step, "seconds": budget.seconds, "history": history,
                               "optimizers": opt_meta, "config": dataclasses.asdict(cfg),
                               "pseudo_refreshed": refreshed}, out, "checkpoint")
        _plot(history, out / "loss.png")

    budget = Budget(cfg, step, seconds)
    total = cfg.iterations if cfg.iterations is not None else int(60 * cfg.minutes)
    progress_bar = tqdm(total=total, initial=min(total, step if cfg.iterations else int(seconds)),
                        disable=not bar or not dp.main,
                        desc=cfg.recipe, unit="step" if cfg.iterations else "s")
    interrupted = False
    atlas_feats = None  # the frozen encoder's features of the atlas (bijros recipe, after pretraining)
    with Stop() as stop:
        try:
            while True:
                # rank 0's budget and stop request decide for every process (all take the same steps)
                fraction = distributed.agree(-1.0 if stop.requested else budget.fraction, dp)
                if fraction < 0:  # rank 0 was asked to stop
                    stop.requested = True
                    break
                if fraction >= 1.0:
                    break
                phase = "pretrain" if fraction < cfg.pretrain_fraction else "train"
                if (cfg.recipe == "bijros" and cohort.pseudo is not None and cfg.pseudo_refresh is not None
                        and not refreshed and fraction >= cfg.pseudo_refresh):
                    cohort.pseudo = self_labels(model, cohort, device)
                    refreshed = True
                if phase == "pretrain":
                    terms = bilevel.pretrain_step(model, atlas_t, image(pick()), optim["pretrain"], w_bi)
                elif cfg.recipe == "bijros":
                    if atlas_feats is None:  # the first bi-level step of this process: freeze the encoder once
                        for p in model.encoder.parameters():
                            p.requires_grad_(False)
                        with torch.no_grad():
                            atlas_feats = model.encode(atlas_t)
                    i = int(torch.randint(0, n + 1, (1,), generator=gen, device=device).item())  # n: the atlas
                    target = atlas_t if i == n else image(i)
                    pseudo = None
                    if cfg.pseudo_labels == "io":
                        pseudo = atlas_oh if i == n else bilevel.one_hot(cohort.pseudo[i], cohort.classes).to(device)
                    if budget.step % max(1, cfg.inner_steps) == 0:
                        terms = bilevel.bilevel_step(model, atlas_t, atlas_oh, target, optim["seg"], optim["reg"],
                                                     gen, w_bi, pseudo, atlas_feats)
                    else:
                        terms = bilevel.lower_step(model, atlas_t, atlas_oh, target, optim["seg"], gen, w_bi, pseudo,
                                                   atlas_feats)
                else:
                    terms = brbs.registration_step(model, atlas_t, atlas_oh, image(pick()), optim["reg"], w_brbs)
                    a, b, c = pick(), pick(), pick()
                    flows = None
                    if cfg.pseudo_labels == "io":
                        flows = (cohort.flows[a][None].to(device), cohort.flows[b][None].to(device))
                    seg = brbs.segmentation_step(model, atlas_t, atlas_oh, image(a), image(b), image(c), optim["seg"],
                                                 gen, w_brbs, flows)
                    terms = {"loss": terms["loss"] + seg["loss"], "semantic": terms["semantic"], "lower": seg["loss"]}
                if phase == "train" and cfg.ema is not None:
                    update_ema(ema, model, cfg.ema, ema_updates)
                    ema_updates += 1
                budget.tick()
                if on_step is not None:
                    on_step(budget.step, budget.fraction, phase, model)
                history.append([budget.step, phase, round(float(terms["loss"]), 6),
                                round(float(terms.get("lower", terms.get("dice", 0.0))), 6)])
                progress_bar.update(1 if cfg.iterations else int(budget.seconds) - progress_bar.n)
                progress_bar.set_postfix(phase=phase, loss=f"{terms['loss']:.4f}")
                report(0.1 + 0.9 * min(1.0, budget.fraction), f"{phase} step {budget.step}: loss {terms['loss']:.4f}")
                if budget.step % cfg.checkpoint_every == 0:
                    save()
        except KeyboardInterrupt:
            interrupted = True
        interrupted = interrupted or stop.requested
        save()
    progress_bar.close()
    if interrupted or not dp.main:
        distributed.finish(dp)
        return {"step": budget.step, "out": str(out), "interrupted": interrupted}
    entry = export(model, cohort, cfg, out, budget, command, ema, distributed.describe(
        dp, 1, cfg.learning_rate, "all_reduce of the gradients in each optimizer step"))
    distributed.finish(dp)
    return {"step": budget.step, "out": str(out), "interrupted": False, "model": entry["name"],
            "bijros_version": bijros.__version__}


def self_labels(model, cohort, device) -> torch.Tensor:
    """The segmentation decoder's class indices (N, D, H, W) on every cohort image (self-training labels)."""
    labels = []
    with torch.no_grad():
        for i in range(len(cohort.names)):
            labels.append(model.segment(cohort.images[i][None, None].to(device)).argmax(1)[0].cpu())
    return torch.stack(labels)


def update_ema(ema: dict, model, decay: float, updates: int) -> None:
    """``ema`` (name -> tensor, empty at first) moved towards the segmentation network's current weights.

    ``updates`` is how many updates came before this one; the decay is warmed up as min(decay, (1 + t) / (10 + t))
    (TensorFlow's ExponentialMovingAverage with num_updates), so after 100 updates the average spans about the last
    12 steps rather than still holding a third of the first weights (0.99 ** 100 = 0.37)."""
    decay = min(decay, (1 + updates) / (10 + updates))
    for name, value in model.state_dict().items():
        if not name.startswith(("seg_decoder.", "seg_encoder.")):
            continue
        if name not in ema:
            ema[name] = value.detach().clone()
        elif value.dtype.is_floating_point:
            ema[name].mul_(decay).add_(value.detach(), alpha=1 - decay)


def export(model, cohort, cfg: OneShotConfig, out: Path, budget: Budget, command: str, ema: dict | None = None,
           parallel: dict | None = None) -> dict:
    """``model.safetensors`` + ``model.json``: the model's weights, the segmentation network's averaged ones
    (``ema``) in place of its last ones where there are any."""
    import bijros

    entry = {"name": out.name, "task": "oneshot", "recipe": cfg.recipe, "pseudo_labels": cfg.pseudo_labels,
             "architecture": "bijros_net",
             "config": {"classes": cohort.classes, "channels": list(cfg.channels), "separate": cfg.recipe == "brbs"},
             "grid": {"shape": list(cohort.grid.shape), "ijk_to_ras": cohort.grid.ijk_to_ras.tolist(),
                      "spacing_mm": float(cohort.grid.spacing[0])},
             "values": cohort.values, "label_table": "labels.csv" if (out / "labels.csv").is_file() else None,
             "atlas": {"image": "atlas_image.nii.gz", "labels": "atlas_labels.nii.gz"},
             "cohort": {"images": len(cohort.names), "skipped": cohort.skipped},
             "training": {"steps": budget.step, "seconds": round(budget.seconds, 1), "config": dataclasses.asdict(cfg),
                          "command": command, "parallel": parallel},
             "bijros_version": bijros.__version__, "torch_version": torch.__version__}
    weights = dict(model.state_dict())
    weights.update(ema or {})
    entry["training"]["segmentation_weights"] = "ema" if ema else "last"
    save_tensors(weights, entry, out, "model")
    return entry
