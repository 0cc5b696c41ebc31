"""Showing a finished run in Slicer's slice views: the fixed (target) volume as background, the
propagated segmentation as outlines on it, and a map (the Jacobian determinant, else the fusion
confidence or the registered volume) as a half-transparent foreground.

Console example (in Slicer's Python console)::

    from BiJROSLib.views import showInSliceViews
    showInSliceViews(targetVolume, segmentation=segNode, foreground=jacobianNode)
"""

from __future__ import annotations

FOREGROUND_OPACITY = 0.5


def showInSliceViews(background, segmentation=None, foreground=None, foregroundOpacity: float = FOREGROUND_OPACITY):
    """Set every slice view's layers (``slicer.util.setSliceViewerLayers``) and outline the segmentation."""
    import slicer

    slicer.util.setSliceViewerLayers(background=background, foreground=foreground,
                                     foregroundOpacity=foregroundOpacity if foreground is not None else None)
    if segmentation is not None:
        segmentation.CreateDefaultDisplayNodes()
        display = segmentation.GetDisplayNode()
        display.SetVisibility(True)
        display.SetVisibility2DFill(False)  # outlines only: the target stays readable underneath
        display.SetVisibility2DOutline(True)


def resultForeground(nodes: dict):
    """The map to show over the background: the Jacobian, else the fusion confidence, else the registered volume."""
    for key in ("jacobianVolume", "confidenceVolume", "warpedVolume"):
        if nodes.get(key) is not None:
            return nodes[key]
    return None
