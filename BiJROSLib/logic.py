"""Console / GUI logic of BiJROS: pairwise registration and atlas label propagation.

Two plain classes (no Slicer base class; the modules' Logic classes inherit from them and
from ``ScriptedLoadableModuleLogic``). The scene is ``slicer.mrmlScene`` unless ``scene=``
is given. Heavy work runs in a child process (:mod:`.process`); results become nodes only
when the run succeeded, all together or none (:mod:`.scene`).

Blocking, for the Python console and tests::

    logic = RegistrationLogic()
    nodes = logic.register(fixedNode, movingNode, method="deformable")
    nodes["transform"]      # vtkMRMLGridTransformNode, moving -> fixed (resampling convention)
    nodes["warpedVolume"]   # the moving volume resampled onto the fixed grid
    movingNode.SetAndObserveTransformNodeID(nodes["transform"].GetID())  # see it aligned

    nodes = logic.register(fixedNode, movingNode, method="affine", movingSegmentation=segNode,
                           createJacobian=True, preset="fast")

    propagation = PropagationLogic()
    propagation.atlasNames()                          # ['mni152-desikan-killiany', 'mni152-aal']
    nodes = propagation.propagate(targetNode, atlasName="mni152-desikan-killiany")
    nodes = propagation.propagate(targetNode, atlasVolume=atlasNode, atlasSegmentation=atlasSegNode)
    nodes["segmentation"]   # vtkMRMLSegmentationNode on the target with the atlas's names/colours

Non-blocking, for the GUI (poll from a ``qt.QTimer``)::

    job = logic.startRegistration(fixedNode, movingNode, method="deformable")
    job.poll()              # new progress events; job.fraction, job.message, job.state
    job.cancel()            # kills the engine's process tree; the scene is untouched
    if job.state == "done":
        nodes = logic.finishJob(job)
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path

from bijros.registration.methods import DEFAULT_METHOD
from bijros.registration.methods import METHODS as ENGINE_METHODS

from . import dependencies
from .process import CANCELLED, CANCELLING, DONE, FAILED, RUNNING, ProcessRunner
from .scene import SceneTransaction
from .segmentations import jacobianImageToVolumeNode, labelImageToSegmentationNode, placeBeside
from .transforms import (
    gridTransformNodeFromFile,
    linearTransformNodeFromFile,
    transformName,
)
from .volumes import (
    checkScalarVolume,
    ijkToRasOf,
    imageToVolumeNode,
    segmentationToLabelImage,
    volumeNodeToImage,
)

#: method names accepted by the logic -> the engine's --method ("deformable": the default deformable method)
METHODS = {"deformable": DEFAULT_METHOD, **{name: name for name in ENGINE_METHODS}}
PRESETS = ("default", "fast", "accurate")  # or None / "": the method's own preset


@dataclasses.dataclass
class _Request:
    """What a job was asked to make (kept until its results are imported)."""

    kind: str  # "registration" | "propagation"
    fixedVolume: object
    movingVolume: object | None
    movingSegmentation: object | None
    outputTransform: object | None
    method: str
    createWarpedVolume: bool
    createSegmentation: bool
    createJacobian: bool
    createTransform: bool
    fixedName: str
    movingName: str
    segmentationName: str
    labelTable: object | None = None
    terminology: dict = dataclasses.field(default_factory=dict)


class RegistrationJob:
    """One engine run: ``state``, ``fraction``, ``message``, ``error``, ``result``; ``poll()``,
    ``cancel()``, ``wait()``. Its temporary folder is removed when it fails, is cancelled, or
    its results have been imported by ``finishJob``."""

    def __init__(self, runner: ProcessRunner, workdir: Path, request: _Request):
        self.runner = runner
        self.workdir = Path(workdir)
        self.request = request
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(workdir), True)

    # state of the child process
    state = property(lambda self: self.runner.state)
    fraction = property(lambda self: self.runner.fraction)
    message = property(lambda self: self.runner.message)
    error = property(lambda self: self.runner.error)
    result = property(lambda self: self.runner.result)
    log = property(lambda self: self.runner.log)

    @property
    def outputDir(self) -> Path:
        return self.workdir / "out"

    @property
    def running(self) -> bool:
        return self.state in (RUNNING, CANCELLING)

    def poll(self) -> list[dict]:
        """New progress events (non-blocking); removes the work files once failed/cancelled."""
        events = self.runner.poll()
        if self.state in (FAILED, CANCELLED):
            self.cleanup()
        return events

    def cancel(self) -> None:
        """Stop the engine (kills its process tree) and remove the work files."""
        self.runner.cancel()
        self.runner.wait(10)
        self.cleanup()

    def wait(self, timeout: float | None = None) -> str:
        """Block until the engine ends (or ``timeout`` s pass); returns the state."""
        state = self.runner.wait(timeout)
        if state in (FAILED, CANCELLED):
            self.cleanup()
        return state

    def cleanup(self) -> None:
        """Remove the temporary folder (inputs exported for the engine and its outputs)."""
        self._finalizer()


class _EngineLogic:
    """What registration and propagation share: the scene, the child process, the import."""

    def __init__(self, scene=None):
        self._scene = scene

    @property
    def scene(self):
        scene = getattr(self, "_scene", None)
        if scene is None:
            import slicer

            scene = slicer.mrmlScene
        return scene

    @scene.setter
    def scene(self, scene) -> None:
        self._scene = scene

    # ------------------------------------------------------------------ starting a run

    @staticmethod
    def _options(method, device, preset, spacing, iterations, regWeight, diffeomorphic) -> list[str]:
        if method not in METHODS:
            raise ValueError(f"Unknown method '{method}'. Choose one of: {', '.join(METHODS)}.")
        if preset and preset not in PRESETS:
            raise ValueError(f"Unknown preset '{preset}'. Choose one of: {', '.join(PRESETS)} (or none: the method's).")
        args = ["--method", METHODS[method], "--device", str(device or "auto")]
        if preset:
            args += ["--preset", preset]
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

    @staticmethod
    def _checkDependencies() -> None:
        messages = dependencies.missingDependencyMessages()
        if messages:
            raise RuntimeError("BiJROS cannot run yet:\n" + "\n".join(messages))

    @staticmethod
    def _workFolder() -> Path:
        base = None
        try:
            import slicer

            base = str(slicer.app.temporaryPath)  # Slicer's temporary folder (a Q_PROPERTY)
            if not Path(base).is_dir():
                base = None
        except (ImportError, AttributeError, TypeError):
            pass
        return Path(tempfile.mkdtemp(prefix="BiJROS-", dir=base))

    def _launch(self, args: list[str], workdir: Path, request: _Request) -> RegistrationJob:
        runner = ProcessRunner()
        job = RegistrationJob(runner, workdir, request)
        runner.start([*args, "--out", str(workdir / "out")], workdir)
        return job

    # ------------------------------------------------------------------ importing results

    def finishJob(self, job: RegistrationJob) -> dict:
        """Create the result nodes of a finished job (all or none) and return them.

        Keys: "transform" (whole mapping: grid transform for deformable, linear for affine),
        "affineTransform" (linear transform node), "warpedVolume", "segmentation",
        "jacobianVolume" (None when not requested) and "report" (the engine's report.json).
        Raises ``RuntimeError`` when the job did not succeed or the import failed; the scene
        is then exactly as before.
        """
        if job.running:
            raise RuntimeError("The BiJROS engine is still running; wait for it (job.wait()) or cancel it first.")
        try:
            if job.state != DONE:
                if job.state == CANCELLED:
                    raise RuntimeError("The BiJROS run was cancelled; nothing was added to the scene.")
                raise RuntimeError(f"BiJROS failed: {job.error or 'the engine stopped without a result.'}")
            return self._importResults(job)
        finally:
            job.cleanup()

    def _importResults(self, job: RegistrationJob) -> dict:
        from bijros.io import load_image

        request, out, scene = job.request, job.outputDir, self.scene
        for node, role in ((request.fixedVolume, "fixed/target volume"), (request.movingVolume, "moving volume"),
                           (request.outputTransform, "output transform")):
            if node is not None and not scene.IsNodePresent(node):
                raise RuntimeError(f"The {role} was removed from the scene during the run; nothing was added.")
        results: dict = {"transform": None, "affineTransform": None, "warpedVolume": None,
                         "segmentation": None, "jacobianVolume": None, "report": {}}
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
                    _copyDisplay(request.movingVolume, warped)
                    placeBeside(warped, fixed, scene)
                    results["warpedVolume"] = warped
                if request.createSegmentation:
                    if not (out / "labels.nii.gz").is_file():
                        raise RuntimeError("the engine wrote no labels.nii.gz")
                    labels = load_image(out / "labels.nii.gz", label_map=True)
                    segmentation = labelImageToSegmentationNode(
                        labels, request.segmentationName, fixed, scene, labelTable=request.labelTable or labels.label_table)
                    _applyTerminology(segmentation, request.terminology)
                    results["segmentation"] = segmentation
                if request.createJacobian:
                    results["jacobianVolume"] = jacobianImageToVolumeNode(
                        load_image(out / "jacobian.nii.gz"), f"{name} Jacobian", fixed, scene)
        except Exception as exc:
            raise RuntimeError(f"BiJROS could not add its results to the scene ({exc}); the scene is unchanged.") from exc
        return results

    def _blocking(self, job: RegistrationJob) -> dict:
        state = job.wait()
        if state != DONE:
            job.cleanup()
            if state == CANCELLED:
                raise RuntimeError("The BiJROS run was cancelled; nothing was added to the scene.")
            raise RuntimeError(f"BiJROS failed: {job.error}")
        return self.finishJob(job)


def _copyDisplay(source, target) -> None:
    """Give the warped volume the moving volume's window/level and colour map."""
    sourceDisplay, targetDisplay = source.GetDisplayNode(), target.GetDisplayNode()
    if sourceDisplay is None or targetDisplay is None:
        return
    if sourceDisplay.GetColorNodeID():
        targetDisplay.SetAndObserveColorNodeID(sourceDisplay.GetColorNodeID())
    if hasattr(sourceDisplay, "GetAutoWindowLevel") and not sourceDisplay.GetAutoWindowLevel():
        targetDisplay.AutoWindowLevelOff()
        targetDisplay.SetWindowLevel(sourceDisplay.GetWindow(), sourceDisplay.GetLevel())


def _segmentTerminology(segmentationNode) -> dict:
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


def _applyTerminology(segmentationNode, tags: dict) -> None:
    if not tags:
        return
    segmentation = segmentationNode.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        if segment.GetName() in tags:
            segment.SetTag("TerminologyEntry", tags[segment.GetName()])


def _nonTransformedReason(node, role: str) -> str:
    try:
        ijkToRasOf(node, world=True)
    except ValueError as exc:
        return str(exc).replace(f"'{node.GetName()}'", f"The {role} '{node.GetName()}'", 1)
    return ""


class RegistrationLogic(_EngineLogic):
    """Pairwise registration of a moving volume to a fixed volume (see the module docstring)."""

    def validateInputs(self, fixedVolume, movingVolume, movingSegmentation=None) -> str:
        """'' when the inputs can be registered, else the reason (for the Apply button's tooltip)."""
        for node, role in ((fixedVolume, "fixed volume"), (movingVolume, "moving volume")):
            reason = checkScalarVolume(node, role) or _nonTransformedReason(node, role)
            if reason:
                return reason
        if fixedVolume is movingVolume or fixedVolume.GetID() == movingVolume.GetID():
            return (f"The fixed and moving volumes are the same volume ('{fixedVolume.GetName()}'); "
                    "select two different volumes.")
        if movingSegmentation is not None:
            if not movingSegmentation.IsA("vtkMRMLSegmentationNode"):
                return f"'{movingSegmentation.GetName()}' is not a segmentation."
            if movingSegmentation.GetSegmentation().GetNumberOfSegments() == 0:
                return f"The moving segmentation '{movingSegmentation.GetName()}' has no segments."
        return ""

    def startRegistration(
        self, fixedVolume, movingVolume, method: str = "deformable", movingSegmentation=None,
        outputTransform=None, createWarpedVolume: bool = True, createSegmentation: bool = True,
        createJacobian: bool = False, device: str = "auto", preset: str | None = None,
        spacing: float | None = None, iterations=None, regWeight: float | None = None,
        diffeomorphic: bool = False,
    ) -> RegistrationJob:
        """Start registering ``movingVolume`` to ``fixedVolume`` in a child process (returns at once).

        ``method``: "learned+io" (Accurate: the learned model's field refined by instance optimisation),
        "learned" (Fast: learned model only), "io" (instance optimisation only), "affine", or
        "deformable" (= the engine's default method, bijros/data/methods.json). ``preset``: None for the
        method's own, or "default" | "fast" | "accurate".
        ``outputTransform``: None for a new transform node, or an existing transform node to fill.
        ``createSegmentation`` applies only when ``movingSegmentation`` is given.
        Raises ``ValueError`` for bad input, ``RuntimeError`` for missing dependencies.

        Example: ``job = logic.startRegistration(fixedNode, movingNode, method="affine", preset="fast")``
        """
        reason = self.validateInputs(fixedVolume, movingVolume, movingSegmentation)
        if reason:
            raise ValueError(reason)
        if outputTransform is not None and not outputTransform.IsA("vtkMRMLTransformNode"):
            raise ValueError(f"The output transform '{outputTransform.GetName()}' is not a transform node.")
        options = self._options(method, device, preset, spacing, iterations, regWeight, diffeomorphic)
        self._checkDependencies()
        from bijros.io import save_image, write_label_table

        withLabels = movingSegmentation is not None and createSegmentation
        request = _Request(
            kind="registration", fixedVolume=fixedVolume, movingVolume=movingVolume,
            movingSegmentation=movingSegmentation if withLabels else None, outputTransform=outputTransform,
            method=METHODS[method], createWarpedVolume=createWarpedVolume, createSegmentation=withLabels,
            createJacobian=createJacobian, createTransform=True, fixedName=fixedVolume.GetName(),
            movingName=movingVolume.GetName(),
            segmentationName=f"{movingSegmentation.GetName()} on {fixedVolume.GetName()}" if withLabels else "",
        )
        workdir = self._workFolder()
        try:
            save_image(volumeNodeToImage(fixedVolume, role="fixed volume"), workdir / "fixed.nii.gz")
            save_image(volumeNodeToImage(movingVolume, role="moving volume"), workdir / "moving.nii.gz")
            args = ["register", "--fixed", "fixed.nii.gz", "--moving", "moving.nii.gz", *options]
            if withLabels:
                labels = segmentationToLabelImage(movingSegmentation, movingVolume, self.scene)
                save_image(labels, workdir / "moving_labels.nii.gz")
                write_label_table(labels.label_table, workdir / "moving_labels.csv")
                request.labelTable = labels.label_table
                request.terminology = _segmentTerminology(movingSegmentation)
                args += ["--moving-labels", "moving_labels.nii.gz", "--labels-table", "moving_labels.csv"]
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


class PropagationLogic(_EngineLogic):
    """One-shot label propagation: an atlas's segmentation carried onto a target volume."""

    def atlasNames(self) -> list[str]:
        """Names of the atlases in the library (Resources/Atlases/atlas_library.json)."""
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
        reason = checkScalarVolume(targetVolume, "target volume") or _nonTransformedReason(targetVolume, "target volume")
        if reason:
            return reason
        if atlasVolume is None and atlasSegmentation is None:
            if atlasName is not None and atlasName not in self.atlasNames():
                return f"Unknown atlas '{atlasName}'. Available atlases: {', '.join(self.atlasNames())}."
            return ""
        if atlasVolume is None:
            return "Select the atlas volume that the atlas segmentation belongs to."
        reason = checkScalarVolume(atlasVolume, "atlas volume") or _nonTransformedReason(atlasVolume, "atlas volume")
        if reason:
            return reason
        if atlasVolume.GetID() == targetVolume.GetID():
            return f"The atlas and the target are the same volume ('{targetVolume.GetName()}'); select two different volumes."
        if atlasSegmentation is None:
            return (f"The atlas volume '{atlasVolume.GetName()}' has no segmentation: select the atlas's segmentation, "
                    "or choose an atlas from the library.")
        if not atlasSegmentation.IsA("vtkMRMLSegmentationNode"):
            return f"'{atlasSegmentation.GetName()}' is not a segmentation."
        if atlasSegmentation.GetSegmentation().GetNumberOfSegments() == 0:
            return f"The atlas segmentation '{atlasSegmentation.GetName()}' has no segments."
        return ""

    def startPropagation(
        self, targetVolume, atlasVolume=None, atlasSegmentation=None, atlasName: str | None = None,
        method: str = "deformable", device: str = "auto", preset: str | None = None, spacing: float | None = None,
        iterations=None, regWeight: float | None = None, diffeomorphic: bool = False,
        createTransform: bool = True, createJacobian: bool = False,
    ) -> RegistrationJob:
        """Start propagating an atlas's labels onto ``targetVolume`` (returns at once).

        The atlas is ``atlasVolume`` + ``atlasSegmentation`` from the scene, or the library
        atlas ``atlasName`` (default: the library's default) when no atlas nodes are given.

        Example: ``job = logic.startPropagation(targetNode, atlasName="mni152-desikan-killiany")``
        """
        reason = self.validateInputs(targetVolume, atlasVolume, atlasSegmentation, atlasName)
        if reason:
            raise ValueError(reason)
        options = self._options(method, device, preset, spacing, iterations, regWeight, diffeomorphic)
        self._checkDependencies()
        from bijros.io import save_image, write_label_table

        request = _Request(
            kind="propagation", fixedVolume=targetVolume, movingVolume=None, movingSegmentation=atlasSegmentation,
            outputTransform=None, method=METHODS[method], createWarpedVolume=False, createSegmentation=True,
            createJacobian=createJacobian, createTransform=createTransform, fixedName=targetVolume.GetName(),
            movingName="", segmentationName="",
        )
        workdir = self._workFolder()
        try:
            save_image(volumeNodeToImage(targetVolume, role="target volume"), workdir / "target.nii.gz")
            if atlasVolume is not None:
                request.movingName = atlasVolume.GetName()
                save_image(volumeNodeToImage(atlasVolume, role="atlas volume"), workdir / "atlas.nii.gz")
                labels = segmentationToLabelImage(atlasSegmentation, atlasVolume, self.scene)
                save_image(labels, workdir / "atlas_labels.nii.gz")
                write_label_table(labels.label_table, workdir / "atlas_labels.csv")
                request.labelTable = labels.label_table
                request.terminology = _segmentTerminology(atlasSegmentation)
                args = ["propagate", "--atlas", "atlas.nii.gz", "--atlas-labels", "atlas_labels.nii.gz",
                        "--labels-table", "atlas_labels.csv"]
            else:
                from .atlases import resolveAtlas

                files = resolveAtlas(atlasName)
                request.movingName = files.atlas.name
                args = ["propagate", "--atlas", str(files.imagePath), "--atlas-labels", str(files.labelsPath)]
                if files.tablePath:
                    args += ["--labels-table", str(files.tablePath)]
                if files.atlas.resampleLabels:
                    args.append("--resample-labels")
            request.segmentationName = f"{targetVolume.GetName()} {request.movingName} labels"
            args += ["--target", "target.nii.gz", *options]
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
