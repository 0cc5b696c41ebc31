"""Summary statistics and the markdown report of the MALF propagation benchmark."""

from __future__ import annotations

import math
import platform
from datetime import datetime, timezone
from importlib import metadata

import numpy as np


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(threads: int, device: str) -> dict:
    import os

    import torch

    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "bijros_device": device,
        "python": platform.python_version(),
        "versions": {
            "bijros": package_version("bijros"),
            "torch": torch.__version__,
            "antspyx": package_version("antspyx"),
            "itk-elastix": package_version("itk-elastix"),
            "numpy": np.__version__,
        },
    }


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


def summarize(records: list[dict], methods: list) -> list[dict]:
    """One row per method over its successful pairs (mean ± sd of per-pair means, medians of time)."""
    rows = []
    for spec in methods:
        ok = [r for r in records if r["method"] == spec.name and "error" not in r]
        dice = [r["mean_dice"] for r in ok]
        rows.append(
            {
                "method": spec.name,
                "kind": spec.kind,
                "title": spec.title,
                "pairs": len(ok),
                "failed": sum(1 for r in records if r["method"] == spec.name and "error" in r),
                "mean_dice": float(np.mean(dice)) if dice else math.nan,
                "sd_dice": float(np.std(dice, ddof=1)) if len(dice) > 1 else math.nan,
                "mean_hd95_mm": float(np.mean([r["mean_hd95_mm"] for r in ok])) if ok else math.nan,
                "folding_pct": float(np.mean([r["folding_pct"] for r in ok])) if ok else math.nan,
                "max_folding_pct": float(np.max([r["folding_pct"] for r in ok])) if ok else math.nan,
                "median_s": _median([r["seconds"] for r in ok]),
                "median_cpu_s": _median([r["cpu_seconds"] for r in ok]),
            }
        )
    _add_time_ratios(rows)
    return rows


def _add_time_ratios(rows: list[dict]) -> None:
    """bijros rows: bijros / ANTs SyN; peer rows: (first bijros row) / peer. Ratios of median seconds."""
    bijros = next((r for r in rows if r["kind"] == "bijros"), None)
    ants = next((r for r in rows if r["kind"] == "ants" and r["method"] in ("ants", "ants:SyN")), None)
    for row in rows:
        if row["kind"] == "bijros":
            ref, num, den = ants, row, ants
        else:
            ref, num, den = bijros, bijros, row
        if ref is None or not den["median_s"] > 0:
            row["time_ratio"], row["cpu_ratio"], row["time_ratio_label"] = math.nan, math.nan, ""
            continue
        row["time_ratio"] = num["median_s"] / den["median_s"]
        row["cpu_ratio"] = num["median_cpu_s"] / den["median_cpu_s"] if den["median_cpu_s"] > 0 else math.nan
        row["time_ratio_label"] = f"{num['method']} / {den['title']}"


def _fmt(value: float, digits: int) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def pair_line(record: dict) -> str:
    """One printed line per (target, method)."""
    if "error" in record:
        return f"  {record['target']} {record['method']:<14} FAILED: {record['error']}"
    return (
        f"  {record['target']} {record['method']:<14} Dice {record['mean_dice']:.4f}  "
        f"HD95 {record['mean_hd95_mm']:.2f} mm  folding {record['folding_pct']:.4f} %  "
        f"{record['seconds']:.1f} s (CPU {record['cpu_seconds']:.1f} s)"
    )


def table(rows: list[dict]) -> str:
    head = (
        "| method | pairs | mean Dice (± sd over pairs) | mean HD95 mm | folding % (mean / max) | "
        "median s/pair | median CPU s/pair | time ratio (wall / CPU) |\n|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        failed = f" ({r['failed']} failed)" if r["failed"] else ""
        ratio = (f"{_fmt(r['time_ratio'], 3)} / {_fmt(r.get('cpu_ratio', math.nan), 3)} ({r['time_ratio_label']})"
                 if r["time_ratio_label"] else "—")
        lines.append(
            f"| {r['title']} | {r['pairs']}{failed} | {_fmt(r['mean_dice'], 4)} ± {_fmt(r['sd_dice'], 4)} | "
            f"{_fmt(r['mean_hd95_mm'], 2)} | {_fmt(r['folding_pct'], 4)} / {_fmt(r['max_folding_pct'], 4)} | "
            f"{_fmt(r['median_s'], 1)} | {_fmt(r['median_cpu_s'], 1)} | {ratio} |"
        )
    return head + "\n".join(lines) + "\n"


def markdown(env: dict, setup: dict, rows: list[dict], notes: list[str]) -> str:
    v = env["versions"]
    header = [
        "# MALF one-shot label propagation benchmark",
        "",
        f"- date: {env['date']}; CPU: {env['cpu']} ({env['cpu_count']} logical cores); "
        f"threads per method: {env['threads']}; bijros device: {env['bijros_device']}",
        f"- versions: bijros {v['bijros']}, torch {v['torch']}, antspyx {v['antspyx']}, "
        f"itk-elastix {v['itk-elastix']}, numpy {v['numpy']}, Python {env['python']}",
        f"- data: {setup['data']}; atlas {setup['atlas']} (moving) -> targets {', '.join(setup['targets'])} (fixed)",
        f"- labels scored: every label present in the target's manual labels except {setup['exclude']} "
        f"({setup['labels_per_pair']} per pair on average, {len(setup['labels_union'])} distinct)",
        "",
        table(rows),
        "## Notes",
        "",
    ]
    return "\n".join(header) + "\n".join(f"- {n}" for n in notes) + "\n"
