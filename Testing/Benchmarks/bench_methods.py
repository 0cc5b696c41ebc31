"""Registration methods compared by the MALF propagation benchmark.

Each runner registers an atlas T1 (moving) to a target T1 (fixed), warps the atlas labels onto the
target grid and returns a :class:`MethodOutput`: labels and the Jacobian determinant of the total
mapping, both indexed [i, j, k] on the target grid, plus wall and CPU seconds of the timed part
(registration + label warping; reading files and the Jacobian for QC are not timed).

Heavy packages (torch via bijros, antspyx, itk) are imported inside the runners, so the caller can
set the thread environment variables before any of them loads.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ELASTIX_PARAMETERS = Path(__file__).with_name("elastix_parameters.json")


@dataclass
class Pair:
    """Atlas and target files of one propagation pair, plus the bijros images already loaded."""

    atlas_t1: Path
    atlas_labels: Path
    target_t1: Path
    atlas: object  # bijros.io.image.Image
    atlas_lab: object
    target: object


@dataclass
class MethodOutput:
    labels: np.ndarray  # [i, j, k] integer labels on the target grid
    jacobian: np.ndarray  # [i, j, k] det of the total mapping's Jacobian on the target grid
    seconds: float
    cpu_seconds: float
    info: dict = field(default_factory=dict)


@dataclass
class MethodSpec:
    """A method named on the command line: ``bijros[:method or preset]``, ``ants[:type_of_transform]``, ``elastix``.

    ``bijros:learned``, ``bijros:learned+io``, ``bijros:io``, ``bijros:affine`` name an engine method (with
    the method's own preset); ``bijros:fast`` / ``bijros:accurate`` name an instance-optimisation preset
    (method io); plain ``bijros`` is the engine's default method. ``bijros:learned@MODEL`` runs a learned
    method with another model (a catalog name or a train-registration ``model.json``).
    """

    name: str  # as given, e.g. "bijros:fast"
    kind: str  # bijros | ants | elastix
    variant: str  # bijros method or preset, or ANTs transform type ("" for elastix)

    @property
    def title(self) -> str:
        if self.kind == "ants":
            return f"ANTs {self.variant}"
        if self.kind == "elastix":
            return "elastix affine+bspline"
        return self.name


def parse_method(text: str) -> MethodSpec:
    kind, _, variant = text.strip().partition(":")
    kind = kind.lower()
    if kind == "bijros":
        return MethodSpec(text.strip(), kind, variant or "default")
    if kind == "ants":
        return MethodSpec(text.strip(), kind, variant or "SyN")
    if kind == "elastix" and not variant:
        return MethodSpec(text.strip(), kind, "")
    raise ValueError(
        f"Unknown method '{text}': use bijros, bijros:<preset>, ants, ants:<type_of_transform> or elastix."
    )


class Timer:
    """Wall and process CPU seconds (all threads) of a ``with`` block."""

    def __enter__(self) -> Timer:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._wall
        self.cpu_seconds = time.process_time() - self._cpu


def run_method(spec: MethodSpec, pair: Pair, threads: int, device: str) -> MethodOutput:
    if spec.kind == "bijros":
        return run_bijros(pair, spec.variant, device)
    if spec.kind == "ants":
        return run_ants(pair, spec.variant)
    return run_elastix(pair, threads)


# --- bijros -------------------------------------------------------------------------------------


def bijros_options(variant: str, device: str):
    """RegistrationOptions for ``bijros:<variant>`` (see :class:`MethodSpec`)."""
    from bijros.registration.methods import DEFAULT_METHOD, METHOD_NAMES
    from bijros.registration.pipeline import RegistrationOptions

    variant, _, model = variant.partition("@")
    if variant in ("", "default"):
        return RegistrationOptions(method=DEFAULT_METHOD, device=device, model=model or None)
    if variant in METHOD_NAMES:
        return RegistrationOptions(method=variant, device=device, model=model or None)
    return RegistrationOptions(method="io", preset=variant, device=device)


def run_bijros(pair: Pair, variant: str, device: str) -> MethodOutput:
    """bijros via the Python API; threads come from BIJROS_NUM_THREADS. The learned model is loaded
    (and its sha256 checked) once per process, outside the timed part, as in an interactive session."""
    from bijros.registration.pipeline import register

    options = bijros_options(variant, device)
    if options.uses_model:
        from bijros.device import resolve_device
        from bijros.registration.learned import get_model

        get_model(options.model_name(), resolve_device(device))
    with Timer() as t:
        result = register(fixed=pair.target, moving=pair.atlas, moving_labels=pair.atlas_lab, options=options)
    report = result.report
    info = {
        "report_folding_fraction": report["qc"]["folding_fraction"],
        "report_sdlogj": report["qc"]["sdlogj"],
        "stage_seconds": report["seconds"],
        "torch_threads": report["torch_threads"],
        "device": report["device"],
        "method": report["method"],
        "preset": report["preset"],
        "model": report.get("model"),
    }
    return MethodOutput(result.labels.array, full_resolution_jacobian(result), t.seconds, t.cpu_seconds, info)


def full_resolution_jacobian(result) -> np.ndarray:
    """The Jacobian determinant at every target voxel (the written one is on the displacement grid), from
    the stored field's trilinear interpolation, as ANTs' is computed from its composed field."""
    from bijros.registration.field import jacobian_determinant

    return jacobian_determinant(result.dense_field(), result.fixed.ijk_to_ras)


# --- ANTs ---------------------------------------------------------------------------------------


def run_ants(pair: Pair, type_of_transform: str) -> MethodOutput:
    """antspyx registration with its defaults; labels with genericLabel; Jacobian of the composed field."""
    import ants

    fixed = ants.image_read(str(pair.target_t1))
    moving = ants.image_read(str(pair.atlas_t1))
    moving_labels = ants.image_read(str(pair.atlas_labels))
    with tempfile.TemporaryDirectory(prefix="bench_ants_") as tmp:
        with Timer() as t:
            reg = ants.registration(
                fixed, moving, type_of_transform=type_of_transform, outprefix=f"{tmp}/tx_"
            )
            warped = ants.apply_transforms(
                fixed, moving_labels, reg["fwdtransforms"], interpolator="genericLabel"
            )
        labels = np.rint(warped.numpy()).astype(np.int32)
        jacobian = ants_total_jacobian(ants, fixed, moving, reg["fwdtransforms"], tmp)
    return MethodOutput(labels, jacobian, t.seconds, t.cpu_seconds, {"transforms": len(reg["fwdtransforms"])})


def ants_total_jacobian(ants, fixed, moving, transforms: list[str], tmp: str) -> np.ndarray:
    """Compose warp + affine into one displacement field on the fixed grid, then its Jacobian determinant."""
    composed = ants.apply_transforms(fixed, moving, transforms, compose=f"{tmp}/total_")
    return ants.create_jacobian_determinant_image(fixed, composed, do_log=False).numpy()


# --- elastix ------------------------------------------------------------------------------------


def elastix_parameter_object(itk, path: Path = ELASTIX_PARAMETERS):
    """itk-elastix default maps named in ``path``, in order, with that file's overrides."""
    config = json.loads(path.read_text(encoding="utf-8"))
    params = itk.ParameterObject.New()
    for entry in config["maps"]:
        pmap = params.GetDefaultParameterMap(entry["default"])
        for key, values in entry["overrides"].items():
            pmap[key] = list(values)
        params.AddParameterMap(pmap)
    return params, config["label_transformix_overrides"]


def run_elastix(pair: Pair, threads: int) -> MethodOutput:
    """elastix affine + B-spline; labels through transformix with nearest-neighbour (order 0) resampling."""
    import itk

    # ElastixRegistrationMethod.SetNumberOfThreads (number_of_threads=) segfaults in itk-elastix 0.25.4,
    # so the thread count comes from ITK's global default (ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS, set here too).
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(threads)
    fixed = itk.imread(str(pair.target_t1), itk.F)
    moving = itk.imread(str(pair.atlas_t1), itk.F)
    moving_labels = itk.imread(str(pair.atlas_labels), itk.F)
    params, label_overrides = elastix_parameter_object(itk)
    with Timer() as t:
        reg = itk.ElastixRegistrationMethod.New(fixed, moving, parameter_object=params, log_to_console=False)
        reg.UpdateLargestPossibleRegion()
        transform = reg.GetTransformParameterObject()
        for index in range(transform.GetNumberOfParameterMaps()):
            for key, values in label_overrides.items():
                transform.SetParameter(index, key, list(values))
        warp = itk.TransformixFilter.New(
            moving_labels, transform_parameter_object=transform, log_to_console=False
        )
        warp.UpdateLargestPossibleRegion()
        warped = itk.array_from_image(warp.GetOutput())
    labels = np.rint(warped).astype(np.int32).transpose(2, 1, 0)
    jacobian = elastix_total_jacobian(itk, moving, transform)
    return MethodOutput(
        labels, jacobian, t.seconds, t.cpu_seconds, {"maps": transform.GetNumberOfParameterMaps()}
    )


def elastix_total_jacobian(itk, moving, transform) -> np.ndarray:
    """transformix's determinant of the spatial Jacobian of the whole transform chain, on the fixed grid."""
    with tempfile.TemporaryDirectory(prefix="bench_elastix_") as tmp:
        jac_filter = itk.TransformixFilter.New(
            moving, transform_parameter_object=transform, log_to_console=False, output_directory=tmp
        )
        jac_filter.SetComputeDeterminantOfSpatialJacobian(True)
        jac_filter.UpdateLargestPossibleRegion()
        image = itk.imread(os.path.join(tmp, "spatialJacobian.nii"), itk.F)
        return np.asarray(itk.array_from_image(image), dtype=np.float32).transpose(2, 1, 0)
