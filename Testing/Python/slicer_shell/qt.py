"""Test stand-in for Slicer's PythonQt ``qt`` module, backed by PySide6.

Slicer's ``qt`` module is one flat namespace with the QtCore, QtGui, QtWidgets and QtUiTools
classes (``qt.QTimer``, ``qt.QVBoxLayout``, ``qt.Qt.AlignLeft``, ``qt.QUiLoader`` ...). This
module gives the same names. The QObject classes are PySide6 subclasses that follow
PythonQt's rules, so module code written for Slicer runs unchanged and code that would fail
in Slicer fails here too:

- Qt properties are Python attributes and shadow same-named getters:
  ``button.text`` is a str, ``button.enabled = False``, ``spinBox.value``, ``combo.currentText``;
- ``obj.connect("signal(args)", callable)`` / ``obj.disconnect(...)``;
- ``obj.name`` is the objectName, ``obj.className()`` the Qt class name.

``QUiLoader`` creates these classes and Slicer's custom widgets (as Slicer's loader does
through its designer plugins) and makes the .ui file's ``<connections>`` by signal and slot
name, because C++ signatures such as ``setMRMLScene(vtkMRMLScene*)`` have no PySide6 meta-type.

Test stand-in only: nothing here is shipped with the extension.
"""

from __future__ import annotations

import functools
import types
import xml.etree.ElementTree as ET

from PySide6 import QtCore as _QtCore
from PySide6 import QtGui as _QtGui
from PySide6 import QtWidgets as _QtWidgets
from PySide6.QtCore import *  # noqa: F403
from PySide6.QtGui import *  # noqa: F403
from PySide6.QtUiTools import QUiLoader as _PySideUiLoader
from PySide6.QtWidgets import *  # noqa: F403

# PySide6-only helpers are not part of PythonQt's ``qt`` namespace.
for _name in ("Signal", "Slot", "Property", "SignalInstance", "QEnum", "QFlag", "ClassInfo", "MetaFunction",
              "MetaSignal"):
    globals().pop(_name, None)

_QObject = _QtCore.QObject


def _signal_name(signature: str) -> str:
    return signature.strip().lstrip("0123456789").split("(", 1)[0].strip()


#: Properties whose getter is a C++ virtual: PySide6 looks overrides up through the instance's
#: attributes, so reading these as properties would recurse. They stay methods here.
_VIRTUAL_GETTERS = frozenset({"sizeHint", "minimumSizeHint"})


@functools.cache
def _own_python_attribute(cls: type, name: str) -> bool:
    """True when ``name`` is defined by a Python class (an override), not by PySide6 or this mixin."""
    for klass in cls.__mro__:
        if klass is PythonQtObject or klass.__module__.startswith(("PySide6", "Shiboken", "builtins")):
            return False
        if name in klass.__dict__ and not isinstance(klass.__dict__[name], _QtCore.Property):
            return True
    return False


class PythonQtObject:
    """Mixin giving a PySide6 QObject class PythonQt's attribute rules (see the module docstring)."""

    def __getattribute__(self, name):
        if name[0] != "_" and name not in _VIRTUAL_GETTERS and not _own_python_attribute(type(self), name):
            metaObject = _QObject.metaObject(self)
            index = metaObject.indexOfProperty(name)
            if index >= 0:
                return metaObject.property(index).read(self)
            if name == "connect":
                return types.MethodType(_pythonqt_connect, self)
            if name == "disconnect":
                return types.MethodType(_pythonqt_disconnect, self)
            if name == "name":
                return _QObject.objectName(self)
        return super().__getattribute__(name)

    def __setattr__(self, name, value):
        if name[0] != "_":
            if name == "name":
                _QObject.setObjectName(self, value)
                return
            metaObject = _QObject.metaObject(self)
            index = metaObject.indexOfProperty(name)
            if index >= 0:
                if not metaObject.property(index).write(self, value):
                    raise AttributeError(f"cannot set property '{name}' of {self.className()}")
                return
        super().__setattr__(name, value)

    def className(self) -> str:
        return _QObject.metaObject(self).className()


def _pythonqt_connect(self, signature, slot):
    return getattr(self, _signal_name(signature)).connect(slot)


def _pythonqt_disconnect(self, signature, slot):
    return getattr(self, _signal_name(signature)).disconnect(slot)


def _wrap(base: type) -> type:
    return type(base.__name__, (PythonQtObject, base), {"__module__": __name__})


# PythonQt-flavoured versions of every QObject class of QtWidgets, QtGui and QtCore.
_CLASSES: dict[str, type] = {}
for _module in (_QtCore, _QtGui, _QtWidgets):
    for _name, _value in vars(_module).items():
        if isinstance(_value, type) and issubclass(_value, _QObject) and _name.startswith("Q") \
                and _name not in ("QCoreApplication", "QGuiApplication", "QApplication"):
            _CLASSES[_name] = _wrap(_value)
globals().update(_CLASSES)


def register_custom_widget(cls: type) -> type:
    """Make ``cls`` known to :class:`QUiLoader` by its class name (Slicer: designer plugins)."""
    _CLASSES[cls.__name__] = cls
    return cls


class QUiLoader(PythonQtObject, _PySideUiLoader):
    """QUiLoader that creates the PythonQt-flavoured and custom classes and makes the .ui connections."""

    def createWidget(self, className, parent=None, name=""):
        cls = _CLASSES.get(className)
        if cls is None:
            return _PySideUiLoader.createWidget(self, className, parent, name)
        widget = cls(parent)
        _QObject.setObjectName(widget, name)
        return widget

    def load(self, device, parentWidget=None):
        if isinstance(device, str):
            device = QFile(device)  # noqa: F405
        if not device.isOpen():
            device.open(QIODevice.ReadOnly)  # noqa: F405
        root = ET.fromstring(bytes(device.readAll()))
        connections = root.find("connections")
        if connections is not None:
            root.remove(connections)
        buffer = QBuffer()  # noqa: F405
        buffer.setData(QByteArray(ET.tostring(root)))  # noqa: F405
        buffer.open(QIODevice.ReadOnly)  # noqa: F405
        widget = _PySideUiLoader.load(self, buffer, parentWidget)
        if widget is not None and connections is not None:
            for connection in connections.findall("connection"):
                sender = _find_object(widget, connection.findtext("sender"))
                receiver = _find_object(widget, connection.findtext("receiver"))
                signal = getattr(sender, _signal_name(connection.findtext("signal")))
                signal.connect(getattr(receiver, _signal_name(connection.findtext("slot"))))
        return widget


def _find_object(root, name):
    if _QObject.objectName(root) == name:
        return root
    found = _QObject.findChild(root, _QObject, name)
    if found is None:
        raise RuntimeError(f"the .ui file connects '{name}', which it does not define")
    return found
