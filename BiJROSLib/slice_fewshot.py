"""Few-shot slice segmentation from Slicer: a segment painted on a few slices of a volume fills the volume's
remaining slices (a new segment beside the painted one, which is left untouched), or reaches other volumes
(a new segmentation on each). The engine's ``bijros fewshot`` runs in a child process (GMRD slice model fused
with the shape interpolated between the painted slices; other volumes by 3D registration of the filled
volume, or by the slice model).

Console example::

    logic = slicer.util.getModuleLogic("FewShotSegment")
    nodes = logic.segmentRemainingSlices(volumeNode, segmentationNode, "Segment_1")
    nodes["segmentId"]                 # the new segment "<name> (few-shot)" in segmentationNode
    nodes = logic.applyFewShotToVolume(volumeNode, segmentationNode, "Segment_1", otherVolumeNode)
    nodes["segmentation"]              # a new segmentation on otherVolumeNode
"""

from __future__ import annotations

import functools
import shutil

import numpy as np

from .engine_logic import EngineLogic, nonTransformedReason
from .jobs import JobRequest, RegistrationJob
from .scene import nodeIds, removeNodesAddedSince
from .volumes import checkScalarVolume, volumeNodeToImage

TRANSFERS = ("registration", "model")
SUFFIX = "few-shot"


class FewShotJob(RegistrationJob):
    """A few-shot run; ``segmentation``/``segmentId``/``value``: the painted segment (same volume: where the
    new segment goes)."""

    runName = "few-shot run"

    def __init__(self, runner, workdir, request, segmentation, segmentId: str, value: int):
        super().__init__(runner, workdir, request)
        self.segmentation, self.segmentId, self.value = segmentation, segmentId, value


class SliceFewShotLogic(EngineLogic):
    """Few-shot slice segmentation (mixed into the propagation logic)."""

    def paintedSegmentProblem(self, volume, segmentation, segmentId: str | None) -> str:
        """'' when the painted segment can be used (its emptiness is checked when a run starts), else why not."""
        reason = checkScalarVolume(volume, "target volume") or (nonTransformedReason(volume, "target volume")
                                                                if volume is not None else "")
        if reason:
            return reason
        if segmentation is None:
            return "Select the segmentation that holds the structure painted on a few slices of the target."
        if not segmentId or segmentation.GetSegmentation().GetSegment(segmentId) is None:
            return f"Select the painted segment of '{segmentation.GetName()}'."
        return ""

    def startFewShot(self, volume, segmentation, segmentId: str, queryVolume=None, transfer: str = "registration",
                     finetuneSteps: int = 30, priorWeight: float | None = None, device: str = "auto",
                     model: str | None = None) -> FewShotJob:
        """Start few-shot segmentation from the segment ``segmentId`` painted on a few slices of ``volume``
        (returns at once). ``queryVolume`` None or ``volume``: its remaining slices; another volume: reached by
        ``transfer`` ("registration": the filled volume registered onto it, "model": the slice model on its
        slices). ``finishJob`` adds the result."""
        from bijros.io import save_image

        if transfer not in TRANSFERS:
            raise ValueError(f"Unknown transfer '{transfer}'. Choose one of: {', '.join(TRANSFERS)}.")
        reason = self.paintedSegmentProblem(volume, segmentation, segmentId)
        same = queryVolume is None or queryVolume.GetID() == volume.GetID()
        if not reason and not same:
            reason = (checkScalarVolume(queryVolume, "other volume")
                      or nonTransformedReason(queryVolume, "other volume"))
        if reason:
            raise ValueError(reason)
        labels = self._paintedLabels(volume, segmentation, segmentId)
        value = int(labels.array.max())
        self._checkDependencies()
        segment = segmentation.GetSegmentation().GetSegment(segmentId)
        from bijros.io.image import LabelTable

        table = LabelTable()
        table.add(value, segment.GetName() if not same else _newSegmentName(segmentation, segment.GetName()),
                  tuple(float(c) for c in segment.GetColor()))
        target = volume if same else queryVolume
        request = JobRequest(kind="fewshot-same" if same else "fewshot", fixedVolume=target, movingVolume=None,
                             movingSegmentation=segmentation, outputTransform=None, method="fewshot",
                             createWarpedVolume=False, createSegmentation=not same, createJacobian=False,
                             createTransform=False, fixedName=target.GetName(), movingName=volume.GetName(),
                             segmentationName=f"{target.GetName()} {segment.GetName()} ({SUFFIX})", labelTable=table)
        workdir = self._workFolder()
        try:
            save_image(volumeNodeToImage(volume, role="target volume"), workdir / "support.nii")
            save_image(labels, workdir / "support_labels.nii")
            query = "support.nii"
            if not same:
                save_image(volumeNodeToImage(queryVolume, role="other volume"), workdir / "query.nii")
                query = "query.nii"
            args = ["fewshot", "--support-image", "support.nii", "--support-labels", "support_labels.nii",
                    "--query", query, "--transfer", transfer, "--finetune-steps", str(int(finetuneSteps)),
                    "--device", device]
            if priorWeight is not None:
                args += ["--prior-weight", f"{float(priorWeight):g}"]
            if model:
                args += ["--model", str(model)]
            return self._launch(args, workdir, request, functools.partial(
                FewShotJob, segmentation=segmentation, segmentId=segmentId, value=value))
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    def segmentRemainingSlices(self, volume, segmentation, segmentId: str, **kwargs) -> dict:
        """Blocking: fill the slices of ``volume`` the segment was not painted on. Returns {"segmentId": the new
        segment's ID, "modifiedSegmentation": ``segmentation``, "report": ...}."""
        return self._blocking(self.startFewShot(volume, segmentation, segmentId, None, **kwargs))

    def applyFewShotToVolume(self, volume, segmentation, segmentId: str, queryVolume, **kwargs) -> dict:
        """Blocking: segment ``queryVolume`` from the painted segment. Returns {"segmentation": a new
        segmentation on ``queryVolume``, "report": ...}."""
        if queryVolume is None or queryVolume.GetID() == volume.GetID():
            raise ValueError("Choose another volume than the painted one (Segment remaining slices fills that one).")
        return self._blocking(self.startFewShot(volume, segmentation, segmentId, queryVolume, **kwargs))

    def _paintedLabels(self, volume, segmentation, segmentId):
        from .volumes import segmentationToLabelImage

        try:
            labels = segmentationToLabelImage(segmentation, volume, self.scene, segmentIds=[segmentId])
        except ValueError:  # an empty segment may not export at all
            labels = None
        name = segmentation.GetSegmentation().GetSegment(segmentId).GetName()
        if labels is None or not labels.array.any():
            raise ValueError(f"The segment '{name}' is empty on '{volume.GetName()}': paint it on a few slices "
                             "(all in the same view) first.")
        from bijros.errors import InputError
        from bijros.fewshot.annotation import MixedOrientationError, annotated_slices  # numpy only, no torch

        try:
            annotated_slices(np.asarray(labels.array), int(labels.array.max()))
        except MixedOrientationError as exc:
            raise ValueError(f"The segment '{name}' looks painted in more than one view: paint every slice of a "
                             "structure in the same view (axial, coronal or sagittal), then try again.") from exc
        except InputError as exc:
            raise ValueError(str(exc)) from exc
        return labels

    def _importResults(self, job) -> dict:
        if getattr(job.request, "kind", "") != "fewshot-same":
            return super()._importResults(job)
        return self._addSegment(job)

    def _addSegment(self, job) -> dict:
        """The engine's labels as one new segment of the painted segmentation (all or nothing)."""
        import json

        import slicer

        from bijros.io import load_image
        from bijros.io.image import Image

        from .volumes import imageToVolumeNode

        scene, segmentationNode, request = self.scene, job.segmentation, job.request
        for node, role in ((request.fixedVolume, "target volume"), (segmentationNode, "painted segmentation")):
            if not scene.IsNodePresent(node):
                raise RuntimeError(f"The {role} was removed from the scene during the run; nothing was added.")
        report = json.loads((job.outputDir / "report.json").read_text(encoding="utf-8"))
        labels = load_image(job.outputDir / "labels.nii.gz", label_map=True)
        mask = (np.asarray(labels.array) == job.value).astype(np.int16)
        segmentation = segmentationNode.GetSegmentation()
        before_segments = {segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())}
        before = nodeIds(scene)
        added = []
        try:
            labelmap = imageToVolumeNode(Image(mask, labels.ijk_to_ras), "__BiJROS_import__", scene,
                                         className="vtkMRMLLabelMapVolumeNode")
            if not mask.any():
                raise RuntimeError("the engine's result is empty")
            if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
                    labelmap, segmentationNode, ""):
                raise RuntimeError(f"could not import the result into '{segmentationNode.GetName()}'")
            added = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())
                     if segmentation.GetNthSegmentID(i) not in before_segments]
            if len(added) != 1:
                raise RuntimeError(f"the import made {len(added)} segments instead of one")
            entry = request.labelTable
            segment = segmentation.GetSegment(added[0])
            segment.SetName(entry.name(job.value))
            painted = segmentation.GetSegment(job.segmentId)
            color = painted.GetColor() if painted is not None else entry.color(job.value)
            segment.SetColor(*[0.5 * c + 0.5 for c in color])  # lighter than the painted segment
        except Exception as exc:
            for segmentId in added:
                segmentation.RemoveSegment(segmentId)
            raise RuntimeError(f"BiJROS could not add its result to the scene ({exc}); the scene is unchanged.") \
                from exc
        finally:
            removeNodesAddedSince(scene, before)
        return {"segmentation": None, "modifiedSegmentation": segmentationNode, "segmentId": added[0],
                "report": report, "warnings": list(request.warnings)}


def _newSegmentName(segmentationNode, paintedName: str) -> str:
    """'<painted> (few-shot)', numbered when an earlier result has that name (it is kept)."""
    segmentation = segmentationNode.GetSegmentation()
    names = {segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())}
    name, n = f"{paintedName} ({SUFFIX})", 2
    while name in names:
        name, n = f"{paintedName} ({SUFFIX} {n})", n + 1
    return name
