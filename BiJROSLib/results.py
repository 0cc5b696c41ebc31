"""A finished engine run's files -> MRML nodes, all together or none (a scene transaction)."""

from __future__ import annotations

import json

from .scene import SceneTransaction
from .segmentations import (
    confidenceImageToVolumeNode,
    jacobianImageToVolumeNode,
    labelImageToSegmentationNode,
    placeBeside,
)
from .transforms import gridTransformNodeFromFile, linearTransformNodeFromFile, transformName
from .volumes import imageToVolumeNode


def importResults(job, scene) -> dict:
    from bijros.io import load_image

    request, out = job.request, job.outputDir
    for node, role in ((request.fixedVolume, "fixed/target volume"), (request.movingVolume, "moving volume"),
                       (request.outputTransform, "output transform")):
        if node is not None and not scene.IsNodePresent(node):
            raise RuntimeError(f"The {role} was removed from the scene during the run; nothing was added.")
    results: dict = {"transform": None, "affineTransform": None, "warpedVolume": None,
                     "segmentation": None, "jacobianVolume": None, "confidenceVolume": None, "ranking": None,
                     "library": None, "report": {}, "warnings": list(request.warnings)}
    fixed = request.fixedVolume
    name = transformName(request.movingName, request.fixedName)
    try:
        with SceneTransaction(scene) as transaction:
            results["report"] = json.loads((out / "report.json").read_text(encoding="utf-8"))
            if request.outputTransform is not None:
                transaction.willModify(request.outputTransform)
            if request.createTransform:
                if request.method == "affine":
                    affineNode = linearTransformNodeFromFile(
                        out / "affine.tfm", name, scene, request.outputTransform)
                    results["transform"] = results["affineTransform"] = affineNode
                else:
                    results["transform"] = gridTransformNodeFromFile(
                        out / "displacement.nii.gz", name, scene, request.outputTransform)
                    results["affineTransform"] = linearTransformNodeFromFile(
                        out / "affine.tfm", transformName(request.movingName, request.fixedName, "affine"), scene)
                for node in {id(n): n for n in (results["transform"], results["affineTransform"])}.values():
                    node.SetAttribute("BiJROS.Fixed", fixed.GetID())
                    if request.movingVolume is not None:
                        node.SetAttribute("BiJROS.Moving", request.movingVolume.GetID())
                    placeBeside(node, fixed, scene)
            if request.createWarpedVolume and request.movingVolume is not None:
                warped = imageToVolumeNode(load_image(out / "warped.nii.gz"), f"{request.movingName} registered", scene)
                copyDisplay(request.movingVolume, warped)
                placeBeside(warped, fixed, scene)
                results["warpedVolume"] = warped
            if request.createSegmentation:
                if not (out / "labels.nii.gz").is_file():
                    raise RuntimeError("the engine wrote no labels.nii.gz")
                labels = load_image(out / "labels.nii.gz", label_map=True)
                segmentation = labelImageToSegmentationNode(
                    labels, request.segmentationName, fixed, scene, labelTable=request.labelTable or labels.label_table)
                applyTerminology(segmentation, request.terminology)
                results["segmentation"] = segmentation
            if request.createJacobian:
                results["jacobianVolume"] = jacobianImageToVolumeNode(
                    load_image(out / "jacobian.nii.gz"), f"{name} Jacobian", fixed, scene)
            if (out / "library.json").is_file():
                results["library"] = json.loads((out / "library.json").read_text(encoding="utf-8"))
            if (out / "atlases.json").is_file():
                results["ranking"] = json.loads((out / "atlases.json").read_text(encoding="utf-8"))["ranking"]
            if request.createConfidence:
                results["confidenceVolume"] = confidenceImageToVolumeNode(
                    load_image(out / "confidence.nii.gz"), f"{request.segmentationName} confidence", fixed, scene)
    except Exception as exc:
        raise RuntimeError(f"BiJROS could not add its results to the scene ({exc}); the scene is unchanged.") from exc
    return results


def copyDisplay(source, target) -> None:
    """Give the warped volume the moving volume's window/level and colour map."""
    sourceDisplay, targetDisplay = source.GetDisplayNode(), target.GetDisplayNode()
    if sourceDisplay is None or targetDisplay is None:
        return
    if sourceDisplay.GetColorNodeID():
        targetDisplay.SetAndObserveColorNodeID(sourceDisplay.GetColorNodeID())
    if hasattr(sourceDisplay, "GetAutoWindowLevel") and not sourceDisplay.GetAutoWindowLevel():
        targetDisplay.AutoWindowLevelOff()
        targetDisplay.SetWindowLevel(sourceDisplay.GetWindow(), sourceDisplay.GetLevel())


def segmentTerminology(segmentationNode) -> dict:
    """Segment name -> its terminology tag (Slicer's 'TerminologyEntry'), where set."""
    import vtk

    tags = {}
    if segmentationNode is None:
        return tags
    segmentation = segmentationNode.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        value = vtk.reference("")
        if segment.GetTag("TerminologyEntry", value) and str(value):
            tags[segment.GetName()] = str(value)
    return tags


def applyTerminology(segmentationNode, tags: dict) -> None:
    if not tags:
        return
    segmentation = segmentationNode.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        if segment.GetName() in tags:
            segment.SetTag("TerminologyEntry", tags[segment.GetName()])
