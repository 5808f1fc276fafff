"""The lesion editor's real-lesion library strip: thumbnails to pick the next lesion from.

A compact scrollable grid (four thumbnails across the 340 px panel) of the items of a lesion
library, e.g. the LIDC nodules imported by ``synthseg library import-lidc``, filtered by nodule
class and diameter range, each captioned with its diameter and class. Clicking one makes that
real nodule the editor's source for the next click-to-place, at its own size. The listing and
the thumbnails are made in a worker thread (cached in memory and on disk by
:mod:`napari_synthseg.workflow.library_browser`, which holds every rule); the grid fills in as
they come.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from qtpy.QtCore import QSize, Qt, Signal
from qtpy.QtGui import QIcon, QImage, QPixmap
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..errors import SynthsegError
from ..workflow.library_browser import (
    CLASS_CHOICES,
    DEFAULT_DIAMETER_RANGE,
    THUMBNAIL_PX,
    LibraryChoice,
    LibraryEntry,
    browse_library,
    choose_library_lesion,
    default_library_folder,
    library_thumbnails,
)

logger = logging.getLogger(__name__)

#: Grid cell: the thumbnail and two caption lines (fits four across the editor panel).
CELL = QSize(THUMBNAIL_PX + 16, THUMBNAIL_PX + 34)
#: Rows visible before the grid scrolls.
VISIBLE_ROWS = 2


def rgb_icon(rgb: np.ndarray) -> QIcon:
    """A QIcon of an RGB uint8 array (copied: the array may go away)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    image = QImage(rgb.tobytes(), w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    return QIcon(QPixmap.fromImage(image))


def _listing_and_pictures(generation: int, folder: str, nodule_class: str, lo: float, hi: float):
    """Worker: the filtered entries first, then one ``(id, rgb)`` per entry, then done.

    Every message carries the request's ``generation``: messages of a request the user has
    already replaced (new filter) may still be queued, and are dropped.
    """
    entries = browse_library(folder, nodule_class, lo, hi)
    yield (generation, "entries", entries)
    for lesion_id, rgb in library_thumbnails(folder, [e.lesion_id for e in entries]):
        yield (generation, "picture", (lesion_id, rgb))
    yield (generation, "done", None)


class LibraryStrip(QWidget):
    """Library folder, class and diameter filters, and the thumbnail grid.

    Parameters
    ----------
    editor : LesionEditorWidget
        Its new-lesion fields receive the chosen item (source, file, size).
    """

    chosen = Signal(object)  # LibraryChoice

    def __init__(self, editor: Any) -> None:
        super().__init__()
        self.editor = editor
        self._worker: Any = None
        self._generation = 0
        self._items: dict[str, QListWidgetItem] = {}
        self.entries: list[LibraryEntry] = []
        self.last_choice: LibraryChoice | None = None

        self.folder_edit = QLineEdit(default_library_folder())
        self.folder_edit.setPlaceholderText("lesion library folder (thumbnails below)")
        self.folder_edit.editingFinished.connect(self.refresh)
        browse = QPushButton("…")
        browse.setMaximumWidth(28)
        browse.setToolTip("choose a lesion library folder (one with index.json)")
        browse.clicked.connect(self._browse)
        self.class_combo = QComboBox()
        self.class_combo.addItems(list(CLASS_CHOICES))
        self.class_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.class_combo.setMinimumContentsLength(6)
        self.class_combo.setToolTip("nodule class measured from HU inside the mask at import")
        self.class_combo.currentIndexChanged.connect(lambda _i: self.refresh())
        self.min_spin = self._diameter_spin(DEFAULT_DIAMETER_RANGE[0], "smallest diameter shown")
        self.max_spin = self._diameter_spin(DEFAULT_DIAMETER_RANGE[1], "largest diameter shown")
        self.count_label = QLabel("")
        self.count_label.setWordWrap(True)
        self.count_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        self.grid = QListWidget()
        self.grid.setViewMode(QListView.ViewMode.IconMode)
        self.grid.setIconSize(QSize(THUMBNAIL_PX, THUMBNAIL_PX))
        self.grid.setGridSize(CELL)
        self.grid.setMovement(QListView.Movement.Static)
        self.grid.setResizeMode(QListView.ResizeMode.Adjust)
        self.grid.setWrapping(True)
        self.grid.setWordWrap(True)
        self.grid.setUniformItemSizes(True)
        self.grid.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.grid.setFixedHeight(CELL.height() * VISIBLE_ROWS + 8)
        self.grid.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        font = self.grid.font()
        font.setPointSizeF(max(6.5, font.pointSizeF() - 1.5))
        self.grid.setFont(font)
        self.grid.itemClicked.connect(self._clicked)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        top = QHBoxLayout()
        top.addWidget(self.folder_edit, 3)
        top.addWidget(browse)
        top.addWidget(self.class_combo, 2)
        filters = QHBoxLayout()
        filters.addWidget(QLabel("Diameter"))
        filters.addWidget(self.min_spin, 1)
        filters.addWidget(QLabel("–"))
        filters.addWidget(self.max_spin, 1)
        layout.addLayout(top)
        layout.addLayout(filters)
        layout.addWidget(self.grid)
        layout.addWidget(self.count_label)
        self.chosen.connect(self._apply_to_editor)
        self.grid.setVisible(False)
        if self.folder_edit.text():
            self.refresh()

    def _diameter_spin(self, value: float, tip: str) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(0.0, 100.0)
        box.setDecimals(0)
        # typed or scrolled: napari's theme gives spin buttons ~55 px, too wide for two in a row
        box.setButtonSymbols(QDoubleSpinBox.ButtonSymbols.NoButtons)
        box.setSingleStep(1.0)
        box.setSuffix(" mm")
        box.setValue(value)
        box.setKeyboardTracking(False)
        box.setToolTip(tip)
        box.valueChanged.connect(lambda _v: self.refresh())
        return box

    # ---- filling the grid ---------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def refresh(self) -> None:
        """List the library with the current filters and draw the thumbnails (in a worker)."""
        self._stop()
        self.grid.clear()
        self._items = {}
        self.entries = []
        folder = self.folder_edit.text().strip()
        self.grid.setVisible(False)  # shown when there is something to show (compact otherwise)
        if not folder:
            self.count_label.setText("")
            return
        from napari.qt.threading import create_worker

        self._generation += 1
        worker = create_worker(_listing_and_pictures, self._generation, folder, self.class_combo.currentText(),
                               self.min_spin.value(), self.max_spin.value(), _start_thread=False,
                               _connect={"yielded": self._received, "errored": self._failed})
        relay = getattr(worker, "_relay_error", None)  # errors show as one line (see run_in_thread)
        if relay is not None:
            try:
                worker.errored.disconnect(relay)
            except (TypeError, RuntimeError):
                pass
        self.count_label.setText("reading the library…")
        self._worker = worker
        worker.start()

    def _stop(self) -> None:
        if self._worker is not None:
            self._worker.quit()  # a generator worker stops at its next yield
            self._worker = None

    def _received(self, message) -> None:
        generation, kind, payload = message
        if generation != self._generation:
            return  # from a request already replaced
        if kind == "done":
            self._worker = None
        elif kind == "entries":
            self.entries = payload
            blank = rgb_icon(np.full((THUMBNAIL_PX, THUMBNAIL_PX, 3), 40, np.uint8))
            for entry in payload:
                item = QListWidgetItem(blank, entry.caption)
                item.setData(Qt.ItemDataRole.UserRole, entry.lesion_id)
                item.setToolTip(entry.tooltip)
                item.setTextAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
                self.grid.addItem(item)
                self._items[entry.lesion_id] = item
            self.grid.setVisible(bool(payload))
            self.count_label.setText(f"{len(payload)} lesions; click one to place it next" if payload
                                     else "no lesion of this class and size in the library")
        else:
            lesion_id, rgb = payload
            shown = self._items.get(lesion_id)
            if shown is not None:
                shown.setIcon(rgb_icon(rgb))

    def _failed(self, exc: BaseException) -> None:
        self._worker = None
        self.count_label.setText("")
        if isinstance(exc, SynthsegError):
            self.count_label.setText(str(exc).splitlines()[0])
            self.editor.fail(exc)
        else:
            raise exc

    def wait_idle(self, timeout_s: float = 60.0) -> None:
        """Process events until the listing and thumbnails are done (tests, scripted use)."""
        import time

        from qtpy.QtWidgets import QApplication

        end = time.monotonic() + timeout_s
        while self.busy and time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.005)
        QApplication.processEvents()

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Lesion library folder")
        if folder:
            self.folder_edit.setText(folder)
            self.refresh()

    # ---- choosing -----------------------------------------------------------------------------

    def _clicked(self, item: QListWidgetItem) -> None:
        lesion_id = item.data(Qt.ItemDataRole.UserRole)
        try:
            choice = choose_library_lesion(self.folder_edit.text(), lesion_id)
        except SynthsegError as exc:
            self.editor.fail(exc)
            return
        self.last_choice = choice
        self.chosen.emit(choice)

    def choose(self, lesion_id: str) -> None:
        """Select an item by id as a click on its thumbnail does."""
        item = self._items.get(lesion_id)
        if item is None:
            raise SynthsegError(f"lesion {lesion_id!r} is not shown in the library strip")
        self.grid.setCurrentItem(item)
        self._clicked(item)

    def _apply_to_editor(self, choice: LibraryChoice) -> None:
        """The chosen item becomes the new-lesion source, at its own size."""
        editor = self.editor
        editor.lesion_path.setText(choice.spec_text)
        editor.lesion_combo.setCurrentIndex(editor.lesion_combo.findData("file"))
        editor.size_spin.setValue(choice.size_mm)
        editor.say(f"next lesion: library {choice.entry.nodule_class} nodule, {choice.size_mm:.1f} mm "
                   "(click in the image with Place on click)")

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self._stop()
        super().closeEvent(event)


__all__ = ["LibraryStrip", "rgb_icon"]
