"""Test stand-in for Slicer's ``slicer.ScriptedLoadableModule`` (Base/Python/slicer/ScriptedLoadableModule.py).

Same classes and semantics, minus what needs the Slicer application (module manager,
developer "Reload and Test" section, screenshots into annotation nodes):

- ``ScriptedLoadableModule(parent)``: fills ``parent`` (title, categories, ...), registers
  ``slicer.selfTests[moduleName] = self.runTest``; ``runTest`` runs ``<ModuleName>Test``.
- ``ScriptedLoadableModuleWidget(parent)``: ``.parent``, ``.layout``, ``.moduleName``,
  ``resourcePath(filename)`` (the module's Resources folder), ``setup()``, ``cleanup()``.
- ``ScriptedLoadableModuleLogic``: ``getParameterNode()`` returns the scene's singleton
  vtkMRMLScriptedModuleNode tagged with the module name (created on first use, attribute
  ``ModuleName``), ``getAllParameterNodes()``, ``createParameterNode()``.
- ``ScriptedLoadableModuleTest``: unittest.TestCase with ``delayDisplay``.

Test stand-in only: nothing here is shipped with the extension.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import unittest

import slicer

from . import qt

__all__ = [
    "ScriptedLoadableModule",
    "ScriptedLoadableModuleLogic",
    "ScriptedLoadableModuleTest",
    "ScriptedLoadableModuleWidget",
]


class ScriptedLoadableModule:
    def __init__(self, parent):
        super().__init__()
        self.parent = parent
        self.moduleName = self.__class__.__name__
        parent.title = ""
        parent.categories = []
        parent.dependencies = []
        parent.contributors = []
        parent.helpText = ""
        parent.acknowledgementText = ""
        moduleDir = os.path.dirname(self.parent.path)
        for iconExtension in (".svg", ".png"):
            iconPath = os.path.join(moduleDir, "Resources/Icons", self.moduleName + iconExtension)
            if os.path.isfile(iconPath):
                parent.icon = qt.QIcon(iconPath)
                break
        if not hasattr(slicer, "selfTests"):
            slicer.selfTests = {}
        slicer.selfTests[self.moduleName] = self.runTest

    def resourcePath(self, filename):
        return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)

    def runTest(self, msec=100, **kwargs):
        module = importlib.import_module(self.__module__)
        className = self.moduleName + "Test"
        try:
            TestCaseClass = getattr(module, className)
        except AttributeError:
            raise AssertionError(f"Test case class not found: {self.__module__}.{className} ") from None
        testCase = TestCaseClass()
        testCase.messageDelay = msec
        testCase.runTest(**kwargs)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        super().__init__()
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Widget"):
            self.moduleName = self.moduleName[:-6]
        self.developerMode = False
        if not parent:
            self.parent = slicer.qMRMLWidget()
            self.parent.setLayout(qt.QVBoxLayout())
            self.parent.setMRMLScene(slicer.mrmlScene)
        else:
            self.parent = parent
        self.layout = self.parent.layout()
        if not parent:
            self.setup()
            self.parent.show()

    def resourcePath(self, filename):
        """The module's ``Resources/<filename>`` (Slicer: next to ``slicer.util.modulePath(moduleName)``)."""
        moduleFile = sys.modules[self.__class__.__module__].__file__
        return os.path.join(os.path.dirname(moduleFile), "Resources", filename)

    def cleanup(self):
        pass

    def setupDeveloperSection(self):
        """Slicer adds "Reload and Test" buttons here in developer mode; the stand-in has none."""

    def setup(self):
        self.setupDeveloperSection()


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        super().__init__()
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Logic"):
            self.moduleName = self.moduleName[:-5]
        self.isSingletonParameterNode = True

    def getParameterNode(self):
        if self.isSingletonParameterNode:
            parameterNode = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if parameterNode:
                if parameterNode.GetAttribute("ModuleName") != self.moduleName:
                    parameterNode.SetAttribute("ModuleName", self.moduleName)
                return parameterNode
        else:
            for parameterNode in self.getAllParameterNodes():
                return parameterNode
        return slicer.mrmlScene.AddNode(self.createParameterNode())

    def getAllParameterNodes(self):
        found = []
        for nodeIndex in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
            parameterNode = slicer.mrmlScene.GetNthNodeByClass(nodeIndex, "vtkMRMLScriptedModuleNode")
            if parameterNode.GetAttribute("ModuleName") == self.moduleName:
                found.append(parameterNode)
        return found

    def createParameterNode(self):
        if slicer.mrmlScene is None:
            return None
        node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        if self.isSingletonParameterNode:
            node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.enableScreenshots = False
        self.screenshotScaleFactor = 1.0

    def delayDisplay(self, message, requestedDelay=None, msec=None):
        logging.info(message)
        slicer.app.processEvents()

    def takeScreenshot(self, name, description, type=-1):
        self.delayDisplay(description)

    def runTest(self):
        logging.warning("No test is defined in " + self.__class__.__name__)
