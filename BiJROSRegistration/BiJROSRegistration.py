"""BiJROS Registration: pairwise affine / deformable registration of two volumes in 3D Slicer.

The work lives in ``BiJROSLib`` (MRML bridge, child-process runner); this file
holds Slicer's four module classes. The engine runs in a separate process, so Slicer stays
responsive; the panel shows its progress and can cancel it.
"""

import logging
import re
import time

import qt
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from bijros.registration.methods import DEFAULT_METHOD, method_info
from bijros.registration.methods import METHODS as ENGINE_METHODS
from BiJROSLib.logic import RegistrationLogic
from BiJROSLib.panel import JobPanelMixin, dependenciesReady, qcSummary

README_URL = "https://github.com/bijros/SlicerBiJROS#readme"

ACKNOWLEDGEMENT = """
<p>BiJROS brings together methods from these papers (please cite the ones you use):</p>
<ul>
<li>Bi-JROS: X. Fan et al., "Bi-level learning of task-specific decoders for joint registration and
one-shot medical image segmentation", CVPR 2024.</li>
<li>BRBS: Y. He et al., "Learning better registration to learn better few-shot medical image
segmentation: authenticity, diversity, and robustness", IEEE TNNLS 2022.</li>
<li>TextSCF: M. Chen et al., "Spatially covariant image registration with text prompts", 2023/24.</li>
<li>EOIR: encoder-only image registration, 2024.</li>
<li>GMRD: few-shot medical image segmentation via generation of multiple representative descriptors, 2024.</li>
<li>SynthMorph: M. Hoffmann et al., "SynthMorph: learning contrast-invariant registration without acquired
images", IEEE TMI 2022 (how the shipped model's training pairs are synthesised from label maps).</li>
<li>ConvexAdam: H. Siebert, L. Hansen, M. P. Heinrich, "Fast 3D registration with accurate optimisation and
little learning for Learn2Reg 2021" (the training-free deformable stage follows its approach).</li>
</ul>
"""

#: (value, label) of the method combo box, from bijros/data/methods.json (the engine's default first)
METHODS = tuple((name, method_info(name)["title"]) for name in
                (DEFAULT_METHOD, *(m for m in ENGINE_METHODS if m != DEFAULT_METHOD)))
PRESETS = (
    ("", "From the method (recommended)"),
    ("default", "Default (1 mm working grid)"),
    ("fast", "Fast (2 mm working grid)"),
    ("accurate", "Accurate (finer last level)"),
)
DEVICES = (
    ("auto", "Automatic (GPU when available)"),
    ("cpu", "CPU"),
    ("cuda", "CUDA GPU"),
)

#: parameter node defaults (strings, as vtkMRMLScriptedModuleNode stores them)
DEFAULT_PARAMETERS = {
    "Method": DEFAULT_METHOD,
    "Preset": "",
    "Device": "auto",
    "Spacing": "0",  # 0: from the preset
    "Iterations": "",  # empty: from the preset
    "RegWeight": "0",  # 0: from the preset
    "Diffeomorphic": "false",
    "CreateWarpedVolume": "true",
    "CreateSegmentation": "true",
    "CreateJacobian": "false",
}
NODE_PARAMETERS = ("FixedVolume", "MovingVolume", "MovingSegmentation", "OutputTransform")


#
# BiJROSRegistration
#


class BiJROSRegistration(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "BiJROS Registration"
        self.parent.categories = ["Registration"]
        self.parent.dependencies = []
        self.parent.contributors = ["BiJROS contributors"]
        self.parent.helpText = f"""
Registers a moving volume to a fixed volume (affine, then a learned model and/or instance optimisation:
Accurate = learned + instance optimisation, Fast = learned only) and can carry a
segmentation of the moving volume onto the fixed volume. Outputs: a transform (resampling
convention), the warped volume, the propagated segmentation and a Jacobian map for quality control.
The engine runs in the background: Slicer stays responsive and Cancel stops it.
See the <a href="{README_URL}">BiJROS documentation</a> for the console API and examples.
"""
        self.parent.acknowledgementText = ACKNOWLEDGEMENT


#
# BiJROSRegistrationWidget
#


class BiJROSRegistrationWidget(JobPanelMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel. All its state is in the module's parameter node (saved with the scene)."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._updatingGUIFromParameterNode = False
        self._job = None
        self._lastMessage = ""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/BiJROSRegistration.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = BiJROSRegistrationLogic()

        for combo, items in ((self.ui.methodComboBox, METHODS), (self.ui.presetComboBox, PRESETS),
                             (self.ui.deviceComboBox, DEVICES)):
            for value, label in items:
                combo.addItem(label, value)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        for selector in (self.ui.fixedVolumeSelector, self.ui.movingVolumeSelector,
                         self.ui.movingSegmentationSelector, self.ui.outputTransformSelector):
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)
        for combo in (self.ui.methodComboBox, self.ui.presetComboBox, self.ui.deviceComboBox):
            combo.connect("currentIndexChanged(int)", self.updateParameterNodeFromGUI)
        for checkBox in (self.ui.createWarpedVolumeCheckBox, self.ui.createSegmentationCheckBox,
                         self.ui.createJacobianCheckBox, self.ui.diffeomorphicCheckBox):
            checkBox.connect("toggled(bool)", self.updateParameterNodeFromGUI)
        for spinBox in (self.ui.spacingSpinBox, self.ui.regWeightSpinBox):
            spinBox.connect("valueChanged(double)", self.updateParameterNodeFromGUI)
        self.ui.iterationsLineEdit.connect("textChanged(QString)", self.updateParameterNodeFromGUI)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)

        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(200)
        self.pollTimer.connect("timeout()", self.onPollJob)

        self.initializeParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None):
        if self._parameterNode is None or self._updatingGUIFromParameterNode:
            return
        self._updatingGUIFromParameterNode = True
        try:
            node = self._parameterNode
            self.ui.fixedVolumeSelector.setCurrentNode(node.GetNodeReference("FixedVolume"))
            self.ui.movingVolumeSelector.setCurrentNode(node.GetNodeReference("MovingVolume"))
            self.ui.movingSegmentationSelector.setCurrentNode(node.GetNodeReference("MovingSegmentation"))
            self.ui.outputTransformSelector.setCurrentNode(node.GetNodeReference("OutputTransform"))
            for combo, name in ((self.ui.methodComboBox, "Method"), (self.ui.presetComboBox, "Preset"),
                                (self.ui.deviceComboBox, "Device")):
                combo.setCurrentIndex(max(0, combo.findData(node.GetParameter(name))))
            self.ui.createWarpedVolumeCheckBox.checked = node.GetParameter("CreateWarpedVolume") == "true"
            self.ui.createSegmentationCheckBox.checked = node.GetParameter("CreateSegmentation") == "true"
            self.ui.createJacobianCheckBox.checked = node.GetParameter("CreateJacobian") == "true"
            self.ui.diffeomorphicCheckBox.checked = node.GetParameter("Diffeomorphic") == "true"
            self.ui.spacingSpinBox.value = _float(node.GetParameter("Spacing"))
            self.ui.regWeightSpinBox.value = _float(node.GetParameter("RegWeight"))
            if self.ui.iterationsLineEdit.text != node.GetParameter("Iterations"):
                self.ui.iterationsLineEdit.text = node.GetParameter("Iterations")
            self.ui.createSegmentationCheckBox.enabled = node.GetNodeReference("MovingSegmentation") is not None
            self._updateApplyButton()
        finally:
            self._updatingGUIFromParameterNode = False

    def updateParameterNodeFromGUI(self, caller=None, event=None):
        if self._parameterNode is None or self._updatingGUIFromParameterNode:
            return
        node = self._parameterNode
        wasModified = node.StartModify()
        node.SetNodeReferenceID("FixedVolume", self.ui.fixedVolumeSelector.currentNodeID)
        node.SetNodeReferenceID("MovingVolume", self.ui.movingVolumeSelector.currentNodeID)
        node.SetNodeReferenceID("MovingSegmentation", self.ui.movingSegmentationSelector.currentNodeID)
        node.SetNodeReferenceID("OutputTransform", self.ui.outputTransformSelector.currentNodeID)
        node.SetParameter("Method", self.ui.methodComboBox.currentData or DEFAULT_PARAMETERS["Method"])
        node.SetParameter("Preset", self.ui.presetComboBox.currentData or DEFAULT_PARAMETERS["Preset"])
        node.SetParameter("Device", self.ui.deviceComboBox.currentData or DEFAULT_PARAMETERS["Device"])
        node.SetParameter("CreateWarpedVolume", _bool(self.ui.createWarpedVolumeCheckBox.checked))
        node.SetParameter("CreateSegmentation", _bool(self.ui.createSegmentationCheckBox.checked))
        node.SetParameter("CreateJacobian", _bool(self.ui.createJacobianCheckBox.checked))
        node.SetParameter("Diffeomorphic", _bool(self.ui.diffeomorphicCheckBox.checked))
        node.SetParameter("Spacing", str(self.ui.spacingSpinBox.value))
        node.SetParameter("RegWeight", str(self.ui.regWeightSpinBox.value))
        node.SetParameter("Iterations", self.ui.iterationsLineEdit.text.strip())
        node.EndModify(wasModified)

    def _updateApplyButton(self):
        if self._job is not None:
            self.ui.applyButton.text = "Cancel"
            self.ui.applyButton.enabled = self._job.state == "running"
            self.ui.applyButton.toolTip = "Stop the registration. Nothing is added to the scene."
            return
        reason = self.logic.inputProblem(self._parameterNode)
        self.ui.applyButton.text = "Apply"
        self.ui.applyButton.enabled = not reason
        self.ui.applyButton.toolTip = reason or "Register the moving volume to the fixed volume."

    # ------------------------------------------------------------------ running

    def onApplyButton(self):
        if self._job is not None:
            self.onCancel()
            return
        if not dependenciesReady():
            return
        kwargs = self.logic.runArguments(self._parameterNode)
        try:
            job = self.logic.startRegistration(**kwargs)
        except ValueError as exc:
            slicer.util.errorDisplay(str(exc), windowTitle="BiJROS: cannot register")
            return
        except Exception as exc:  # anything unexpected: a message, the details in the log
            logging.exception("BiJROS could not start")
            slicer.util.errorDisplay(f"BiJROS could not start the registration:\n\n{exc}", windowTitle="BiJROS")
            return
        self._job = job
        self._startTime = time.time()
        self._lastMessage = ""
        self.ui.qcLabel.text = ""
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = "Starting the BiJROS engine..."
        self.ui.logTextEdit.appendPlainText(
            f"Registering '{kwargs['movingVolume'].GetName()}' to '{kwargs['fixedVolume'].GetName()}' "
            f"(method {kwargs['method']}, preset {kwargs['preset']}, device {kwargs['device']})")
        self._updateApplyButton()
        self.pollTimer.start()

    def runButton(self):
        return self.ui.applyButton

    def updateRunButton(self):
        self._updateApplyButton()

    def _onJobFinished(self, job):
        if job.state == "cancelled":
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = "Cancelled. The scene is unchanged."
            self.ui.logTextEdit.appendPlainText("Cancelled; nothing was added to the scene.")
            return
        if job.state == "failed":
            self.ui.statusLabel.text = "Failed. The scene is unchanged."
            for line in job.log[-20:]:
                self.ui.logTextEdit.appendPlainText(line)
            slicer.util.errorDisplay(f"The registration failed:\n\n{job.error}", windowTitle="BiJROS")
            return
        try:
            nodes = self.logic.finishJob(job)
        except Exception as exc:
            logging.exception("BiJROS could not import its results")
            self.ui.statusLabel.text = "Failed. The scene is unchanged."
            slicer.util.errorDisplay(str(exc), windowTitle="BiJROS")
            return
        self.ui.progressBar.value = 100
        created = [node.GetName() for key, node in nodes.items() if key != "report" and node is not None]
        created = list(dict.fromkeys(created))
        self.ui.statusLabel.text = "Done. Created: " + ", ".join(created) + "."
        self.ui.logTextEdit.appendPlainText("Created: " + ", ".join(created))
        self.ui.qcLabel.text = qcSummary(nodes["report"], time.time() - self._startTime)
        self.ui.logTextEdit.appendPlainText(self.ui.qcLabel.text)
        fixed = self._parameterNode.GetNodeReference("FixedVolume")
        if nodes.get("warpedVolume") is not None:
            slicer.util.setSliceViewerLayers(background=fixed, foreground=nodes["warpedVolume"], foregroundOpacity=0.5)


def _bool(value):
    return "true" if value else "false"


def _float(text, default=0.0):
    try:
        return float(text)
    except (TypeError, ValueError):
        return default


#
# BiJROSRegistrationLogic
#


class BiJROSRegistrationLogic(ScriptedLoadableModuleLogic, RegistrationLogic):
    """Registration from Slicer's Python console, scripts and the panel (no widget references).

    Example (Slicer's Python console; the sample volumes come from the SampleData module)::

        import SampleData
        fixed = SampleData.downloadSample("MRBrainTumor1")
        moving = SampleData.downloadSample("MRBrainTumor2")
        logic = slicer.util.getModuleLogic("BiJROSRegistration")
        nodes = logic.register(fixed, moving, method="deformable")
        moving.SetAndObserveTransformNodeID(nodes["transform"].GetID())   # see it aligned
        print(nodes["report"]["qc"])
    """

    def __init__(self, scene=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self.scene = scene

    def setDefaultParameters(self, parameterNode):
        """Fill in the panel's defaults where the parameter node has no value yet."""
        for name, value in DEFAULT_PARAMETERS.items():
            if not parameterNode.GetParameter(name):
                parameterNode.SetParameter(name, value)

    def runArguments(self, parameterNode):
        """Keyword arguments of :meth:`startRegistration` from the panel's parameter node."""
        spacing = _float(parameterNode.GetParameter("Spacing"))
        regWeight = _float(parameterNode.GetParameter("RegWeight"))
        return {
            "fixedVolume": parameterNode.GetNodeReference("FixedVolume"),
            "movingVolume": parameterNode.GetNodeReference("MovingVolume"),
            "movingSegmentation": parameterNode.GetNodeReference("MovingSegmentation"),
            "outputTransform": parameterNode.GetNodeReference("OutputTransform"),
            "method": parameterNode.GetParameter("Method") or DEFAULT_METHOD,
            "preset": parameterNode.GetParameter("Preset") or None,
            "device": parameterNode.GetParameter("Device") or "auto",
            "spacing": spacing if spacing > 0 else None,
            "iterations": parameterNode.GetParameter("Iterations") or None,
            "regWeight": regWeight if regWeight > 0 else None,
            "diffeomorphic": parameterNode.GetParameter("Diffeomorphic") == "true",
            "createWarpedVolume": parameterNode.GetParameter("CreateWarpedVolume") == "true",
            "createSegmentation": parameterNode.GetParameter("CreateSegmentation") == "true",
            "createJacobian": parameterNode.GetParameter("CreateJacobian") == "true",
        }

    def inputProblem(self, parameterNode):
        """'' when the panel's inputs can run, else what is missing or wrong (Apply's tooltip)."""
        if parameterNode is None:
            return "No parameter node."
        fixed = parameterNode.GetNodeReference("FixedVolume")
        moving = parameterNode.GetNodeReference("MovingVolume")
        if fixed is None:
            return "Select the fixed volume."
        if moving is None:
            return "Select the moving volume."
        try:
            reason = self.validateInputs(fixed, moving, parameterNode.GetNodeReference("MovingSegmentation"))
        except Exception as exc:
            reason = str(exc)
        if reason:
            return reason
        iterations = parameterNode.GetParameter("Iterations").strip()
        if iterations and not re.fullmatch(r"\d+(\s*,\s*\d+)*", iterations):
            return f"Iterations '{iterations}': give whole numbers separated by commas, e.g. 40,30,20."
        return ""

    def register(self, fixedVolume, movingVolume, method="deformable", outputTransform=None,
                 movingSegmentation=None, **kwargs):
        """Register ``movingVolume`` to ``fixedVolume`` and return the created nodes (blocking).

        :param method: "learned+io" (Accurate: affine, the shipped learned model, then instance
            optimisation from its field), "learned" (Fast: learned model only), "io" (instance
            optimisation only), "affine", or "deformable" (= the engine's default method, bijros/data/methods.json).
        :param outputTransform: an existing transform node to fill, or None for a new one.
        :param movingSegmentation: optional vtkMRMLSegmentationNode on the moving volume,
            propagated onto the fixed volume with its segment names and colours.
        :param kwargs: createWarpedVolume=True, createSegmentation=True, createJacobian=False,
            device="auto" | "cpu" | "cuda", preset=None (the method's) | "default" | "fast" | "accurate", spacing (mm),
            iterations ("40,30,20"), regWeight, diffeomorphic=False.
        :return: dict with "transform", "affineTransform", "warpedVolume", "segmentation",
            "jacobianVolume" (None when not made) and "report" (the engine's QC report).
        :raises ValueError: unusable inputs (message says why). RuntimeError: the run failed
            (the scene is then unchanged).

        Example::

            logic = BiJROSRegistrationLogic()
            nodes = logic.register(fixedNode, movingNode, method="affine", preset="fast")
            nodes = logic.register(fixedNode, movingNode, movingSegmentation=segNode, createJacobian=True)
            movingNode.SetAndObserveTransformNodeID(nodes["transform"].GetID())
        """
        return RegistrationLogic.register(self, fixedVolume, movingVolume, method=method,
                                          outputTransform=outputTransform, movingSegmentation=movingSegmentation,
                                          **kwargs)


#
# BiJROSRegistrationTest
#


class BiJROSRegistrationTest(ScriptedLoadableModuleTest):
    """Self-test on small synthetic volumes (runs in Slicer: Reload and Test, or ctest)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_AffineWithSegmentation()
        self.setUp()
        self.test_InvalidInputs()
        self.setUp()
        self.test_CancelLeavesSceneUnchanged()

    @staticmethod
    def makeVolumes(shift=(3, -2, 2)):
        """A fixed and a shifted moving ellipsoid phantom (40x36x32 voxels, 1.5 mm) and a
        two-segment segmentation of the moving one."""
        import numpy as np

        k, j, i = np.meshgrid(np.arange(32), np.arange(36), np.arange(40), indexing="ij")

        def phantom(offset):
            ci, cj, ck = 20 + offset[0], 18 + offset[1], 16 + offset[2]
            r = ((i - ci) / 12.0) ** 2 + ((j - cj) / 10.0) ** 2 + ((k - ck) / 8.0) ** 2
            inner = ((i - ci) / 5.0) ** 2 + ((j - cj) / 4.0) ** 2 + ((k - ck) / 3.0) ** 2
            return (100.0 * (r < 1) + 80.0 * (inner < 1)).astype(np.float32), (r < 1).astype(np.uint8) + (inner < 1)

        fixedArray, _ = phantom((0, 0, 0))
        movingArray, movingLabels = phantom(shift)
        fixed = slicer.util.addVolumeFromArray(fixedArray, nodeClassName="vtkMRMLScalarVolumeNode", name="fixed")
        moving = slicer.util.addVolumeFromArray(movingArray, nodeClassName="vtkMRMLScalarVolumeNode", name="moving")
        labels = slicer.util.addVolumeFromArray(movingLabels, nodeClassName="vtkMRMLLabelMapVolumeNode",
                                                name="moving labels")
        for node in (fixed, moving, labels):
            node.SetSpacing(1.5, 1.5, 1.5)
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "moving segmentation")
        slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labels, segmentation)
        slicer.mrmlScene.RemoveNode(labels)
        return fixed, moving, segmentation

    def test_AffineWithSegmentation(self):
        self.delayDisplay("Affine registration with a propagated segmentation")
        fixed, moving, segmentation = self.makeVolumes()
        logic = BiJROSRegistrationLogic()
        nodes = logic.register(fixed, moving, method="affine", preset="fast", movingSegmentation=segmentation,
                               createJacobian=True, device="cpu")
        self.assertIsNotNone(nodes["transform"])
        self.assertTrue(nodes["transform"].IsA("vtkMRMLTransformNode"))
        self.assertIsNotNone(nodes["warpedVolume"])
        self.assertIsNotNone(nodes["jacobianVolume"])
        self.assertEqual(nodes["segmentation"].GetSegmentation().GetNumberOfSegments(),
                         segmentation.GetSegmentation().GetNumberOfSegments())
        self.assertIn("qc", nodes["report"])
        self.delayDisplay("Affine registration passed")

    def test_InvalidInputs(self):
        self.delayDisplay("Invalid inputs are refused with a reason")
        fixed, _moving, _segmentation = self.makeVolumes()
        logic = BiJROSRegistrationLogic()
        self.assertIn("same", logic.validateInputs(fixed, fixed))
        before = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(ValueError):
            logic.register(fixed, fixed, method="affine")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.delayDisplay("Invalid inputs passed")

    def test_CancelLeavesSceneUnchanged(self):
        self.delayDisplay("Cancel leaves the scene unchanged")
        fixed, moving, _segmentation = self.makeVolumes()
        logic = BiJROSRegistrationLogic()
        before = slicer.mrmlScene.GetNumberOfNodes()
        job = logic.startRegistration(fixed, moving, method="deformable", preset="fast", device="cpu")
        job.cancel()
        self.assertEqual(job.state, "cancelled")
        with self.assertRaises(RuntimeError):
            logic.finishJob(job)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.delayDisplay("Cancel passed")
