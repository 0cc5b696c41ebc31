"""Run: what Propagate starts (single-atlas propagation, or ranking + registration + fusion of several
atlases of a library, after the packages they need: a built-in atlas also needs the package that ships
its files) and how the results are shown. The button, progress, Cancel and the job's end are the shared
``BiJROSLib.panel.JobPanelMixin``; "Rank for this target" runs through the same job machinery."""

from __future__ import annotations

from BiJROSLib import dependencies
from BiJROSLib.views import resultForeground, showInSliceViews

from . import cohort, slices
from .selection import storeLibrary, storeRanking


def requiredPackages(widget) -> list:
    groups = [dependencies.REQUIRED_PACKAGES]
    if (widget._parameterNode.GetParameter("AtlasSource") or "library") == "library":
        groups.append(dependencies.ATLAS_PACKAGES)
    return groups


def startJob(widget):
    node = widget._parameterNode
    if node.GetParameter("AtlasSource") == "multi":
        kwargs = widget.logic.libraryRunArguments(node)
        job = widget.logic.startLibraryPropagation(**kwargs)
        count = "the best atlases (all, up to 30)" if not kwargs["topK"] else f"the best {kwargs['topK']} atlases"
        return job, (f"Propagating {count} of '{kwargs['atlasLibrary']}' to '{kwargs['targetVolume'].GetName()}' "
                     f"(ranked, then fused by {kwargs['fusion']}; method {kwargs['method']}, device {kwargs['device']})")
    kwargs = widget.logic.runArguments(node)
    job = widget.logic.startPropagation(**kwargs)
    atlas = kwargs["atlasVolume"].GetName() if kwargs["atlasVolume"] is not None else kwargs["atlasName"]
    description = (f"Propagating atlas '{atlas or 'library default'}' to '{kwargs['targetVolume'].GetName()}' "
                   f"(method {kwargs['method']}, preset {kwargs['preset']}, device {kwargs['device']})")
    return job, description


def showResults(widget, nodes) -> None:
    if cohort.showResults(widget, nodes):  # a trained one-shot model
        return
    if slices.showResults(widget, nodes):  # a few-shot result
        return
    if nodes.get("library") is not None:  # the library's contents
        storeLibrary(widget, nodes["library"])
        atlases, skipped = nodes["library"]["atlases"], nodes["library"]["skipped"]
        widget.ui.statusLabel.text = (f"The library holds {len(atlases)} atlases"
                                      + (f"; skipped {len(skipped)}: {'; '.join(skipped)[:300]}" if skipped else "")
                                      + ".")
        return
    if nodes.get("ranking") is not None:
        storeRanking(widget, nodes["ranking"])
    segmentation = nodes["segmentation"]
    if segmentation is None:  # a ranking
        best = nodes["ranking"][0]
        widget.ui.statusLabel.text = (f"Ranked {len(nodes['ranking'])} atlases; best: {best['name']} "
                                      f"(NCC {best['score']:.3f}).")
        return
    segments = segmentation.GetSegmentation().GetNumberOfSegments()
    fused = f", fused from {sum(r['used'] for r in nodes['ranking'])} atlases" if nodes.get("ranking") else ""
    widget.ui.statusLabel.text = f"Done. '{segmentation.GetName()}' has {segments} segments{fused}."
    showInSliceViews(widget._parameterNode.GetNodeReference("TargetVolume"), segmentation=segmentation,
                     foreground=resultForeground(nodes))
    cohort.segmentNext(widget)  # "Segment all": the next volume of the queue
