"""All-or-nothing changes to an MRML scene.

The modules promise that a run which fails or is cancelled leaves no half-made nodes:
:class:`SceneTransaction` remembers which nodes and subject-hierarchy items existed (and the
content of existing nodes it is told will be modified) and, if the block raises, removes
every node and item added since, puts moved items back and restores the modified nodes.

Console example::

    with SceneTransaction(slicer.mrmlScene) as transaction:
        transaction.willModify(existingTransformNode)
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLGridTransformNode")
        ...  # an exception here removes `node` and restores `existingTransformNode`
"""

from __future__ import annotations


def nodeIds(scene) -> list[str]:
    """IDs of all nodes in the scene, in scene order."""
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]


def removeNodesAddedSince(scene, before) -> None:
    """Remove every node whose ID is not in ``before`` (newest first)."""
    known = set(before)
    for nodeId in reversed([i for i in nodeIds(scene) if i not in known]):
        node = scene.GetNodeByID(nodeId)
        if node is not None:
            scene.RemoveNode(node)


def subjectHierarchyParents(scene) -> dict[int, int]:
    """Subject-hierarchy item ID -> parent item ID, for every item of the scene."""
    import vtk

    shNode = scene.GetSubjectHierarchyNode()
    if shNode is None:
        return {}
    items = vtk.vtkIdList()
    shNode.GetItemChildren(shNode.GetSceneItemID(), items, True)
    return {items.GetId(i): shNode.GetItemParent(items.GetId(i)) for i in range(items.GetNumberOfIds())}


def restoreSubjectHierarchy(scene, parents: dict[int, int]) -> None:
    """Remove items added since ``parents`` was taken and put moved items back."""
    shNode = scene.GetSubjectHierarchyNode()
    if shNode is None:
        return
    now = subjectHierarchyParents(scene)
    for item in sorted(set(now) - set(parents), reverse=True):
        if item in subjectHierarchyParents(scene):  # not gone with a removed parent
            shNode.RemoveItem(item, False, False)  # data nodes were handled already; keep children
    for item, parent in parents.items():
        if item in now and shNode.GetItemParent(item) != parent:
            shNode.SetItemParent(item, parent)


class SceneTransaction:
    """Context manager: on an exception, undo node additions and restore modified nodes."""

    def __init__(self, scene):
        self.scene = scene
        self.before: list[str] = []
        self._backups: list[tuple[object, object]] = []
        self._shParents: dict[int, int] = {}
        self.committed = False

    def __enter__(self) -> SceneTransaction:
        self.before = nodeIds(self.scene)
        self._shParents = subjectHierarchyParents(self.scene)
        return self

    def willModify(self, node) -> None:
        """Keep a copy of ``node``'s content so that :meth:`rollback` can restore it."""
        backup = self.scene.CreateNodeByClass(node.GetClassName())
        backup.CopyContent(node)
        self._backups.append((node, backup))

    def rollback(self) -> None:
        removeNodesAddedSince(self.scene, self.before)
        restoreSubjectHierarchy(self.scene, self._shParents)
        for node, backup in reversed(self._backups):
            node.CopyContent(backup)
            backup.UnRegister(None)
        self._backups.clear()

    def __exit__(self, excType, exc, tb) -> bool:
        if excType is not None:
            self.rollback()
        else:
            for _node, backup in self._backups:
                backup.UnRegister(None)
            self._backups.clear()
            self.committed = True
        return False
