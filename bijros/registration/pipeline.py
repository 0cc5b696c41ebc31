"""The one data path: inputs -> working grid -> affine -> deformable -> outputs on the fixed grid.

Console example::

    from bijros.io import load_image
    from bijros.registration.pipeline import RegistrationOptions, register, write_outputs
    fixed = load_image("subject.nii.gz")
    moving = load_image("atlas.nii.gz")
    labels = load_image("atlas_labels.nii.gz", label_map=True)
    result = register(fixed, moving, labels, RegistrationOptions(method="io"))
    write_outputs(result, "out/")
"""

from __future__ import annotations

import dataclasses
import json
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

import bijros
from bijros.device import configure_threads, resolve_device
from bijros.errors import InputError
from bijros.io.image import Image
from bijros.progress import Progress
from bijros.registration.affine import AffineOptions, affine_register
from bijros.registration.deformable import DeformableOptions, Level, deformable_register
from bijros.registration.field import (
    DenseField,
    at_nodes,
    displacement_factor,
    displacement_grid,
    folding_stats,
    jacobian_determinant,
    total_displacement,
    warp_volumes,
)
from bijros.registration.grid import Grid, points_ras, resample_to_grid, sample
from bijros.registration.methods import DEFAULT_METHOD, METHOD_NAMES, load_methods
from bijros.registration.preprocess import check_intensity_image, robust_normalize, working_grid
from bijros.timing import Stages


def load_presets() -> dict:
    text = resources.files("bijros").joinpath("data/presets.json").read_text(encoding="utf-8")
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


@dataclasses.dataclass
class RegistrationOptions:
    method: str = DEFAULT_METHOD  # learned+io | learned | io | affine (bijros/data/methods.json)
    preset: str | None = None  # default | fast | accurate (bijros/data/presets.json); None = the method's
    model: str | None = None  # learned model: catalog name or model.json path; None = the catalog's default
    device: str = "auto"
    spacing: float | None = None  # working grid mm; None = the preset's
    diffeomorphic: bool = False
    iterations: tuple[int, ...] | None = None  # deformable iterations per level; None = preset
    reg_weight: float | None = None
    resample_labels: bool = False
    affine_metric: str | None = None  # ncc | mi; None = the preset's
    seed: int = 0
    prompt: str | None = None  # text naming structures of the moving labels to align better (bijros.registration.prompted)
    prompts_file: str | None = None  # --method text: label value -> words for that structure (read_region_prompts)

    def affine_options(self) -> AffineOptions:
        cfg = _tuples(self._preset()["affine"])
        if self.affine_metric is not None:
            cfg["metric"] = self.affine_metric
        return AffineOptions(**cfg)

    def deformable_options(self) -> DeformableOptions:
        cfg = dict(self._preset()["deformable"])
        levels = [dict(lv) for lv in cfg.pop("levels")]
        if self.iterations is not None:
            its = [int(i) for i in self.iterations]
            for i, level in enumerate(levels):
                level["iterations"] = its[i] if i < len(its) else its[-1]
        if self.reg_weight is not None:
            cfg["reg_weight"] = float(self.reg_weight)
        cfg["diffeomorphic"] = self.diffeomorphic
        cfg["seed"] = self.seed
        return DeformableOptions(levels=tuple(Level(**lv) for lv in levels), **cfg)

    def working_spacing(self) -> float:
        return float(self.spacing if self.spacing is not None else self._preset()["spacing_mm"])

    def preset_name(self) -> str:
        if self.preset is not None:
            return self.preset
        methods = load_methods()["methods"]
        return methods[self.method]["preset"] if self.method in methods else "default"

    def model_name(self) -> str | None:
        """The learned model: the one given, else the method's own (methods.json "model"), else the catalog's default."""
        return self.model or load_methods()["methods"].get(self.method, {}).get("model")

    @property
    def uses_text(self) -> bool:
        return bool(load_methods()["methods"].get(self.method, {}).get("uses_text"))

    @property
    def uses_model(self) -> bool:
        return bool(load_methods()["methods"].get(self.method, {}).get("uses_model"))

    def _preset(self) -> dict:
        presets = load_presets()
        name = self.preset_name()
        if name not in presets:
            raise InputError(f"Unknown preset '{name}'. Choose one of: {', '.join(presets)}.")
        return presets[name]

    def validate(self) -> None:
        if self.method not in METHOD_NAMES:
            raise InputError(f"Unknown method '{self.method}'. Choose one of: {', '.join(METHOD_NAMES)}.")
        self._preset()
        if self.uses_model:
            from bijros.models.library import resolve_entry

            entry, _ = resolve_entry(self.model_name())
            if entry.get("task", "registration") != "registration":
                raise InputError(f"Model '{entry.get('name')}' is a {entry['task']} model, not a registration model; "
                                 "see `bijros models`.")
            if self.uses_text != (entry.get("architecture") == "textscf"):
                raise InputError(f"Model '{entry.get('name')}' ({entry.get('architecture')}) does not fit method "
                                 f"'{self.method}': " + ("it needs a model with a text head (textscf)." if self.uses_text
                                                         else "a textscf model needs --method text or text+io."))
        if self.prompts_file and not self.uses_text:
            raise InputError("--prompts gives the text head its words; it needs --method text or text+io.")
        if self.prompt is not None and self.method == "affine":
            raise InputError("--prompt steers the deformable stage; use a method other than affine.")
        if self.prompt is not None and not self.prompt.strip():
            raise InputError("--prompt is empty; name the structures to align better, e.g. \"hippocampus and amygdala\".")
        if self.affine_metric not in (None, "ncc", "mi"):
            raise InputError(f"Unknown affine metric '{self.affine_metric}'. Use ncc or mi.")
        if self.spacing is not None and not (0.2 <= self.spacing <= 10):
            raise InputError(f"--spacing {self.spacing} mm is out of range; use a value between 0.2 and 10 mm.")


def _tuples(cfg: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}


@dataclasses.dataclass
class RegistrationResult:
    fixed: Image
    affine_ras: np.ndarray  # 4x4, fixed RAS -> moving RAS
    field_ras_mm: np.ndarray  # (I', J', K', 3) phi(x) - x on field_grid: what displacement.nii.gz holds
    field_grid: Grid  # the fixed grid, or every 2nd fixed voxel centre (bijros.registration.field)
    warped: Image
    jacobian: Image  # det of the mapping's Jacobian on field_grid (the displacement grid)
    labels: Image | None
    report: dict
    _full: np.ndarray | None = dataclasses.field(default=None, repr=False)

    @property
    def displacement_ras_mm(self) -> np.ndarray:
        """(I, J, K, 3) ``phi(x) - x`` at every fixed voxel: the field's trilinear interpolation (exact)."""
        if self._full is None:
            field = self.dense_field()
            self._full = field.slab(0, field.shape[0]).numpy()
        return self._full

    def dense_field(self) -> DenseField:
        """The mapping at every fixed voxel as a :class:`DenseField` (produced slab by slab from ``field_ras_mm``)."""
        factor = round(float(self.field_grid.spacing[0] / self.fixed.spacing[0]))
        return DenseField(torch.as_tensor(self.field_ras_mm), factor, self.fixed.shape)


def check_labels_match(image: Image, labels: Image, what: str, allow_resample: bool) -> None:
    if labels.same_grid(image) or allow_resample:
        return
    raise InputError(
        f"The {what} label map ({labels.shape}, spacing {np.round(labels.spacing, 3).tolist()}) is not on the grid "
        f"of its image ({image.shape}, spacing {np.round(image.spacing, 3).tolist()}). Check that they belong "
        "together, or pass --resample-labels to resample it through world coordinates."
    )


def register(
    fixed: Image,
    moving: Image,
    moving_labels: Image | None = None,
    options: RegistrationOptions | None = None,
    progress: Progress | None = None,
    cancel=None,
    fixed_mask: Image | None = None,
    affine_ras: np.ndarray | None = None,
    stages: Stages | None = None,
) -> RegistrationResult:
    """Register ``moving`` to ``fixed``; warp its image and (optional) labels onto the fixed grid.

    ``fixed_mask``: optional image (non-zero = inside, any grid: it is resampled through world
    coordinates) restricting the affine and deformable similarity to that region of the fixed image.
    ``affine_ras``: a fixed-RAS -> moving-RAS affine already found for this pair (e.g. by atlas
    ranking, :func:`affine_only`); the affine stage is then skipped and this one used.
    ``stages``: the caller's stage timer (e.g. the CLI's, holding "startup", "import" and "read");
    this run's stages are added to it and the report's "seconds" is its record.
    """
    opts = options or RegistrationOptions()
    opts.validate()
    prog = progress or Progress()
    if opts.method == "affine":
        prog.skip("deformable")
    if not opts.uses_model:
        prog.skip("learned")
    if opts.method in ("learned", "text"):
        prog.skip("deformable")
    if opts.prompt is None:
        prog.skip("prompt")
    check_intensity_image(fixed, "fixed")
    check_intensity_image(moving, "moving")
    if moving_labels is not None:
        check_labels_match(moving, moving_labels, "moving", opts.resample_labels)
    prompt_match, region_prompts = None, None
    if opts.prompt is not None:  # matched before anything runs: a prompt that names nothing stops here
        from bijros.registration.prompted import prompt_values

        if moving_labels is None:
            raise InputError("--prompt names structures of the moving labels; give --moving-labels (or the atlas "
                             "labels when propagating).")
        prompt_values_, prompt_match = prompt_values(opts.prompt, moving_labels, moving_labels.label_table)
    if opts.prompts_file:
        from bijros.registration.text import read_region_prompts

        present = set(np.unique(moving_labels.array).astype(int).tolist()) if moving_labels is not None else None
        region_prompts = read_region_prompts(opts.prompts_file, present)
    device = resolve_device(opts.device)
    threads = configure_threads()
    torch.manual_seed(opts.seed)
    timer = stages if stages is not None else Stages()
    t0 = time.perf_counter()

    report_load = prog.stage("load")
    report_load(0.0, "preparing images")
    fixed_norm = robust_normalize(fixed.array)
    moving_norm = robust_normalize(moving.array)
    spacing = opts.working_spacing()
    work = working_grid(fixed, fixed_norm, spacing)
    fixed_grid = Grid(fixed.shape, fixed.ijk_to_ras)
    moving_grid = Grid(moving.shape, moving.ijk_to_ras)
    f_t = torch.as_tensor(fixed_norm, device=device)[None]
    m_t = torch.as_tensor(moving_norm, device=device)[None]
    work_pts = points_ras(work, device)
    f_work = resample_to_grid(f_t, fixed_grid, work)
    mask_work = _mask_on_grid(fixed_mask, work_pts, device) if fixed_mask is not None else None
    report_load(1.0, f"working grid {work.shape} at {spacing:g} mm")
    timer.add("prepare", time.perf_counter() - t0)

    t1 = time.perf_counter()
    if affine_ras is not None:
        affine = np.asarray(affine_ras, dtype=np.float64)
        prog.stage("affine")(1.0, "affine given")
    else:
        # the moving image goes through the same resampling as the fixed one (its own RAS-aligned
        # grid at the working spacing), so identical images give identical pyramids
        m_canon_grid = working_grid(moving, moving_norm, spacing)
        m_canon = resample_to_grid(m_t, moving_grid, m_canon_grid)
        affine = affine_register(f_work, work, m_canon, m_canon_grid, opts.affine_options(),
                                 progress=prog.stage("affine"), fixed_mask=mask_work)
        del m_canon
    disp_work, disp_grid, model_name, text_report = None, None, None, None
    if opts.method != "affine":  # the moving image through the affine onto the working grid (counted as affine)
        a = torch.as_tensor(affine, dtype=torch.float32, device=device)
        m_work = sample(m_t, moving_grid, work_pts @ a[:3, :3].T + a[:3, 3])
    timer.add("affine", time.perf_counter() - t1)
    if opts.uses_model:
        from bijros.registration.learned import get_model, learned_register

        t2 = time.perf_counter()
        model, entry = get_model(opts.model_name(), device)
        model_name = entry["name"]
        if opts.uses_text:
            from bijros.registration.text import text_register

            disp_work, disp_grid, text_report = text_register(f_work, m_work, work, moving_labels, affine, model,
                                                              entry, region_prompts, progress=prog.stage("learned"))
        else:
            disp_work, disp_grid = learned_register(f_work, m_work, work, model, float(entry["input_spacing_mm"]),
                                                    progress=prog.stage("learned"))
        timer.add("learned", time.perf_counter() - t2)
    if opts.method in ("io", "learned+io", "text+io"):
        t2 = time.perf_counter()
        start = (disp_work, disp_grid) if disp_work is not None else None
        disp_work, disp_grid = deformable_register(
            f_work, m_work, work, opts.deformable_options(), progress=prog.stage("deformable"), cancel=cancel,
            init=start, fixed_mask=mask_work,
        )
        timer.add("deformable", time.perf_counter() - t2)
    if prompt_match is not None:
        from bijros.registration.prompted import PromptOptions, refine, region_on_grid

        t2 = time.perf_counter()
        region = region_on_grid(moving_labels, prompt_values_, affine, disp_work, disp_grid, work, device)
        disp_work, disp_grid = refine(f_work, m_work, work, disp_work, disp_grid, region,
                                      PromptOptions(prompt_values_), progress=prog.stage("prompt"), cancel=cancel)
        timer.add("prompt", time.perf_counter() - t2)

    report_warp = prog.stage("warp")
    report_warp(0.0, "composing and resampling")
    with torch.no_grad():
        with timer("compose"):
            field_mm = float(disp_grid.spacing.max()) if disp_grid is not None else None
            factor = displacement_factor(fixed.spacing, field_mm)
            out_grid = displacement_grid(fixed_grid, factor)
            coarse = total_displacement(out_grid, affine, disp_work, disp_grid, device)
            disp = DenseField(coarse, factor, fixed.shape)  # full resolution slab by slab, never whole
        report_warp(0.2, "warping the image and labels" if moving_labels is not None else "warping the image")
        with timer("warp"):  # the image and the labels in one pass over the fixed grid
            warped, labels_arr = warp_volumes(fixed_grid, disp, image=moving, labels=moving_labels)
        labels_out = None
        if labels_arr is not None:
            labels_arr = labels_arr.astype(_label_dtype(moving_labels.array))
            labels_out = Image(labels_arr, fixed.ijk_to_ras.copy(), moving_labels.label_table, name="labels")
        coarse_np = coarse.cpu().numpy().astype(np.float32)
        with timer("jacobian"):  # at the displacement grid's nodes: equal there to the full-resolution field's
            jac = jacobian_determinant(coarse, out_grid.ijk_to_ras)
        disp_np = coarse_np if factor == 1 else None
        del disp
    report_warp(1.0, "warped")
    with timer("jacobian"):
        qc = folding_stats(jac, at_nodes(fixed_norm > 0.05, factor, out_grid.shape))
        qc["folding_fraction_all_voxels"] = float(np.mean(jac <= 0))
    timer.add("total", time.perf_counter() - t0)
    report = {
        "bijros_version": bijros.__version__,
        "bijros_path": str(Path(bijros.__file__).resolve().parent),
        "method": opts.method,
        "preset": opts.preset_name(),
        "model": model_name,
        "diffeomorphic": opts.diffeomorphic,
        "device": str(device),
        "torch_threads": threads,
        "torch_version": torch.__version__,
        "working_grid": {"shape": list(work.shape), "spacing_mm": spacing},
        "displacement_grid": {"shape": list(out_grid.shape), "factor": factor,
                              "spacing_mm": out_grid.spacing.round(4).tolist(),
                              "note": "displacement.nii.gz holds phi(x) - x at every factor-th fixed voxel centre; "
                                      "its trilinear interpolation (what ITK, ANTs and Slicer do) is the mapping, "
                                      "and the warped image, labels and Jacobian were made with it"},
        "fixed": {"name": fixed.name, "shape": list(fixed.shape), "spacing_mm": fixed.spacing.round(4).tolist()},
        "moving": {"name": moving.name, "shape": list(moving.shape), "spacing_mm": moving.spacing.round(4).tolist()},
        "seconds": timer.seconds,  # rounded when written (report_json)
        "qc": qc,
        "qc_note": "folding_fraction and sdlogj are measured inside the fixed image's foreground, at the nodes of "
                   "the displacement grid (jacobian.nii.gz is on that grid): the central-difference Jacobian there "
                   "equals the full-resolution field's at those voxels",
        "affine_ras": np.round(affine, 6).tolist(),
    }
    if prompt_match is not None:
        report["prompt"] = {"text": opts.prompt, "labels": prompt_match["labels"], "phrases": prompt_match["phrases"],
                            "note": "the named structures got a second, local pass (bijros.registration.prompted)"}
    if text_report is not None:
        report["text"] = text_report
    if mask_work is not None:
        report["fixed_mask"] = {"name": fixed_mask.name, "working_voxels_inside": int(mask_work.sum().item())}
    return RegistrationResult(
        fixed=fixed,
        affine_ras=affine,
        field_ras_mm=coarse_np,
        field_grid=out_grid,
        _full=disp_np,
        warped=Image(_in_dtype_of(warped, moving.array.dtype), fixed.ijk_to_ras.copy(), name="warped"),
        jacobian=Image(jac.astype(np.float32), out_grid.ijk_to_ras.copy(), name="jacobian"),
        labels=labels_out,
        report=report,
    )


def check_mask(mask: Image, fixed: Image, what: str = "fixed") -> None:
    """A usable mask: some non-zero voxels, and some of them inside the fixed image's box."""
    inside = np.asarray(mask.array) != 0
    if not inside.any():
        raise InputError(f"The {what} mask '{mask.name}' is empty (no non-zero voxel); paint the region to register, "
                         "or leave the mask out.")
    corners = np.array([[i, j, k, 1.0] for i in (0, fixed.shape[0] - 1) for j in (0, fixed.shape[1] - 1)
                        for k in (0, fixed.shape[2] - 1)])
    box = (fixed.ijk_to_ras @ corners.T).T[:, :3]
    idx = np.argwhere(inside)
    pts = (mask.ijk_to_ras[:3, :3] @ idx.T).T + mask.ijk_to_ras[:3, 3]
    lo, hi = box.min(0) - 1e-3, box.max(0) + 1e-3
    if not np.any(np.all((pts >= lo) & (pts <= hi), axis=1)):
        raise InputError(f"The {what} mask '{mask.name}' lies entirely outside the {what} image; check that it was "
                         f"drawn on the {what} image.")


def _mask_on_grid(mask: Image, points: torch.Tensor, device) -> torch.Tensor:
    """(1, I, J, K) 0/1 float: ``mask`` (non-zero = inside) resampled at ``points`` (trilinear, > 0.5)."""
    inside = torch.as_tensor((np.asarray(mask.array) != 0).astype(np.float32), device=device)[None]
    on_grid = sample(inside, Grid(mask.shape, mask.ijk_to_ras), points)
    result = (on_grid > 0.5).float()
    if result.sum() < 27:
        raise InputError(f"The fixed mask '{mask.name}' covers fewer than 27 voxels of the working grid; draw a larger "
                         "region or use a finer --spacing.")
    return result


def _in_dtype_of(values: np.ndarray, dtype) -> np.ndarray:
    """The warped image in the moving image's voxel type (integers rounded and clipped; e.g. CT in HU)."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu" or dtype.itemsize > 4:
        return values.astype(np.float32, copy=False)
    info = np.iinfo(dtype)
    np.rint(values, out=values)
    np.clip(values, info.min, info.max, out=values)
    return values.astype(dtype)


def _label_dtype(array: np.ndarray):
    return np.int16 if array.min() >= -32768 and array.max() <= 32767 else np.int32


def propagate(
    atlas: Image, atlas_labels: Image, target: Image, options: RegistrationOptions | None = None, **kwargs
) -> RegistrationResult:
    """One-shot label propagation: register the atlas to the target and carry its labels over."""
    if atlas_labels is None:
        raise InputError("Propagation needs the atlas label map (--atlas-labels).")
    return register(target, atlas, atlas_labels, options, **kwargs)
