"""Test stand-in for Slicer's ``qMRMLWidget`` and ``qMRMLNodeComboBox`` (qMRMLWidgets), on PySide6.

They show nodes of slicer-core's real vtkMRMLScene. Same names and semantics as Slicer's:

- ``qMRMLWidget``: ``setMRMLScene(scene)`` slot, ``mrmlScene()``, ``mrmlSceneChanged(vtkMRMLScene*)``.
- ``qMRMLNodeComboBox``: properties ``nodeTypes``, ``noneEnabled``, ``addEnabled``,
  ``removeEnabled``, ``editEnabled``, ``renameEnabled``, ``showHidden``, ``showChildNodeTypes``,
  ``hideChildNodeTypes``, ``selectNodeUponCreation``, ``baseName``, ``noneDisplay``,
  ``currentNodeID`` (settable from a .ui file and as Python attributes, as PythonQt does); slots
  ``setMRMLScene``, ``setCurrentNode``, ``setCurrentNodeID``, ``addNode``; ``currentNode()``,
  ``nodeCount()``, ``nodeFromIndex(i)``, ``addAttribute(...)``; signals
  ``currentNodeChanged(vtkMRMLNode*)``, ``currentNodeIDChanged(QString)``,
  ``nodeAddedByUser(vtkMRMLNode*)``. Without ``noneEnabled`` the first matching node is selected.
- ``qMRMLCheckableNodeComboBox`` (a ``qMRMLNodeComboBox``): ``checkedNodes()``, ``uncheckedNodes()``,
  ``allChecked()``, ``noneChecked()`` (both true when empty), ``checkState(node)`` (``Qt.Unchecked`` for a
  node it does not list), ``setCheckState(node, state)``, ``setUserCheckable(node, bool)``, slots ``check`` /
  ``uncheck``, signal ``checkedNodesChanged()``; nodes are unchecked by default and the check marks live
  only in the combo box (the nodes are not touched).

Test stand-in only: nothing here is shipped with the extension.
"""

from __future__ import annotations

from PySide6.QtCore import Property, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QInputDialog, QSizePolicy, QWidget

from . import qt as _qt

_ADD = "\x00add"
_RENAME = "\x00rename"


def _type_label(class_name: str) -> str:
    label = class_name[len("vtkMRML"):] if class_name.startswith("vtkMRML") else class_name
    return label[: -len("Node")] if label.endswith("Node") else label


class qMRMLWidget(_qt.PythonQtObject, QWidget):
    mrmlSceneChanged = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def mrmlScene(self):
        return self._scene

    def setMRMLScene(self, scene) -> None:
        if scene is self._scene:
            return
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)


class qMRMLNodeComboBox(_qt.PythonQtObject, QWidget):
    currentNodeChanged = Signal(object)
    currentNodeIDChanged = Signal(str)
    nodeAdded = Signal(object)
    nodeAddedByUser = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._combo = QComboBox(self)
        self._combo.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self._combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self._combo.setMinimumContentsLength(12)
        self._combo.activated.connect(self._onActivated)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._combo)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self._scene = None
        self._sceneObservations: list[int] = []
        self._currentID = ""
        self._attributes: list[tuple[str, str, object]] = []
        self._options = {"nodeTypes": [], "hideChildNodeTypes": [], "noneEnabled": False, "addEnabled": True,
                         "removeEnabled": True, "editEnabled": False, "renameEnabled": False, "showHidden": False,
                         "showChildNodeTypes": True, "selectNodeUponCreation": True, "baseName": "", "noneDisplay": "None"}

    # -- properties (Q_PROPERTY in Slicer; settable from .ui files and as attributes) --
    def _option(name, kind):
        def getter(self):
            return self._options[name]

        def setter(self, value):
            self._options[name] = list(value) if kind == "QStringList" else value
            self._refresh()

        return Property(kind, getter, setter)

    nodeTypes = _option("nodeTypes", "QStringList")
    hideChildNodeTypes = _option("hideChildNodeTypes", "QStringList")
    noneEnabled = _option("noneEnabled", bool)
    addEnabled = _option("addEnabled", bool)
    removeEnabled = _option("removeEnabled", bool)
    editEnabled = _option("editEnabled", bool)
    renameEnabled = _option("renameEnabled", bool)
    showHidden = _option("showHidden", bool)
    showChildNodeTypes = _option("showChildNodeTypes", bool)
    selectNodeUponCreation = _option("selectNodeUponCreation", bool)
    baseName = _option("baseName", str)
    noneDisplay = _option("noneDisplay", str)
    del _option

    # -- scene --
    def mrmlScene(self):
        return self._scene

    def setMRMLScene(self, scene) -> None:
        if self._scene is not None:
            for tag in self._sceneObservations:
                self._scene.RemoveObserver(tag)
        self._sceneObservations = []
        self._scene = scene
        if scene is not None:
            for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent, scene.EndCloseEvent, scene.EndImportEvent):
                self._sceneObservations.append(scene.AddObserver(event, lambda caller, event: self._refresh()))
        self._refresh()

    def addAttribute(self, nodeType: str, attributeName: str, attributeValue=None) -> None:
        self._attributes.append((nodeType, attributeName, attributeValue))
        self._refresh()

    def _matches(self, node) -> bool:
        opts = self._options
        if opts["showChildNodeTypes"]:
            typed = any(node.IsA(t) for t in opts["nodeTypes"])
        else:
            typed = node.GetClassName() in opts["nodeTypes"]
        if not typed or any(node.IsA(t) for t in opts["hideChildNodeTypes"]):
            return False
        if node.GetHideFromEditors() and not opts["showHidden"]:
            return False
        for nodeType, name, value in self._attributes:
            if node.IsA(nodeType) and (node.GetAttribute(name) is None
                                       or (value is not None and node.GetAttribute(name) != str(value))):
                return False
        return True

    def _nodes(self) -> list:
        if self._scene is None:
            return []
        nodes = self._scene.GetNodes()
        found = [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]
        return [node for node in found if self._matches(node)]

    def _refresh(self) -> None:
        if not hasattr(self, "_options"):
            return
        nodes = self._nodes()
        ids = [node.GetID() for node in nodes]
        combo = self._combo
        combo.blockSignals(True)
        combo.clear()
        if self._options["noneEnabled"]:
            combo.addItem(self._options["noneDisplay"], "")
        for node in nodes:
            combo.addItem(node.GetName(), node.GetID())
        label = _type_label(self._options["nodeTypes"][0]) if self._options["nodeTypes"] else "node"
        if self._options["addEnabled"] or self._options["renameEnabled"]:
            combo.insertSeparator(combo.count())
        if self._options["addEnabled"] and self._scene is not None:
            combo.addItem(f"Create new {label}", _ADD)
        if self._options["renameEnabled"]:
            combo.addItem(f"Rename current {label}", _RENAME)
        combo.blockSignals(False)
        current = self._currentID
        if current not in ids:
            current = "" if self._options["noneEnabled"] or not ids else ids[0]
        self._select(current, force=True)

    def _select(self, nodeID: str, force: bool = False) -> None:
        index = self._combo.findData(nodeID) if nodeID or self._options["noneEnabled"] else -1
        self._combo.blockSignals(True)
        self._combo.setCurrentIndex(index)
        self._combo.blockSignals(False)
        if nodeID != self._currentID:
            self._currentID = nodeID
            self.currentNodeIDChanged.emit(nodeID)
            self.currentNodeChanged.emit(self.currentNode())

    def _onActivated(self, index: int) -> None:
        data = self._combo.itemData(index)
        if data == _ADD:
            node = self.addNode()
            if not self._options["selectNodeUponCreation"] or node is None:
                self._select(self._currentID)
        elif data == _RENAME:
            self._select(self._currentID)
            node = self.currentNode()
            if node is not None:
                name, ok = QInputDialog.getText(self, "Rename", "New name:", text=node.GetName())
                if ok and name:
                    node.SetName(name)
                    self._refresh()
        else:
            self._select(data or "")

    # -- current node --
    def currentNode(self):
        return self._scene.GetNodeByID(self._currentID) if self._scene is not None and self._currentID else None


    def setCurrentNode(self, node) -> None:
        self.setCurrentNodeID(node.GetID() if node is not None else "")

    def setCurrentNodeID(self, nodeID: str) -> None:
        nodeID = nodeID or ""
        if nodeID and nodeID not in [node.GetID() for node in self._nodes()]:
            nodeID = ""
        self._select(nodeID)

    currentNodeID = Property(str, lambda self: self._currentID, setCurrentNodeID)

    def nodeCount(self) -> int:
        return len(self._nodes())

    def nodeFromIndex(self, index: int):
        nodes = self._nodes()
        return nodes[index] if 0 <= index < len(nodes) else None

    def addNode(self, nodeType: str = ""):
        """Slot of the "Create new" entry: adds a node of the first node type, named after ``baseName``."""
        if self._scene is None or not (nodeType or self._options["nodeTypes"]):
            return None
        nodeType = nodeType or self._options["nodeTypes"][0]
        base = self._options["baseName"] or _type_label(nodeType)
        node = self._scene.AddNewNodeByClass(nodeType, self._scene.GenerateUniqueName(base))
        for attributeNodeType, name, value in self._attributes:
            if node.IsA(attributeNodeType) and value is not None:
                node.SetAttribute(name, str(value))
        self.nodeAddedByUser.emit(node)
        if self._options["selectNodeUponCreation"]:
            self.setCurrentNode(node)
        return node


class _CheckedNamesComboBox(QComboBox):
    """Shows the checked items' names, comma-separated, as ctkCheckableComboBox (Slicer's) does."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.shownText = ""

    def paintEvent(self, event) -> None:
        from PySide6.QtWidgets import QStyle, QStyleOptionComboBox, QStylePainter

        painter = QStylePainter(self)
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        option.currentText = self.shownText
        painter.drawComplexControl(QStyle.CC_ComboBox, option)
        painter.drawControl(QStyle.CE_ComboBoxLabel, option)


class qMRMLCheckableNodeComboBox(qMRMLNodeComboBox):
    checkedNodesChanged = Signal()

    def __init__(self, parent=None):
        self._checks: dict[str, object] = {}
        self._notCheckable: set[str] = set()
        super().__init__(parent)
        old = self._combo
        self._combo = _CheckedNamesComboBox(self)
        self._combo.setSizePolicy(old.sizePolicy())
        self._combo.setSizeAdjustPolicy(old.sizeAdjustPolicy())
        self._combo.setMinimumContentsLength(old.minimumContentsLength())
        self._combo.activated.connect(self._onActivated)
        self.layout().replaceWidget(old, self._combo)
        old.deleteLater()
        self._combo.model().dataChanged.connect(self._onDataChanged)
        self.checkedNodesChanged.connect(self._showChecked)
        self._refresh()

    def _showChecked(self) -> None:
        self._combo.shownText = ", ".join(n.GetName() for n in self.checkedNodes())
        self._combo.update()

    def _refresh(self) -> None:
        super()._refresh()
        if not hasattr(self, "_checks"):
            return
        from PySide6.QtCore import Qt

        model = self._combo.model()
        model.blockSignals(True)
        for row in range(self._combo.count()):
            nodeID = self._combo.itemData(row)
            item = model.item(row) if hasattr(model, "item") else None
            if item is None or not nodeID or str(nodeID).startswith("\x00"):
                continue
            flags = item.flags() | Qt.ItemIsEnabled
            flags = flags & ~Qt.ItemIsUserCheckable if nodeID in self._notCheckable else flags | Qt.ItemIsUserCheckable
            item.setFlags(flags)
            item.setCheckState(self._checks.get(nodeID, Qt.Unchecked))
        model.blockSignals(False)
        listed = {node.GetID() for node in self._nodes()}
        if any(i not in listed for i in self._checks):  # a removed node is no longer checked
            self._checks = {i: v for i, v in self._checks.items() if i in listed}
            self.checkedNodesChanged.emit()

    def _onDataChanged(self, topLeft, bottomRight, roles=()) -> None:
        from PySide6.QtCore import Qt

        changed = False
        for row in range(topLeft.row(), bottomRight.row() + 1):
            nodeID = self._combo.itemData(row)
            item = self._combo.model().item(row)
            if not nodeID or str(nodeID).startswith("\x00") or item is None:
                continue
            state = item.checkState()
            if self._checks.get(nodeID, Qt.Unchecked) != state:
                self._checks[nodeID] = state
                changed = True
        if changed:
            self.checkedNodesChanged.emit()

    def checkState(self, node):
        from PySide6.QtCore import Qt

        if node is None or node.GetID() not in {n.GetID() for n in self._nodes()}:
            return Qt.Unchecked
        return self._checks.get(node.GetID(), Qt.Unchecked)

    def setCheckState(self, node, state) -> None:
        if node is None or node.GetID() not in {n.GetID() for n in self._nodes()}:
            return
        if self._checks.get(node.GetID()) == state:
            return
        self._checks[node.GetID()] = state
        self._refresh()
        self.checkedNodesChanged.emit()

    def check(self, node) -> None:
        from PySide6.QtCore import Qt

        self.setCheckState(node, Qt.Checked)

    def uncheck(self, node) -> None:
        from PySide6.QtCore import Qt

        self.setCheckState(node, Qt.Unchecked)

    def setUserCheckable(self, node, userCheckable: bool) -> None:
        if node is None:
            return
        (self._notCheckable.discard if userCheckable else self._notCheckable.add)(node.GetID())
        self._refresh()

    def checkedNodes(self) -> list:
        from PySide6.QtCore import Qt

        return [n for n in self._nodes() if self._checks.get(n.GetID(), Qt.Unchecked) == Qt.Checked]

    def uncheckedNodes(self) -> list:
        from PySide6.QtCore import Qt

        return [n for n in self._nodes() if self._checks.get(n.GetID(), Qt.Unchecked) == Qt.Unchecked]

    def allChecked(self) -> bool:
        return not self.uncheckedNodes()

    def noneChecked(self) -> bool:
        return not self.checkedNodes()


for _cls in (qMRMLWidget, qMRMLNodeComboBox, qMRMLCheckableNodeComboBox):
    _qt.register_custom_widget(_cls)
