"""Few-shot: a structure painted on a few slices of the target volume (Target section) -> "Segment remaining
slices" adds the filled structure as a new segment beside the painted one (left untouched); "Apply to other
volumes" adds a segmentation to each checked volume, by 3D registration of the filled target (recommended: the
benchmark's better way to other volumes) or by the slice model on every slice."""

from __future__ import annotations

from BiJROSLib.bindings import Binding

TRANSFER_CHOICES = (
    ("registration", "3D registration of the filled target (recommended)"),
    ("model", "slice model (GMRD) on each slice"),
)
#: what the benchmark (Testing/Benchmarks/results/fewshot_slices.md, MSD hippocampus crops) measured
ADVICE = ("Paint the structure on a few slices, all in one view (for example 3 slices spread over it). In our "
          "benchmark (hippocampus crops, 3 painted slices) the remaining slices scored 0.76 Dice, against 0.49 for "
          "Fill between slices; other volumes scored 0.78 by 3D registration of the filled target, against 0.48 by "
          "the slice model.")


class FewShotSection:
    @staticmethod
    def bindings():
        return [
            Binding("fewShotSegmentationSelector", "FewShotSegmentation", "node"),
            Binding("fewShotFinetuneSpinBox", "FewShotFinetuneSteps", "int", "30"),
            Binding("fewShotVolumesComboBox", "FewShotVolume", "nodes"),
            Binding("fewShotTransferComboBox", "FewShotTransfer", "choice", "registration"),
        ]

    @staticmethod
    def setup(widget):
        from BiJROSLib.choices import fillComboBox

        ui = widget.ui
        fillComboBox(ui.fewShotTransferComboBox, TRANSFER_CHOICES)
        ui.fewShotAdviceLabel.text = ADVICE
        ui.fewShotSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                               lambda _node=None: fillSegments(widget))
        ui.fewShotSegmentComboBox.connect("currentIndexChanged(int)", lambda _index=0: storeSegment(widget))
        ui.fewShotRemainingButton.connect("clicked(bool)", lambda _checked=False: start(widget, others=False))
        ui.fewShotApplyButton.connect("clicked(bool)", lambda _checked=False: start(widget, others=True))
        widget._fewShotQueue = []
        widget._fewShotObserved = None
        widget._fewShotOnSegments = lambda _caller=None, _event=None: widget.updateGUIFromParameterNode()

    @staticmethod
    def refresh(widget):
        ui = widget.ui
        observeSegments(widget, painted(widget)[1])
        fillSegments(widget)
        idle = widget._job is None
        reason = paintedProblem(widget)
        ui.fewShotRemainingButton.enabled = idle and not reason
        ui.fewShotRemainingButton.toolTip = reason or (
            "Fill the slices of the target the segment was not painted on: a new segment beside the painted one.")
        others = otherVolumes(widget)
        ui.fewShotApplyButton.enabled = idle and not reason and bool(others)
        ui.fewShotApplyButton.toolTip = reason or ("Check the other volumes first." if not others else
                                                   f"Segment {len(others)} checked volume(s): a new segmentation each.")


    @staticmethod
    def cleanup(widget):
        observeSegments(widget, None)


SEGMENT_EVENTS = ("SegmentAdded", "SegmentRemoved", "SegmentModified")


def observeSegments(widget, segmentation) -> None:
    """Keep the segment list current: observe the chosen segmentation's segments (added in Segment Editor,
    removed, renamed) and only that one."""
    import slicer

    if widget._fewShotObserved is segmentation:
        return
    for node in (widget._fewShotObserved, segmentation):
        if node is None:
            continue
        for name in SEGMENT_EVENTS:
            event = getattr(slicer.vtkSegmentation, name)
            if node is segmentation:
                widget.addObserver(node, event, widget._fewShotOnSegments)
            else:
                widget.removeObserver(node, event, widget._fewShotOnSegments)
    widget._fewShotObserved = segmentation


def painted(widget):
    """(target volume, painted segmentation, segment ID)."""
    node = widget._parameterNode
    return (node.GetNodeReference("TargetVolume"), node.GetNodeReference("FewShotSegmentation"),
            node.GetParameter("FewShotSegment") or None)


def paintedProblem(widget) -> str:
    volume, segmentation, segmentId = painted(widget)
    if volume is None:
        return "Select the target volume (Target section): the volume the structure is painted on."
    try:
        return widget.logic.paintedSegmentProblem(volume, segmentation, segmentId)
    except Exception as exc:  # a reason for the tooltip, never an exception in the panel
        return str(exc)


def otherVolumes(widget) -> list:
    from BiJROSLib.bindings import nodeReferences

    volume, _, _ = painted(widget)
    return [v for v in nodeReferences(widget._parameterNode, "FewShotVolume")
            if volume is None or v.GetID() != volume.GetID()]


def fillSegments(widget) -> None:
    """The painted segmentation's segments in the segment combo box (the stored choice kept when present)."""
    combo = widget.ui.fewShotSegmentComboBox
    _, segmentation, chosen = painted(widget)
    items = []
    if segmentation is not None:
        seg = segmentation.GetSegmentation()
        items = [(seg.GetNthSegmentID(i), seg.GetNthSegment(i).GetName()) for i in range(seg.GetNumberOfSegments())]
    if [(combo.itemData(i), combo.itemText(i)) for i in range(combo.count)] != items:
        combo.blockSignals(True)
        combo.clear()
        for segmentId, name in items:
            combo.addItem(name, segmentId)
        combo.blockSignals(False)
    index = combo.findData(chosen) if chosen else -1
    if index < 0 and items:
        index = 0
    combo.blockSignals(True)
    combo.setCurrentIndex(index)
    combo.blockSignals(False)
    if items and combo.itemData(index) != chosen:
        widget._parameterNode.SetParameter("FewShotSegment", combo.itemData(index))


def storeSegment(widget) -> None:
    combo = widget.ui.fewShotSegmentComboBox
    if widget._parameterNode is not None and combo.currentIndex >= 0:
        widget._parameterNode.SetParameter("FewShotSegment", combo.itemData(combo.currentIndex) or "")


def start(widget, others: bool) -> None:
    widget._fewShotQueue = [v.GetID() for v in otherVolumes(widget)] if others else [None]
    startNext(widget)


def startNext(widget) -> None:
    """Start the next queued run (after each result, until the queue is empty)."""
    import slicer

    if widget._job is not None or not widget._fewShotQueue:
        return
    queryId = widget._fewShotQueue.pop(0)
    volume, segmentation, segmentId = painted(widget)
    query = widget.logic.scene.GetNodeByID(queryId) if queryId else None
    if queryId and query is None:  # removed meanwhile
        startNext(widget)
        return
    node = widget._parameterNode
    try:
        job = widget.logic.startFewShot(volume, segmentation, segmentId, query,
                                        transfer=node.GetParameter("FewShotTransfer") or "registration",
                                        finetuneSteps=int(node.GetParameter("FewShotFinetuneSteps") or 0),
                                        device=node.GetParameter("Device") or "auto")
    except (ValueError, RuntimeError) as exc:
        widget._fewShotQueue = []
        slicer.util.errorDisplay(str(exc), windowTitle="BiJROS: cannot segment from the painted slices")
        return
    name = segmentation.GetSegmentation().GetSegment(segmentId).GetName()
    left = f"; {len(widget._fewShotQueue)} more after it" if widget._fewShotQueue else ""
    what = f"the remaining slices of '{volume.GetName()}'" if query is None else f"'{query.GetName()}'"
    widget.trackJob(job, f"Few-shot: segmenting {what} from the painted segment '{name}'{left}")


def showResults(widget, nodes) -> bool:
    """A few-shot result (True when handled): the new segment, or one segmentation of a queue."""
    from BiJROSLib.views import showInSliceViews

    if nodes.get("modifiedSegmentation") is not None:
        segmentation = nodes["modifiedSegmentation"]
        name = segmentation.GetSegmentation().GetSegment(nodes["segmentId"]).GetName()
        widget.ui.statusLabel.text = f"Done. Added the segment '{name}' to '{segmentation.GetName()}'."
        widget.ui.logTextEdit.appendPlainText(f"Added the segment '{name}' to '{segmentation.GetName()}'.")
        showInSliceViews(widget._parameterNode.GetNodeReference("TargetVolume"))  # the user's display kept
        startNext(widget)
        return True
    if nodes.get("report", {}).get("transfer") is not None and nodes.get("segmentation") is not None:
        widget.ui.statusLabel.text = f"Done. Added the segmentation '{nodes['segmentation'].GetName()}'."
        showInSliceViews(nodes["segmentation"].GetNodeReference("referenceImageGeometryRef"),
                         segmentation=nodes["segmentation"])
        startNext(widget)
        return True
    return False
