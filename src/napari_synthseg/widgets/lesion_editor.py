"""Lesion editor: a thin panel over :class:`napari_synthseg.workflow.edit.EditSession`.

It translates layers, clicks and keys into workflow calls and shows the result; every default,
check and provenance rule is in the workflow layer. Layers it shows:

- ``synthetic``: the rendered image (the renderer's own array, refreshed after each edit);
- ``lesion labels``: the exact label map;
- ``lesions``: one point per lesion, a handle to select and drag;
- ``constraint``: the organ constraint, editable with the paint tools (stored in the scene);
- ``lesion mask``: paint a real lesion here to remove it or extract it to a library.

*Place on click* works whichever layer is selected (the click is taken at the viewer, as
micro-sam's and nnInteractive's prompt tools do), except while a paint tool is active or
when the click lands on a lesion handle (that selects it). Delete / Backspace delete the
selected lesion; Ctrl+Z / Ctrl+Shift+Z undo and redo. New scene and Open scene read the image
and render the scene in a worker thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import napari
import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
)

from ..errors import SynthsegError
from ..io import window_limits
from ..scene import Change
from ..workflow.edit import EditSession, SceneSource, default_scene_folder, new_session, open_session
from ..workflow.spec import DEFAULT_PLACE, BlendMode, LesionSpec, PlaceSettings, ProceduralKind, blend_mode
from ._base import JobPanel, row
from ._common import register_scene_editor
from ._generated_samples import GeneratedSamples
from ._library_strip import LibraryStrip

#: Click tolerance: a press and release further apart than this (screen pixels) is a pan/drag.
CLICK_TOLERANCE_PX = 4
PAINT_MODES = {"paint", "fill", "erase", "polygon", "add", "add_rectangle", "add_ellipse", "add_line",
               "add_path", "add_polygon", "add_polygon_lasso", "direct", "vertex_insert", "vertex_remove"}


def _spin(lo: float, hi: float, value: float, step: float = 1.0, decimals: int = 1, suffix: str = "") -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(lo, hi)
    box.setDecimals(decimals)
    box.setSingleStep(step)
    box.setValue(value)
    box.setKeyboardTracking(False)  # one edit when the user is done typing, not per key
    if suffix:
        box.setSuffix(suffix)
    return box


def _blend_combo(value: str) -> QComboBox:
    combo = QComboBox()
    combo.addItems([m.value for m in BlendMode])
    combo.setCurrentText(value)
    return combo


def _sample_dir() -> Path | None:
    try:
        from .._napari import _sample_dir as sample_dir

        return sample_dir()
    except Exception:
        return None


class LesionEditorWidget(JobPanel):
    """New scene, organ constraint, place on click, edit the selected lesion, real lesions."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer)
        register_scene_editor(napari_viewer, self)
        self.session: EditSession | None = None
        self.renderer: Any = None  # SceneRenderer of the session's scene
        # napari layers of the scene (napari's layer classes are built dynamically: Any)
        self.image_layer: Any = None
        self.labels_layer: Any = None
        self.points_layer: Any = None
        self.constraint_layer: Any = None
        self.mask_layer: Any = None
        self._syncing = False
        self._unsubscribe: Callable[[], None] | None = None
        self._press: tuple[np.ndarray, np.ndarray] | None = None

        # -- scene --------------------------------------------------------------------------
        form = self.group("Scene")
        self.source_combo = QComboBox()
        self.source_combo.currentTextChanged.connect(self._source_changed)
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("scene folder (created or opened)")
        self.spacing_spin = _spin(0.0, 10.0, 0.0, 0.01, 3, " mm")
        self.spacing_spin.setSpecialValueText("from file")
        self.spacing_spin.setToolTip("pixel size for files that store none (PNG/JPEG); lesion sizes depend on it")
        self.new_button = QPushButton("New scene")
        self.new_button.clicked.connect(self.new_scene_from_layer)
        self.open_button = QPushButton("Open scene")
        self.open_button.clicked.connect(lambda: self.open_scene(self.folder_edit.text()))
        self.constraint_btn = QPushButton("Organ constraint (auto)")
        self.constraint_btn.clicked.connect(self.compute_constraint)
        form.addRow("Image", self.source_combo)
        form.addRow("Folder", self.folder_edit)
        form.addRow("Pixel size", self.spacing_spin)
        form.addRow(row(self.new_button, self.open_button))
        form.addRow(self.constraint_btn)

        # -- new lesion ---------------------------------------------------------------------
        form = self.group("New lesion")
        self.lesion_combo = QComboBox()
        for kind in ProceduralKind:
            self.lesion_combo.addItem(f"procedural {kind.value}", f"procedural:{kind.value}")
        self.lesion_combo.addItem("file or library…", "file")
        self.lesion_combo.currentIndexChanged.connect(self._lesion_source_changed)
        self.lesion_path = QLineEdit()
        self.lesion_path.setPlaceholderText("CT patch (mask beside it), library folder or item")
        browse = QPushButton("…")
        browse.setMaximumWidth(28)
        browse.clicked.connect(self._browse_lesion)
        self.size_spin = _spin(1, 200, DEFAULT_PLACE.size_mm or 10.0, 1, 1, " mm")
        self.blend_combo = _blend_combo(DEFAULT_PLACE.blend.value)
        self.contrast_spin = _spin(0.05, 10, float(DEFAULT_PLACE.contrast), 0.1, 2)
        self.node21_check = QCheckBox("NODE21 contrast (CXR)")
        self.feather_spin = _spin(0, 20, DEFAULT_PLACE.feather_mm, 0.5, 1, " mm")
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.place_check = QPushButton("Place on click")
        self.place_check.setCheckable(True)
        self.place_check.setToolTip("click in the image to place a lesion with these settings")
        self.place_check.toggled.connect(self._place_tool_toggled)
        form.addRow("Source", self.lesion_combo)
        form.addRow("File", row(self.lesion_path, browse))
        self.library_strip = LibraryStrip(self)  # real-lesion library: click a thumbnail to place it next
        form.addRow(self.library_strip)
        form.addRow("Size", self.size_spin)
        form.addRow("Blend", self.blend_combo)
        form.addRow("Contrast", row(self.contrast_spin, self.node21_check))
        form.addRow("Feather", self.feather_spin)
        form.addRow("Seed", self.seed_spin)
        form.addRow(self.place_check)
        self._lesion_source_changed()
        self.generated_samples = GeneratedSamples(self)  # seeded generated samples side by side
        self.group("Generated samples").addRow(self.generated_samples)

        # -- selected lesion ----------------------------------------------------------------
        form = self.group("Lesions (select one to edit it)")
        self.lesion_list = QListWidget()
        self.lesion_list.setMaximumHeight(110)
        self.lesion_list.currentRowChanged.connect(self._list_selected)
        self.edit_size = _spin(1, 200, 10, 1, 1, " mm")
        self.edit_rotation = _spin(-360, 360, 0, 15, 0, "°")
        self.edit_contrast = _spin(0.05, 10, 1, 0.1, 2)
        self.edit_feather = _spin(0, 20, 1, 0.5, 1, " mm")
        self.edit_blend = _blend_combo("alpha")
        # Each field applies on its own when edited: one bad value never blocks another edit.
        self.edit_size.editingFinished.connect(lambda: self._edit("resize", self.edit_size.value()))
        self.edit_rotation.editingFinished.connect(lambda: self._edit("rotate", self.edit_rotation.value()))
        self.edit_contrast.editingFinished.connect(lambda: self._edit("set_contrast", self.edit_contrast.value()))
        self.edit_feather.editingFinished.connect(lambda: self._edit("set_feather", self.edit_feather.value()))
        self.edit_blend.activated.connect(lambda _i: self._edit("set_blend", self.edit_blend.currentText()))
        self.delete_btn = QPushButton("Delete")
        self.delete_btn.clicked.connect(self.delete_selected)
        self.undo_btn = QPushButton("Undo")
        self.undo_btn.clicked.connect(self.undo)
        self.redo_btn = QPushButton("Redo")
        self.redo_btn.clicked.connect(self.redo)
        form.addRow(self.lesion_list)
        form.addRow("Size", self.edit_size)
        form.addRow("Rotation", self.edit_rotation)
        form.addRow("Contrast", self.edit_contrast)
        form.addRow("Feather", self.edit_feather)
        form.addRow("Blend", self.edit_blend)
        form.addRow(row(self.delete_btn, self.undo_btn, self.redo_btn))

        # -- real lesions -------------------------------------------------------------------
        form = self.group("Real lesion (paint it in 'lesion mask')")
        self.fill_combo = QComboBox()
        self._refresh_fillers()
        self.library_edit = QLineEdit()
        self.library_edit.setPlaceholderText("lesion library folder")
        self.remove_btn = QPushButton("Remove painted")
        self.remove_btn.clicked.connect(self.remove_painted)
        self.extract_btn = QPushButton("Extract to library")
        self.extract_btn.clicked.connect(self.extract_painted)
        form.addRow("Fill", self.fill_combo)
        form.addRow("Library", self.library_edit)
        form.addRow(row(self.remove_btn, self.extract_btn))
        self.finish_layout()
        self.busy_while_running(self.new_button, self.open_button, self.constraint_btn, self.remove_btn,
                                self.extract_btn)

        self.viewer.layers.events.inserted.connect(self._refresh_sources)
        self.viewer.layers.events.removed.connect(self._refresh_sources)
        self.viewer.mouse_drag_callbacks.append(self._on_viewer_mouse)
        self._refresh_sources()
        self.viewer.bind_key("Control-Z", lambda v: self.undo(), overwrite=True)
        self.viewer.bind_key("Control-Shift-Z", lambda v: self.redo(), overwrite=True)
        for key in ("Delete", "Backspace"):
            self.viewer.bind_key(key, lambda v: self.delete_selected(), overwrite=True)
        self._update_controls()
        self.say("open an image (File > Open), then New scene")

    # ---- compatibility: the scene the session edits --------------------------------------------

    @property
    def scene(self) -> Any:
        return None if self.session is None else self.session.scene

    @property
    def live(self) -> EditSession:
        """The session being edited (a user error when none is open)."""
        if self.session is None:
            raise SynthsegError("open or create a scene first")
        return self.session

    # ---- scene -------------------------------------------------------------------------------

    def _image_layers(self) -> list:
        return [layer for layer in self.viewer.layers
                if isinstance(layer, napari.layers.Image) and (layer.metadata or {}).get("synthseg")
                and layer is not self.image_layer]

    def _refresh_sources(self, event=None) -> None:
        current = self.source_combo.currentText()
        self.source_combo.blockSignals(True)
        self.source_combo.clear()
        for layer in self._image_layers():
            self.source_combo.addItem(layer.name)
        index = self.source_combo.findText(current)
        self.source_combo.setCurrentIndex(max(index, 0))
        self.source_combo.blockSignals(False)
        if self.source_combo.currentText() != current:
            self._source_changed(self.source_combo.currentText())

    def _source_changed(self, name: str) -> None:
        if not name or name not in self.viewer.layers:
            return
        info = self.viewer.layers[name].metadata["synthseg"]
        self.folder_edit.setText(str(default_scene_folder(info["source_paths"], _sample_dir())))
        stored = not any("no pixel spacing" in w for w in info.get("warnings", []))
        self.spacing_spin.setValue(0.0 if stored else float(min(info["geometry"]["spacing"])))

    def _scene_source(self) -> SceneSource:
        name = self.source_combo.currentText()
        if not name:
            raise SynthsegError("open an image with the SynthSeg reader first (File > Open)")
        info = self.viewer.layers[name].metadata["synthseg"]
        paths = info["source_paths"]
        spacing = tuple(info["geometry"]["spacing"])
        if self.spacing_spin.value() > 0:
            spacing = (self.spacing_spin.value(),) * len(spacing)
        return SceneSource(path=paths[0] if len(paths) == 1 else str(Path(paths[0]).parent),
                           series_uid=info.get("series_uid"), spacing=spacing)

    def new_scene_from_layer(self):
        """Create a scene on the chosen image in the folder shown (in a worker)."""
        try:
            source = self._scene_source()
            folder = self.folder_edit.text().strip()
            if not folder:
                raise SynthsegError("give a scene folder")
        except SynthsegError as exc:
            self.fail(exc)
            return None
        return self.run_job(_new_session_rendered, source, folder, on_done=self._session_ready,
                            message=f"creating a scene in {folder}…")

    def open_scene(self, folder: str):
        """Open the scene in ``folder`` (in a worker)."""
        if not str(folder).strip():
            self.fail(SynthsegError("give the scene folder to open"))
            return None
        return self.run_job(_open_session_rendered, folder, on_done=self._session_ready,
                            message=f"opening {folder}…")

    def _session_ready(self, result) -> None:
        session, renderer = result
        self.set_session(session, renderer)

    def set_scene(self, scene) -> None:
        """Show ``scene`` (already open); renders on the calling thread."""
        from ..render import SceneRenderer

        self.set_session(EditSession(scene, "editor"), SceneRenderer(scene))

    def set_session(self, session: EditSession, renderer) -> None:
        if self._unsubscribe:
            self._unsubscribe()
        if self.renderer is not None:
            self.renderer.close()
        self.session, self.renderer = session, renderer
        self.renderer.subscribe(self._rendered)
        self._unsubscribe = session.scene.subscribe(self._scene_changed)
        image = self.renderer.source
        from .._napari import layer_metadata

        kwargs = dict(scale=image.scale, translate=image.translate, metadata=layer_metadata(image))
        limits = window_limits(image.array, "auto", image.modality)
        if self._reuse_layers(image, kwargs, limits):
            return self._finish_session(session)
        for layer in (self.image_layer, self.labels_layer, self.points_layer, self.constraint_layer, self.mask_layer):
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.constraint_layer = None
        # The scene's layers replace the images opened beside it: those stay loaded but hidden,
        # and a side-by-side grid (the demo's CXR | CT) is switched off, or the synthetic
        # image, its labels and the handles would each land in a grid cell of their own.
        from ._common import viewer_grid

        viewer_grid(self.viewer).enabled = False
        for layer in self._image_layers():
            layer.visible = False
        self.image_layer = self.viewer.add_image(
            self.renderer.image, name="synthetic", colormap="gray", contrast_limits=limits, **kwargs,
        )
        self.labels_layer = self.viewer.add_labels(self.renderer.labels, name="lesion labels", opacity=0.35, **kwargs)
        self.mask_layer = self.viewer.add_labels(np.zeros(image.shape, np.uint8), name="lesion mask", **kwargs)
        self.points_layer = self.viewer.add_points(
            np.empty((0, image.ndim)), name="lesions", face_color="transparent", border_color="yellow",
            border_width=0.1, border_width_is_relative=True, scale=image.scale, translate=image.translate,
        )
        self.points_layer.events.data.connect(self._points_changed)
        self.points_layer.selected_data.events.items_changed.connect(self._points_selected)
        for key in ("Delete", "Backspace"):
            self.points_layer.bind_key(key, lambda layer: self.delete_selected(), overwrite=True)
        self._finish_session(session)

    def _reuse_layers(self, image, kwargs, limits) -> bool:
        """Give the open scene layers the new scene's data instead of replacing them.

        Removing and adding napari layers costs about a second on the UI thread (napari runs a
        full garbage collection per removed layer); reusing them costs a few milliseconds.
        """
        layers = (self.image_layer, self.labels_layer, self.mask_layer, self.points_layer)
        if any(layer is None or layer not in self.viewer.layers for layer in layers):
            return False
        if self.image_layer.ndim != image.ndim:
            return False
        scale, translate = np.asarray(kwargs["scale"], float), np.asarray(kwargs["translate"], float)
        for layer in (self.image_layer, self.labels_layer, self.mask_layer, self.points_layer):
            if not (np.allclose(layer.scale, scale) and np.allclose(layer.translate, translate)):
                layer.scale, layer.translate = scale, translate
        self.image_layer.metadata = kwargs["metadata"]
        self.image_layer.data = self.renderer.image
        self.image_layer.contrast_limits = limits
        self.labels_layer.data = self.renderer.labels
        self.mask_layer.data = np.zeros(image.shape, np.uint8)
        return True

    def _finish_session(self, session: EditSession) -> None:
        self._show_constraint()
        self._sync_from_scene()
        self.viewer.layers.selection.active = self.points_layer
        self.points_layer.mode = "select"
        self.viewer.reset_view()
        self.say(f"scene {Path(session.scene.folder or '.').name}: {len(session.scene.lesions)} lesions")

    def _show_constraint(self) -> None:
        """The constraint layer follows the scene's mask (kept and refilled when it exists)."""
        mask = self.scene.mask("constraint")
        layer = self.constraint_layer if self.constraint_layer in self.viewer.layers else None
        if mask is None:
            if layer is not None:
                self.viewer.layers.remove(layer)
            self.constraint_layer = None
            return
        image = self.renderer.source
        if layer is not None:
            layer.scale, layer.translate = image.scale, image.translate
            layer.data = np.asarray(mask, np.uint8)
            return
        self.constraint_layer = self.viewer.add_labels(
            np.asarray(mask, np.uint8), name="constraint", opacity=0.2, scale=image.scale, translate=image.translate
        )
        self.viewer.layers.move(self.viewer.layers.index(self.constraint_layer), self.viewer.layers.index(self.image_layer) + 1)
        self.constraint_layer.events.paint.connect(self._constraint_painted)
        # Adding a layer selects it: give the selection back, so clicks keep placing lesions.
        self.viewer.layers.selection.active = self.points_layer

    def _constraint_painted(self, event=None) -> None:
        self.live.set_constraint(np.asarray(self.constraint_layer.data) > 0, label="edit organ constraint")

    def compute_constraint(self):
        if self.session is None:
            self.fail(SynthsegError("open or create a scene first"))
            return None

        def done(mask) -> None:
            self.live.set_constraint(mask, label="organ constraint (auto)")
            self._show_constraint()
            self.say(f"organ constraint: {int(mask.sum())} pixels")

        return self.run_job(self.session.compute_constraint, on_done=done, message="computing the organ constraint…")

    # ---- scene -> layers ---------------------------------------------------------------------

    def _rendered(self, region) -> None:
        self.image_layer.refresh()
        self.labels_layer.refresh()

    def _scene_changed(self, change: Change) -> None:
        if change.masks and "constraint" in change.masks:
            mask = self.scene.mask("constraint")
            if self.constraint_layer is None or mask is None:
                self._show_constraint()
            elif change.undo or change.redo or change.label.startswith(("merged", "reloaded", "changes made")):
                self.constraint_layer.data = np.asarray(mask, np.uint8)
        self._sync_from_scene()

    def _sync_from_scene(self) -> None:
        """Handles and list follow the scene (after any edit, undo, redo or merge)."""
        self._syncing = True
        try:
            selected = self.selected_id()
            scene, image = self.scene, self.renderer.source
            centers = [self.live.index_of(rec.id) for rec in scene.lesions]
            sizes = [max(rec.size_mm, 3.0) / min(image.scale) for rec in scene.lesions]
            self.points_layer.data = np.array(centers).reshape(-1, image.ndim)
            if sizes:
                self.points_layer.size = np.array(sizes)
            self.points_layer.features = {"id": np.array(scene.lesion_ids, dtype=object)}
            self.lesion_list.clear()
            for rec in scene.lesions:
                item = QListWidgetItem(self.live.describe(rec.id))
                item.setData(Qt.ItemDataRole.UserRole, rec.id)
                self.lesion_list.addItem(item)
            if selected is not None and selected in scene.lesion_ids:
                self.select(selected)
        finally:
            self._syncing = False
        self._update_controls()

    def _update_controls(self) -> None:
        scene = self.scene
        self.undo_btn.setEnabled(bool(scene and scene.can_undo))
        self.redo_btn.setEnabled(bool(scene and scene.can_redo))
        self.undo_btn.setToolTip(f"undo {scene.undo_label}" if scene is not None and scene.can_undo else "")
        self.redo_btn.setToolTip(f"redo {scene.redo_label}" if scene is not None and scene.can_redo else "")
        has_selection = self.selected_id() is not None
        for widget in (self.edit_size, self.edit_rotation, self.edit_contrast, self.edit_feather, self.edit_blend,
                       self.delete_btn):
            widget.setEnabled(has_selection)

    # ---- selection ---------------------------------------------------------------------------

    def selected_id(self) -> str | None:
        item = self.lesion_list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def _row_id(self, index: int) -> str | None:
        item = self.lesion_list.item(index)
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def select(self, lesion_id: str) -> None:
        for index in range(self.lesion_list.count()):
            if self._row_id(index) == lesion_id:
                self.lesion_list.setCurrentRow(index)
                return

    def _list_selected(self, index: int) -> None:
        self._update_controls()
        if self.session is None or index < 0:
            return
        lesion_id = self._row_id(index)
        if lesion_id is None:
            return
        rec = self.scene.lesion(lesion_id)
        # The edit fields show the selected lesion; the new-lesion fields are never touched.
        for box, value in ((self.edit_size, rec.size_mm), (self.edit_rotation, float(np.atleast_1d(rec.rotation_deg)[0])),
                           (self.edit_contrast, float(rec.blend.get("contrast", 1.0))),
                           (self.edit_feather, float(rec.blend.get("feather_mm", 0.0)))):
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)
        self.edit_blend.setCurrentText(rec.blend.get("mode", "alpha"))
        position = self.scene.lesion_ids.index(rec.id)
        if self.points_layer.selected_data != {position}:
            self.points_layer.selected_data = {position}

    def _points_selected(self, event=None) -> None:
        selected = sorted(self.points_layer.selected_data)
        if len(selected) == 1 and selected[0] < len(self.scene.lesion_ids):
            self.select(self.scene.lesion_ids[selected[0]])

    # ---- placing -----------------------------------------------------------------------------

    def _lesion_source_changed(self, *_args) -> None:
        self.lesion_path.setEnabled(self.lesion_combo.currentData() == "file")

    def _browse_lesion(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Lesion (CT patch or library item)")
        if path:
            self.lesion_path.setText(path)
            self.lesion_combo.setCurrentIndex(self.lesion_combo.count() - 1)

    def lesion_spec(self) -> LesionSpec:
        data = self.lesion_combo.currentData()
        text = self.lesion_path.text().strip() if data == "file" else data
        return LesionSpec.parse(text)

    def place_settings(self) -> PlaceSettings:
        return PlaceSettings(
            size_mm=self.size_spin.value(), blend=blend_mode(self.blend_combo.currentText()),
            contrast="node21" if self.node21_check.isChecked() else self.contrast_spin.value(),
            feather_mm=self.feather_spin.value(), seed=self.seed_spin.value(),
        )

    def place_at(self, index_numpy):
        """Place a new lesion with the new-lesion settings at a numpy-order data index."""
        if self.session is None:
            self.fail(SynthsegError("open or create a scene first"))
            return None
        try:
            record = self.session.place_at_index(self.lesion_spec(), self.place_settings(), index_numpy)
        except SynthsegError as exc:
            self.fail(exc)
            return None
        self.seed_spin.setValue(self.seed_spin.value() + 1)  # next lesion differs, reproducibly
        self.select(record.id)
        self.say(f"placed {self.session.describe(record.id)}")
        return record

    def _place_tool_toggled(self, on: bool) -> None:
        if on and self.points_layer is not None:
            # The tool selects its own layer; clicks are still taken whichever layer is active.
            self.viewer.layers.selection.active = self.points_layer
            self.points_layer.mode = "select"
        self.say("click in the image to place a lesion" if on else "")

    def _paint_tool_active(self) -> bool:
        layer = self.viewer.layers.selection.active
        return layer is not None and str(getattr(layer, "mode", "")) in PAINT_MODES

    def _on_viewer_mouse(self, viewer, event):
        """Place on a click (press and release within a few pixels), never on a drag."""
        if (not self.place_check.isChecked() or self.session is None or event.button != 1
                or event.modifiers or self._paint_tool_active()):
            return
        if self.points_layer.get_value(event.position, world=True) is not None:
            return  # a click on a handle selects it
        start_world, start_screen = np.array(event.position), np.array(event.pos)
        dragged = False
        yield
        while event.type == "mouse_move":
            if np.abs(np.array(event.pos) - start_screen).max() > CLICK_TOLERANCE_PX:
                dragged = True
            yield
        if not dragged:
            self.place_at(self.image_layer.world_to_data(start_world))

    # ---- editing -----------------------------------------------------------------------------

    def _edit(self, action: str, value) -> None:
        lesion_id = self.selected_id()
        if lesion_id is None or self.session is None or self._syncing:
            return
        try:
            getattr(self.session, action)(lesion_id, value)
        except SynthsegError as exc:
            self.fail(exc)
            self._list_selected(self.lesion_list.currentRow())  # show the lesion as it is
            return
        self.say(f"{self.session.scene.undo_label}: {self.session.describe(lesion_id)}")

    def apply_to_selected(self) -> None:
        """Apply every edit field to the selected lesion (each edit on its own)."""
        for action, value in (("resize", self.edit_size.value()), ("rotate", self.edit_rotation.value()),
                              ("set_contrast", self.edit_contrast.value()),
                              ("set_feather", self.edit_feather.value()),
                              ("set_blend", self.edit_blend.currentText())):
            rec = self.scene.lesion(self.selected_id()) if self.selected_id() else None
            if rec is None:
                return
            current = {"resize": rec.size_mm, "rotate": float(np.atleast_1d(rec.rotation_deg)[0]),
                       "set_contrast": rec.blend.get("contrast", 1.0),
                       "set_feather": rec.blend.get("feather_mm", 0.0), "set_blend": rec.blend.get("mode")}[action]
            if current != value:
                self._edit(action, value)

    def _points_changed(self, event) -> None:
        if self._syncing or self.session is None or getattr(event, "action", "changed") != "changed":
            return
        data = np.asarray(self.points_layer.data)
        if len(data) != len(self.scene.lesions):
            self._sync_from_scene()  # points added/removed by hand: the scene decides
            return
        for rec, point in zip(list(self.scene.lesions), data):
            if np.allclose(self.session.index_of(rec.id), point, atol=1e-3):
                continue
            try:
                self.session.move_to_index(rec.id, point)
            except SynthsegError as exc:
                self.fail(exc)
                self._sync_from_scene()

    def delete_selected(self) -> None:
        lesion_id = self.selected_id()
        if lesion_id is None or self.session is None:
            return
        self.session.delete(lesion_id)
        self.say(f"deleted {lesion_id} (Ctrl+Z undoes)")

    def undo(self) -> None:
        if self.session is not None and self.scene.can_undo:
            label = self.scene.undo_label
            self.session.undo()
            self.say(f"undid {label}")

    def redo(self) -> None:
        if self.session is not None and self.scene.can_redo:
            label = self.scene.redo_label
            self.session.redo()
            self.say(f"redid {label}")

    # ---- real lesions ------------------------------------------------------------------------

    def _refresh_fillers(self) -> None:
        from ..workflow.fillers import fill_methods

        self.fill_combo.clear()
        self.fill_combo.addItems(fill_methods())

    def _painted_mask(self) -> np.ndarray:
        if self.session is None:
            raise SynthsegError("open or create a scene first")
        mask = np.asarray(self.mask_layer.data) > 0
        if not mask.any():
            raise SynthsegError("paint the real lesion in the 'lesion mask' layer first")
        return mask

    def remove_painted(self):
        try:
            mask = self._painted_mask()
        except SynthsegError as exc:
            self.fail(exc)
            return None

        def done(prepared) -> None:
            record = self.live.add_prepared(prepared)  # on the UI thread: listeners update layers
            self.mask_layer.data = np.zeros_like(self.mask_layer.data)
            self.select(record.id)
            self.say(f"removed the painted lesion as {record.id}")

        return self.run_job(self.session.prepare_removal, mask, self.fill_combo.currentText(), on_done=done,
                            message="filling the painted lesion…")

    def extract_painted(self):
        try:
            mask = self._painted_mask()
            folder = self.library_edit.text().strip()
            if not folder:
                raise SynthsegError("give a lesion library folder")
        except SynthsegError as exc:
            self.fail(exc)
            return None
        return self.run_job(self.session.extract_real, mask, folder, self.fill_combo.currentText(),
                            on_done=lambda lesion_id: self.say(f"stored {lesion_id} in {folder}"),
                            message="extracting the painted lesion…")


def _new_session_rendered(source: SceneSource, folder: str):
    from ..render import SceneRenderer

    session = new_session(source, folder)
    return session, SceneRenderer(session.scene)


def _open_session_rendered(folder: str):
    from ..render import SceneRenderer

    session = open_session(folder)
    return session, SceneRenderer(session.scene)


__all__ = ["LesionEditorWidget", "default_scene_folder"]
