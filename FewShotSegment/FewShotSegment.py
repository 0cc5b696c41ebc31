"""FewShotSegment: one-shot segmentation by atlas label propagation in 3D Slicer.

An atlas (a volume with a segmentation, from the scene or from the BiJROS atlas library) is
registered to the target volume and its segments are carried over with their names and
colours. Slicer's four module classes, thin: the panel's sections are in ``FewShotSegmentPanel``,
the shared library in ``BiJROSLib``; the engine runs in a separate process and is imported only
when a run starts.
"""

import logging

import qt
import slicer
from FewShotSegmentPanel import run
from FewShotSegmentPanel.advanced import AdvancedSection
from FewShotSegmentPanel.atlas import AtlasSection
from FewShotSegmentPanel.cohort import CohortSection
from FewShotSegmentPanel.selection import SelectionSection
from FewShotSegmentPanel.slices import FewShotSection
from FewShotSegmentPanel.target import TargetSection
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from BiJROSLib.bindings import setDefaults, values
from BiJROSLib.logic import PropagationLogic
from BiJROSLib.panel import JobPanelMixin

README_URL = "https://github.com/bijros/SlicerBiJROS#readme"
SECTIONS = (TargetSection, AtlasSection, SelectionSection, CohortSection, FewShotSection, AdvancedSection)


class FewShotSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        from BiJROSLib.about import ACKNOWLEDGEMENT

        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Few-Shot Segment"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["BiJROS contributors"]
        self.parent.helpText = f"""
Segments a target volume from one labelled example (an atlas): the atlas is registered to the
target (optionally only inside a mask of the target) and its segments are propagated with their
names and colours. The atlas is a volume and segmentation from the scene, or one from the BiJROS
atlas library (brain MRI). The engine runs in the background: Slicer stays responsive and Cancel stops it.
With several atlases from a library (a folder of labelled images), the atlases are ranked for the target,
the best ones registered and their labels fused (majority vote or locally weighted voting), with a
confidence volume. Cohort learning trains a segmentation model from one atlas (a library atlas, or a scene volume +
segmentation) and a cohort of unlabelled volumes (checked in the scene, or a folder) (Bi-JROS bi-level decoders, or BRBS), then segments the target or every
volume in the scene with it; trained models are kept and can be picked again. Few-shot: paint a structure on
a few slices of the target (Segment Editor, one view) and "Segment remaining slices" adds the filled structure as
a new segment (the painted one is untouched); "Apply to other volumes" segments the checked volumes from it.
See the <a href="{README_URL}">BiJROS documentation</a> for the console API and examples.
"""
        self.parent.acknowledgementText = ACKNOWLEDGEMENT


class FewShotSegmentWidget(JobPanelMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel. All its state is in the module's parameter node (saved with the scene)."""

    sections = SECTIONS
    runSection = run  # what the run button starts, and how its results are shown
    runText = "Propagate"
    runTip = "Register the atlas to the target and propagate its segments."
    runWhat = "propagation"

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._job = None
        self._lastMessage = ""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FewShotSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = FewShotSegmentLogic()
        self.setupSections()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.propagateButton.connect("clicked(bool)", self.onRunButton)
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(200)
        self.pollTimer.connect("timeout()", self.onPollJob)
        self.initializeParameterNode()

    def methodVolumes(self):
        node = self._parameterNode
        atlas = node.GetNodeReference("AtlasVolume") if node.GetParameter("AtlasSource") == "scene" else None
        return node.GetNodeReference("TargetVolume"), atlas

    def runButton(self):
        return self.ui.propagateButton


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
        setDefaults(parameterNode, [b for s in SECTIONS for b in s.bindings()])
        if not parameterNode.GetParameter("AtlasName"):
            try:
                from BiJROSLib.atlases import defaultAtlasName

                parameterNode.SetParameter("AtlasName", defaultAtlasName())
            except Exception:  # no library: the scene atlas still works; the panel says why
                logging.exception("BiJROS atlas library")

    def runArguments(self, parameterNode):
        """Keyword arguments of :meth:`startPropagation` from the panel's parameter node."""
        v = values(parameterNode, [b for s in SECTIONS for b in s.bindings()])
        fromScene = v["AtlasSource"] == "scene"
        return {
            "targetVolume": v["TargetVolume"], "targetMask": v["TargetMask"],
            "atlasVolume": v["AtlasVolume"] if fromScene else None,
            "atlasSegmentation": v["AtlasSegmentation"] if fromScene else None,
            "atlasName": None if fromScene else v["AtlasName"],
            "method": v["Method"] or "deformable", "preset": v["Preset"], "device": v["Device"] or "auto",
            "affineMetric": v["AffineMetric"], "createTransform": v["CreateTransform"],
            "createJacobian": v["CreateJacobian"],
        }

    def libraryRunArguments(self, parameterNode):
        """Keyword arguments of :meth:`startLibraryPropagation` from the panel's parameter node."""
        v = values(parameterNode, [b for s in SECTIONS for b in s.bindings()])
        return {
            "targetVolume": v["TargetVolume"], "atlasLibrary": v["MultiAtlasLibrary"], "topK": v["TopK"] or None,
            "fusion": v["Fusion"] or "jlf", "method": v["Method"] or "deformable", "preset": v["Preset"],
            "device": v["Device"] or "auto", "affineMetric": v["AffineMetric"],
            "createConfidence": v["CreateConfidence"], "mirror": "auto" if v["MirrorAtlases"] else "off",
        }

    def inputProblem(self, parameterNode):
        """'' when the panel's inputs can run, else what is missing or wrong (Propagate's tooltip)."""
        if parameterNode is None:
            return "No parameter node."
        args = self.runArguments(parameterNode)
        if args["targetVolume"] is None:
            return "Select the target volume."
        if parameterNode.GetParameter("AtlasSource") == "multi":
            if parameterNode.GetNodeReference("TargetMask") is not None:
                return "A target mask is not supported with several atlases yet; clear the mask or use one atlas."
            return (self._targetProblem(args["targetVolume"])
                    or self.libraryProblem(parameterNode.GetParameter("MultiAtlasLibrary")))
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

        :param kwargs: method="deformable" (the engine's default) | "io" | "learned+io" (Accurate) | "learned"
            (Fast) | "affine", affineMetric=None | "ncc" | "mi", targetMask (segmentation or labelmap on the target),
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


class FewShotSegmentTest(ScriptedLoadableModuleTest):
    """Self-test on small synthetic volumes (runs in Slicer: Reload and Test, or ctest)."""

    SHIFT = (2, -2, 1)  # voxels (1.5 mm) from the target phantom to the atlas one

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for test in (self.test_PropagationRecoversTheKnownShift, self.test_AtlasWithoutSegmentation,
                     self.test_Library, self.test_CohortLearning, self.test_FewShotFromPaintedSlices):
            self.setUp()
            test()

    @staticmethod
    def makeVolumes(shift=SHIFT):
        from BiJROSLib.selftest import makePhantomPair

        return makePhantomPair(shift, "target", "atlas")

    def test_PropagationRecoversTheKnownShift(self):
        from BiJROSLib.selftest import mappedCentreError

        self.delayDisplay("Propagation from an atlas in the scene recovers the known shift")
        target, atlas, segmentation = self.makeVolumes()
        nodes = FewShotSegmentLogic().propagate(target, atlasVolume=atlas, atlasSegmentation=segmentation,
                                                method="affine", preset="fast", device="cpu")
        error = mappedCentreError(nodes["transform"], target, atlas, self.SHIFT)
        self.assertLess(error, 1.0, f"the transform maps the target centre {error:.2f} mm from the atlas one")
        result = nodes["segmentation"]
        names = sorted(segmentation.GetSegmentation().GetNthSegment(i).GetName()
                       for i in range(segmentation.GetSegmentation().GetNumberOfSegments()))
        resultNames = sorted(result.GetSegmentation().GetNthSegment(i).GetName()
                             for i in range(result.GetSegmentation().GetNumberOfSegments()))
        self.assertEqual(resultNames, names)
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

    def test_CohortLearning(self):
        import os
        import shutil
        import tempfile

        from BiJROSLib.selftest import makePhantomPair

        self.delayDisplay("Cohort learning trains a one-shot model from the atlas and two scans, then segments")
        target, atlas, segmentation = self.makeVolumes()
        unused, scan, unusedSegmentation = makePhantomPair((-1, 1, 0), "unused", "scan 2")
        for node in (unused, unusedSegmentation):
            slicer.mrmlScene.RemoveNode(node)
        folder = tempfile.mkdtemp(prefix="bijros-selftest-")  # the trained model goes here, not among the user's
        previous = os.environ.get("BIJROS_CONFIG_DIR")
        os.environ["BIJROS_CONFIG_DIR"] = folder
        try:
            logic = FewShotSegmentLogic()
            job = logic.startCohortTraining(atlas, segmentation, cohortVolumes=[target, scan], modelName="self test",
                                            iterations=2, device="cpu")
            job.wait()
            result = logic.finishJob(job)
            self.assertEqual(result["report"]["training"]["steps"], 2)
            self.assertEqual([m["name"] for m in logic.oneShotModels()], ["self-test"])
            nodes = logic.segmentWithModel(target, "self-test", device="cpu")
            names = sorted(segmentation.GetSegmentation().GetNthSegment(i).GetName()
                           for i in range(segmentation.GetSegmentation().GetNumberOfSegments()))
            made = nodes["segmentation"].GetSegmentation()
            self.assertEqual(sorted(made.GetNthSegment(i).GetName() for i in range(made.GetNumberOfSegments())), names)
        finally:
            if previous is None:
                os.environ.pop("BIJROS_CONFIG_DIR", None)
            else:
                os.environ["BIJROS_CONFIG_DIR"] = previous
            shutil.rmtree(folder, ignore_errors=True)
        self.delayDisplay("Cohort learning passed")

    def test_FewShotFromPaintedSlices(self):
        import numpy as np

        from BiJROSLib.selftest import phantomArrays
        from BiJROSLib.volumes import segmentationToLabelImage

        self.delayDisplay("A structure painted on 3 slices fills the remaining ones as a new segment")
        image, labels = phantomArrays((0, 0, 0))
        outer = (labels > 0).astype(np.uint8)
        rows = np.nonzero(outer.any(axis=(1, 2)))[0]
        picks = [int(rows.min() + f * (rows.max() - rows.min())) for f in (1 / 6, 1 / 2, 5 / 6)]
        painted = np.zeros_like(outer)
        painted[picks] = outer[picks]
        volume = slicer.util.addVolumeFromArray(image, nodeClassName="vtkMRMLScalarVolumeNode", name="painted volume")
        labelNode = slicer.util.addVolumeFromArray(painted, nodeClassName="vtkMRMLLabelMapVolumeNode", name="painted")
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "painted segmentation")
        slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelNode, segmentation)
        slicer.mrmlScene.RemoveNode(labelNode)
        segmentId = segmentation.GetSegmentation().GetNthSegmentID(0)
        nodes = FewShotSegmentLogic().segmentRemainingSlices(volume, segmentation, segmentId, device="cpu")
        seg = segmentation.GetSegmentation()
        self.assertEqual(seg.GetNumberOfSegments(), 2)
        filled = segmentationToLabelImage(segmentation, volume, slicer.mrmlScene,
                                          segmentIds=[nodes["segmentId"]]).array.T > 0  # (i, j, k) -> (k, j, i)
        for k in picks:  # the painted slices kept exactly
            self.assertTrue(np.array_equal(filled[k], outer[k] > 0))
        rest = np.ones(outer.shape, bool)
        rest[picks] = False
        dice = 2 * (filled & (outer > 0) & rest).sum() / ((filled & rest).sum() + ((outer > 0) & rest).sum())
        self.assertGreater(dice, 0.7, f"the slices not painted: Dice {dice:.2f} with the phantom")
        self.delayDisplay("Few-shot from painted slices passed")
