"""Window presets for the selected image and a DICOM series picker.

Thin: the presets and the series listing/reading are core functions (``io.window``, ``io.read``);
this widget only moves their results into layers.
"""

from __future__ import annotations

from pathlib import Path

import napari
from qtpy.QtWidgets import QListWidget, QListWidgetItem, QPushButton

from ..errors import SynthsegError
from ..io import PRESETS, list_dicom_series, read_dicom_series, window_limits
from ._base import JobPanel
from ._common import show_warning
from ._fields import combo, folder_into, path_field, refill


class WindowWidget(JobPanel):
    """Pick a window preset for an image layer; pick and load one series of a DICOM folder."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer)
        form = self.group("Window")
        self.layer_combo = combo()
        self.preset_combo = combo()
        self.preset_combo.addItem("auto (by modality)", "auto")
        for name, preset in PRESETS.items():
            self.preset_combo.addItem(preset.label, name)
        self.preset_combo.currentIndexChanged.connect(lambda _: self.apply_preset())
        self.layer_combo.currentIndexChanged.connect(lambda _: self.apply_preset())
        form.addRow("Image", self.layer_combo)
        form.addRow("Preset", self.preset_combo)

        form = self.group("DICOM series")
        self.folder_edit, folder_row = path_field("DICOM folder", self._browse)
        scan = QPushButton("List series")
        scan.clicked.connect(lambda: self.list_series(self.folder_edit.text()))
        self.series_list = QListWidget()
        self.series_list.setMaximumHeight(120)
        self.load_button = QPushButton("Load selected series")
        self.load_button.clicked.connect(self.load_selected_series)
        form.addRow(folder_row)
        form.addRow(scan)
        form.addRow(self.series_list)
        form.addRow(self.load_button)
        self.finish_layout()
        self.busy_while_running(scan, self.load_button)

        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.viewer.layers.selection.events.active.connect(self._follow_active)
        self._refresh_layers()

    # -- window --------------------------------------------------------------------------------

    def _image_layers(self):
        return [layer for layer in self.viewer.layers if isinstance(layer, napari.layers.Image)]

    def _refresh_layers(self, event=None) -> None:
        refill(self.layer_combo, [layer.name for layer in self._image_layers()])

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
            self.fail(SynthsegError(f"unknown window preset {name!r}"))
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
            self.fail(exc)
            return
        # contrast_limits_range must contain the window, or napari clips it.
        lo = min(limits[0], layer.contrast_limits_range[0])
        hi = max(limits[1], layer.contrast_limits_range[1])
        layer.contrast_limits_range = (lo, hi)
        layer.contrast_limits = limits

    # -- DICOM series --------------------------------------------------------------------------

    def _browse(self, edit) -> None:
        folder_into(self, "DICOM folder")(edit)
        if edit.text():
            self.list_series(edit.text())

    def list_series(self, folder: str):
        """List the series of a DICOM folder in a worker (a large folder takes seconds to scan)."""
        if not str(folder).strip():
            self.fail(SynthsegError("choose a DICOM folder"))
            return None
        self.series_list.clear()

        def done(series) -> None:
            self.folder_edit.setText(str(folder))
            for info in series:
                item = QListWidgetItem(info.summary())
                item.setData(256, info.uid)  # Qt.UserRole
                item.setToolTip(info.summary())
                self.series_list.addItem(item)
            self.series_list.setCurrentRow(0)
            largest = "; the largest is selected" if len(series) > 1 else ""
            self.say(f"{len(series)} series in {Path(folder).name}{largest}")

        return self.run_job(list_dicom_series, folder, on_done=done, message=f"scanning {Path(folder).name}…")

    def load_selected_series(self):
        """Read the selected series in a worker and add it as an image layer (None on a user error)."""
        item = self.series_list.currentItem()
        if item is None:
            self.fail(SynthsegError("list the series of a folder and select one first"))
            return None
        folder, uid = self.folder_edit.text(), item.data(256)

        def done(image) -> None:
            from .._napari import image_layer_data

            for warning in image.warnings:
                show_warning(warning)
            data, kwargs, _ = image_layer_data(image)
            kwargs["name"] = f"{Path(folder).name} [{uid[-12:]}]"
            self.viewer.add_image(data, **kwargs)
            self.say(f"loaded {kwargs['name']}")

        return self.run_job(read_dicom_series, folder, series_uid=uid, on_done=done,
                            message=f"reading series …{uid[-12:]}")
