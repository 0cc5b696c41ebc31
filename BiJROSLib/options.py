"""Run options of the console / panel API -> the engine's command-line arguments, checked first.

Method names: the engine's own (``bijros/data/methods.json``: "io", "learned+io", "learned",
"affine") plus the alias "deformable" (= the engine's default method). The method table is read
from the engine without torch, when first needed (a source checkout loads without the engine).
"""

from __future__ import annotations

from collections.abc import Sequence

#: alias accepted by the logic -> resolved to the engine's default method
DEFAULT_METHOD_ALIAS = "deformable"
PRESETS = ("default", "fast", "accurate")  # or None / "": the method's own preset
AFFINE_METRICS = ("ncc", "mi")  # or None: the preset's (ncc)


def engineMethodNames() -> tuple[str, ...]:
    """The engine's method names, menu order (torch-free)."""
    from bijros.registration.methods import METHOD_NAMES

    return METHOD_NAMES


def defaultMethod() -> str:
    from bijros.registration.methods import DEFAULT_METHOD

    return DEFAULT_METHOD


def methodInfo(name: str) -> dict:
    """``{"title", "description", "preset", "uses_model"}`` of an engine method."""
    from bijros.registration.methods import method_info

    return method_info(engineMethod(name))


def engineMethod(method: str) -> str:
    """The engine's --method for a logic method name; ``ValueError`` when unknown."""
    names = engineMethodNames()
    if method == DEFAULT_METHOD_ALIAS:
        return defaultMethod()
    if method not in names:
        raise ValueError(f"Unknown method '{method}'. Choose one of: {', '.join((DEFAULT_METHOD_ALIAS, *names))}.")
    return method


def usesLearnedModel(method: str) -> bool:
    return bool(methodInfo(method).get("uses_model"))


def usesTextFilters(method: str) -> bool:
    """True for the text-filter methods (methods.json "uses_text"); False for an empty or unknown name."""
    try:
        return bool(methodInfo(method).get("uses_text"))
    except ValueError:
        return False


def engineArguments(method, device, preset, spacing, iterations, regWeight, diffeomorphic,
                    affineMetric=None) -> list[str]:
    """``--method ... --device ...`` and the optional settings; ``ValueError`` naming a bad one."""
    # Slicer shows the result in its own views: no qc.png from the child
    args = ["--method", engineMethod(method), "--device", str(device or "auto"), "--no-qc"]
    if preset and preset not in PRESETS:
        raise ValueError(f"Unknown preset '{preset}'. Choose one of: {', '.join(PRESETS)} (or none: the method's).")
    if preset:
        args += ["--preset", preset]
    if affineMetric:
        if affineMetric not in AFFINE_METRICS:
            raise ValueError(f"Unknown affine metric '{affineMetric}'. Use 'ncc' (same contrast) or 'mi' "
                             "(mutual information: different contrasts, e.g. CT to MR).")
        args += ["--affine-metric", affineMetric]
    if spacing is not None:
        if not 0.2 <= float(spacing) <= 10:
            raise ValueError(f"Spacing {spacing} mm is out of range; use a value between 0.2 and 10 mm.")
        args += ["--spacing", repr(float(spacing))]
    if iterations is not None:
        if isinstance(iterations, str):
            parts = [p.strip() for p in iterations.split(",") if p.strip()]
        elif isinstance(iterations, Sequence):
            parts = [str(p) for p in iterations]
        else:
            parts = [str(iterations)]
        if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"Iterations '{iterations}' must be positive whole numbers, e.g. 40,30,20.")
        args += ["--iterations", ",".join(parts)]
    if regWeight is not None:
        if float(regWeight) < 0:
            raise ValueError(f"The regularisation weight must be >= 0 (got {regWeight}).")
        args += ["--reg-weight", repr(float(regWeight))]
    if diffeomorphic:
        args.append("--diffeomorphic")
    return args


def looksLikeCT(volumeNode) -> bool:
    """True when the volume holds Hounsfield units (air near -1000): values below -500 in it."""
    imageData = volumeNode.GetImageData() if volumeNode is not None else None
    if imageData is None or imageData.GetNumberOfPoints() == 0:
        return False
    return imageData.GetScalarRange()[0] < -500


def crossContrastWarning(method: str, fixedVolume, movingVolume, affineMetric=None) -> str:
    """'' or a warning for people: a learned method on a pair that does not share a contrast.

    The shipped model is trained for same-contrast pairs (T1 atlas onto a T1 scan); a pair is
    taken as cross-contrast when mutual information was chosen for the affine (the user says the
    contrasts differ) or when exactly one of the two volumes holds CT values.
    """
    try:
        if not usesLearnedModel(method):
            return ""
    except (ValueError, ImportError):
        return ""
    why = ""
    if affineMetric == "mi":
        why = "mutual information is selected for the affine stage (the contrasts differ)"
    elif fixedVolume is not None and movingVolume is not None and looksLikeCT(fixedVolume) != looksLikeCT(movingVolume):
        ct, other = (fixedVolume, movingVolume) if looksLikeCT(fixedVolume) else (movingVolume, fixedVolume)
        why = f"'{ct.GetName()}' looks like CT (values below -500) and '{other.GetName()}' does not"
    if not why:
        return ""
    return (f"The learned model is trained for same-contrast pairs, but {why}. On held-out cross-contrast pairs it "
            "did slightly worse than no deformation: prefer 'Instance optimisation only' here.")
