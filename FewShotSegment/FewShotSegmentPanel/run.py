"""Run: what Propagate starts (the propagation, after the packages it needs: a library atlas also needs
the package that ships its files) and how its results are shown. The button, progress, Cancel and the
job's end are the shared ``BiJROSLib.panel.JobPanelMixin``."""

from __future__ import annotations

from BiJROSLib import dependencies


def requiredPackages(widget) -> list:
    groups = [dependencies.REQUIRED_PACKAGES]
    if widget._parameterNode.GetParameter("AtlasSource") != "scene":
        groups.append(dependencies.ATLAS_PACKAGES)
    return groups


def startJob(widget):
    kwargs = widget.logic.runArguments(widget._parameterNode)
    job = widget.logic.startPropagation(**kwargs)
    atlas = kwargs["atlasVolume"].GetName() if kwargs["atlasVolume"] is not None else kwargs["atlasName"]
    description = (f"Propagating atlas '{atlas or 'library default'}' to '{kwargs['targetVolume'].GetName()}' "
                   f"(method {kwargs['method']}, preset {kwargs['preset']}, device {kwargs['device']})")
    return job, description


def showResults(widget, nodes) -> None:
    import slicer

    segmentation = nodes["segmentation"]
    segments = segmentation.GetSegmentation().GetNumberOfSegments()
    widget.ui.statusLabel.text = f"Done. '{segmentation.GetName()}' has {segments} segments."
    slicer.util.setSliceViewerLayers(background=widget._parameterNode.GetNodeReference("TargetVolume"))
