"""One-shot cohort learning from Slicer: train a Bi-JROS / BRBS model from one atlas (a volume + segmentation in the
scene) and a cohort of unlabelled volumes (in the scene, or a folder), then segment targets with it (the engine's
``bijros train-oneshot`` and ``bijros segment``, in a child process).

Console example::

    logic = slicer.util.getModuleLogic("FewShotSegment")
    job = logic.startCohortTraining(atlasNode, atlasSegNode, cohortFolder="/data/study", modelName="hippo",
                                    minutes=20)
    job = logic.startCohortTraining(atlasName="mni152-desikan-killiany", cohortVolumes=[v1, v2, v3])
    job.wait(); logic.finishJob(job)                  # {"model": folder, "report": model.json}
    logic.oneShotModels()                             # [{"name", "folder", "recipe", "steps", ...}]
    nodes = logic.segmentWithModel(targetNode, "hippo")   # {"segmentation": ..., "report": ...}
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .engine_logic import EngineLogic, nonTransformedReason
from .jobs import JobRequest, RegistrationJob
from .process import CANCELLED, DONE, ProcessRunner
from .segmentations import segmentationProblem
from .volumes import checkScalarVolume, volumeNodeToImage

RECIPES = ("bijros", "brbs")


class CohortJob(RegistrationJob):
    """A training run: its model folder stays (it is the result); only the exported inputs are removed."""

    def __init__(self, runner, workdir, request, modelFolder: Path):
        super().__init__(runner, workdir, request)
        self.modelFolder = Path(modelFolder)


class CohortLogic(EngineLogic):
    """Cohort one-shot learning (mixed into the propagation logic)."""

    @staticmethod
    def oneShotModelsFolder() -> Path:
        from bijros.oneshot.library import models_dir

        return models_dir()

    def oneShotModels(self) -> list[dict]:
        """The trained models that can be picked again (newest first)."""
        from bijros.oneshot.library import list_models

        return list_models(self.oneShotModelsFolder())

    def cohortProblem(self, atlasVolume, atlasSegmentation, cohortVolumes=None, cohortFolder=None,
                      atlasName: str | None = None) -> str:
        """'' when training can start, else why not. The atlas is a scene volume + segmentation, or the library
        atlas ``atlasName`` when no atlas volume is given."""
        if atlasVolume is None and atlasName:
            if atlasName not in self.atlasNames():
                return f"Unknown atlas '{atlasName}'. Available atlases: {', '.join(self.atlasNames())}."
        else:
            reason = (checkScalarVolume(atlasVolume, "atlas volume")
                      or nonTransformedReason(atlasVolume, "atlas volume"))
            if reason:
                return reason
            if atlasSegmentation is None:
                return "Select the atlas segmentation (the labelled structures the model learns)."
            reason = segmentationProblem(atlasSegmentation, "atlas")
            if reason:
                return reason
        if cohortFolder:
            return "" if Path(cohortFolder).is_dir() else f"The cohort folder {cohortFolder} does not exist."
        atlasID = atlasVolume.GetID() if atlasVolume is not None else None
        others = [v for v in (cohortVolumes or []) if v is not None and v.GetID() != atlasID]
        if len(others) < 2:
            return ("The cohort needs at least 2 unlabelled volumes besides the atlas: load them into the scene, or "
                    "choose a folder of images.")
        return ""

    def startCohortTraining(self, atlasVolume=None, atlasSegmentation=None, cohortVolumes=None, cohortFolder=None,
                            modelName: str = "one-shot model", recipe: str = "bijros", minutes: float | None = None,
                            iterations: int | None = None, device: str = "auto",
                            atlasName: str | None = None) -> CohortJob:
        """Start training (returns at once). The atlas is ``atlasVolume`` + ``atlasSegmentation`` from the scene,
        or the library atlas ``atlasName``. The cohort is ``cohortVolumes`` (volume nodes; the atlas is left out)
        or every image in ``cohortFolder``; the budget is ``minutes`` (default 20) or ``iterations``. A model
        folder of that name that holds an unfinished run of the same recipe is continued. ``finishJob`` returns
        {"model": folder, "report": its model.json}."""
        from bijros.io import save_image
        from bijros.oneshot.library import model_folder_name

        if recipe not in RECIPES:
            raise ValueError(f"Unknown recipe '{recipe}'. Choose one of: {', '.join(RECIPES)}.")
        if minutes is not None and iterations is not None:
            raise ValueError("Give the training budget as minutes or as iterations, not both.")
        if minutes is None and iterations is None:
            minutes = 20.0
        if atlasVolume is None and not atlasName:
            raise ValueError("Give the atlas: a volume and its segmentation from the scene, or a library atlas name.")
        reason = self.cohortProblem(atlasVolume, atlasSegmentation, cohortVolumes, cohortFolder, atlasName)
        if reason:
            raise ValueError(reason)
        self._checkDependencies()
        folder = self.oneShotModelsFolder() / model_folder_name(modelName)
        folder.mkdir(parents=True, exist_ok=True)
        request = JobRequest(kind="oneshot-train", fixedVolume=atlasVolume, movingVolume=None,
                             movingSegmentation=atlasSegmentation, outputTransform=None, method=recipe,
                             createWarpedVolume=False, createSegmentation=False, createJacobian=False,
                             createTransform=False, fixedName=atlasVolume.GetName() if atlasVolume else atlasName,
                             movingName="", segmentationName="")
        workdir = self._workFolder()
        try:
            if atlasVolume is not None:
                self._exportSceneAtlas(atlasVolume, atlasSegmentation, workdir)
                atlasArgs = ["--atlas", "atlas.nii", "--atlas-labels", "atlas_labels.nii"]
            else:
                _files, atlasArgs = self._libraryAtlasArgs(atlasName)  # a clear error when it is missing
            if cohortFolder:
                images = str(cohortFolder)
            else:
                lines = []
                atlasID = atlasVolume.GetID() if atlasVolume is not None else None
                for n, volume in enumerate(v for v in cohortVolumes if v.GetID() != atlasID):
                    save_image(volumeNodeToImage(volume, role=f"cohort volume '{volume.GetName()}'"),
                               workdir / f"cohort_{n:04d}.nii")
                    lines.append(f"cohort_{n:04d}.nii")
                (workdir / "cohort.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
                images = "cohort.txt"
            budget = ["--minutes", f"{float(minutes):g}"] if minutes is not None else ["--iterations", str(int(iterations))]
            args = ["train-oneshot", *atlasArgs, "--images", images,
                    "--recipe", recipe, *budget, "--device", device, "--out", str(folder)]
            runner = ProcessRunner()
            job = CohortJob(runner, workdir, request, folder)
            runner.start(args, workdir)
            return job
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    def startSegmentWithModel(self, targetVolume, model: str, device: str = "auto",
                              propagation: bool = False) -> RegistrationJob:
        """Segment ``targetVolume`` with a trained model (a name from :meth:`oneShotModels`, or its folder); returns
        at once. ``finishJob`` adds the segmentation (the atlas's names and colours)."""
        from bijros.io import save_image

        reason = checkScalarVolume(targetVolume, "target volume") or nonTransformedReason(targetVolume, "target volume")
        if reason:
            raise ValueError(reason)
        folder = self._modelFolder(model)
        self._checkDependencies()
        request = JobRequest(kind="oneshot-segment", fixedVolume=targetVolume, movingVolume=None,
                             movingSegmentation=None, outputTransform=None, method="oneshot",
                             createWarpedVolume=False, createSegmentation=True, createJacobian=False,
                             createTransform=False, fixedName=targetVolume.GetName(), movingName=folder.name,
                             segmentationName=f"{targetVolume.GetName()} {folder.name} segmentation")
        workdir = self._workFolder()
        try:
            save_image(volumeNodeToImage(targetVolume, role="target volume"), workdir / "target.nii")
            args = ["segment", "--model", str(folder), "--image", "target.nii", "--device", device]
            if not propagation:
                args.append("--no-propagation")
            return self._launch(args, workdir, request)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    def segmentWithModel(self, targetVolume, model: str, **kwargs) -> dict:
        """Blocking :meth:`startSegmentWithModel`; returns {"segmentation": node, "report": dict, ...}."""
        return self._blocking(self.startSegmentWithModel(targetVolume, model, **kwargs))

    def _modelFolder(self, model: str) -> Path:
        folder = Path(model)
        if not (folder / "model.json").is_file():
            folder = self.oneShotModelsFolder() / str(model)
        if not (folder / "model.json").is_file():
            names = ", ".join(m["name"] for m in self.oneShotModels()) or "none yet"
            raise ValueError(f"No trained one-shot model '{model}' (trained models: {names}). Train one first.")
        return folder

    def finishJob(self, job) -> dict:
        if getattr(job.request, "kind", "") != "oneshot-train":
            return super().finishJob(job)
        try:
            if job.state != DONE:
                if job.state == CANCELLED:
                    raise RuntimeError("Training was cancelled; its last checkpoint is kept: Train again to continue.")
                raise RuntimeError(f"Training failed: {job.error or 'the engine stopped without a model.'}")
            path = job.modelFolder / "model.json"
            if not path.is_file():
                raise RuntimeError("Training stopped before it finished; its checkpoint is kept: Train again to continue.")
            return {"model": str(job.modelFolder), "report": json.loads(path.read_text(encoding="utf-8")),
                    "segmentation": None}
        finally:
            job.cleanup()
