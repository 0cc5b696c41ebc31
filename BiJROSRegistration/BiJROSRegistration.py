"""BiJROS Registration: pairwise affine / deformable registration of two volumes in 3D Slicer.

Slicer's four module classes, thin: the panel's sections are in ``BiJROSRegistrationPanel``, the
MRML bridge, the child-process runner and the console API in ``BiJROSLib``. The engine
(``bijros``) is imported only when a run starts, so the module loads before its packages are installed.
"""

import json

import qt
import slicer
from BiJROSRegistrationPanel import run
from BiJROSRegistrationPanel.advanced import AdvancedSection
from BiJROSRegistrationPanel.inputs import InputsSection
from BiJROSRegistrationPanel.outputs import OutputsSection
from BiJROSRegistrationPanel.prompts import PromptsSection
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from BiJROSLib.bindings import setDefaults, values
from BiJROSLib.logic import RegistrationLogic
from BiJROSLib.panel import JobPanelMixin

README_URL = "https://github.com/bijros/SlicerBiJROS#readme"
SECTIONS = (InputsSection, PromptsSection, OutputsSection, AdvancedSection)


class BiJROSRegistration(ScriptedLoadableModule):
    def __init__(self, parent):
        from BiJROSLib.about import ACKNOWLEDGEMENT

        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "BiJROS Registration"
        self.parent.categories = ["Registration"]
        self.parent.dependencies = []
        self.parent.contributors = ["BiJROS contributors"]
        self.parent.helpText = f"""
Registers a moving volume to a fixed volume: affine, then training-free instance optimisation and/or a
learned model (Accurate = learned + instance optimisation, Fast = learned only), optionally only inside a
mask of the fixed volume, and carries a segmentation of the moving volume onto the fixed volume.
Outputs: a transform (resampling convention), the warped volume, the propagated segmentation and a
Jacobian map for quality control. Text prompts: words naming segments of the moving segmentation get a
second, local pass; the "Text-steered" methods make each segment's deformation filters from its name or your
words (TextSCF). The engine runs in the background: Slicer stays responsive and Cancel stops it.
See the <a href="{README_URL}">BiJROS documentation</a> for the console API and examples.
"""
        self.parent.acknowledgementText = ACKNOWLEDGEMENT


class BiJROSRegistrationWidget(JobPanelMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel. All its state is in the module's parameter node (saved with the scene)."""

    sections = SECTIONS
    runSection = run  # what the run button starts, and how its results are shown
    runText, runTip, runWhat = "Apply", "Register the moving volume to the fixed volume.", "registration"

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._job = None
        self._lastMessage = ""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/BiJROSRegistration.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = BiJROSRegistrationLogic()
        self.setupSections()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onRunButton)
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(200)
        self.pollTimer.connect("timeout()", self.onPollJob)
        self.initializeParameterNode()

    def methodVolumes(self):
        node = self._parameterNode
        return node.GetNodeReference("FixedVolume"), node.GetNodeReference("MovingVolume")

    def runButton(self):
        return self.ui.applyButton


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

    ``register`` / ``startRegistration`` take the keyword arguments documented in
    :class:`BiJROSLib.registration.RegistrationLogic` (method, preset, device, affineMetric,
    fixedMask, movingSegmentation, outputTransform, create..., spacing, iterations, regWeight, diffeomorphic).
    """

    def __init__(self, scene=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self.scene = scene

    def setDefaultParameters(self, parameterNode):
        """Fill in the panel's defaults where the parameter node has no value yet."""
        setDefaults(parameterNode, [b for s in SECTIONS for b in s.bindings()])

    def runArguments(self, parameterNode):
        """Keyword arguments of :meth:`startRegistration` from the panel's parameter node."""
        v = values(parameterNode, [b for s in SECTIONS for b in s.bindings()])
        return {
            "fixedVolume": v["FixedVolume"], "movingVolume": v["MovingVolume"],
            "movingSegmentation": v["MovingSegmentation"], "fixedMask": v["FixedMask"],
            "outputTransform": v["OutputTransform"], "method": v["Method"] or "deformable",
            "preset": v["Preset"], "device": v["Device"] or "auto", "affineMetric": v["AffineMetric"],
            "spacing": v["Spacing"], "iterations": v["Iterations"], "regWeight": v["RegWeight"],
            "diffeomorphic": v["Diffeomorphic"], "createWarpedVolume": v["CreateWarpedVolume"],
            "createSegmentation": v["CreateSegmentation"], "createJacobian": v["CreateJacobian"],
            "prompt": (v["Prompt"] or "").strip() or None,
            "segmentPrompts": json.loads(parameterNode.GetParameter("SegmentPrompts") or "{}"),
        }

    def inputProblem(self, parameterNode):
        """'' when the panel's inputs can run, else what is missing or wrong (Apply's tooltip)."""
        if parameterNode is None:
            return "No parameter node."
        args = self.runArguments(parameterNode)
        if args["fixedVolume"] is None:
            return "Select the fixed volume."
        if args["movingVolume"] is None:
            return "Select the moving volume."
        try:
            reason = self.validateInputs(args["fixedVolume"], args["movingVolume"], args["movingSegmentation"])
        except Exception as exc:
            reason = str(exc)
        return reason or AdvancedSection.problem(parameterNode)


class BiJROSRegistrationTest(ScriptedLoadableModuleTest):
    """Self-test on small synthetic volumes (runs in Slicer: Reload and Test, or ctest)."""

    SHIFT = (3, -2, 2)  # voxels (1.5 mm) from the fixed phantom to the moving one

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for test in (self.test_AffineRecoversTheKnownShift, self.test_InvalidInputs,
                     self.test_CancelLeavesSceneUnchanged):
            self.setUp()
            test()

    @staticmethod
    def makeVolumes(shift=SHIFT):
        from BiJROSLib.selftest import makePhantomPair

        return makePhantomPair(shift)

    def test_AffineRecoversTheKnownShift(self):
        from BiJROSLib.selftest import mappedCentreError

        self.delayDisplay("Affine registration recovers the known shift; the segmentation follows")
        fixed, moving, segmentation = self.makeVolumes()
        nodes = BiJROSRegistrationLogic().register(fixed, moving, method="affine", preset="fast",
                                                   movingSegmentation=segmentation, createJacobian=True, device="cpu")
        error = mappedCentreError(nodes["transform"], fixed, moving, self.SHIFT)
        self.assertLess(error, 1.0, f"the transform maps the fixed centre {error:.2f} mm from the moving one")
        self.assertIsNotNone(nodes["warpedVolume"])
        self.assertIsNotNone(nodes["jacobianVolume"])
        self.assertEqual(nodes["segmentation"].GetSegmentation().GetNumberOfSegments(),
                         segmentation.GetSegmentation().GetNumberOfSegments())
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
