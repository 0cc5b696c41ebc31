"""Test stand-in for the parts of Slicer's ``ctk`` module the BiJROS panels use, on PySide6.

- ``ctkCollapsibleButton``: a section header (a QAbstractButton) whose layout holds the
  section's widgets; clicking the header collapses / expands them. Properties as in CTK:
  ``collapsed`` (also a Python attribute, as PythonQt exposes it), ``collapsedHeight``;
  signal ``contentsCollapsed(bool)``.
- ``ctkDoubleSpinBox``: the QDoubleSpinBox API (value, minimum, maximum, decimals, suffix,
  ``valueChanged(double)``).
- ``ctkDirectoryButton``: a push button showing a folder; properties ``directory`` and ``caption``,
  signal ``directoryChanged(QString)`` (CTK's; clicking opens a folder dialog in Slicer, which tests
  replace by setting ``directory``).

Test stand-in only: nothing here is shipped with the extension.
"""

from __future__ import annotations

from PySide6.QtCore import Property, QSize, Signal
from PySide6.QtWidgets import (
    QAbstractButton,
    QDoubleSpinBox,
    QPushButton,
    QSizePolicy,
    QStyle,
    QStyleOptionButton,
    QStylePainter,
    QWidget,
)

from . import qt as _qt


class ctkCollapsibleButton(_qt.PythonQtObject, QAbstractButton):
    contentsCollapsed = Signal(bool)

    def __init__(self, *args):
        text = args[0] if args and isinstance(args[0], str) else ""
        parent = args[-1] if args and not isinstance(args[-1], str) else None
        super().__init__(parent)
        self.setText(text)
        self._collapsed = False
        self._collapsedHeight = 14
        self.clicked.connect(lambda: self.setCollapsed(not self._collapsed))
        self.setContentsMargins(0, self._headerHeight(), 0, 0)
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Preferred)

    def _headerHeight(self) -> int:
        return self.fontMetrics().height() + 10

    def isCollapsed(self) -> bool:
        return self._collapsed

    def setCollapsed(self, collapsed: bool) -> None:
        collapsed = bool(collapsed)
        if collapsed == self._collapsed:
            return
        self._collapsed = collapsed
        for child in self.children():
            if child.isWidgetType():
                child.setVisible(not collapsed)
        self.setMaximumHeight(self._headerHeight() + self._collapsedHeight if collapsed else 16777215)
        self.updateGeometry()
        self.update()
        self.contentsCollapsed.emit(collapsed)

    def _getCollapsedHeight(self) -> int:
        return self._collapsedHeight

    def _setCollapsedHeight(self, height: int) -> None:
        self._collapsedHeight = int(height)

    collapsed = Property(bool, isCollapsed, setCollapsed)
    collapsedHeight = Property(int, _getCollapsedHeight, _setCollapsedHeight)

    def hitButton(self, pos) -> bool:
        return 0 <= pos.y() < self._headerHeight()

    def sizeHint(self) -> QSize:
        header = self._headerHeight()
        width = self.fontMetrics().horizontalAdvance(QAbstractButton.text(self)) + 40
        if self._collapsed or self.layout() is None:
            return QSize(width, header + (self._collapsedHeight if self._collapsed else 0))
        inner = self.layout().sizeHint()
        return QSize(max(width, inner.width()), header + inner.height())

    def minimumSizeHint(self) -> QSize:
        if self._collapsed or self.layout() is None:
            return self.sizeHint()
        # Slicer's module panel scrolls rather than squeezing a section: its height is its size hint.
        return QSize(self.layout().minimumSize().width(), self.sizeHint().height())

    def paintEvent(self, event) -> None:
        painter = QStylePainter(self)
        option = QStyleOptionButton()
        option.initFrom(self)
        option.rect.setHeight(self._headerHeight())
        option.text = ""
        if self.isDown():
            option.state |= QStyle.State_Sunken
        painter.drawControl(QStyle.CE_PushButton, option)
        arrow = QStyleOptionButton()
        arrow.initFrom(self)
        size = self._headerHeight() - 12
        arrow.rect.setRect(8, 6, size, size)
        painter.drawPrimitive(QStyle.PE_IndicatorArrowRight if self._collapsed else QStyle.PE_IndicatorArrowDown, arrow)
        text_rect = option.rect.adjusted(14 + size, 0, -4, 0)
        painter.drawText(text_rect, _qt.Qt.AlignVCenter | _qt.Qt.AlignLeft, QAbstractButton.text(self))
        if not self._collapsed:
            painter.setPen(QWidget.palette(self).mid().color())
            painter.drawRect(QWidget.rect(self).adjusted(0, self._headerHeight() - 1, -1, -1))


class ctkDoubleSpinBox(_qt.PythonQtObject, QDoubleSpinBox):
    """CTK's double spin box; the API used here is QDoubleSpinBox's."""


class ctkDirectoryButton(_qt.PythonQtObject, QPushButton):
    """CTK's directory button: ``directory`` (str), ``caption`` (str), ``directoryChanged(QString)``."""

    directoryChanged = Signal(str)

    def __init__(self, parent=None):
        QPushButton.__init__(self, parent)
        self._directory = ""
        self._caption = ""

    def _getDirectory(self):
        return self._directory

    def _setDirectory(self, value):
        value = str(value)
        if value != self._directory:
            self._directory = value
            QPushButton.setText(self, value or "Select a folder")
            self.directoryChanged.emit(value)

    def _getCaption(self):
        return self._caption

    def _setCaption(self, value):
        self._caption = str(value)

    directory = Property(str, _getDirectory, _setDirectory, notify=directoryChanged)
    caption = Property(str, _getCaption, _setCaption)


for _cls in (ctkCollapsibleButton, ctkDoubleSpinBox, ctkDirectoryButton):
    _qt.register_custom_widget(_cls)
