"""``bijros train-oneshot`` and ``bijros segment``: argument parsers and commands (the CLI stays thin)."""

from __future__ import annotations

import argparse
import json
import sys


def add_parsers(sub) -> None:
    tr = sub.add_parser("train-oneshot", help="learn a segmentation from ONE labelled atlas and a cohort of "
                                              "unlabelled scans (Bi-JROS or BRBS; resumable)")
    tr.add_argument("--atlas", default=None, help="the labelled atlas image (or use --atlas-name)")
    tr.add_argument("--atlas-labels", default=None,
                    help="its label map (same grid, or see --resample-labels; a label table beside it is kept)")
    tr.add_argument("--atlas-name", default=None,
                    help="an atlas from the built-in library instead of --atlas/--atlas-labels (see `bijros atlases`)")
    tr.add_argument("--labels-table", default=None, help="label table (CSV, JSON or Slicer .ctbl) for the atlas labels")
    tr.add_argument("--resample-labels", action="store_true",
                    help="accept atlas labels that are not on the atlas image's grid (resampled onto it, nearest "
                         "label, through world coordinates)")
    tr.add_argument("--images", required=True, help="the unlabelled cohort: a folder of images, or a text file with "
                                                    "one image path per line")
    tr.add_argument("--out", required=True, help="model folder (checkpoint, model.json, loss.png); an unfinished run "
                                                 "there is continued")
    tr.add_argument("--recipe", default="bijros", choices=["bijros", "brbs"])
    budget = tr.add_mutually_exclusive_group(required=True)
    budget.add_argument("--iterations", type=int, help="training steps (registration pretraining included)")
    budget.add_argument("--minutes", type=float, help="training time budget")
    tr.add_argument("--pseudo-labels", default="io", choices=["io", "decoder"],
                    help="lower-level pseudo labels: our instance-optimisation propagation (default) or the "
                         "registration decoder's warp")
    tr.add_argument("--pseudo-paths", type=int, default=None,
                    help="io: fuse each scan's pseudo labels with those of this many other cohort scans carried "
                         "onto it (joint label fusion; 0: the direct propagation alone)")
    tr.add_argument("--spacing", type=float, default=None, help="working grid mm (default: 1 mm crops, 2 mm whole "
                                                                "brains on a CPU)")
    tr.add_argument("--channels", default=None, help="encoder channels per level, e.g. 16,32,64,128")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--device", default="auto")
    tr.add_argument("--progress", default="bar", choices=["bar", "json", "none"])

    sg = sub.add_parser("segment", help="segment a scan with a model from `bijros train-oneshot`")
    sg.add_argument("--model", required=True, help="the train-oneshot --out folder")
    sg.add_argument("--image", required=True, help="the scan to segment")
    sg.add_argument("--out", required=True, help="output folder: labels.nii.gz, labels_propagated.nii.gz, labels.csv, "
                                                 "report.json")
    sg.add_argument("--no-propagation", action="store_true", help="skip the io propagation written for comparison")
    sg.add_argument("--device", default="auto")
    sg.add_argument("--progress", default="bar", choices=["bar", "json", "none"])


def _sink(mode: str, stage: str):
    from bijros.cli import _progress

    progress, close = _progress(mode, {stage: 1.0})
    return progress.stage(stage), close


def _with_cpu_fallback(run, device: str):
    """``run(device)``; when the GPU runs out of memory, say so and ``run("cpu")`` (training continues from its
    last checkpoint)."""
    import torch

    try:
        return run(device)
    except torch.cuda.OutOfMemoryError:
        if device == "cpu":
            raise
        torch.cuda.empty_cache()
        print("bijros: the GPU ran out of memory; continuing on the CPU (slower). Free GPU memory or use a larger "
              "--spacing to stay on the GPU.", file=sys.stderr)
        return run("cpu")


def cmd_train_oneshot(args: argparse.Namespace, argv: list[str]) -> int:
    from bijros.errors import InputError
    from bijros.oneshot.train import OneShotConfig, train_oneshot

    cfg = OneShotConfig(recipe=args.recipe, pseudo_labels=args.pseudo_labels, spacing_mm=args.spacing,
                        iterations=args.iterations, minutes=args.minutes, seed=args.seed, device=args.device)
    if args.pseudo_paths is not None:
        cfg.pseudo_paths = args.pseudo_paths
    if args.channels:
        try:
            cfg.channels = tuple(int(c) for c in args.channels.split(","))
        except ValueError as exc:
            raise InputError(f"--channels {args.channels!r}: give whole numbers separated by commas.") from exc
    import shlex

    command = shlex.join(["bijros", *argv])
    from bijros.cli import _atlas_paths

    atlas, atlas_labels = _atlas_paths(args)  # --atlas-name: the library atlas's files, table and resampling
    report, close = (None, lambda: None) if args.progress == "bar" else _sink(args.progress, "train")
    try:
        def run(device: str) -> dict:
            cfg.device = device
            return train_oneshot(atlas, atlas_labels, args.images, args.out, cfg, command=command,
                                 progress=report, bar=args.progress == "bar", labels_table=args.labels_table,
                                 resample_labels=args.resample_labels)

        result = _with_cpu_fallback(run, args.device)
    finally:
        close()
    if result["interrupted"]:
        print(f"bijros: stopped at step {result['step']}; the checkpoint in {result['out']} is saved: run the same "
              "command again to continue.", file=sys.stderr)
        return 130
    message = f"trained {result['step']} steps; wrote {result['out']}/model.json"
    if args.progress == "json":  # the Slicer panel's last line
        print(json.dumps({"stage": "result", "fraction": 1.0, "message": message, "out": result["out"],
                          "steps": result["step"]}))
    print(f"{message} (use: bijros segment --model {result['out']} --image IMG --out DIR)", file=sys.stderr)
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from bijros.device import configure_threads, resolve_device
    from bijros.io import load_image, save_image, write_label_table
    from bijros.io.outputs import check_out_dir, write_files, write_report
    from bijros.oneshot.segment import load_oneshot_model, segment
    from bijros.timing import Stages

    out = check_out_dir(args.out)
    if resolve_device(args.device).type == "cpu":
        configure_threads()
    stages = Stages()
    with stages("read"):
        image = load_image(args.image)
    report_progress, close = _sink(args.progress, "segment")

    def run(device: str):
        model = load_oneshot_model(args.model, resolve_device(device))
        return model, segment(model, image, propagation=not args.no_propagation, progress=report_progress)

    try:
        model, res = _with_cpu_fallback(run, args.device)
    finally:
        close()
    for key, value in res["report"]["seconds"].items():
        stages.add(key, value)
    writers = {"labels.nii.gz": lambda p: save_image(res["labels"], p)}
    if res["labels_propagated"] is not None:
        writers["labels_propagated.nii.gz"] = lambda p: save_image(res["labels_propagated"], p)
    table = model.atlas_labels.label_table
    if table is not None:
        writers["labels.csv"] = lambda p: write_label_table(table.subset(model.values), p)
    writers["report.json"] = lambda p: write_report(res["report"], p, stages)
    written = write_files(writers, out, stages)
    if args.progress == "json":
        print(json.dumps({"stage": "result", "fraction": 1.0, "message": f"segmented {image.name}", "out": str(out),
                          "files": sorted(written), "seconds": res["report"]["seconds"]}))
    print(f"segmented {image.name} with {model.entry['name']} ({model.entry['recipe']}); wrote "
          f"{', '.join(written)}", file=sys.stderr)
    return 0
