"""Atlas selection: a library of labelled images (added from a folder), its ranking for the target,
how many of the best atlases to fuse and how. Active when the atlas source is "several atlases"."""

from __future__ import annotations

import json
import logging

from BiJROSLib.bindings import Binding

FUSION_CHOICES = (("jlf", "Joint label fusion"), ("weighted", "Locally weighted voting"), ("vote", "Majority vote"))


class SelectionSection:
    @staticmethod
    def bindings():
        return [
            Binding("multiAtlasLibraryComboBox", "MultiAtlasLibrary", "choice", ""),
            Binding("topKSpinBox", "TopK", "int", "0"),
            Binding("fusionComboBox", "Fusion", "choice", "jlf"),
            Binding("createConfidenceCheckBox", "CreateConfidence", "bool", "true"),
            Binding("mirrorAtlasesCheckBox", "MirrorAtlases", "bool", "true"),
        ]

    @staticmethod
    def setup(widget):
        from BiJROSLib.choices import fillComboBox

        ui = widget.ui
        fillComboBox(ui.fusionComboBox, FUSION_CHOICES)
        fillLibraries(widget)
        ui.rankingTableWidget.setHorizontalHeaderLabels(["Rank", "Atlas", "Score (NCC)"])
        ui.rankingTableWidget.verticalHeader().setVisible(False)
        ui.libraryTableWidget.setHorizontalHeaderLabels(["", "Atlas", "Modality", "Labels"])
        ui.libraryTableWidget.verticalHeader().setVisible(False)
        ui.showAtlasesButton.connect("clicked(bool)", lambda _checked=False: describe(widget))
        ui.addLibraryDirectoryButton.connect("directoryChanged(QString)", lambda folder: addLibrary(widget, folder))
        ui.rankButton.connect("clicked(bool)", lambda _checked=False: rank(widget))
        ui.removeLibraryButton.connect("clicked(bool)", lambda _checked=False: forgetLibrary(widget))

    @staticmethod
    def refresh(widget):
        ui, node = widget.ui, widget._parameterNode
        active = node.GetParameter("AtlasSource") == "multi"
        ui.selectionCollapsibleButton.enabled = active
        if getattr(widget, "_selectionActive", None) != active:  # open it when chosen, fold it away otherwise
            widget._selectionActive = active
            ui.selectionCollapsibleButton.collapsed = not active
        ui.rankButton.enabled = active and widget._job is None and bool(
            node.GetNodeReference("TargetVolume") and node.GetParameter("MultiAtlasLibrary"))
        ui.removeLibraryButton.enabled = active and bool(node.GetParameter("MultiAtlasLibrary"))
        ui.showAtlasesButton.enabled = active and widget._job is None and bool(node.GetParameter("MultiAtlasLibrary"))
        showRanking(widget)
        showLibrary(widget)


def fillLibraries(widget, select: str | None = None) -> None:
    combo = widget.ui.multiAtlasLibraryComboBox
    combo.clear()
    try:
        libraries = widget.logic.atlasLibraries()
    except Exception as exc:  # an unreadable list of libraries: say so, keep the other atlas sources usable
        logging.exception("BiJROS atlas libraries")
        combo.toolTip = str(exc)
        return
    for name, folder in libraries.items():
        combo.addItem(f"{name} ({folder})", name)
    if select is not None:
        combo.setCurrentIndex(max(0, combo.findData(select)))


def addLibrary(widget, folder: str) -> None:
    import slicer

    if not folder:
        return
    try:
        name = widget.logic.addAtlasLibrary(folder)
    except ValueError as exc:
        slicer.util.errorDisplay(str(exc), windowTitle="BiJROS: not an atlas library")
        return
    fillLibraries(widget, select=name)
    widget.updateParameterNodeFromGUI()
    widget.ui.logTextEdit.appendPlainText(f"Added the atlas library '{name}' ({folder}).")


def forgetLibrary(widget) -> None:
    import slicer

    name = widget._parameterNode.GetParameter("MultiAtlasLibrary")
    if not name:
        return
    try:
        folder = widget.logic.removeAtlasLibrary(name)
    except ValueError as exc:
        slicer.util.errorDisplay(str(exc), windowTitle="BiJROS")
        return
    fillLibraries(widget)
    widget.updateParameterNodeFromGUI()
    widget.ui.logTextEdit.appendPlainText(f"Forgot the atlas library '{name}' ({folder}; its files are untouched).")


def rank(widget) -> None:
    """Rank the library for the target in a child process; the table fills when it is done."""
    import slicer

    if widget._job is not None:
        return
    node = widget._parameterNode
    target, library = node.GetNodeReference("TargetVolume"), node.GetParameter("MultiAtlasLibrary")
    try:
        job = widget.logic.startRanking(target, library, device=node.GetParameter("Device") or "auto",
                                        affineMetric=node.GetParameter("AffineMetric") or None,
                                        mirror=widget.logic.libraryRunArguments(node)["mirror"])
    except (ValueError, RuntimeError) as exc:
        slicer.util.errorDisplay(str(exc), windowTitle="BiJROS: cannot rank")
        return
    widget.trackJob(job, f"Ranking the atlases of '{library}' for '{target.GetName()}'")


def describe(widget) -> None:
    """List the library's atlases (modality, labels, thumbnail) from a child process; the table fills when done."""
    import slicer

    if widget._job is not None:
        return
    library = widget._parameterNode.GetParameter("MultiAtlasLibrary")
    try:
        job = widget.logic.startLibraryDescription(library)
    except (ValueError, RuntimeError) as exc:
        slicer.util.errorDisplay(str(exc), windowTitle="BiJROS: cannot read the library")
        return
    widget.trackJob(job, f"Reading the atlases of '{library}'")


def storeLibrary(widget, library: dict) -> None:
    node = widget._parameterNode
    node.SetParameter("LibraryContents", json.dumps({"library": node.GetParameter("MultiAtlasLibrary"),
                                                     "atlases": library["atlases"], "skipped": library["skipped"]}))


def showLibrary(widget) -> None:
    """The table of the chosen library's atlases (empty until *Show the library's atlases* has run for it)."""
    import qt

    node, table = widget._parameterNode, widget.ui.libraryTableWidget
    contents = {}
    try:
        contents = json.loads(node.GetParameter("LibraryContents") or "{}")
    except ValueError:
        contents = {}
    atlases = contents.get("atlases", []) if contents.get("library") == node.GetParameter("MultiAtlasLibrary") else []
    table.setRowCount(len(atlases))
    for row, atlas in enumerate(atlases):
        picture = qt.QTableWidgetItem("")
        picture.setIcon(qt.QIcon(atlas.get("thumbnail", "")))
        table.setItem(row, 0, picture)
        shape = "x".join(str(n) for n in atlas["shape"])
        for column, text in ((1, atlas["name"]), (2, atlas["modality"]), (3, str(atlas["labels"]))):
            item = qt.QTableWidgetItem(text)
            item.setToolTip(f"{atlas['name']}: {atlas['modality']}, {shape} voxels of "
                            f"{' x '.join(str(s) for s in atlas['spacing_mm'])} mm, {atlas['labels']} labels")
            table.setItem(row, column, item)
    table.setIconSize(qt.QSize(48, 48))
    table.resizeColumnsToContents()


def storeRanking(widget, ranking) -> None:
    node = widget._parameterNode
    node.SetParameter("RankingTarget", node.GetNodeReferenceID("TargetVolume") or "")
    node.SetParameter("Ranking", json.dumps(ranking))


def showRanking(widget) -> None:
    import qt

    node, table = widget._parameterNode, widget.ui.rankingTableWidget
    ranking = []
    if node.GetParameter("Ranking") and node.GetParameter("RankingTarget") == (node.GetNodeReferenceID("TargetVolume") or ""):
        try:
            ranking = json.loads(node.GetParameter("Ranking"))
        except ValueError:
            ranking = []
    table.setRowCount(len(ranking))
    topK = int(float(node.GetParameter("TopK") or 0)) or len(ranking)
    for row, entry in enumerate(ranking):
        used = entry.get("used", row < topK)
        for column, text in enumerate((str(entry["rank"]), entry["name"], f"{entry['score']:.4f}")):
            item = qt.QTableWidgetItem(text + (" (fused)" if column == 1 and used else ""))
            table.setItem(row, column, item)
