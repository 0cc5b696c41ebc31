"""Helpers for the GUI tests: load files into the real scene as Slicer does, spin the event loop.

Test stand-in only: nothing here is shipped with the extension.
"""

from __future__ import annotations

import os
import time

import slicer


def loadVolume(path, name=None, labelmap=False, scene=None):
    """A volume node read by Slicer's own vtkMRMLVolumeArchetypeStorageNode (what Add Data does)."""
    scene = scene or slicer.mrmlScene
    name = name or os.path.basename(os.fspath(path)).split(".")[0]
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(os.fspath(path))
    if labelmap:
        storage.SetCenterImage(False)
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(node):
        raise RuntimeError(f"could not read {path}")
    node.CreateDefaultDisplayNodes()
    return node


def loadSegmentation(labelmapPath, name, scene=None):
    """A segmentation node made from a label map file (Segmentations module: import labelmap)."""
    scene = scene or slicer.mrmlScene
    labels = loadVolume(labelmapPath, name + " labels", labelmap=True, scene=scene)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labels, segmentation):
        raise RuntimeError(f"could not import {labelmapPath} as a segmentation")
    scene.RemoveNode(labels.GetStorageNode())
    scene.RemoveNode(labels)
    return segmentation


def segmentNames(segmentationNode):
    segmentation = segmentationNode.GetSegmentation()
    return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]


def processEventsUntil(predicate, timeout=120.0, interval=0.02):
    """Run the Qt event loop (timers fire, as in Slicer) until ``predicate()`` or ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        slicer.app.processEvents()
        if predicate():
            return True
        time.sleep(interval)
    slicer.app.processEvents()
    return predicate()


def saveScreenshot(widget, fileName, size=(450, 800)):
    """Grab ``widget`` at ``size`` into $BIJROS_SCREENSHOT_DIR (or the temp folder); returns the path."""
    folder = os.environ.get("BIJROS_SCREENSHOT_DIR") or slicer.app.temporaryPath
    os.makedirs(folder, exist_ok=True)
    widget.resize(*size)
    widget.show()
    slicer.app.processEvents()
    path = os.path.join(folder, fileName)
    if not widget.grab().save(path):
        raise RuntimeError(f"could not save {path}")
    return path


def openPanel(modulePath):
    """Generator for a module-scoped pytest fixture: install the stand-in, load the scripted module
    as Slicer does and yield ``(slicer, module, widget)``; tear both down afterwards."""
    import slicer_shell

    shell = slicer_shell.install()
    module, widget = slicer_shell.loadScriptedModule(modulePath)
    yield shell, module, widget
    widget.cleanup()
    slicer_shell.uninstall()


def clearedScene(panel):
    """The panel's widget after emptying the scene (per-test isolation within one loaded panel)."""
    shell, _module, widget = panel
    shell.mrmlScene.Clear()
    shell.app.processEvents()
    return widget
