"""Cohort learning: train a one-shot model (Bi-JROS or BRBS) from one atlas (the Atlas section's library atlas, or
its scene volume + segmentation) and a cohort of unlabelled volumes (those checked in the scene, or a folder), with
live progress, ETA and the loss plot; pick a trained model and segment the target, or every volume in the scene,
one segmentation each."""

from __future__ import annotations

import logging
from pathlib import Path

from BiJROSLib.bindings import Binding

RECIPE_CHOICES = (("bijros", "Bi-JROS (bi-level decoders)"), ("brbs", "BRBS (registration-made training data)"))
BUDGET_CHOICES = (("minutes", "by time"), ("iterations", "by steps"))


class CohortSection:
    @staticmethod
    def bindings():
        return [
            Binding("cohortSceneRadioButton|cohortFolderRadioButton", "CohortSource", "radio", "scene",
                    states=("scene", "folder")),
            Binding("cohortVolumesComboBox", "CohortVolume", "nodes"),
            Binding("recipeComboBox", "Recipe", "choice", "bijros"),
            Binding("cohortBudgetUnitComboBox", "CohortBudgetUnit", "choice", "minutes"),
            Binding("cohortMinutesSpinBox", "CohortMinutes", "float", "20"),
            Binding("cohortStepsSpinBox", "CohortSteps", "int", "1000"),
            Binding("modelNameLineEdit", "OneShotModelName", "text", "one-shot model"),
            Binding("oneShotModelComboBox", "OneShotModel", "choice", ""),
        ]

    @staticmethod
    def setup(widget):
        from BiJROSLib.choices import fillComboBox

        ui = widget.ui
        fillComboBox(ui.recipeComboBox, RECIPE_CHOICES)
        fillComboBox(ui.cohortBudgetUnitComboBox, BUDGET_CHOICES)
        fillModels(widget)
        ui.cohortFolderButton.connect("directoryChanged(QString)", lambda folder: setFolder(widget, folder))
        ui.trainButton.connect("clicked(bool)", lambda _checked=False: train(widget))
        ui.segmentTargetButton.connect("clicked(bool)", lambda _checked=False: segment(widget, allVolumes=False))
        ui.segmentAllButton.connect("clicked(bool)", lambda _checked=False: segment(widget, allVolumes=True))
        widget._cohortQueue = []

    @staticmethod
    def refresh(widget):
        ui = widget.ui
        idle = widget._job is None
        reason = trainingProblem(widget)
        ui.trainButton.enabled = idle and not reason
        ui.trainButton.toolTip = reason or ("Align the cohort to the atlas, then train for the budget set; progress "
                                            "below. Cancel keeps the last checkpoint: Train again continues.")
        bySteps = widget._parameterNode.GetParameter("CohortBudgetUnit") == "iterations"
        ui.cohortStepsSpinBox.visible = bySteps
        ui.cohortMinutesSpinBox.visible = not bySteps
        fromFolder = widget._parameterNode.GetParameter("CohortSource") == "folder"
        ui.cohortFolderButton.enabled = fromFolder
        ui.cohortVolumesComboBox.enabled = not fromFolder
        model = widget._parameterNode.GetParameter("OneShotModel")
        target = widget._parameterNode.GetNodeReference("TargetVolume")
        ui.segmentTargetButton.enabled = idle and bool(model) and target is not None
        ui.segmentAllButton.enabled = idle and bool(model) and bool(sceneVolumes(widget))
        if idle and model:  # the chosen model's training curve
            showLossPlot(widget, widget.logic.oneShotModelsFolder() / model / "loss.png")

    @staticmethod
    def onPoll(widget, job):
        """While training: show the loss plot the engine redraws at every checkpoint."""
        folder = getattr(job, "modelFolder", None)
        if folder is not None:
            showLossPlot(widget, Path(folder) / "loss.png")


def trainingAtlas(widget):
    """(atlas volume, its segmentation, library atlas name): the Atlas section's choice (Nones for multi-atlas)."""
    node = widget._parameterNode
    source = node.GetParameter("AtlasSource") or "library"
    if source == "scene":
        return node.GetNodeReference("AtlasVolume"), node.GetNodeReference("AtlasSegmentation"), None
    if source == "library":
        return None, None, node.GetParameter("AtlasName") or None
    return None, None, None


def cohortVolumes(widget) -> list:
    """The volumes checked in the cohort list, the scene atlas left out."""
    from BiJROSLib.bindings import nodeReferences

    atlas, _, _ = trainingAtlas(widget)
    checked = nodeReferences(widget._parameterNode, "CohortVolume")
    return [v for v in checked if atlas is None or v.GetID() != atlas.GetID()]


def sceneVolumes(widget) -> list:
    """Every scalar volume in the scene (not label maps) but the scene atlas: what Segment all segments."""
    atlas, _, _ = trainingAtlas(widget)
    scene = widget.logic.scene
    volumes = []
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        volume = scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
        if volume.IsA("vtkMRMLLabelMapVolumeNode") or volume.GetHideFromEditors():
            continue
        if atlas is None or volume.GetID() != atlas.GetID():
            volumes.append(volume)
    return volumes


def trainingProblem(widget) -> str:
    atlas, segmentation, atlasName = trainingAtlas(widget)
    if atlas is None and not atlasName:
        return ("Cohort learning trains from one atlas: choose a library atlas, or a volume and its segmentation "
                "from the scene, in the Atlas section.")
    node = widget._parameterNode
    folder = node.GetParameter("CohortFolder") if node.GetParameter("CohortSource") == "folder" else None
    if node.GetParameter("CohortSource") == "folder" and not folder:
        return "Choose the folder of the cohort's images."
    try:
        return widget.logic.cohortProblem(atlas, segmentation, cohortVolumes(widget), folder, atlasName)
    except Exception as exc:  # a reason for the tooltip, never an exception in the panel
        return str(exc)


def setFolder(widget, folder: str) -> None:
    widget._parameterNode.SetParameter("CohortFolder", folder or "")
    widget.ui.cohortFolderButton.toolTip = folder or "The folder of unlabelled images of the cohort."


def fillModels(widget, select: str | None = None) -> None:
    combo = widget.ui.oneShotModelComboBox
    combo.clear()
    try:
        models = widget.logic.oneShotModels()
    except Exception as exc:
        logging.exception("BiJROS one-shot models")
        combo.toolTip = str(exc)
        return
    for model in models:
        combo.addItem(f"{model['name']} ({model['recipe']}, {model['structures']} structures, {model['steps']} steps)",
                      model["name"])
    if select is not None:
        combo.setCurrentIndex(max(0, combo.findData(select)))


def showLossPlot(widget, path: Path) -> None:
    """Show ``path`` (re-read only when it changed)."""
    import qt

    try:
        stamp = (str(path), path.stat().st_mtime)
    except OSError:
        return
    if getattr(widget, "_lossPlotShown", None) == stamp:
        return
    pixmap = qt.QPixmap(str(path))
    if not pixmap.isNull():
        widget._lossPlotShown = stamp
        widget.ui.lossPlotLabel.setPixmap(pixmap.scaledToWidth(380))


def train(widget) -> None:
    import slicer

    if widget._job is not None:
        return
    node = widget._parameterNode
    atlas, segmentation, atlasName = trainingAtlas(widget)
    fromFolder = node.GetParameter("CohortSource") == "folder"
    kwargs = {"atlasName": atlasName if atlas is None else None,
              "cohortVolumes": None if fromFolder else cohortVolumes(widget),
              "cohortFolder": node.GetParameter("CohortFolder") if fromFolder else None,
              "modelName": node.GetParameter("OneShotModelName") or "one-shot model",
              "recipe": node.GetParameter("Recipe") or "bijros", "device": node.GetParameter("Device") or "auto"}
    if node.GetParameter("CohortBudgetUnit") == "iterations":
        kwargs["iterations"] = int(float(node.GetParameter("CohortSteps") or 1000))
        budget = f"{kwargs['iterations']} steps"
    else:
        kwargs["minutes"] = float(node.GetParameter("CohortMinutes") or 20)
        budget = f"{kwargs['minutes']:g} min"
    try:
        job = widget.logic.startCohortTraining(atlas, segmentation, **kwargs)
    except (ValueError, RuntimeError) as exc:
        slicer.util.errorDisplay(str(exc), windowTitle="BiJROS: cannot train")
        return
    cohort = kwargs["cohortFolder"] or f"{len(kwargs['cohortVolumes'])} scene volumes"
    widget.trackJob(job, f"Training '{job.modelFolder.name}' ({kwargs['recipe']}, {budget}) from "
                         f"atlas '{atlas.GetName() if atlas is not None else atlasName}' and the cohort {cohort}")


def segment(widget, allVolumes: bool) -> None:
    node = widget._parameterNode
    targets = sceneVolumes(widget) if allVolumes else [node.GetNodeReference("TargetVolume")]
    widget._cohortQueue = [t.GetID() for t in targets if t is not None]
    segmentNext(widget)


def segmentNext(widget) -> None:
    """Start the next queued target (after each result, until the queue is empty)."""
    import slicer

    if widget._job is not None or not widget._cohortQueue:
        return
    target = widget.logic.scene.GetNodeByID(widget._cohortQueue.pop(0))
    if target is None:
        segmentNext(widget)
        return
    model = widget._parameterNode.GetParameter("OneShotModel")
    try:
        job = widget.logic.startSegmentWithModel(target, model, device=widget._parameterNode.GetParameter("Device")
                                                 or "auto")
    except (ValueError, RuntimeError) as exc:
        widget._cohortQueue = []
        slicer.util.errorDisplay(str(exc), windowTitle="BiJROS: cannot segment")
        return
    left = f"; {len(widget._cohortQueue)} more after it" if widget._cohortQueue else ""
    widget.trackJob(job, f"Segmenting '{target.GetName()}' with the one-shot model '{model}'{left}")


def showResults(widget, nodes) -> bool:
    """The cohort's results (True when handled): a trained model, or one segmentation of a queue."""
    if nodes.get("model"):
        name = Path(nodes["model"]).name
        fillModels(widget, select=name)
        widget.updateParameterNodeFromGUI()
        showLossPlot(widget, Path(nodes["model"]) / "loss.png")
        steps = nodes["report"].get("training", {}).get("steps")
        widget.ui.statusLabel.text = f"Trained '{name}' ({steps} steps). Pick it below and segment."
        return True
    return False
