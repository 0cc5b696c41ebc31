"""What registration and propagation logic share: the scene, the child process, finishing a job.

Results become nodes only when the run succeeded, all together or none (:mod:`.results`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from . import dependencies
from .jobs import JobRequest, RegistrationJob
from .process import CANCELLED, DONE, ProcessRunner
from .results import importResults
from .volumes import ijkToRasOf


class EngineLogic:
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

    def _maskAndWarning(self, request, workdir: Path, mask, fixedVolume, movingVolume, method, affineMetric) -> list:
        """Export ``mask`` (if any) for the engine; its --fixed-mask arguments. Records the cross-contrast warning."""
        from bijros.io import save_image

        from .masks import maskImage
        from .options import crossContrastWarning

        warning = crossContrastWarning(method, fixedVolume, movingVolume, affineMetric)
        if warning:
            request.warnings.append(warning)
        if mask is None:
            return []
        save_image(maskImage(mask, fixedVolume, self.scene), workdir / "fixed_mask.nii")
        return ["--fixed-mask", "fixed_mask.nii"]

    def _exportSceneAtlas(self, atlasVolume, atlasSegmentation, workdir: Path):
        """Write a scene atlas for the engine: atlas.nii, atlas_labels.nii and its table atlas_labels.csv (found
        beside it by the engine); returns the label image (its label table names the segments)."""
        from bijros.io import save_image, write_label_table

        from .volumes import segmentationToLabelImage, volumeNodeToImage

        save_image(volumeNodeToImage(atlasVolume, role="atlas volume"), workdir / "atlas.nii")
        labels = segmentationToLabelImage(atlasSegmentation, atlasVolume, self.scene)
        save_image(labels, workdir / "atlas_labels.nii")
        write_label_table(labels.label_table, workdir / "atlas_labels.csv")
        return labels

    @staticmethod
    def _libraryAtlasArgs(atlasName):
        """(the library atlas's files, the engine options naming them: --atlas, --atlas-labels, its table and
        --resample-labels where its labels are on their own grid); ValueError with the fix when it is missing."""
        from .atlases import resolveAtlas

        files = resolveAtlas(atlasName)
        args = ["--atlas", str(files.imagePath), "--atlas-labels", str(files.labelsPath)]
        if files.tablePath:
            args += ["--labels-table", str(files.tablePath)]
        if files.atlas.resample_labels:
            args.append("--resample-labels")
        return files, args

    def _launch(self, args: list[str], workdir: Path, request: JobRequest, makeJob=RegistrationJob) -> RegistrationJob:
        """Start the engine on ``args`` in ``workdir``; ``makeJob(runner, workdir, request)`` builds the job."""
        runner = ProcessRunner()
        job = makeJob(runner, workdir, request)
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
                    raise RuntimeError(f"The {job.runName} was cancelled; nothing was added to the scene.")
                raise RuntimeError(f"BiJROS failed: {job.error or 'the engine stopped without a result.'}")
            return self._importResults(job)
        finally:
            job.cleanup()

    def _importResults(self, job: RegistrationJob) -> dict:
        """The result nodes of a job that succeeded (a logic with its own kind of result overrides this)."""
        return importResults(job, self.scene)

    def _blocking(self, job: RegistrationJob) -> dict:
        job.wait()
        return self.finishJob(job)  # raises with the engine's message when the run failed or was cancelled


def nonTransformedReason(node, role: str) -> str:
    """'' when ``node``'s geometry can be exported (no non-linear parent transform), else why not."""
    try:
        ijkToRasOf(node, world=True)
    except ValueError as exc:
        return str(exc).replace(f"'{node.GetName()}'", f"The {role} '{node.GetName()}'", 1)
    return ""
