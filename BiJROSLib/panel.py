"""What the two module panels share: scene and parameter-node plumbing, job polling and cancel,
the QC line, the dependency check.

No Qt at import time (vtk only); ``slicer`` is imported where it is used (inside Slicer, or the test stand-in).
"""

from __future__ import annotations

import vtk

from BiJROSLib import dependencies

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


def dependenciesReady() -> bool:
    """True when the engine's packages are there (inside Slicer: offers to install them)."""
    import slicer

    messages = dependencies.missingDependencyMessages()
    if not messages:
        return True
    try:
        if dependencies.installMissingDependencies(askConfirmation=True):
            return True
        problem = "The packages were not installed."
    except Exception as exc:
        problem = str(exc)
    slicer.util.errorDisplay("BiJROS cannot run yet:\n\n" + "\n".join(messages) + "\n\n" + problem,
                             windowTitle="BiJROS: missing Python packages")
    return False


class JobPanelMixin:
    """The plumbing both module panels share: scene and parameter-node observation (as in
    Slicer's scripted-module template), and polling a running engine job into the progress
    bar, status line and log, with cancel.

    The widget provides ``self.ui`` (``progressBar``, ``statusLabel``, ``logTextEdit``),
    ``self.pollTimer`` (a ``qt.QTimer`` calling :meth:`onPollJob`), ``self.logic``,
    ``self._parameterNode``, ``self._job`` and ``self._lastMessage``, plus ``runButton()``
    (its Apply / Propagate button), ``updateRunButton()``, ``updateGUIFromParameterNode()``
    and ``_onJobFinished(job)``; it is mixed into a ScriptedLoadableModuleWidget that also
    uses VTKObservationMixin.
    """

    def cleanup(self):
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
        if job.message:
            self.ui.statusLabel.text = job.message
        if job.state in FINISHED_STATES:
            self.pollTimer.stop()
            self._job = None
            self._onJobFinished(job)
            self.updateRunButton()
