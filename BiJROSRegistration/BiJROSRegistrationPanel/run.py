"""Run: what Apply starts (the registration, after the packages it needs) and how its results are shown.
The button, progress, Cancel and the job's end are the shared ``BiJROSLib.panel.JobPanelMixin``."""

from __future__ import annotations

from BiJROSLib import dependencies
from BiJROSLib.options import usesTextFilters
from BiJROSLib.panel import createdNodeNames
from BiJROSLib.views import resultForeground, showInSliceViews


def requiredPackages(widget) -> list:
    args = widget.logic.runArguments(widget._parameterNode)
    textMethod = usesTextFilters(args["method"])
    return [dependencies.REQUIRED_PACKAGES, *([dependencies.TEXT_PACKAGES] if args["prompt"] or textMethod else [])]


def startJob(widget):
    kwargs = widget.logic.runArguments(widget._parameterNode)
    job = widget.logic.startRegistration(**kwargs)
    description = (f"Registering '{kwargs['movingVolume'].GetName()}' to '{kwargs['fixedVolume'].GetName()}' "
                   f"(method {kwargs['method']}, preset {kwargs['preset']}, device {kwargs['device']})")
    return job, description


def showResults(widget, nodes) -> None:
    widget.ui.statusLabel.text = "Done. Created: " + ", ".join(createdNodeNames(nodes)) + "."
    showInSliceViews(widget._parameterNode.GetNodeReference("FixedVolume"), segmentation=nodes.get("segmentation"),
                     foreground=resultForeground(nodes))
