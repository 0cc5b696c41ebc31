"""Text prompts: a prompt line (the segments it names listed as you type), and the words per segment that the
text-filter methods (TextSCF: "Text-steered" in the method menu) make each segment's filters from.

Matching runs ``bijros prompt-match`` in a child process (``BiJROSLib.prompts.PromptMatcher``) after a pause in
typing; the segment words are kept in the parameter node as JSON ("SegmentPrompts": {segment name: words}).
"""

from __future__ import annotations

import json

import qt

from BiJROSLib import choices
from BiJROSLib.bindings import Binding
from BiJROSLib.options import methodInfo, usesTextFilters
from BiJROSLib.prompts import PromptMatcher, segmentNames

TYPING_PAUSE_MS = 600


class PromptsSection:
    @staticmethod
    def bindings():
        return [Binding("promptLineEdit", "Prompt", "text", "")]

    @staticmethod
    def setup(widget):
        ui = widget.ui
        widget.promptMatcher = PromptMatcher()
        widget.promptTimer = qt.QTimer()
        widget.promptTimer.setSingleShot(True)
        widget.promptTimer.setInterval(TYPING_PAUSE_MS)
        widget.promptTimer.connect("timeout()", lambda: startMatch(widget))
        widget.promptPollTimer = qt.QTimer()
        widget.promptPollTimer.setInterval(150)
        widget.promptPollTimer.connect("timeout()", lambda: pollMatch(widget))
        ui.promptLineEdit.connect("textEdited(QString)", lambda _text: widget.promptTimer.start())
        table = ui.segmentPromptsTable
        table.setHorizontalHeaderLabels(["Segment", "Words for its filters (empty: its name)"])
        table.verticalHeader().setVisible(False)
        table.horizontalHeader().setStretchLastSection(True)
        table.connect("itemChanged(QTableWidgetItem*)", lambda _item: storeSegmentPrompts(widget))
        widget._promptSegments = None
        ui.textMethodComboBox.addItem("Off (the method chosen in Inputs)", "")
        for name, title in choices.methodChoices():
            if usesTextFilters(name):
                ui.textMethodComboBox.addItem(title, name)
        ui.textMethodComboBox.connect("activated(int)", lambda _index: chooseTextMethod(widget))

    @staticmethod
    def cleanup(widget):
        widget.promptTimer.stop()
        widget.promptPollTimer.stop()
        widget.promptMatcher.stop()

    @staticmethod
    def refresh(widget):
        node = widget._parameterNode
        ui = widget.ui
        segmentation = node.GetNodeReference("MovingSegmentation")
        names = segmentNames(segmentation) if segmentation is not None else []
        if names != widget._promptSegments:
            widget._promptSegments = names
            fillSegmentTable(widget, names)
            if ui.promptLineEdit.text.strip():
                widget.promptTimer.start()
        method = node.GetParameter("Method")
        textMethod = usesTextFilters(method)
        ui.textMethodComboBox.blockSignals(True)
        ui.textMethodComboBox.setCurrentIndex(max(0, ui.textMethodComboBox.findData(method if textMethod else "")))
        ui.textMethodComboBox.blockSignals(False)
        ui.segmentPromptsTable.enabled = textMethod and bool(names)
        if textMethod:
            ui.textMethodLabel.text = (f"Method '{methodInfo(method)['title']}': each segment's deformation "
                                       "filters come from its words below." if names else
                                       "The text-filter method needs a moving segmentation (its segment names).")
        else:
            ui.textMethodLabel.text = "For deformation filters made from each segment's words, choose text filters."
        if not ui.promptLineEdit.text.strip():
            ui.promptMatchLabel.text = ""


def chooseTextMethod(widget) -> None:
    """The section's method choice sets the panel's one method (Inputs shows it too); Off goes back to the default
    method when a text method was chosen."""
    node = widget._parameterNode
    chosen = widget.ui.textMethodComboBox.currentData
    current = node.GetParameter("Method")
    if chosen:
        node.SetParameter("Method", chosen)
    elif usesTextFilters(current):
        node.SetParameter("Method", choices.defaultMethod())


def fillSegmentTable(widget, names: list[str]) -> None:
    table = widget.ui.segmentPromptsTable
    stored = json.loads(widget._parameterNode.GetParameter("SegmentPrompts") or "{}")
    table.blockSignals(True)
    try:
        table.setRowCount(len(names))
        for row, name in enumerate(names):
            item = qt.QTableWidgetItem(name)
            item.setFlags(qt.Qt.ItemIsEnabled | qt.Qt.ItemIsSelectable)
            table.setItem(row, 0, item)
            table.setItem(row, 1, qt.QTableWidgetItem(stored.get(name, "")))
    finally:
        table.blockSignals(False)


def storeSegmentPrompts(widget) -> None:
    table = widget.ui.segmentPromptsTable
    prompts = {}
    for row in range(table.rowCount):
        words = table.item(row, 1).text().strip() if table.item(row, 1) else ""
        if words:
            prompts[table.item(row, 0).text()] = words
    widget._parameterNode.SetParameter("SegmentPrompts", json.dumps(prompts))


def startMatch(widget) -> None:
    ui = widget.ui
    prompt = ui.promptLineEdit.text.strip()
    segmentation = widget._parameterNode.GetNodeReference("MovingSegmentation")
    if not prompt:
        widget.promptMatcher.stop()
        ui.promptMatchLabel.text = ""
        return
    if segmentation is None:
        ui.promptMatchLabel.text = "Select a moving segmentation: a prompt names its segments."
        return
    ui.promptMatchLabel.text = f"Matching '{prompt}'..."
    try:
        widget.promptMatcher.start(prompt, segmentation)
    except Exception as exc:  # the engine could not start: say why, keep the panel usable
        ui.promptMatchLabel.text = f"The prompt could not be matched: {exc}"
        return
    widget.promptPollTimer.start()


def pollMatch(widget) -> None:
    matcher = widget.promptMatcher
    if not matcher.poll():
        return
    widget.promptPollTimer.stop()
    if matcher.prompt != widget.ui.promptLineEdit.text.strip():
        return  # overtaken by newer typing (its own match is on the way)
    if matcher.error:
        widget.ui.promptMatchLabel.text = matcher.error.splitlines()[-1]
    else:
        names = ", ".join(f"{m['name']} ({m['score']:.2f})" for m in matcher.matched)
        widget.ui.promptMatchLabel.text = f"Names: {names}" if names else ""
