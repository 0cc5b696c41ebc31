"""The learned model library: a folder with ``catalog.json`` and the safetensors files it names.

    {"default": "<name>", "models": [{"name", "file", "sha256", "architecture", "config",
                                      "input_spacing_mm", ...}, ...]}

It is found at ``$BIJROS_MODELS_DIR`` if set, else at ``Resources/Models`` beside the ``bijros``
package (the repository root, and the Slicer extension's install tree), else inside the package
(``bijros/model_library``, where a wheel puts it). Weights are checked against their sha256 and
read with safetensors only (:mod:`bijros.models.weights`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bijros.errors import InputError

CATALOG = "catalog.json"
REPO_LIBRARY = Path(__file__).resolve().parents[2] / "Resources" / "Models"  # checkout, editable install, Slicer


def models_dir() -> Path:
    """The model library folder: ``$BIJROS_MODELS_DIR``, else ``Resources/Models`` beside the package (a
    checkout, an editable install, the Slicer extension), else ``bijros/model_library`` (a wheel install,
    where pyproject.toml maps Resources/Models to that package folder)."""
    env = os.environ.get("BIJROS_MODELS_DIR")
    wheel_library = Path(__file__).resolve().parents[1] / "model_library"
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
        from bijros.models.weights import read_entry

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



def publish_model(run_dir: str | Path, library: str | Path | None = None, benchmark: str | Path | None = None,
                  make_default: bool = True) -> dict:
    """Copy a training run's model into the library and record it in ``catalog.json`` (atomically).

    The weights are copied as ``<name>.safetensors`` and their sha256 recomputed; an entry of the same
    name is replaced. ``benchmark``: a MALF benchmark JSON (Testing/Benchmarks) whose summary rows
    (every method of that run) are stored in the entry, so the figures travel with the weights.
    """
    import shutil

    from bijros.models.weights import read_entry, sha256_file, verified_weights_path

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
    if benchmark and entry.get("task") == "fewshot":
        from bijros.fewshot.model_library import benchmark_figures as fewshot_figures

        entry["benchmark"] = fewshot_figures(benchmark)
    elif benchmark:
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
