"""Panel widgets <-> the module's parameter node, declared once per panel section.

A panel section lists its widgets as :class:`Binding` rows (widget name in the .ui file,
parameter name, kind, default); this module does the rest: defaults, parameter node -> widgets,
widgets -> parameter node, change signals, and the typed values for the logic. The parameter
node stores strings, as ``vtkMRMLScriptedModuleNode`` does, and is saved with the scene.

Kinds: ``node`` (qMRMLNodeComboBox <-> node reference), ``nodes`` (qMRMLCheckableNodeComboBox's checked nodes
<-> the node references of one role), ``choice`` (QComboBox item data),
``bool`` (QCheckBox / QRadioButton; stored as "true"/"false", or as the two ``states`` given:
``states=("scene", "library")`` stores "scene" when checked), ``float`` (QDoubleSpinBox; 0 means "from the preset"),
``text`` (QLineEdit), ``int`` (QSpinBox), ``radio`` (a group of QRadioButtons: ``widget`` lists their
names joined by "|", ``states`` what each stores).

(Slicer's ``parameterNodeWrapper`` does the same with typed classes; the slicer-core wheel that
the headless tests run on does not ship it, so the panels keep this small, tested table.)
"""

from __future__ import annotations

import dataclasses

SIGNALS = {
    "node": "currentNodeChanged(vtkMRMLNode*)",
    "nodes": "checkedNodesChanged()",
    "choice": "currentIndexChanged(int)",
    "bool": "toggled(bool)",
    "float": "valueChanged(double)",
    "text": "textChanged(QString)",
    "int": "valueChanged(int)",
    "radio": "toggled(bool)",
}


@dataclasses.dataclass(frozen=True)
class Binding:
    widget: str  # object name in the .ui file
    parameter: str  # parameter (or node reference role) name in the parameter node
    kind: str  # node | choice | bool | float | text
    default: str = ""
    states: tuple = ("true", "false")  # kind "bool": what is stored when checked / unchecked


def setDefaults(parameterNode, bindings) -> None:
    """Write each binding's default where the parameter node has no value yet."""
    for b in bindings:
        if b.kind != "node" and b.default and not parameterNode.GetParameter(b.parameter):
            parameterNode.SetParameter(b.parameter, b.default)


def connect(ui, bindings, slot) -> None:
    """Call ``slot`` whenever one of the bound widgets changes."""
    for b in bindings:
        for name in b.widget.split("|"):
            getattr(ui, name).connect(SIGNALS[b.kind], slot)


def updateWidgets(ui, parameterNode, bindings) -> None:
    """Parameter node -> widgets (the caller blocks the widgets -> parameter node direction meanwhile)."""
    for b in bindings:
        if b.kind == "radio":
            stored = parameterNode.GetParameter(b.parameter) or b.default
            for name, state in zip(b.widget.split("|"), b.states):
                getattr(ui, name).checked = state == stored
            continue
        widget = getattr(ui, b.widget)
        if b.kind == "node":
            widget.setCurrentNode(parameterNode.GetNodeReference(b.parameter))
        elif b.kind == "nodes":
            import qt

            checked = {n.GetID() for n in nodeReferences(parameterNode, b.parameter)}
            for i in range(widget.nodeCount()):
                node = widget.nodeFromIndex(i)
                widget.setCheckState(node, qt.Qt.Checked if node.GetID() in checked else qt.Qt.Unchecked)
        elif b.kind == "choice":
            index = widget.findData(parameterNode.GetParameter(b.parameter))
            widget.setCurrentIndex(index if index >= 0 else max(0, widget.findData(b.default)))
        elif b.kind == "bool":
            widget.checked = parameterNode.GetParameter(b.parameter) == b.states[0]
        elif b.kind == "float":
            widget.value = _float(parameterNode.GetParameter(b.parameter))
        elif b.kind == "int":
            widget.value = int(_float(parameterNode.GetParameter(b.parameter) or b.default))
        elif b.kind == "text" and widget.text != parameterNode.GetParameter(b.parameter):
            widget.text = parameterNode.GetParameter(b.parameter)


def updateParameters(ui, parameterNode, bindings) -> None:
    """Widgets -> parameter node, in one modification (one Modified event)."""
    wasModified = parameterNode.StartModify()
    try:
        for b in bindings:
            if b.kind == "radio":
                checked = [s for n, s in zip(b.widget.split("|"), b.states) if getattr(ui, n).checked]
                parameterNode.SetParameter(b.parameter, checked[0] if checked else b.default)
                continue
            widget = getattr(ui, b.widget)
            if b.kind == "node":
                parameterNode.SetNodeReferenceID(b.parameter, widget.currentNodeID)
            elif b.kind == "nodes":
                parameterNode.RemoveNodeReferenceIDs(b.parameter)
                for node in widget.checkedNodes():
                    parameterNode.AddNodeReferenceID(b.parameter, node.GetID())
            elif b.kind == "choice":
                parameterNode.SetParameter(b.parameter, widget.currentData or b.default)
            elif b.kind == "bool":
                parameterNode.SetParameter(b.parameter, b.states[0] if widget.checked else b.states[1])
            elif b.kind in ("float", "int"):
                parameterNode.SetParameter(b.parameter, str(widget.value))
            elif b.kind == "text":
                parameterNode.SetParameter(b.parameter, widget.text.strip())
    finally:
        parameterNode.EndModify(wasModified)


def values(parameterNode, bindings) -> dict:
    """Typed values by parameter name: nodes, strings (None when empty), bools (the stored state for
    bindings with their own ``states``), floats (None when 0)."""
    result = {}
    for b in bindings:
        if b.kind == "node":
            result[b.parameter] = parameterNode.GetNodeReference(b.parameter)
            continue
        if b.kind == "nodes":
            result[b.parameter] = nodeReferences(parameterNode, b.parameter)
            continue
        text = parameterNode.GetParameter(b.parameter)
        if b.kind == "bool":
            result[b.parameter] = (text == "true") if b.states == ("true", "false") else (text or b.default)
        elif b.kind == "float":
            number = _float(text)
            result[b.parameter] = number if number > 0 else None
        elif b.kind == "int":
            result[b.parameter] = int(_float(text or b.default))
        elif b.kind == "radio":
            result[b.parameter] = text or b.default
        else:
            result[b.parameter] = text or None
    return result


def nodeReferences(parameterNode, role: str) -> list:
    """The nodes referenced under ``role`` (a ``nodes`` binding's checked nodes), in order."""
    nodes = (parameterNode.GetNthNodeReference(role, i) for i in range(parameterNode.GetNumberOfNodeReferences(role)))
    return [n for n in nodes if n is not None]


def _float(text, default=0.0) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return default
