"""Atlas: one built-in atlas (the engine's catalog), a volume + segmentation from the scene, or several atlases
of a library (ranked and fused: the Atlas selection section)."""

from __future__ import annotations

import logging

from BiJROSLib.bindings import Binding


class AtlasSection:
    @staticmethod
    def bindings():
        return [
            Binding("libraryAtlasRadioButton|sceneAtlasRadioButton|multiAtlasRadioButton", "AtlasSource", "radio",
                    "library", states=("library", "scene", "multi")),
            Binding("atlasLibraryComboBox", "AtlasName", "choice", ""),
            Binding("atlasVolumeSelector", "AtlasVolume", "node"),
            Binding("atlasSegmentationSelector", "AtlasSegmentation", "node"),
        ]

    @staticmethod
    def setup(widget):
        try:
            for name in widget.logic.atlasNames():
                widget.ui.atlasLibraryComboBox.addItem(widget.logic.atlasInfo(name)["title"] or name, name)
        except Exception as exc:  # a broken installation: say so in the panel, keep the scene atlas usable
            logging.exception("BiJROS atlas library")
            widget.ui.atlasInfoLabel.text = f"The atlas library could not be read: {exc}"

    @staticmethod
    def refresh(widget):
        ui = widget.ui
        source = widget._parameterNode.GetParameter("AtlasSource") or "library"
        for control in (ui.atlasLibraryComboBox, ui.atlasInfoLabel):
            control.enabled = source == "library"
        for control in (ui.atlasVolumeSelector, ui.atlasSegmentationSelector):
            control.enabled = source == "scene"
        showAtlasInfo(widget, ui.atlasLibraryComboBox.currentData)


def showAtlasInfo(widget, atlasName) -> None:
    if not atlasName:
        return
    try:
        info = widget.logic.atlasInfo(atlasName)
    except Exception as exc:
        widget.ui.atlasInfoLabel.text = str(exc)
        return
    description = info.get("description") or info.get("title") or atlasName
    widget.ui.atlasInfoLabel.text = description.split(". ")[0].rstrip(".") + "."
    widget.ui.atlasInfoLabel.toolTip = description + (f"\n\nLicence: {info['license']}" if info.get("license") else "")
