"""Window presets for the selected image and a DICOM series picker.

Thin: the presets and the series listing/reading are core functions (``io.window``, ``io.read``);
this widget only moves their results into layers.
"""

from __future__ import annotations

from pathlib import Path

import napari
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import SynthsegError
from ..io import PRESETS, list_dicom_series, read_dicom_series, window_limits
from ._common import report_error, run_in_thread, show_info, show_warning


class WindowWidget(QWidget):
    """Pick a window preset for an image layer; pick and load one series of a DICOM folder."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._worker = None

        self.layer_combo = QComboBox()
        self.preset_combo = QComboBox()
        self.preset_combo.addItem("auto (by modality)", "auto")
        for name, preset in PRESETS.items():
            self.preset_combo.addItem(preset.label, name)
        self.preset_combo.currentIndexChanged.connect(lambda _: self.apply_preset())
        self.layer_combo.currentIndexChanged.connect(lambda _: self.apply_preset())

        window_box = QGroupBox("Window")
        form = QFormLayout(window_box)
        form.addRow("Image", self.layer_combo)
        form.addRow("Preset", self.preset_combo)

        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("DICOM folder")
        browse = QPushButton("…")
        browse.setFixedWidth(30)
        browse.clicked.connect(self._browse)
        scan = QPushButton("List series")
        scan.clicked.connect(lambda: self.list_series(self.folder_edit.text()))
        self.series_list = QListWidget()
        self.load_button = QPushButton("Load selected series")
        self.load_button.clicked.connect(self.load_selected_series)

        series_box = QGroupBox("DICOM series")
        series_layout = QVBoxLayout(series_box)
        row = QHBoxLayout()
        row.addWidget(self.folder_edit)
        row.addWidget(browse)
        series_layout.addLayout(row)
        series_layout.addWidget(scan)
        series_layout.addWidget(self.series_list)
        series_layout.addWidget(self.load_button)

        layout = QVBoxLayout(self)
        layout.addWidget(window_box)
        layout.addWidget(series_box)
        layout.addStretch(1)

        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.viewer.layers.selection.events.active.connect(self._follow_active)
        self._refresh_layers()

    # -- window --------------------------------------------------------------------------------

    def _image_layers(self):
        return [layer for layer in self.viewer.layers if isinstance(layer, napari.layers.Image)]

    def _refresh_layers(self, event=None) -> None:
        current = self.layer_combo.currentText()
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        for layer in self._image_layers():
            self.layer_combo.addItem(layer.name)
        index = self.layer_combo.findText(current)
        self.layer_combo.setCurrentIndex(max(index, 0))
        self.layer_combo.blockSignals(False)

    def _follow_active(self, event=None) -> None:
        active = self.viewer.layers.selection.active
        if isinstance(active, napari.layers.Image):
            index = self.layer_combo.findText(active.name)
            if index >= 0:
                self.layer_combo.blockSignals(True)
                self.layer_combo.setCurrentIndex(index)
                self.layer_combo.blockSignals(False)

    def selected_layer(self):
        name = self.layer_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def set_preset(self, name: str) -> None:
        """Select ``name`` (``"auto"`` or a key of :data:`PRESETS`) and apply it."""
        index = self.preset_combo.findData(name)
        if index < 0:
            report_error(SynthsegError(f"unknown window preset {name!r}"))
            return
        if index == self.preset_combo.currentIndex():
            self.apply_preset()
        else:
            self.preset_combo.setCurrentIndex(index)  # triggers apply_preset

    def apply_preset(self) -> None:
        layer = self.selected_layer()
        if layer is None:
            return
        preset = self.preset_combo.currentData()
        geometry = ((layer.metadata or {}).get("synthseg") or {}).get("geometry") or {}
        modality = geometry.get("modality", "unknown")
        try:
            limits = window_limits(layer.data, preset, modality)
        except SynthsegError as exc:
            report_error(exc)
            return
        # contrast_limits_range must contain the window, or napari clips it.
        lo = min(limits[0], layer.contrast_limits_range[0])
        hi = max(limits[1], layer.contrast_limits_range[1])
        layer.contrast_limits_range = (lo, hi)
        layer.contrast_limits = limits

    # -- DICOM series --------------------------------------------------------------------------

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "DICOM folder")
        if folder:
            self.folder_edit.setText(folder)
            self.list_series(folder)

    def list_series(self, folder: str) -> None:
        self.series_list.clear()
        try:
            series = list_dicom_series(folder)
        except SynthsegError as exc:
            report_error(exc)
            return
        self.folder_edit.setText(str(folder))
        for info in series:
            item = QListWidgetItem(info.summary())
            item.setData(256, info.uid)  # Qt.UserRole
            self.series_list.addItem(item)
        self.series_list.setCurrentRow(0)
        if len(series) > 1:
            show_info(f"{len(series)} series in {Path(folder).name}; the largest is selected")

    def load_selected_series(self):
        item = self.series_list.currentItem()
        if item is None:
            report_error(SynthsegError("list the series of a folder and select one first"))
            return None
        folder, uid = self.folder_edit.text(), item.data(256)
        self.load_button.setEnabled(False)

        def done(image):
            from .._napari import image_layer_data

            self.load_button.setEnabled(True)
            for warning in image.warnings:
                show_warning(warning)
            data, kwargs, _ = image_layer_data(image)
            kwargs["name"] = f"{Path(folder).name} [{uid[-12:]}]"
            self.viewer.add_image(data, **kwargs)

        def failed(exc):
            self.load_button.setEnabled(True)
            report_error(exc)

        self._worker = run_in_thread(read_dicom_series, folder, series_uid=uid, on_done=done, on_error=failed)
        return self._worker
