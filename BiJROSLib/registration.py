"""Pairwise registration of two volumes from the console or a panel (see :mod:`BiJROSLib.logic`)."""

from __future__ import annotations

import shutil

from .engine_logic import EngineLogic, nonTransformedReason
from .jobs import JobRequest, RegistrationJob
from .masks import maskProblem
from .options import engineArguments, engineMethod, usesTextFilters
from .prompts import writeSegmentPrompts
from .results import segmentTerminology
from .segmentations import segmentationProblem
from .volumes import checkScalarVolume, segmentationToLabelImage, volumeNodeToImage


class RegistrationLogic(EngineLogic):
    """Pairwise registration of a moving volume to a fixed volume (see the module docstring)."""

    def validateInputs(self, fixedVolume, movingVolume, movingSegmentation=None) -> str:
        """'' when the inputs can be registered, else the reason (for the Apply button's tooltip)."""
        for node, role in ((fixedVolume, "fixed volume"), (movingVolume, "moving volume")):
            reason = checkScalarVolume(node, role) or nonTransformedReason(node, role)
            if reason:
                return reason
        if fixedVolume is movingVolume or fixedVolume.GetID() == movingVolume.GetID():
            return (f"The fixed and moving volumes are the same volume ('{fixedVolume.GetName()}'); "
                    "select two different volumes.")
        if movingSegmentation is not None:
            return segmentationProblem(movingSegmentation, "moving")
        return ""

    def startRegistration(
        self, fixedVolume, movingVolume, method: str = "deformable", movingSegmentation=None,
        outputTransform=None, createWarpedVolume: bool = True, createSegmentation: bool = True,
        createJacobian: bool = False, device: str = "auto", preset: str | None = None,
        spacing: float | None = None, iterations=None, regWeight: float | None = None,
        diffeomorphic: bool = False, affineMetric: str | None = None, fixedMask=None,
        prompt: str | None = None, segmentPrompts: dict | None = None,
    ) -> RegistrationJob:
        """Start registering ``movingVolume`` to ``fixedVolume`` in a child process (returns at once).

        ``method``: "learned+io" (Accurate: the learned model's field refined by instance optimisation),
        "learned" (Fast: learned model only), "io" (instance optimisation only), "affine", or
        "deformable" (= the engine's default method, bijros/data/methods.json). ``preset``: None for the
        method's own, or "default" | "fast" | "accurate".
        ``outputTransform``: None for a new transform node, or an existing transform node to fill.
        ``createSegmentation`` applies only when ``movingSegmentation`` is given.
        ``affineMetric``: None (the preset's: NCC), "ncc" or "mi" (mutual information, for pairs of different
        contrast such as CT and MR). ``fixedMask``: a segmentation or labelmap volume on the fixed volume; the
        similarity then counts only the masked region.
        ``prompt``: words naming segments of ``movingSegmentation`` ("hippocampus and amygdala"); they get a second,
        local registration pass. ``segmentPrompts``: {segment name: words} for the text-filter methods ("text",
        "text+io"), which make each segment's filters from its words (default: its name).
        Raises ``ValueError`` for bad input, ``RuntimeError`` for missing dependencies.

        Example: ``job = logic.startRegistration(fixedNode, movingNode, method="affine", preset="fast")``
        """
        reason = self.validateInputs(fixedVolume, movingVolume, movingSegmentation)
        if reason:
            raise ValueError(reason)
        if outputTransform is not None and not outputTransform.IsA("vtkMRMLTransformNode"):
            raise ValueError(f"The output transform '{outputTransform.GetName()}' is not a transform node.")
        options = engineArguments(method, device, preset, spacing, iterations, regWeight, diffeomorphic, affineMetric)
        textMethod = usesTextFilters(method)
        if (prompt or textMethod) and movingSegmentation is None:
            raise ValueError("Text prompts name segments of the moving segmentation: select one."
                             if prompt else f"Method '{method}' makes its filters from the moving segmentation's "
                             "segment names: select a moving segmentation.")
        if prompt is not None and not str(prompt).strip():
            prompt = None
        if prompt:
            options += ["--prompt", str(prompt).strip()]
        reason = maskProblem(fixedMask, "fixed")
        if reason:
            raise ValueError(reason)
        self._checkDependencies()
        from bijros.io import save_image, write_label_table

        withLabels = movingSegmentation is not None and createSegmentation
        sendLabels = movingSegmentation is not None and (createSegmentation or bool(prompt) or textMethod)
        request = JobRequest(
            kind="registration", fixedVolume=fixedVolume, movingVolume=movingVolume,
            movingSegmentation=movingSegmentation if withLabels else None, outputTransform=outputTransform,
            method=engineMethod(method), createWarpedVolume=createWarpedVolume, createSegmentation=withLabels,
            createJacobian=createJacobian, createTransform=True, fixedName=fixedVolume.GetName(),
            movingName=movingVolume.GetName(),
            segmentationName=f"{movingSegmentation.GetName()} on {fixedVolume.GetName()}" if withLabels else "",
        )
        workdir = self._workFolder()
        try:
            save_image(volumeNodeToImage(fixedVolume, role="fixed volume"), workdir / "fixed.nii")
            save_image(volumeNodeToImage(movingVolume, role="moving volume"), workdir / "moving.nii")
            args = ["register", "--fixed", "fixed.nii", "--moving", "moving.nii", *options]
            args += self._maskAndWarning(request, workdir, fixedMask, fixedVolume, movingVolume, method, affineMetric)
            if sendLabels:
                labels = segmentationToLabelImage(movingSegmentation, movingVolume, self.scene)
                save_image(labels, workdir / "moving_labels.nii")
                write_label_table(labels.label_table, workdir / "moving_labels.csv")
                request.labelTable = labels.label_table
                request.terminology = segmentTerminology(movingSegmentation)
                args += ["--moving-labels", "moving_labels.nii", "--labels-table", "moving_labels.csv"]
                if textMethod and segmentPrompts and writeSegmentPrompts(labels.label_table, segmentPrompts,
                                                                         workdir / "prompts.csv"):
                    args += ["--prompts", "prompts.csv"]
            return self._launch(args, workdir, request)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    def register(self, fixedVolume, movingVolume, **kwargs) -> dict:
        """Blocking registration: start, wait, create the nodes; returns ``finishJob``'s dict.

        Same keyword arguments as :meth:`startRegistration`. Raises ``ValueError`` for bad
        input and ``RuntimeError`` with the engine's message when it failed.

        Example: ``logic.register(fixedNode, movingNode, method="deformable")``
        """
        return self._blocking(self.startRegistration(fixedVolume, movingVolume, **kwargs))
