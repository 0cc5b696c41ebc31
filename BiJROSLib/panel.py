"""What the two module panels share: scene and parameter-node plumbing, job polling and cancel,
the QC line, and installing missing packages in a child process before a run.

No Qt at import time (vtk only); ``slicer`` is imported where it is used (inside Slicer, or the test stand-in).
"""

from __future__ import annotations

import importlib
import logging
import time

import vtk

from . import bindings, dependencies

FINISHED_STATES = ("done", "failed", "cancelled")


def qcSummary(report: dict, wallSeconds: float | None = None) -> str:
    """One line for people: time, device, folding share and SDlogJ, from the engine's report."""
    seconds = report.get("seconds", {}).get("total", wallSeconds or 0.0)
    qc = report.get("qc", {})
    parts = [f"{seconds:.1f} s on {report.get('device', '?')}"]
    if "folding_fraction" in qc:
        parts.append(f"folding {100 * qc['folding_fraction']:.3f} % of voxels")
    if "sdlogj" in qc:
        parts.append(f"SDlogJ {qc['sdlogj']:.3f}")
    return "QC: " + ", ".join(parts)


def createdNodeNames(nodes: dict) -> list[str]:
    """Names of the nodes a finished job created (``finishJob``'s dict), each once, in order."""
    return list(dict.fromkeys(node.GetName() for key, node in nodes.items()
                              if key not in ("report", "warnings", "ranking", "library", "model", "segmentId", "modifiedSegmentation")
                              and node is not None))


class JobPanelMixin:
    """The plumbing both module panels share: scene and parameter-node observation (as in
    Slicer's scripted-module template), and polling a running job (the engine, or pip installing
    what it needs) into the progress bar, status line and log, with cancel.

    The widget provides ``self.ui`` (``progressBar``, ``statusLabel``, ``logTextEdit``),
    ``self.pollTimer`` (a ``qt.QTimer`` calling :meth:`onPollJob`), ``self.logic``,
    ``self._parameterNode``, ``self._job`` and ``self._lastMessage``, plus ``runButton()``
    (its Apply / Propagate button), ``updateRunButton()``, ``updateGUIFromParameterNode()``
    and ``_onJobFinished(job)``; it is mixed into a ScriptedLoadableModuleWidget that also
    uses VTKObservationMixin.
    """

    #: the panel's sections (objects with ``bindings()`` and optional ``setup(widget)`` / ``refresh(widget)``)
    sections = ()
    #: the run button's text and tooltip when idle, and the verb for messages ("registration", "propagation")
    runText, runTip, runWhat = "Apply", "", "run"

    #: the module's run section: requiredPackages(widget) -> dependency groups (BiJROSLib.dependencies),
    #: startJob(widget) -> (job, description), showResults(widget, nodes); the widget gives runButton()
    runSection = None

    def allBindings(self):
        return [b for section in self.sections for b in section.bindings()]

    def setupSections(self):
        """Fill each section's widgets and connect every bound widget to the parameter node."""
        for section in self.sections:
            if hasattr(section, "setup"):
                section.setup(self)
        bindings.connect(self.ui, self.allBindings(), self.updateParameterNodeFromGUI)

    def updateGUIFromParameterNode(self, caller=None, event=None):
        if self._parameterNode is None or getattr(self, "_updatingGUIFromParameterNode", False):
            return
        self._updatingGUIFromParameterNode = True
        try:
            bindings.updateWidgets(self.ui, self._parameterNode, self.allBindings())
            for section in self.sections:
                if hasattr(section, "refresh"):
                    section.refresh(self)
            self.updateRunButton()
        finally:
            self._updatingGUIFromParameterNode = False

    def updateParameterNodeFromGUI(self, caller=None, event=None):
        if self._parameterNode is None or getattr(self, "_updatingGUIFromParameterNode", False):
            return
        bindings.updateParameters(self.ui, self._parameterNode, self.allBindings())

    def cleanup(self):
        for section in self.sections:
            if hasattr(section, "cleanup"):
                section.cleanup(self)
        self.pollTimer.stop()
        if self._job is not None and self._job.running:
            self._job.cancel()
        self._job = None
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event):
        if self._job is not None and self._job.running:
            self._job.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if getattr(self.parent, "isEntered", True):  # qSlicerScriptedLoadableModuleWidget.isEntered
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode):
        if inputParameterNode is not None:
            self.logic.setDefaultParameters(inputParameterNode)
        if self._parameterNode is not None and self.hasObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode):
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode is not None:
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    # ------------------------------------------------------------------ dependencies

    def ensureDependencies(self, packages=None, then=None) -> bool:
        """True when ``packages`` (default: what registration needs) are there. Otherwise asks once,
        starts pip in a child process (progress in the panel, Cancel stops it) and returns False;
        ``then()`` runs when the install succeeded. A problem is shown and False returned."""
        import slicer

        from .jobs import startInstall

        try:
            pipArguments = dependencies.prepareInstall(packages, askConfirmation=True)
        except Exception as exc:
            slicer.util.errorDisplay(f"BiJROS cannot run yet:\n\n{exc}", windowTitle="BiJROS: missing Python packages")
            return False
        if pipArguments is None:
            self.ui.statusLabel.text = "The packages BiJROS needs were not installed."
            return False
        if not pipArguments:
            importlib.invalidate_caches()
            still = dependencies.missingDependencyMessages(packages)
            if still:
                slicer.util.errorDisplay("BiJROS cannot run yet:\n\n" + "\n".join(still), windowTitle="BiJROS")
                return False
            return True
        self._job = startInstall(pipArguments, then)
        self._lastMessage = ""
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = "Installing the Python packages BiJROS needs..."
        self.ui.logTextEdit.appendPlainText("pip " + " ".join(pipArguments))
        self.updateRunButton()
        self.pollTimer.start()
        return False

    def _onInstallFinished(self, job):
        import slicer

        job.cleanup()
        if job.state == "cancelled":
            self.ui.statusLabel.text = "Installation cancelled. Nothing was run."
            return
        if job.state != "done":
            self.ui.statusLabel.text = "Installation failed."
            for line in job.log[-20:]:
                self.ui.logTextEdit.appendPlainText(line)
            slicer.util.errorDisplay(f"Installing the Python packages failed:\n\n{job.error}", windowTitle="BiJROS")
            return
        importlib.invalidate_caches()
        self.ui.statusLabel.text = "Packages installed."
        self.ui.logTextEdit.appendPlainText("Packages installed.")
        if job.then is not None:
            job.then()

    # ------------------------------------------------------------------ running

    def onRunButton(self, _checked=False):
        """The run button: Cancel while a job runs; else install what is missing (then come back), then start."""
        if self._job is not None:
            self.onCancel()
            return
        for packages in self.runSection.requiredPackages(self):
            if not self.ensureDependencies(packages, then=self.onRunButton):
                return
        import slicer

        try:
            job, description = self.runSection.startJob(self)
        except ValueError as exc:
            slicer.util.errorDisplay(str(exc), windowTitle=f"BiJROS: cannot start the {self.runWhat}")
            return
        except Exception as exc:  # anything unexpected: a message, the details in the log
            logging.exception("BiJROS could not start")
            slicer.util.errorDisplay(f"BiJROS could not start the {self.runWhat}:\n\n{exc}", windowTitle="BiJROS")
            return
        self.trackJob(job, description)

    def trackJob(self, job, description: str) -> None:
        """Show a started engine job in the panel (progress, log, Cancel) until it ends."""
        self._job = job
        self._startTime = time.time()
        self._lastMessage = ""
        self.ui.qcLabel.text = ""
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = "Starting the BiJROS engine..."
        self.ui.logTextEdit.appendPlainText(description)
        for warning in job.request.warnings:
            self.ui.logTextEdit.appendPlainText("Warning: " + warning)
        self.updateRunButton()
        self.pollTimer.start()

    def updateRunButton(self):
        button = self.runButton()
        if self._job is not None:
            button.text = "Cancel"
            button.enabled = self._job.state == "running"
            button.toolTip = "Stop. Nothing is added to the scene."
            return
        reason = self.logic.inputProblem(self._parameterNode)
        button.text = self.runText
        button.enabled = not reason
        button.toolTip = reason or self.runTip

    def _onJobFinished(self, job):
        import slicer

        ui = self.ui
        if job.state == "cancelled":
            ui.progressBar.value = 0
            ui.statusLabel.text = "Cancelled. The scene is unchanged."
            ui.logTextEdit.appendPlainText("Cancelled; nothing was added to the scene.")
            return
        if job.state == "failed":
            ui.statusLabel.text = "Failed. The scene is unchanged."
            for line in job.log[-20:]:
                ui.logTextEdit.appendPlainText(line)
            slicer.util.errorDisplay(f"The {self.runWhat} failed:\n\n{job.error}", windowTitle="BiJROS")
            return
        try:
            nodes = self.logic.finishJob(job)
        except Exception as exc:
            logging.exception("BiJROS could not import its results")
            ui.statusLabel.text = "Failed. The scene is unchanged."
            slicer.util.errorDisplay(str(exc), windowTitle="BiJROS")
            return
        ui.progressBar.value = 100
        created = createdNodeNames(nodes)
        if created:
            ui.logTextEdit.appendPlainText("Created: " + ", ".join(created))
        ui.qcLabel.text = qcSummary(nodes["report"], time.time() - self._startTime)
        ui.logTextEdit.appendPlainText(ui.qcLabel.text)
        self.runSection.showResults(self, nodes)

    def onCancel(self):
        import slicer

        job = self._job
        if job is None or job.state != "running":
            return
        self.ui.statusLabel.text = "Cancelling..."
        self.runButton().enabled = False
        slicer.app.processEvents()
        job.cancel()
        self.onPollJob()

    def onPollJob(self):
        job = self._job
        if job is None:
            self.pollTimer.stop()
            return
        for event in job.poll():
            message = str(event.get("message") or "")
            if event.get("stage") == "result" or not message or message == self._lastMessage:
                continue
            self._lastMessage = message
            fraction = event.get("fraction")
            prefix = f"{100 * fraction:5.1f} %  " if isinstance(fraction, (int, float)) else ""
            self.ui.logTextEdit.appendPlainText(prefix + message)
        self.ui.progressBar.value = round(100 * job.fraction)
        for section in self.sections:  # e.g. a training's loss plot
            if hasattr(section, "onPoll"):
                section.onPoll(self, job)
        if job.message:
            eta = getattr(job.runner, "etaSeconds", None) if job.state == "running" else None
            self.ui.statusLabel.text = job.message + (f" (about {eta:.0f} s left)" if isinstance(eta, (int, float))
                                                      and eta >= 1 else "")
        if job.state in FINISHED_STATES:
            self.pollTimer.stop()
            self._job = None
            if getattr(job, "kind", "") == "install":
                self._onInstallFinished(job)
            else:
                self._onJobFinished(job)
            self.updateRunButton()
