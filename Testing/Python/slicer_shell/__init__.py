"""A small test stand-in for the parts of 3D Slicer's Qt shell that the BiJROS modules use.

Slicer runs scripted modules inside its application: PythonQt's ``qt`` and ``ctk`` modules,
the qMRML widgets, ``slicer.util.loadUI``, the ScriptedLoadableModule base classes and
``slicer.app``. None of that is pip-installable, so the GUI tests use this package:

- the real ``slicer`` package from the slicer-core wheel (real vtkMRMLScene, nodes, storage,
  logics and Slicer's own ``slicer/util.py``: ``loadUI``, ``childWidgetVariables``,
  ``errorDisplay``, ``VTKObservationMixin``, ``arrayFromVolume`` ... are used unchanged);
- plus, added by :func:`install`: ``qt`` and ``ctk`` modules backed by PySide6,
  ``slicer.qMRMLWidget`` / ``slicer.qMRMLNodeComboBox`` / ``slicer.qMRMLCheckableNodeComboBox``, ``slicer.ScriptedLoadableModule``,
  ``slicer.app`` (testing mode, so message boxes are logged and not shown), ``slicer.mrmlScene``
  (a real scene with Slicer's default colour tables) and ``slicer.modules``.

Rule: only APIs that exist in Slicer, with the same names and semantics. Where PythonQt and
PySide6 differ, module code must use the forms that work in both (``setText(...)``,
``isChecked()``, ``connect("clicked(bool)", slot)``, signal arguments instead of property
reads such as ``.value`` / ``.text``).

Usage (tests)::

    import slicer_shell
    slicer_shell.install()
    module, widget = slicer_shell.loadScriptedModule("BiJROSRegistration/BiJROSRegistration.py")

Test stand-in only: nothing here is shipped with the extension.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
import types

__all__ = ["MessageRecorder", "install", "loadScriptedModule", "newScene", "uninstall"]

_MISSING = object()
_saved: dict | None = None  # what install() replaced, for uninstall()


class _Application:
    """``slicer.app`` (qSlicerApplication), only the members used here; testing mode is on."""

    applicationName = "Slicer"

    def __init__(self, qapplication):
        self._qapp = qapplication
        self.temporaryPath = tempfile.mkdtemp(prefix="slicer_shell_")
        self.slicerHome = self.temporaryPath
        # Slicer's launcher puts <Slicer>/bin, holding PythonSlicer (Slicer's own Python), on PATH.
        self._binDir = os.path.join(self.temporaryPath, "bin")
        os.makedirs(self._binDir)
        if os.name != "nt":
            writePythonSlicer(os.path.join(self._binDir, "PythonSlicer"))
            os.environ["PATH"] = self._binDir + os.pathsep + os.environ.get("PATH", "")

    def applicationDirPath(self) -> str:
        """QCoreApplication::applicationDirPath() (a method in PythonQt too): the folder with PythonSlicer."""
        return self._binDir

    def processEvents(self, *args):
        self._qapp.processEvents(*args)

    def testingEnabled(self) -> bool:
        return True

    def commandOptions(self):
        return types.SimpleNamespace(noMainWindow=True, testingEnabled=True)

    def topLevelWidgets(self):
        return self._qapp.topLevelWidgets()

    def layoutManager(self):
        return None

    def pauseRender(self):
        pass

    def resumeRender(self):
        pass


def writePythonSlicer(path):
    """A ``PythonSlicer`` stand-in: this Python with only what Slicer's own Python would have.

    Slicer's PythonSlicer sees its site-packages (numpy, torch, ... as pip installed them there) and
    the PYTHONPATH it is given (for BiJROS: the folder the extension is installed in). The test
    venv's site-packages are given the same way, but with ``-S`` its ``.pth`` files are not run, so the
    editable install of ``bijros`` (a .pth import hook) is invisible: the child imports the engine only
    from the folder on PYTHONPATH, as it would in Slicer.
    """
    import sysconfig

    sitePackages = os.pathsep.join(dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib")))
    with open(path, "w") as handle:
        handle.write("#!/bin/sh\n"
                     f'PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH{os.pathsep}}}{sitePackages}" exec "{sys.executable}" -S "$@"\n')
    os.chmod(path, 0o755)
    return path


def newScene():
    """A real vtkMRMLScene set up as Slicer's startup does (colour tables, segmentations logic)."""
    import slicer

    scene = slicer.vtkMRMLScene()
    applicationLogic = slicer.vtkSlicerApplicationLogic()
    applicationLogic.SetMRMLScene(scene)
    colorLogic = slicer.vtkSlicerColorLogic()
    colorLogic.SetMRMLApplicationLogic(applicationLogic)
    colorLogic.SetMRMLScene(scene)
    segmentationsLogic = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentationsLogic.SetMRMLScene(scene)
    scene.GetSubjectHierarchyNode()
    # the three slice views' composite nodes, as Slicer's layout manager creates them (singletons)
    for layoutName in ("Red", "Yellow", "Green"):
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(layoutName)
        composite.SetSingletonTag(layoutName)
        scene.AddNode(composite)
    # keep the logics alive as long as the scene (Slicer's application owns them)
    scene._slicer_shell_logics = (applicationLogic, colorLogic, segmentationsLogic)
    return scene


def install(scene=None):
    """Create the QApplication (offscreen unless QT_QPA_PLATFORM says otherwise) and add the
    stand-in modules to ``sys.modules`` and the ``slicer`` package. Idempotent; returns ``slicer``."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import slicer
    from PySide6.QtWidgets import QApplication

    from . import ctk, mrml_widgets, qt

    global _saved
    if _saved is None:
        _saved = {"attributes": {name: getattr(slicer, name, _MISSING) for name in _SLICER_ATTRIBUTES},
                  "modules": {name: sys.modules.get(name, _MISSING) for name in _SYS_MODULES},
                  "PATH": os.environ.get("PATH", "")}
    qapplication = QApplication.instance() or QApplication(["slicer_shell"])
    sys.modules["qt"] = qt
    sys.modules["ctk"] = ctk
    if not isinstance(getattr(slicer, "app", None), _Application):
        slicer.app = _Application(qapplication)
    slicer.qMRMLWidget = mrml_widgets.qMRMLWidget
    slicer.qMRMLNodeComboBox = mrml_widgets.qMRMLNodeComboBox
    slicer.qMRMLCheckableNodeComboBox = mrml_widgets.qMRMLCheckableNodeComboBox
    from . import ScriptedLoadableModule

    sys.modules["slicer.ScriptedLoadableModule"] = ScriptedLoadableModule
    slicer.ScriptedLoadableModule = ScriptedLoadableModule
    if not hasattr(slicer, "modules"):
        slicer.modules = types.SimpleNamespace()
    if scene is not None or getattr(slicer, "mrmlScene", None) is None:
        slicer.mrmlScene = scene if scene is not None else newScene()
    return slicer


_SLICER_ATTRIBUTES = ("app", "qMRMLWidget", "qMRMLNodeComboBox", "qMRMLCheckableNodeComboBox", "ScriptedLoadableModule", "modules", "mrmlScene",
                      "selfTests")
_SYS_MODULES = ("qt", "ctk", "slicer.ScriptedLoadableModule")


def uninstall():
    """Undo :func:`install` (``slicer`` back to plain slicer-core), so later tests in the same
    process do not see a Slicer application. The QApplication stays (Qt allows only one)."""
    global _saved
    if _saved is None:
        return
    import slicer

    for name, value in _saved["attributes"].items():
        if value is _MISSING:
            if hasattr(slicer, name):
                delattr(slicer, name)
        else:
            setattr(slicer, name, value)
    for name, value in _saved["modules"].items():
        if value is _MISSING:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = value
    os.environ["PATH"] = _saved["PATH"]
    _saved = None


def loadScriptedModule(path):
    """Load a scripted module file as Slicer's module manager does and build its panel.

    Imports the file (its folder on ``sys.path``, so its Lib package imports), creates the
    module object with a ``parent`` holding ``path``/``title``/..., and the widget on a
    ``qMRMLWidget`` with a vertical layout, then ``setup()`` and ``enter()``.
    Returns ``(moduleObject, widgetObject)``; the panel is ``widgetObject.parent``.
    """
    import slicer

    path = os.path.abspath(os.fspath(path))
    moduleDir = os.path.dirname(path)
    moduleName = os.path.splitext(os.path.basename(path))[0]
    if moduleDir not in sys.path:
        sys.path.insert(0, moduleDir)
    spec = importlib.util.spec_from_file_location(moduleName, path)
    pyModule = importlib.util.module_from_spec(spec)
    sys.modules[moduleName] = pyModule
    spec.loader.exec_module(pyModule)

    parent = types.SimpleNamespace(path=path, name=moduleName)
    moduleObject = getattr(pyModule, moduleName)(parent)
    panel = slicer.qMRMLWidget()
    panel.setObjectName(moduleName + "Panel")
    panel.setLayout(sys.modules["qt"].QVBoxLayout())
    panel.setMRMLScene(slicer.mrmlScene)
    widgetObject = getattr(pyModule, moduleName + "Widget")(panel)
    widgetObject.setup()
    if hasattr(widgetObject, "enter"):
        widgetObject.enter()
    setattr(slicer.modules, moduleName.lower(), types.SimpleNamespace(
        name=moduleName, path=path, widgetRepresentation=lambda: panel, module=moduleObject, widget=widgetObject))
    return moduleObject, widgetObject


class MessageRecorder(logging.Handler):
    """Collects what ``slicer.util.errorDisplay`` / ``infoDisplay`` ... log in testing mode."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def messages(self, level=logging.ERROR) -> list[str]:
        return [record.getMessage() for record in self.records if record.levelno == level]

    def __enter__(self):
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger().removeHandler(self)
