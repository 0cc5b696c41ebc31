"""Atlas selection and multi-atlas propagation from Slicer: rank a library's atlases for a target volume,
register the best k and fuse their labels (the engine's ``bijros propagate --atlas-library``).

A library is a folder of image/label pairs (the engine's pairing rules, ``bijros.atlas.folders``), or
one added by name (``addAtlasLibrary``); nothing is copied. Console example::

    logic = slicer.util.getModuleLogic("FewShotSegment")
    logic.addAtlasLibrary("/data/my-labelled-brains", name="my-brains")
    ranking = logic.rankAtlases(targetNode, "my-brains")          # [{"rank", "name", "score"}, ...]
    nodes = logic.propagateLibrary(targetNode, "my-brains")       # all atlases and their mirrors (up to 30), jlf
    nodes["segmentation"], nodes["confidenceVolume"], nodes["ranking"]
"""

from __future__ import annotations

import shutil

from .engine_logic import EngineLogic, nonTransformedReason
from .jobs import JobRequest, RegistrationJob
from .options import engineArguments
from .volumes import checkScalarVolume, volumeNodeToImage

FUSIONS = ("jlf", "weighted", "vote")
MIRROR_MODES = ("auto", "on", "off")


def _checkMirror(mirror) -> None:
    if mirror not in MIRROR_MODES:
        raise ValueError(f"Unknown mirror setting '{mirror}'. Choose one of: {', '.join(MIRROR_MODES)}.")


class MultiAtlasLogic(EngineLogic):
    """Atlas libraries, ranking and multi-atlas propagation (mixed into the propagation logic)."""

    @staticmethod
    def atlasLibraries() -> dict:
        """Added library name -> folder."""
        from bijros.atlas.folders import user_libraries

        return user_libraries()

    @staticmethod
    def addAtlasLibrary(folder, name=None) -> str:
        """Remember a folder of image/label pairs as a library; returns its name. ``ValueError`` with the reason."""
        from bijros.atlas.folders import add_library
        from bijros.errors import BijrosError

        try:
            return add_library(folder, name)[0]
        except BijrosError as exc:
            raise ValueError(str(exc)) from exc

    @staticmethod
    def removeAtlasLibrary(name) -> str:
        """Forget an added library (its files are not touched); returns its folder. ``ValueError`` if unknown."""
        from bijros.atlas.folders import remove_library
        from bijros.errors import BijrosError

        try:
            return remove_library(name)
        except BijrosError as exc:
            raise ValueError(str(exc)) from exc

    @staticmethod
    def libraryProblem(atlasLibrary) -> str:
        """'' when ``atlasLibrary`` (a name or a folder) holds at least one pair, else why not."""
        from bijros.atlas.folders import resolve_library
        from bijros.errors import BijrosError

        if not atlasLibrary:
            return "Choose an atlas library (or add a folder of labelled images)."
        try:
            resolve_library(str(atlasLibrary))
        except BijrosError as exc:
            return str(exc)
        return ""

    def _targetProblem(self, targetVolume) -> str:
        return checkScalarVolume(targetVolume, "target volume") or nonTransformedReason(targetVolume, "target volume")

    def _startLibraryJob(self, kind, targetVolume, args, createConfidence=False) -> RegistrationJob:
        reason = self._targetProblem(targetVolume)
        if reason:
            raise ValueError(reason)
        self._checkDependencies()
        from bijros.io import save_image

        request = JobRequest(
            kind=kind, fixedVolume=targetVolume, movingVolume=None, movingSegmentation=None, outputTransform=None,
            method="", createWarpedVolume=False, createSegmentation=kind == "multi-atlas", createJacobian=False,
            createTransform=False, fixedName=targetVolume.GetName(), movingName="",
            segmentationName=f"{targetVolume.GetName()} multi-atlas labels", createConfidence=createConfidence,
        )
        workdir = self._workFolder()
        try:
            save_image(volumeNodeToImage(targetVolume, role="target volume"), workdir / "target.nii")
            return self._launch([*args, "--target", "target.nii"], workdir, request)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    def startRanking(self, targetVolume, atlasLibrary, device="auto", affineMetric=None,
                     mirror: str = "auto") -> RegistrationJob:
        """Start ranking the library's atlases (and with ``mirror`` "auto" their mirrors, as propagation uses them)
        for ``targetVolume`` (returns at once; the result has "ranking")."""
        reason = self.libraryProblem(atlasLibrary)
        if reason:
            raise ValueError(reason)
        _checkMirror(mirror)
        args = ["atlas", "rank", "--library", str(atlasLibrary), "--device", str(device or "auto"), "--mirror", mirror]
        if affineMetric:
            args += ["--affine-metric", affineMetric]
        return self._startLibraryJob("ranking", targetVolume, args)

    def startLibraryDescription(self, atlasLibrary) -> RegistrationJob:
        """Start listing the library's atlases (name, modality, size, labels, thumbnail PNG; the result has
        "library"). The thumbnails are kept in the BiJROS config folder, so the panel can show them later."""
        import hashlib

        from bijros.atlas.folders import config_dir, resolve_library

        reason = self.libraryProblem(atlasLibrary)
        if reason:
            raise ValueError(reason)
        self._checkDependencies()
        folder = str(resolve_library(str(atlasLibrary)).folder)
        thumbnails = config_dir() / "thumbnails" / hashlib.sha1(folder.encode("utf-8")).hexdigest()[:16]
        request = JobRequest(
            kind="library", fixedVolume=None, movingVolume=None, movingSegmentation=None, outputTransform=None,
            method="", createWarpedVolume=False, createSegmentation=False, createJacobian=False,
            createTransform=False, fixedName="", movingName="", segmentationName="")
        workdir = self._workFolder()
        try:
            return self._launch(["atlas", "show", "--library", str(atlasLibrary), "--thumbnails", str(thumbnails)],
                                workdir, request)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    def describeLibrary(self, atlasLibrary) -> list:
        """Blocking :meth:`startLibraryDescription`: [{"name", "modality", "shape", "spacing_mm", "labels",
        "thumbnail"}]."""
        return self._blocking(self.startLibraryDescription(atlasLibrary))["library"]["atlases"]

    def rankAtlases(self, targetVolume, atlasLibrary, **kwargs) -> list:
        """Blocking ranking: [{"rank", "name", "score", "seconds"}], best first."""
        return self._blocking(self.startRanking(targetVolume, atlasLibrary, **kwargs))["ranking"]

    def startLibraryPropagation(self, targetVolume, atlasLibrary, topK=None, fusion: str = "jlf",
                                method: str = "deformable", device: str = "auto", preset=None, affineMetric=None,
                                createConfidence: bool = True, mirror: str = "auto") -> RegistrationJob:
        """Start multi-atlas propagation: rank, register the best ``topK`` (None: all, up to 30; 0: all), fuse them
        by ``fusion`` ("jlf", "weighted" or "vote"). ``mirror`` "auto" also uses every atlas flipped left to right
        (left and right labels swapped) when the label table pairs left and right labels; "off" never."""
        reason = self.libraryProblem(atlasLibrary)
        if reason:
            raise ValueError(reason)
        if fusion not in FUSIONS:
            raise ValueError(f"Unknown fusion '{fusion}'. Choose one of: {', '.join(FUSIONS)}.")
        if topK is not None and int(topK) < 0:
            raise ValueError(f"The number of atlases to fuse must be 0 (all) or more, not {topK}.")
        options = engineArguments(method, device, preset, None, None, None, False, affineMetric)
        _checkMirror(mirror)
        args = ["propagate", "--atlas-library", str(atlasLibrary), "--fusion", fusion, "--mirror", mirror, *options]
        if topK is not None:
            args += ["--top-k", str(int(topK))]
        return self._startLibraryJob("multi-atlas", targetVolume, args, createConfidence)

    def propagateLibrary(self, targetVolume, atlasLibrary, **kwargs) -> dict:
        """Blocking multi-atlas propagation; returns "segmentation", "confidenceVolume", "ranking", "report"."""
        return self._blocking(self.startLibraryPropagation(targetVolume, atlasLibrary, **kwargs))
