"""One-shot label propagation: an atlas's segmentation carried onto a target volume (see :mod:`BiJROSLib.logic`)."""

from __future__ import annotations

import shutil

from .cohort import CohortLogic
from .engine_logic import nonTransformedReason
from .jobs import JobRequest, RegistrationJob
from .masks import maskProblem
from .multi_atlas import MultiAtlasLogic
from .options import engineArguments, engineMethod
from .results import segmentTerminology
from .segmentations import segmentationProblem
from .slice_fewshot import SliceFewShotLogic
from .volumes import checkScalarVolume, volumeNodeToImage


class PropagationLogic(MultiAtlasLogic, CohortLogic, SliceFewShotLogic):
    """One-shot label propagation: an atlas's segmentation carried onto a target volume."""

    def atlasNames(self) -> list[str]:
        """Names of the atlases in the library (the engine's catalog, bijros/data/atlases.json)."""
        from .atlases import atlasLibrary

        return [atlas.name for atlas in atlasLibrary()]

    def atlasInfo(self, atlasName: str | None = None) -> dict:
        """Title, description, licence, modality, structures and citation of a library atlas."""
        from .atlases import libraryAtlas

        atlas = libraryAtlas(atlasName)
        return {"name": atlas.name, "title": atlas.title, "description": atlas.description,
                "license": atlas.license, "modality": atlas.modality, "structures": atlas.structures,
                "citation": atlas.citation}

    def validateInputs(self, targetVolume, atlasVolume=None, atlasSegmentation=None, atlasName=None) -> str:
        """'' when propagation can start, else the reason (for the Propagate button's tooltip)."""
        reason = checkScalarVolume(targetVolume, "target volume") or nonTransformedReason(targetVolume, "target volume")
        if reason:
            return reason
        if atlasVolume is None and atlasSegmentation is None:
            if atlasName is not None and atlasName not in self.atlasNames():
                return f"Unknown atlas '{atlasName}'. Available atlases: {', '.join(self.atlasNames())}."
            return ""
        if atlasVolume is None:
            return "Select the atlas volume that the atlas segmentation belongs to."
        reason = checkScalarVolume(atlasVolume, "atlas volume") or nonTransformedReason(atlasVolume, "atlas volume")
        if reason:
            return reason
        if atlasVolume.GetID() == targetVolume.GetID():
            return f"The atlas and the target are the same volume ('{targetVolume.GetName()}'); select two different volumes."
        if atlasSegmentation is None:
            return (f"The atlas volume '{atlasVolume.GetName()}' has no segmentation: select the atlas's segmentation, "
                    "or choose an atlas from the library.")
        return segmentationProblem(atlasSegmentation, "atlas")

    def startPropagation(
        self, targetVolume, atlasVolume=None, atlasSegmentation=None, atlasName: str | None = None,
        method: str = "deformable", device: str = "auto", preset: str | None = None, spacing: float | None = None,
        iterations=None, regWeight: float | None = None, diffeomorphic: bool = False,
        createTransform: bool = True, createJacobian: bool = False, affineMetric: str | None = None,
        targetMask=None,
    ) -> RegistrationJob:
        """Start propagating an atlas's labels onto ``targetVolume`` (returns at once).

        The atlas is ``atlasVolume`` + ``atlasSegmentation`` from the scene, or the library
        atlas ``atlasName`` (default: the library's default) when no atlas nodes are given.
        ``affineMetric`` as for registration; ``targetMask``: a segmentation or labelmap volume on the target
        that restricts the similarity to the masked region.

        Example: ``job = logic.startPropagation(targetNode, atlasName="mni152-desikan-killiany")``
        """
        reason = self.validateInputs(targetVolume, atlasVolume, atlasSegmentation, atlasName)
        if reason:
            raise ValueError(reason)
        options = engineArguments(method, device, preset, spacing, iterations, regWeight, diffeomorphic, affineMetric)
        reason = maskProblem(targetMask, "target")
        if reason:
            raise ValueError(reason)
        self._checkDependencies()
        from bijros.io import save_image

        request = JobRequest(
            kind="propagation", fixedVolume=targetVolume, movingVolume=None, movingSegmentation=atlasSegmentation,
            outputTransform=None, method=engineMethod(method), createWarpedVolume=False, createSegmentation=True,
            createJacobian=createJacobian, createTransform=createTransform, fixedName=targetVolume.GetName(),
            movingName="", segmentationName="",
        )
        workdir = self._workFolder()
        try:
            save_image(volumeNodeToImage(targetVolume, role="target volume"), workdir / "target.nii")
            if atlasVolume is not None:
                request.movingName = atlasVolume.GetName()
                labels = self._exportSceneAtlas(atlasVolume, atlasSegmentation, workdir)
                request.labelTable = labels.label_table
                request.terminology = segmentTerminology(atlasSegmentation)
                args = ["propagate", "--atlas", "atlas.nii", "--atlas-labels", "atlas_labels.nii",
                        "--labels-table", "atlas_labels.csv"]
            else:
                files, atlasArgs = self._libraryAtlasArgs(atlasName)
                request.movingName = files.atlas.name
                args = ["propagate", *atlasArgs]
            request.segmentationName = f"{targetVolume.GetName()} {request.movingName} labels"
            args += ["--target", "target.nii", *options]
            args += self._maskAndWarning(request, workdir, targetMask, targetVolume, atlasVolume, method, affineMetric)
            return self._launch(args, workdir, request)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    def propagate(self, targetVolume, atlasVolume=None, atlasSegmentation=None, atlasName=None, **kwargs) -> dict:
        """Blocking propagation; returns a dict with "segmentation", "transform",
        "affineTransform", "jacobianVolume" and "report".

        Example: ``logic.propagate(targetNode, atlasVolume=atlasNode, atlasSegmentation=atlasSegNode, preset="fast")``
        """
        return self._blocking(self.startPropagation(targetVolume, atlasVolume, atlasSegmentation, atlasName, **kwargs))
