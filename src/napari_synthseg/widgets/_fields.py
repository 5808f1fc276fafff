"""Compact form fields the job panels share (so a 340 px panel never grows to fit a long name).

Every field starts from a value the caller reads from a workflow settings dataclass; nothing
here holds a default of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QWidget,
)

from ._base import row

#: Characters a combo box shows before it elides: long layer or file names must not widen a panel.
COMBO_CHARS = 10
#: Width of a combo box that shares its form row with another field.
PAIRED_CHARS = 5
#: Narrowest a field sharing a form row may get (its own size hint is ignored, see :func:`pair`).
PAIRED_MIN_PX = 64


def combo(items: Iterable[str] = (), current: str | None = None, tip: str = "", chars: int = COMBO_CHARS) -> QComboBox:
    """A combo box that does not grow with its longest item (``chars``: the width it asks for)."""
    box = QComboBox()
    box.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    box.setMinimumContentsLength(chars)
    box.addItems(list(items))
    if current is not None:
        box.setCurrentText(current)
    if tip:
        box.setToolTip(tip)
    return box


def _number(box, lo, hi, value, tip: str, suffix: str, special: str):
    box.setRange(lo, hi)
    box.setValue(value)
    box.setToolTip(tip)
    box.setSuffix(suffix)
    box.setSpecialValueText(special)
    return box


def spin(lo: int, hi: int, value: int, tip: str = "", suffix: str = "", special: str = "") -> QSpinBox:
    """An integer field; ``special`` is shown instead of the minimum (e.g. "preset")."""
    return _number(QSpinBox(), lo, hi, value, tip, suffix, special)


def dspin(lo: float, hi: float, value: float, step: float, decimals: int = 2, tip: str = "",
          special: str = "") -> QDoubleSpinBox:
    """A decimal field; ``special`` is shown instead of the minimum (e.g. "auto")."""
    box = QDoubleSpinBox()
    box.setDecimals(decimals)  # before the value, or it is rounded to two decimals
    box.setSingleStep(step)
    return _number(box, lo, hi, value, tip, "", special)


def optional_value(box: QDoubleSpinBox | QSpinBox):
    """None while ``box`` shows its special (minimum) value, else its value."""
    return None if box.specialValueText() and box.value() == box.minimum() else box.value()


def path_field(placeholder: str, browse: Callable[[QLineEdit], None] | None = None) -> tuple[QLineEdit, QWidget]:
    """A path line edit with a small "…" button; returns the edit and the row to add to a form."""
    edit = QLineEdit()
    edit.setPlaceholderText(placeholder)
    edit.setToolTip(placeholder)
    holder = QWidget()
    if browse is None:
        holder.setLayout(row(edit))
        return edit, holder
    button = QPushButton("…")
    button.setMaximumWidth(28)
    button.clicked.connect(lambda: browse(edit))
    holder.setLayout(row(edit, button))
    return edit, holder


def open_file_into(parent: QWidget, title: str, filter_: str) -> Callable[[QLineEdit], None]:
    """A browse action for :func:`path_field`: an open-file dialog writing into the edit."""

    def browse(edit: QLineEdit) -> None:
        path, _ = QFileDialog.getOpenFileName(parent, title, edit.text(), filter_)
        if path:
            edit.setText(path)

    return browse


def save_file_into(parent: QWidget, title: str, filter_: str) -> Callable[[QLineEdit], None]:
    """A browse action for :func:`path_field`: a save-file dialog (no overwrite question)."""

    def browse(edit: QLineEdit) -> None:
        path, _ = QFileDialog.getSaveFileName(parent, title, edit.text(), filter_,
                                              options=QFileDialog.DontConfirmOverwrite)
        if path:
            edit.setText(path)

    return browse


def folder_into(parent: QWidget, title: str) -> Callable[[QLineEdit], None]:
    """A browse action for :func:`path_field`: a folder dialog."""

    def browse(edit: QLineEdit) -> None:
        folder = QFileDialog.getExistingDirectory(parent, title, edit.text())
        if folder:
            edit.setText(folder)

    return browse


def pair(*widgets: QWidget) -> QHBoxLayout:
    """Fields side by side that share the row's width instead of asking for their own.

    A spin box sizes itself for its largest value (a seed field for 2^31, with its prefix), which
    would widen the whole panel; here every field gets an equal share of the panel's width.
    """
    for widget in widgets:
        policy = widget.sizePolicy()
        widget.setSizePolicy(QSizePolicy.Policy.Ignored, policy.verticalPolicy())
        widget.setMinimumWidth(PAIRED_MIN_PX)
    return row(*widgets)


def sample_picker(accept: Callable[[int], object]) -> tuple[QSpinBox, QPushButton, QHBoxLayout]:
    """A "sample k" field and an Accept button that calls ``accept(k - 1)``.

    The field counts from 1, as the sample layers' names do; ``accept`` takes the 0-based index.
    The button stays disabled until there are samples (see :func:`offer_samples`).
    """
    box = spin(1, 1, 1)
    box.setPrefix("sample ")
    button = QPushButton("Accept")
    button.setEnabled(False)
    button.clicked.connect(lambda: discard(accept(box.value() - 1)))
    return box, button, pair(box, button)


def offer_samples(box: QSpinBox, button: QPushButton, n: int) -> None:
    """Let the picker of :func:`sample_picker` choose among ``n`` samples."""
    box.setRange(1, n)
    button.setEnabled(n > 0)


def discard(_result: object) -> None:
    """A button's slot returns nothing (the methods it calls return their result for scripts)."""


def refill(box: QComboBox, names: Sequence[str], preferred: Sequence[str] = ()) -> bool:
    """Replace the items of ``box``, keeping its choice if it is still there.

    Otherwise the first of ``preferred`` that is listed, else the first item. Returns whether
    the shown text changed (signals are blocked while refilling).
    """
    current = box.currentText()
    box.blockSignals(True)
    try:
        box.clear()
        box.addItems(list(names))
        for wanted in (current, *preferred):
            index = box.findText(wanted) if wanted else -1
            if index >= 0:
                box.setCurrentIndex(index)
                break
        else:
            box.setCurrentIndex(0 if box.count() else -1)
    finally:
        box.blockSignals(False)
    return box.currentText() != current


__all__ = [
    "COMBO_CHARS",
    "PAIRED_CHARS",
    "combo",
    "discard",
    "dspin",
    "folder_into",
    "offer_samples",
    "open_file_into",
    "optional_value",
    "pair",
    "path_field",
    "refill",
    "sample_picker",
    "save_file_into",
    "spin",
]
