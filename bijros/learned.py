"""Learned deformable registration with the shipped models (Resources/Models/catalog.json).

The model library is a folder holding ``catalog.json`` and the safetensors files it names::

    {"default": "<name>", "models": [{"name", "file", "sha256", "architecture", "config",
                                      "input_spacing_mm", ...}, ...]}

It is found at ``$BIJROS_MODELS_DIR`` if set, else at ``Resources/Models`` beside the ``bijros``
package (the repository root, and the Slicer extension's install tree), else inside the package
(``bijros/model_library``, where a wheel puts it). Weights are checked
against their sha256 and read with safetensors only (:mod:`bijros.weights`).

:func:`learned_register` runs a model once on an affinely pre-aligned pair and returns the
displacement in RAS millimetres on the model's grid, the same form as
:func:`bijros.deformable.deformable_register` returns, so the pipeline composes, warps, or
hands it to instance optimisation as its starting field in one way.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bijros.errors import InputError
from bijros.spatial import Grid, downsample, points_ras, pool_factors, sample

CATALOG = "catalog.json"
REPO_LIBRARY = Path(__file__).resolve().parent.parent / "Resources" / "Models"  # checkout, editable install, Slicer


def models_dir() -> Path:
    """The model library folder: ``$BIJROS_MODELS_DIR``, else ``Resources/Models`` beside the package (a
    checkout, an editable install, the Slicer extension), else ``bijros/model_library`` (a wheel install,
    where pyproject.toml maps Resources/Models to that package folder)."""
    env = os.environ.get("BIJROS_MODELS_DIR")
    wheel_library = Path(__file__).resolve().parent / "model_library"
    folder = Path(env) if env else REPO_LIBRARY
    if not env and not (folder / CATALOG).is_file() and (wheel_library / CATALOG).is_file():
        folder = wheel_library
    if not (folder / CATALOG).is_file():
        where = "$BIJROS_MODELS_DIR" if env else "Resources/Models beside the bijros package"
        raise InputError(
            f"The learned model library was not found ({where}: {folder} has no {CATALOG}). Reinstall the "
            "extension or repository checkout, set BIJROS_MODELS_DIR to the folder holding catalog.json, "
            "or use --method io (no learned model)."
        )
    return folder


def load_catalog(folder: Path | None = None) -> dict:
    folder = folder or models_dir()
    try:
        data = json.loads((folder / CATALOG).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the model catalog {folder / CATALOG}: {exc}") from exc
    if not isinstance(data, dict) or not data.get("models"):
        raise InputError(f"the model catalog {folder / CATALOG} lists no models")
    return data


def list_models() -> list[dict]:
    return list(load_catalog()["models"])


def resolve_entry(model: str | None) -> tuple[dict, Path]:
    """A catalog entry and its folder: ``None`` = the catalog's default, a catalog name, or a path to a
    JSON entry (e.g. the ``model.json`` that ``bijros train-registration`` writes)."""
    if model and (model.endswith(".json") or os.sep in model or "/" in model):
        from bijros.weights import read_entry

        path = Path(model).expanduser()
        if not path.is_file():
            raise InputError(f"--model {model}: no such file; give a catalog name (see `bijros models`) or a model.json")
        return read_entry(path)
    folder = models_dir()
    catalog = load_catalog(folder)
    name = model or catalog.get("default") or catalog["models"][0]["name"]
    for entry in catalog["models"]:
        if entry.get("name") == name:
            return entry, folder
    known = ", ".join(e.get("name", "?") for e in catalog["models"])
    raise InputError(f"unknown model '{name}'; the library has: {known}")


@lru_cache(maxsize=4)
def _cached_model(entry_json: str, folder: str, device: str) -> nn.Module:
    from bijros.weights import load_model

    return load_model(json.loads(entry_json), folder, device)


def get_model(model: str | None, device: torch.device) -> tuple[nn.Module, dict]:
    """The verified, eval-mode model named by ``model`` (see :func:`resolve_entry`) on ``device``, and its entry."""
    entry, folder = resolve_entry(model)
    if "input_spacing_mm" not in entry:
        raise InputError(f"model '{entry.get('name')}' has no input_spacing_mm in its catalog entry")
    return _cached_model(json.dumps(entry, sort_keys=True), str(folder), str(device)), entry


def _unit_range(volume: torch.Tensor) -> torch.Tensor:
    lo, hi = volume.amin(), volume.amax()
    return ((volume - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)


def _to_model_grid(volume: torch.Tensor, grid: Grid, spacing_mm: float) -> tuple[torch.Tensor, Grid]:
    """(C, I, J, K) on ``grid`` -> the same box at ``spacing_mm``: average pooling when whole factors reach it
    (within 5 %), else trilinear resampling onto a grid of that spacing (e.g. a 3 mm working grid)."""
    factors = pool_factors(grid.spacing, spacing_mm)
    if np.allclose(grid.spacing * np.array(factors), spacing_mm, rtol=0.05):
        return downsample(volume, grid, factors)
    scale = spacing_mm / grid.spacing
    shape = tuple(max(4, round(n / s)) for n, s in zip(grid.shape, scale, strict=True))
    step = np.eye(4)
    step[:3, :3] = np.diag(scale)
    step[:3, 3] = (scale - 1) / 2.0
    out_grid = Grid(shape, grid.ijk_to_ras @ step)  # type: ignore[arg-type]
    smooth, src_grid = downsample(volume, grid, factors)  # anti-aliasing first (a no-op for factors of 1)
    return sample(smooth, src_grid, points_ras(out_grid, volume.device), padding_mode="border"), out_grid


def learned_register(fixed: torch.Tensor, moving: torch.Tensor, grid: Grid, model: nn.Module,
                     input_spacing_mm: float, progress=None) -> tuple[torch.Tensor, Grid]:
    """One forward pass: displacement (1, 3, X, Y, Z) in RAS mm on the model's grid, and that grid.

    ``fixed`` and ``moving`` are (1, I, J, K) normalised intensities on the same axis-aligned RAS
    ``grid`` (the moving one already affinely pre-aligned). They are average-pooled to the model's
    input spacing and min-max scaled to [0, 1], as in training; the model's voxel displacement
    (components i, j, k, resampling convention) is turned into millimetres along the grid's axes.
    """
    if progress:
        progress(0.0, f"learned model at {input_spacing_mm:g} mm")
    f_small, m_grid = _to_model_grid(fixed, grid, input_spacing_mm)
    m_small, _ = _to_model_grid(moving, grid, input_spacing_mm)
    device = fixed.device
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        disp_vox = model(_unit_range(f_small)[None], _unit_range(m_small)[None]).float()
    axes = torch.as_tensor(np.asarray(m_grid.ijk_to_ras)[:3, :3], dtype=torch.float32, device=device)
    disp_mm = torch.einsum("rc,bc...->br...", axes, disp_vox)
    if progress:
        progress(1.0, "learned field ready")
    return disp_mm, m_grid


def publish_model(run_dir: str | Path, library: str | Path | None = None, benchmark: str | Path | None = None,
                  make_default: bool = True) -> dict:
    """Copy a training run's model into the library and record it in ``catalog.json`` (atomically).

    The weights are copied as ``<name>.safetensors`` and their sha256 recomputed; an entry of the same
    name is replaced. ``benchmark``: a MALF benchmark JSON (Testing/Benchmarks) whose summary rows
    (every method of that run) are stored in the entry, so the figures travel with the weights.
    """
    import shutil

    from bijros.weights import read_entry, sha256_file, verified_weights_path

    entry, folder = read_entry(Path(run_dir) / "model.json")
    source = verified_weights_path(entry, folder)
    lib = Path(library) if library else REPO_LIBRARY
    lib.mkdir(parents=True, exist_ok=True)
    catalog_path = lib / CATALOG
    catalog = json.loads(catalog_path.read_text(encoding="utf-8")) if catalog_path.is_file() else {
        "_comment": "Learned registration models shipped with BiJROS. Each file is verified against its sha256 "
                    "before it is read (safetensors only). Add one with: bijros publish-model --run RUN_DIR.",
        "default": None, "models": []}
    target = lib / f"{entry['name']}.safetensors"
    tmp = target.with_name(target.name + ".tmp")
    shutil.copyfile(source, tmp)
    entry = {**entry, "file": target.name, "sha256": sha256_file(tmp),
             "size_mb": round(tmp.stat().st_size / 1e6, 3)}
    if benchmark:
        entry["benchmark"] = benchmark_figures(benchmark)
    os.replace(tmp, target)
    catalog["models"] = [e for e in catalog.get("models", []) if e.get("name") != entry["name"]] + [entry]
    if make_default or not catalog.get("default"):
        catalog["default"] = entry["name"]
    tmp_catalog = catalog_path.with_name(CATALOG + ".tmp")
    tmp_catalog.write_text(json.dumps(catalog, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp_catalog, catalog_path)
    return entry


def benchmark_figures(path: str | Path) -> dict:
    """The summary rows of a MALF benchmark JSON (Testing/Benchmarks/malf_propagation.py), compacted."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        rows = data["summary"]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise InputError(f"cannot read benchmark results {path}: {exc}") from exc
    keep = ("title", "pairs", "mean_dice", "sd_dice", "mean_hd95_mm", "folding_pct", "median_s", "median_cpu_s")
    compact = [{k: (round(r[k], 4) if isinstance(r.get(k), float) else r.get(k)) for k in keep} for r in rows]
    parts = [f"{r['title']} Dice {r['mean_dice']:.3f}, {r['median_s']:.1f} s/pair" for r in compact
             if r.get("mean_dice") is not None and r.get("median_s") is not None]
    return {"source": Path(path).name, "date": data.get("environment", {}).get("date"),
            "setup": "MALF atlas 1000 -> 14 subjects, 138 labels, CPU 2 threads",
            "rows": compact, "summary": "; ".join(parts)}
