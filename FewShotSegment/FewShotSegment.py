"""FewShotSegment: one-shot segmentation by atlas label propagation in 3D Slicer.

An atlas (a volume with a segmentation, from the scene or from the BiJROS atlas library) is
registered to the target volume and its segments are carried over with their names and
colours. The work lives in ``BiJROSLib``; the engine runs in a separate process.
"""

import logging
import os
import sys
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

try:
    from BiJROSLib.logic import PropagationLogic
    from BiJROSLib.panel import JobPanelMixin, dependenciesReady, qcSummary
except ImportError:  # running from the source tree: the Lib sits in the BiJROSRegistration module folder
    sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "BiJROSRegistration"))
    from BiJROSLib.logic import PropagationLogic
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

METHODS = tuple((name, method_info(name)["title"]) for name in
                (DEFAULT_METHOD, *(m for m in ENGINE_METHODS if m != DEFAULT_METHOD)))
PRESETS = (("", "From the method (recommended)"), ("default", "Default (1 mm working grid)"), ("fast", "Fast (2 mm working grid)"),
           ("accurate", "Accurate (finer last level)"))
DEVICES = (("auto", "Automatic (GPU when available)"), ("cpu", "CPU"), ("cuda", "CUDA GPU"))

DEFAULT_PARAMETERS = {
    "AtlasSource": "library",  # "library" | "scene"
    "AtlasName": "",  # set to the library's default atlas
    "Method": DEFAULT_METHOD,
    "Preset": "",
    "Device": "auto",
    "CreateTransform": "true",
    "CreateJacobian": "false",
}


#
# FewShotSegment
#


class FewShotSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Few-Shot Segment"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["BiJROS contributors"]
        self.parent.helpText = f"""
Segments a target volume from one labelled example (an atlas): the atlas is registered to the
target and its segments are propagated with their names and colours. The atlas is a volume and
segmentation from the scene, or one from the BiJROS atlas library (brain MRI).
The engine runs in the background: Slicer stays responsive and Cancel stops it.
See the <a href="{README_URL}">BiJROS documentation</a> for the console API and examples.
"""
        self.parent.acknowledgementText = ACKNOWLEDGEMENT


#
# FewShotSegmentWidget
#


class FewShotSegmentWidget(JobPanelMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
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
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FewShotSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = FewShotSegmentLogic()

        for combo, items in ((self.ui.methodComboBox, METHODS), (self.ui.presetComboBox, PRESETS),
                             (self.ui.deviceComboBox, DEVICES)):
            for value, label in items:
                combo.addItem(label, value)
        try:
            for name in self.logic.atlasNames():
                self.ui.atlasLibraryComboBox.addItem(self.logic.atlasInfo(name)["title"] or name, name)
        except Exception as exc:  # a broken installation: say so in the panel, keep the scene atlas usable
            logging.exception("BiJROS atlas library")
            self.ui.atlasInfoLabel.text = f"The atlas library could not be read: {exc}"

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        for selector in (self.ui.targetVolumeSelector, self.ui.atlasVolumeSelector, self.ui.atlasSegmentationSelector):
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)
        for combo in (self.ui.atlasLibraryComboBox, self.ui.methodComboBox, self.ui.presetComboBox,
                      self.ui.deviceComboBox):
            combo.connect("currentIndexChanged(int)", self.updateParameterNodeFromGUI)
        for button in (self.ui.libraryAtlasRadioButton, self.ui.sceneAtlasRadioButton,
                       self.ui.createTransformCheckBox, self.ui.createJacobianCheckBox):
            button.connect("toggled(bool)", self.updateParameterNodeFromGUI)
        self.ui.propagateButton.connect("clicked(bool)", self.onPropagateButton)

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
            self.ui.targetVolumeSelector.setCurrentNode(node.GetNodeReference("TargetVolume"))
            self.ui.atlasVolumeSelector.setCurrentNode(node.GetNodeReference("AtlasVolume"))
            self.ui.atlasSegmentationSelector.setCurrentNode(node.GetNodeReference("AtlasSegmentation"))
            fromLibrary = node.GetParameter("AtlasSource") != "scene"
            self.ui.libraryAtlasRadioButton.checked = fromLibrary
            self.ui.sceneAtlasRadioButton.checked = not fromLibrary
            for widget in (self.ui.atlasLibraryComboBox, self.ui.atlasInfoLabel):
                widget.enabled = fromLibrary
            for widget in (self.ui.atlasVolumeSelector, self.ui.atlasSegmentationSelector):
                widget.enabled = not fromLibrary
            atlasIndex = self.ui.atlasLibraryComboBox.findData(node.GetParameter("AtlasName"))
            self.ui.atlasLibraryComboBox.setCurrentIndex(atlasIndex if atlasIndex >= 0 else 0)
            self._showAtlasInfo(self.ui.atlasLibraryComboBox.currentData)
            for combo, name in ((self.ui.methodComboBox, "Method"), (self.ui.presetComboBox, "Preset"),
                                (self.ui.deviceComboBox, "Device")):
                combo.setCurrentIndex(max(0, combo.findData(node.GetParameter(name))))
            self.ui.createTransformCheckBox.checked = node.GetParameter("CreateTransform") == "true"
            self.ui.createJacobianCheckBox.checked = node.GetParameter("CreateJacobian") == "true"
            self._updatePropagateButton()
        finally:
            self._updatingGUIFromParameterNode = False

    def updateParameterNodeFromGUI(self, caller=None, event=None):
        if self._parameterNode is None or self._updatingGUIFromParameterNode:
            return
        node = self._parameterNode
        wasModified = node.StartModify()
        node.SetNodeReferenceID("TargetVolume", self.ui.targetVolumeSelector.currentNodeID)
        node.SetNodeReferenceID("AtlasVolume", self.ui.atlasVolumeSelector.currentNodeID)
        node.SetNodeReferenceID("AtlasSegmentation", self.ui.atlasSegmentationSelector.currentNodeID)
        node.SetParameter("AtlasSource", "scene" if self.ui.sceneAtlasRadioButton.checked else "library")
        node.SetParameter("AtlasName", self.ui.atlasLibraryComboBox.currentData or "")
        node.SetParameter("Method", self.ui.methodComboBox.currentData or DEFAULT_PARAMETERS["Method"])
        node.SetParameter("Preset", self.ui.presetComboBox.currentData or DEFAULT_PARAMETERS["Preset"])
        node.SetParameter("Device", self.ui.deviceComboBox.currentData or DEFAULT_PARAMETERS["Device"])
        node.SetParameter("CreateTransform", "true" if self.ui.createTransformCheckBox.checked else "false")
        node.SetParameter("CreateJacobian", "true" if self.ui.createJacobianCheckBox.checked else "false")
        node.EndModify(wasModified)

    def _showAtlasInfo(self, atlasName):
        if not atlasName:
            return
        try:
            info = self.logic.atlasInfo(atlasName)
        except Exception as exc:
            self.ui.atlasInfoLabel.text = str(exc)
            return
        description = info.get("description") or info.get("title") or atlasName
        self.ui.atlasInfoLabel.text = description.split(". ")[0].rstrip(".") + "."
        self.ui.atlasInfoLabel.toolTip = description + (f"\n\nLicence: {info['license']}" if info.get("license") else "")

    def _updatePropagateButton(self):
        if self._job is not None:
            self.ui.propagateButton.text = "Cancel"
            self.ui.propagateButton.enabled = self._job.state == "running"
            self.ui.propagateButton.toolTip = "Stop the propagation. Nothing is added to the scene."
            return
        reason = self.logic.inputProblem(self._parameterNode)
        self.ui.propagateButton.text = "Propagate"
        self.ui.propagateButton.enabled = not reason
        self.ui.propagateButton.toolTip = reason or "Register the atlas to the target and propagate its segments."

    # ------------------------------------------------------------------ running

    def onPropagateButton(self):
        if self._job is not None:
            self.onCancel()
            return
        if not dependenciesReady():
            return
        kwargs = self.logic.runArguments(self._parameterNode)
        try:
            job = self.logic.startPropagation(**kwargs)
        except ValueError as exc:
            slicer.util.errorDisplay(str(exc), windowTitle="BiJROS: cannot propagate")
            return
        except Exception as exc:  # anything unexpected: a message, the details in the log
            logging.exception("BiJROS could not start")
            slicer.util.errorDisplay(f"BiJROS could not start the propagation:\n\n{exc}", windowTitle="BiJROS")
            return
        self._job = job
        self._startTime = time.time()
        self._lastMessage = ""
        self.ui.qcLabel.text = ""
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = "Starting the BiJROS engine..."
        atlas = kwargs["atlasVolume"].GetName() if kwargs["atlasVolume"] is not None else kwargs["atlasName"]
        self.ui.logTextEdit.appendPlainText(
            f"Propagating atlas '{atlas or 'library default'}' to '{kwargs['targetVolume'].GetName()}' "
            f"(method {kwargs['method']}, preset {kwargs['preset']}, device {kwargs['device']})")
        self._updatePropagateButton()
        self.pollTimer.start()

    def runButton(self):
        return self.ui.propagateButton

    def updateRunButton(self):
        self._updatePropagateButton()

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
            slicer.util.errorDisplay(f"The propagation failed:\n\n{job.error}", windowTitle="BiJROS")
            return
        try:
            nodes = self.logic.finishJob(job)
        except Exception as exc:
            logging.exception("BiJROS could not import its results")
            self.ui.statusLabel.text = "Failed. The scene is unchanged."
            slicer.util.errorDisplay(str(exc), windowTitle="BiJROS")
            return
        self.ui.progressBar.value = 100
        created = list(dict.fromkeys(node.GetName() for key, node in nodes.items()
                                     if key != "report" and node is not None))
        segmentation = nodes["segmentation"]
        segments = segmentation.GetSegmentation().GetNumberOfSegments()
        self.ui.statusLabel.text = f"Done. '{segmentation.GetName()}' has {segments} segments."
        self.ui.logTextEdit.appendPlainText("Created: " + ", ".join(created))
        self.ui.qcLabel.text = qcSummary(nodes["report"], time.time() - self._startTime)
        self.ui.logTextEdit.appendPlainText(self.ui.qcLabel.text)
        target = self._parameterNode.GetNodeReference("TargetVolume")
        slicer.util.setSliceViewerLayers(background=target)


#
# FewShotSegmentLogic
#


class FewShotSegmentLogic(ScriptedLoadableModuleLogic, PropagationLogic):
    """Atlas label propagation from Slicer's Python console, scripts and the panel.

    Example (Slicer's Python console)::

        import SampleData
        target = SampleData.downloadSample("MRHead")
        logic = slicer.util.getModuleLogic("FewShotSegment")
        logic.atlasNames()                                  # the library atlases
        nodes = logic.propagate(target)                     # library default atlas (MNI152 brain)
        nodes["segmentation"]                               # named, coloured segments on the target
    """

    def __init__(self, scene=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self.scene = scene

    def setDefaultParameters(self, parameterNode):
        """Fill in the panel's defaults where the parameter node has no value yet."""
        for name, value in DEFAULT_PARAMETERS.items():
            if not parameterNode.GetParameter(name) and value:
                parameterNode.SetParameter(name, value)
        if not parameterNode.GetParameter("AtlasName"):
            try:
                from BiJROSLib.atlases import defaultAtlasName

                parameterNode.SetParameter("AtlasName", defaultAtlasName())
            except Exception:  # no library: the scene atlas still works; the panel says why
                logging.exception("BiJROS atlas library")

    def runArguments(self, parameterNode):
        """Keyword arguments of :meth:`startPropagation` from the panel's parameter node."""
        fromScene = parameterNode.GetParameter("AtlasSource") == "scene"
        return {
            "targetVolume": parameterNode.GetNodeReference("TargetVolume"),
            "atlasVolume": parameterNode.GetNodeReference("AtlasVolume") if fromScene else None,
            "atlasSegmentation": parameterNode.GetNodeReference("AtlasSegmentation") if fromScene else None,
            "atlasName": None if fromScene else (parameterNode.GetParameter("AtlasName") or None),
            "method": parameterNode.GetParameter("Method") or DEFAULT_METHOD,
            "preset": parameterNode.GetParameter("Preset") or None,
            "device": parameterNode.GetParameter("Device") or "auto",
            "createTransform": parameterNode.GetParameter("CreateTransform") == "true",
            "createJacobian": parameterNode.GetParameter("CreateJacobian") == "true",
        }

    def inputProblem(self, parameterNode):
        """'' when the panel's inputs can run, else what is missing or wrong (Propagate's tooltip)."""
        if parameterNode is None:
            return "No parameter node."
        args = self.runArguments(parameterNode)
        if args["targetVolume"] is None:
            return "Select the target volume."
        if parameterNode.GetParameter("AtlasSource") == "scene":
            if args["atlasVolume"] is None:
                return "Select the atlas volume (or choose an atlas from the library)."
            if args["atlasSegmentation"] is None:
                return (f"The atlas volume '{args['atlasVolume'].GetName()}' needs a segmentation: select the "
                        "atlas segmentation, or choose an atlas from the library.")
        try:
            return self.validateInputs(args["targetVolume"], args["atlasVolume"], args["atlasSegmentation"],
                                       args["atlasName"])
        except Exception as exc:
            return str(exc)

    def propagate(self, targetVolume, atlasVolume=None, atlasSegmentation=None, atlasName=None, **kwargs):
        """Propagate an atlas's segments onto ``targetVolume`` and return the created nodes (blocking).

        The atlas is ``atlasVolume`` + ``atlasSegmentation`` (nodes in the scene) or, when
        they are None, the library atlas ``atlasName`` (None: the library's default).

        :param kwargs: method="io" (default) | "learned+io" (Accurate) | "learned" (Fast) | "affine",
            device="auto" | "cpu" | "cuda", preset=None (the method's) | "default" | "fast" | "accurate", spacing (mm), iterations ("40,30,20"),
            regWeight, diffeomorphic=False, createTransform=True, createJacobian=False.
        :return: dict with "segmentation" (on the target, atlas names and colours),
            "transform", "affineTransform", "jacobianVolume" (None when not made) and "report".
        :raises ValueError: unusable inputs (message says why). RuntimeError: the run failed
            (the scene is then unchanged).

        Example::

            logic = FewShotSegmentLogic()
            nodes = logic.propagate(targetNode, atlasVolume=atlasNode, atlasSegmentation=atlasSegNode)
            nodes = logic.propagate(targetNode, atlasName="mni152-desikan-killiany", preset="fast")
        """
        return PropagationLogic.propagate(self, targetVolume, atlasVolume, atlasSegmentation, atlasName, **kwargs)


#
# FewShotSegmentTest
#


class FewShotSegmentTest(ScriptedLoadableModuleTest):
    """Self-test on small synthetic volumes (runs in Slicer: Reload and Test, or ctest)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PropagateSceneAtlas()
        self.setUp()
        self.test_AtlasWithoutSegmentation()
        self.setUp()
        self.test_Library()

    @staticmethod
    def makeVolumes(shift=(2, -2, 1)):
        """A target and a shifted atlas ellipsoid phantom (40x36x32 voxels, 1.5 mm) and a
        two-segment segmentation of the atlas."""
        import numpy as np

        k, j, i = np.meshgrid(np.arange(32), np.arange(36), np.arange(40), indexing="ij")

        def phantom(offset):
            ci, cj, ck = 20 + offset[0], 18 + offset[1], 16 + offset[2]
            r = ((i - ci) / 12.0) ** 2 + ((j - cj) / 10.0) ** 2 + ((k - ck) / 8.0) ** 2
            inner = ((i - ci) / 5.0) ** 2 + ((j - cj) / 4.0) ** 2 + ((k - ck) / 3.0) ** 2
            return (100.0 * (r < 1) + 80.0 * (inner < 1)).astype(np.float32), (r < 1).astype(np.uint8) + (inner < 1)

        targetArray, _ = phantom((0, 0, 0))
        atlasArray, atlasLabels = phantom(shift)
        target = slicer.util.addVolumeFromArray(targetArray, nodeClassName="vtkMRMLScalarVolumeNode", name="target")
        atlas = slicer.util.addVolumeFromArray(atlasArray, nodeClassName="vtkMRMLScalarVolumeNode", name="atlas")
        labels = slicer.util.addVolumeFromArray(atlasLabels, nodeClassName="vtkMRMLLabelMapVolumeNode",
                                                name="atlas labels")
        for node in (target, atlas, labels):
            node.SetSpacing(1.5, 1.5, 1.5)
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "atlas segmentation")
        slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labels, segmentation)
        slicer.mrmlScene.RemoveNode(labels)
        return target, atlas, segmentation

    def test_PropagateSceneAtlas(self):
        self.delayDisplay("Propagation from an atlas in the scene")
        target, atlas, segmentation = self.makeVolumes()
        nodes = FewShotSegmentLogic().propagate(target, atlasVolume=atlas, atlasSegmentation=segmentation,
                                                method="affine", preset="fast", device="cpu")
        result = nodes["segmentation"]
        self.assertIsNotNone(result)
        names = [segmentation.GetSegmentation().GetNthSegment(i).GetName()
                 for i in range(segmentation.GetSegmentation().GetNumberOfSegments())]
        resultNames = [result.GetSegmentation().GetNthSegment(i).GetName()
                       for i in range(result.GetSegmentation().GetNumberOfSegments())]
        self.assertEqual(sorted(resultNames), sorted(names))
        self.delayDisplay("Propagation passed")

    def test_AtlasWithoutSegmentation(self):
        self.delayDisplay("An atlas without a segmentation is refused with a reason")
        target, atlas, _segmentation = self.makeVolumes()
        logic = FewShotSegmentLogic()
        self.assertIn("segmentation", logic.validateInputs(target, atlasVolume=atlas))
        before = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(ValueError):
            logic.propagate(target, atlasVolume=atlas)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.delayDisplay("Atlas without segmentation passed")

    def test_Library(self):
        self.delayDisplay("The atlas library is available")
        target, _atlas, _segmentation = self.makeVolumes()
        logic = FewShotSegmentLogic()
        names = logic.atlasNames()
        self.assertTrue(names)
        self.assertEqual(logic.validateInputs(target, atlasName=names[0]), "")
        self.assertTrue(logic.atlasInfo(names[0])["title"])
        self.delayDisplay("Atlas library passed")
