"""Lesion editor: open a scene on an image, place lesions by clicking, drag them, edit, undo.

Everything here translates between napari layers and the core: ``Scene`` (records, undo,
autosave), ``SceneRenderer`` (incremental pixels) and ``lesions.place`` (validated edits). The
layers it shows:

- ``synthetic``: the rendered image (the renderer's own array, refreshed after each edit);
- ``lesion labels``: the exact label map;
- ``lesions``: one point per lesion, a handle to select and drag;
- ``constraint``: the organ constraint, editable with the paint tools (stored in the scene);
- ``lesion mask``: paint a real lesion here to remove it or extract it to a library.
"""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..errors import SynthsegError
from ..io import read_image, window_limits
from ..lesions.place import edit_lesion, place_lesion, remove_real_lesion
from ..render import SceneRenderer
from ..scene import BLEND_MODES, Scene
from ._common import register_scene_editor, report_error, run_in_thread, show_info

PROCEDURAL = ("solid", "part-solid", "ground-glass")


def default_scene_folder(source_paths: list[str]) -> Path:
    """``<image folder>/<name>_scene`` beside the user's image; under ~/synthseg-scenes for the
    bundled samples or where the image's folder is not writable."""
    import os

    from .._napari import _sample_dir

    src = Path(source_paths[0])
    folder = src.parent.parent if len(source_paths) > 1 else src.parent
    name = f"{(src.parent.name if len(source_paths) > 1 else src.name).split('.')[0]}_scene"
    try:
        bundled = folder.resolve() == _sample_dir().resolve()
    except Exception:  # no bundled samples in this installation
        bundled = False
    if bundled or not os.access(folder, os.W_OK):
        return Path.home() / "synthseg-scenes" / name
    return folder / name


def _spin(lo, hi, value, step=1.0, decimals=1, suffix="") -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(lo, hi)
    box.setDecimals(decimals)
    box.setSingleStep(step)
    box.setValue(value)
    if suffix:
        box.setSuffix(suffix)
    return box


class LesionEditorWidget(QWidget):
    """Place, select, move, resize, rotate, re-contrast, re-blend and delete lesions."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        register_scene_editor(napari_viewer, self)
        self.scene: Scene | None = None
        self.renderer: SceneRenderer | None = None
        self.image_layer = self.labels_layer = self.points_layer = None
        self.constraint_layer = self.mask_layer = None
        self._syncing = False
        self._unsubscribe = None

        # -- scene ------------------------------------------------------------------------
        self.source_combo = QComboBox()
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("scene folder (created or opened)")
        new_btn = QPushButton("New scene")
        new_btn.clicked.connect(self.new_scene_from_layer)
        open_btn = QPushButton("Open scene")
        open_btn.clicked.connect(lambda: self.open_scene(self.folder_edit.text()))
        scene_box = QGroupBox("Scene")
        form = QFormLayout(scene_box)
        form.addRow("Image", self.source_combo)
        form.addRow("Folder", self.folder_edit)
        row = QHBoxLayout()
        row.addWidget(new_btn)
        row.addWidget(open_btn)
        form.addRow(row)
        self.constraint_btn = QPushButton("Organ constraint (auto)")
        self.constraint_btn.clicked.connect(self.compute_constraint)
        form.addRow(self.constraint_btn)

        # -- new lesion -------------------------------------------------------------------
        self.lesion_combo = QComboBox()
        for kind in PROCEDURAL:
            self.lesion_combo.addItem(f"procedural {kind}", ("procedural", kind))
        self.lesion_combo.addItem("CT patch / library file", ("file", None))
        self.lesion_path = QLineEdit()
        self.lesion_path.setPlaceholderText("CT patch (.mha, mask beside it) or library item (.json)")
        self.size_spin = _spin(1, 200, 12, 1, 1, " mm")
        self.rotation_spin = _spin(-360, 360, 0, 15, 0, "°")
        self.contrast_spin = _spin(0.05, 10, 1, 0.1, 2)
        self.feather_spin = _spin(0, 20, 1, 0.5, 1, " mm")
        self.blend_combo = QComboBox()
        self.blend_combo.addItems(BLEND_MODES)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.node21_check = QCheckBox("NODE21 contrast matching (CXR)")
        self.place_check = QCheckBox("Place on click")
        self.place_check.setToolTip("click inside the image (and constraint) to place a lesion")
        new_box = QGroupBox("Lesion")
        form = QFormLayout(new_box)
        form.addRow("Source", self.lesion_combo)
        form.addRow("File", self.lesion_path)
        form.addRow("Size", self.size_spin)
        form.addRow("Rotation", self.rotation_spin)
        form.addRow("Contrast", self.contrast_spin)
        form.addRow(self.node21_check)
        form.addRow("Blend", self.blend_combo)
        form.addRow("Feather", self.feather_spin)
        form.addRow("Seed", self.seed_spin)
        form.addRow(self.place_check)

        # -- placed lesions ---------------------------------------------------------------
        self.lesion_list = QListWidget()
        self.lesion_list.currentRowChanged.connect(self._list_selected)
        apply_btn = QPushButton("Apply to selected")
        apply_btn.clicked.connect(self.apply_to_selected)
        delete_btn = QPushButton("Delete")
        delete_btn.clicked.connect(self.delete_selected)
        self.undo_btn = QPushButton("Undo")
        self.undo_btn.clicked.connect(self.undo)
        self.redo_btn = QPushButton("Redo")
        self.redo_btn.clicked.connect(self.redo)
        list_box = QGroupBox("Placed lesions")
        lay = QVBoxLayout(list_box)
        lay.addWidget(self.lesion_list)
        row = QHBoxLayout()
        for button in (apply_btn, delete_btn, self.undo_btn, self.redo_btn):
            row.addWidget(button)
        lay.addLayout(row)
        self.status = QLabel("no scene")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)

        # -- real lesions -----------------------------------------------------------------
        self.fill_combo = QComboBox()
        self._refresh_fillers()
        self.library_edit = QLineEdit()
        self.library_edit.setPlaceholderText("lesion library folder")
        remove_btn = QPushButton("Remove painted lesion")
        remove_btn.clicked.connect(self.remove_painted)
        extract_btn = QPushButton("Extract to library")
        extract_btn.clicked.connect(self.extract_painted)
        real_box = QGroupBox("Real lesion (paint it in 'lesion mask')")
        form = QFormLayout(real_box)
        form.addRow("Fill", self.fill_combo)
        form.addRow("Library", self.library_edit)
        row = QHBoxLayout()
        row.addWidget(remove_btn)
        row.addWidget(extract_btn)
        form.addRow(row)

        layout = QVBoxLayout(self)
        for box in (scene_box, new_box, list_box, real_box):
            layout.addWidget(box)
        layout.addStretch(1)

        self.viewer.layers.events.inserted.connect(self._refresh_sources)
        self.viewer.layers.events.removed.connect(self._refresh_sources)
        self._refresh_sources()
        self.viewer.bind_key("Control-Z", lambda v: self.undo(), overwrite=True)
        self.viewer.bind_key("Control-Shift-Z", lambda v: self.redo(), overwrite=True)
        self._update_buttons()

    # ---- scene -----------------------------------------------------------------------------

    def _refresh_sources(self, event=None) -> None:
        current = self.source_combo.currentText()
        self.source_combo.clear()
        for layer in self.viewer.layers:
            if isinstance(layer, napari.layers.Image) and (layer.metadata or {}).get("synthseg"):
                if layer is not self.image_layer:
                    self.source_combo.addItem(layer.name)
        index = self.source_combo.findText(current)
        self.source_combo.setCurrentIndex(max(index, 0))
        if not self.folder_edit.text() and self.source_combo.count():
            layer = self.viewer.layers[self.source_combo.currentText()]
            self.folder_edit.setText(str(default_scene_folder(layer.metadata["synthseg"]["source_paths"])))

    def _refresh_fillers(self) -> None:
        from ..fill import available_fillers

        self.fill_combo.clear()
        self.fill_combo.addItems(available_fillers())

    def new_scene_from_layer(self) -> None:
        name = self.source_combo.currentText()
        if not name:
            report_error(SynthsegError("open an image with the SynthSeg reader first (File > Open)"))
            return
        info = self.viewer.layers[name].metadata["synthseg"]
        paths = info["source_paths"]
        try:
            image = read_image(paths[0] if len(paths) == 1 else str(Path(paths[0]).parent), series_uid=info.get("series_uid"))
            image.spacing = tuple(info["geometry"]["spacing"])  # spacing the user may have set
            scene = Scene.create(image, self.folder_edit.text())
        except SynthsegError as exc:
            report_error(exc)
            return
        self.set_scene(scene)

    def open_scene(self, folder: str) -> None:
        try:
            scene = Scene.open(folder)
            scene.load_image()
        except SynthsegError as exc:
            report_error(exc)
            return
        self.set_scene(scene)

    def set_scene(self, scene: Scene) -> None:
        if self._unsubscribe:
            self._unsubscribe()
        if self.renderer:
            self.renderer.close()
        self.scene = scene
        self.renderer = SceneRenderer(scene)
        self.renderer.subscribe(self._rendered)
        self._unsubscribe = scene.subscribe(self._scene_changed)
        image = self.renderer.source
        from .._napari import layer_metadata

        kwargs = dict(scale=image.scale, translate=image.translate, metadata=layer_metadata(image))
        for layer in (self.image_layer, self.labels_layer, self.points_layer, self.constraint_layer, self.mask_layer):
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.image_layer = self.viewer.add_image(
            self.renderer.image, name="synthetic", colormap="gray",
            contrast_limits=window_limits(image.array, "auto", image.modality), **kwargs,
        )
        self.labels_layer = self.viewer.add_labels(self.renderer.labels, name="lesion labels", opacity=0.35, **kwargs)
        self.mask_layer = self.viewer.add_labels(np.zeros(image.shape, np.uint8), name="lesion mask", **kwargs)
        self.points_layer = self.viewer.add_points(
            np.empty((0, image.ndim)), name="lesions", face_color="transparent", border_color="yellow",
            border_width=0.1, border_width_is_relative=True,
            scale=image.scale, translate=image.translate,
        )
        self.points_layer.events.data.connect(self._points_changed)
        self.points_layer.selected_data.events.items_changed.connect(self._points_selected)
        self.image_layer.mouse_drag_callbacks.append(self._on_click)
        self._show_constraint()
        self._sync_from_scene()
        self.viewer.layers.selection.active = self.points_layer
        self.points_layer.mode = "select"
        self.viewer.reset_view()
        show_info(f"scene {scene.folder}: {len(scene.lesions)} lesions")

    def _show_constraint(self) -> None:
        if self.constraint_layer is not None and self.constraint_layer in self.viewer.layers:
            self.viewer.layers.remove(self.constraint_layer)
            self.constraint_layer = None
        mask = self.scene.mask("constraint")
        if mask is None:
            return
        image = self.renderer.source
        self.constraint_layer = self.viewer.add_labels(
            np.asarray(mask, np.uint8), name="constraint", opacity=0.2, scale=image.scale, translate=image.translate
        )
        self.viewer.layers.move(self.viewer.layers.index(self.constraint_layer), self.viewer.layers.index(self.image_layer) + 1)
        self.constraint_layer.events.paint.connect(self._constraint_painted)

    def _constraint_painted(self, event=None) -> None:
        self.scene.set_mask("constraint", np.asarray(self.constraint_layer.data) > 0, label="edit organ constraint")

    def compute_constraint(self) -> None:
        if self.scene is None:
            report_error(SynthsegError("open or create a scene first"))
            return
        from ..constraints import organ_constraint

        image = self.renderer.source
        self.constraint_btn.setEnabled(False)

        def done(mask):
            self.constraint_btn.setEnabled(True)
            self.scene.set_mask("constraint", mask, label="organ constraint (auto)")
            self._show_constraint()

        def failed(exc):
            self.constraint_btn.setEnabled(True)
            report_error(exc)

        return run_in_thread(organ_constraint, image.array, image.scale, image.modality, on_done=done, on_error=failed)

    # ---- scene -> layers -------------------------------------------------------------------

    def _rendered(self, region) -> None:
        self.image_layer.refresh()
        self.labels_layer.refresh()

    def _scene_changed(self, change) -> None:
        if change.masks and self.constraint_layer is not None and "constraint" in change.masks:
            mask = self.scene.mask("constraint")
            if mask is not None and (change.undo or change.redo):
                self.constraint_layer.data = np.asarray(mask, np.uint8)
        self._sync_from_scene()

    def _sync_from_scene(self) -> None:
        """Handles and list follow the scene (after any edit, undo or redo)."""
        self._syncing = True
        try:
            selected = self.selected_id()
            image = self.renderer.source
            centers = [image.physical_to_index(rec.center_mm)[::-1] for rec in self.scene.lesions]
            sizes = [max(rec.size_mm, 3.0) / min(image.scale) for rec in self.scene.lesions]
            self.points_layer.data = np.array(centers).reshape(-1, image.ndim)
            if len(sizes):
                self.points_layer.size = np.array(sizes)
            self.points_layer.features = {"id": np.array(self.scene.lesion_ids, dtype=object)}
            self.lesion_list.clear()
            for rec in self.scene.lesions:
                text = f"{rec.id}  {rec.kind}  {rec.size_mm:.1f} mm  {rec.blend.get('mode')}  {rec.status}"
                item = QListWidgetItem(text)
                item.setData(Qt.UserRole, rec.id)
                self.lesion_list.addItem(item)
            if selected in self.scene.lesion_ids:
                self.select(selected)
        finally:
            self._syncing = False
        self._update_buttons()

    def _update_buttons(self) -> None:
        scene = self.scene
        self.undo_btn.setEnabled(bool(scene and scene.can_undo))
        self.redo_btn.setEnabled(bool(scene and scene.can_redo))
        if scene is not None:
            self.undo_btn.setToolTip(f"undo {scene.undo_label}" if scene.can_undo else "")
            self.status.setText(f"{len(scene.lesions)} lesions · autosaved to {scene.folder}")

    # ---- selection -------------------------------------------------------------------------

    def selected_id(self) -> str | None:
        item = self.lesion_list.currentItem()
        return item.data(Qt.UserRole) if item is not None else None

    def select(self, lesion_id: str) -> None:
        for row in range(self.lesion_list.count()):
            if self.lesion_list.item(row).data(Qt.UserRole) == lesion_id:
                self.lesion_list.setCurrentRow(row)
                return

    def _list_selected(self, row: int) -> None:
        if self.scene is None or row < 0:
            return
        lesion_id = self.lesion_list.item(row).data(Qt.UserRole)
        rec = self.scene.lesion(lesion_id)
        self.size_spin.setValue(rec.size_mm)
        self.rotation_spin.setValue(float(np.atleast_1d(rec.rotation_deg)[0]))
        self.contrast_spin.setValue(float(rec.blend.get("contrast", 1.0)))
        self.feather_spin.setValue(float(rec.blend.get("feather_mm", 0.0)))
        self.blend_combo.setCurrentText(rec.blend.get("mode", "alpha"))
        index = self.scene.lesion_ids.index(lesion_id)
        if self.points_layer.selected_data != {index}:
            self.points_layer.selected_data = {index}

    def _points_selected(self, event=None) -> None:
        selected = sorted(self.points_layer.selected_data)
        if len(selected) == 1 and selected[0] < len(self.scene.lesion_ids):
            self.select(self.scene.lesion_ids[selected[0]])

    # ---- edits -----------------------------------------------------------------------------

    def _lesion_patch(self):
        from ..lesions import LesionLibrary, load_ct_patch, procedural_nodule

        source, kind = self.lesion_combo.currentData()
        if source == "procedural":
            size = self.size_spin.value()
            image = self.renderer.source
            spacing = min(1.0, max(0.25, size / 12.0)) if image.ndim == 2 else min(image.scale)
            patch = procedural_nodule(size, kind, spacing=spacing, lobulation=0.3, seed=self.seed_spin.value())
            return patch, {"type": "procedural", "kind": kind, "seed": self.seed_spin.value()}
        path = Path(self.lesion_path.text())
        if path.suffix in (".json", ".safetensors") and (path.parent / "index.json").exists():
            return LesionLibrary(path.parent).get(path.stem), {"type": "library", "library": str(path.parent), "id": path.stem}
        if not path.is_file():
            raise SynthsegError(f"lesion file not found: {path}")
        return load_ct_patch(path), {"type": "ct_patch", "path": str(path)}

    def place_at(self, index_numpy) -> None:
        """Place a new lesion with the current settings at a numpy-order data index."""
        if self.scene is None:
            report_error(SynthsegError("open or create a scene first"))
            return
        try:
            patch, source = self._lesion_patch()
            record = place_lesion(
                self.scene, patch, at_xyz=tuple(float(v) for v in np.asarray(index_numpy)[::-1]),
                size_mm=self.size_spin.value(), rotation_deg=self.rotation_spin.value(),
                blend=self.blend_combo.currentText(),
                contrast="node21" if self.node21_check.isChecked() else self.contrast_spin.value(),
                feather_mm=self.feather_spin.value(), seed=self.seed_spin.value(), source=source,
            )
        except SynthsegError as exc:
            report_error(exc)
            return
        self.seed_spin.setValue(self.seed_spin.value() + 1)  # next lesion differs, reproducibly
        self.select(record.id)

    def _on_click(self, layer, event) -> None:
        if not self.place_check.isChecked() or event.type != "mouse_press":
            return
        self.place_at(layer.world_to_data(event.position))

    def _points_changed(self, event) -> None:
        if self._syncing or self.scene is None or getattr(event, "action", "changed") != "changed":
            return
        data = np.asarray(self.points_layer.data)
        if len(data) != len(self.scene.lesions):
            self._sync_from_scene()  # points added/removed by hand: the scene decides
            return
        image = self.renderer.source
        moved = False
        for rec, point in zip(list(self.scene.lesions), data):
            current = image.physical_to_index(rec.center_mm)[::-1]
            if np.allclose(current, point, atol=1e-3):
                continue
            moved = True
            try:
                edit_lesion(self.scene, rec.id, at_xyz=tuple(float(v) for v in point[::-1]))
            except SynthsegError as exc:
                report_error(exc)
        if moved:
            self._sync_from_scene()

    def apply_to_selected(self) -> None:
        lesion_id = self.selected_id()
        if lesion_id is None:
            report_error(SynthsegError("select a lesion in the list or in the viewer first"))
            return
        try:
            edit_lesion(
                self.scene, lesion_id, size_mm=self.size_spin.value(), rotation_deg=self.rotation_spin.value(),
                blend={"mode": self.blend_combo.currentText(), "contrast": self.contrast_spin.value(),
                       "feather_mm": self.feather_spin.value()},
            )
        except SynthsegError as exc:
            report_error(exc)

    def delete_selected(self) -> None:
        lesion_id = self.selected_id()
        if lesion_id is not None:
            self.scene.remove_lesion(lesion_id)

    def undo(self) -> None:
        if self.scene is not None and self.scene.can_undo:
            self.scene.undo()

    def redo(self) -> None:
        if self.scene is not None and self.scene.can_redo:
            self.scene.redo()

    # ---- real lesions ----------------------------------------------------------------------

    def _painted_mask(self) -> np.ndarray:
        if self.scene is None:
            raise SynthsegError("open or create a scene first")
        mask = np.asarray(self.mask_layer.data) > 0
        if not mask.any():
            raise SynthsegError("paint the real lesion in the 'lesion mask' layer first")
        return mask

    def remove_painted(self) -> None:
        try:
            record = remove_real_lesion(self.scene, self._painted_mask(), method=self.fill_combo.currentText())
        except SynthsegError as exc:
            report_error(exc)
            return
        self.mask_layer.data = np.zeros_like(self.mask_layer.data)
        self.select(record.id)

    def extract_painted(self) -> str | None:
        from ..fill import get_filler
        from ..lesions import LesionLibrary, extract_residual

        try:
            mask = self._painted_mask()
            folder = self.library_edit.text().strip()
            if not folder:
                raise SynthsegError("give a lesion library folder")
            image = self.renderer.source
            filled = get_filler(self.fill_combo.currentText()).fill(image.array, mask, spacing=image.scale)
            item = extract_residual(
                image.array, filled, mask, image.scale, 3.0, units="HU" if image.modality == "CT" else "image",
                provenance={"source_file": image.source, "sha256": self.scene.source.sha256,
                            "fill_method": self.fill_combo.currentText()},
            )
            Path(folder).mkdir(parents=True, exist_ok=True)
            lesion_id = LesionLibrary(folder).add(item)
        except SynthsegError as exc:
            report_error(exc)
            return None
        show_info(f"stored {lesion_id} in {folder}")
        return lesion_id
