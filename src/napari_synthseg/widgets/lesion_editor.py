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

import importlib
import logging
import time
from pathlib import Path
from typing import Any, Callable

import napari
import numpy as np
from qtpy.QtCore import Qt, QTimer
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
from ..workflow.library_browser import default_library_folder
from ..workflow.spec import DEFAULT_PLACE, BlendMode, LesionSpec, PlaceSettings, ProceduralKind, blend_mode
from ._base import JobPanel, row
from ._common import click_position, register_scene_editor, run_in_thread
from ._generated_samples import GeneratedSamples
from ._library_strip import LibraryStrip

logger = logging.getLogger(__name__)

#: The scene's layers, bottom to top.
SCENE_LAYERS = ("synthetic", "constraint", "lesion labels", "lesion mask", "lesions")
#: Pause between the steps that build or fill the scene's layers: the event loop redraws and
#: handles input in between (Qt would run back-to-back zero-delay timers in one pass).
STEP_GAP_MS = 10
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
        # Scene layers still to be built, and the steps left of showing a scene in them.
        self._layers_to_build: list[str] = []
        self._show_steps: list[Callable[[], None]] = []
        self._layers_follow = False  # the layers show the session (not while being filled)
        self._handles: dict[int, Any] = {}  # handles layer per number of dimensions (napari cannot change it)

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
        self.node21_check = QCheckBox("NODE21")
        self.node21_check.setToolTip("NODE21 contrast matching (radiographs): the lesion's contrast follows "
                                     "real nodules of its size instead of the factor beside it")
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
        library = default_library_folder()
        if library:  # real nodules are the default source wherever a library is present (issue 15)
            self.lesion_path.setText(library)
            self.lesion_combo.setCurrentIndex(self.lesion_combo.count() - 1)
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
        # napari builds a layer's vispy visuals and Qt controls on the UI thread when the layer
        # enters the viewer: 60-140 ms per layer on a software renderer, several times the
        # 100 ms a user notices. The scene's five layers are therefore built now, empty and
        # hidden, one per event-loop turn; creating or opening a scene only fills them. Handles
        # are built for every kind of image open (napari cannot change a points layer's
        # dimensions: a CT after a radiograph needs handles of its own).
        ndims = [layer.ndim for layer in self._image_layers()]
        first = self.viewer.layers[self.source_combo.currentText()].ndim if self.source_combo.currentText() else 2
        self._layers_to_build = [*SCENE_LAYERS[:-1], f"lesions:{first}",
                                 *(f"lesions:{n}" for n in sorted(set(ndims) - {first}))]
        # napari imports pandas (about 0.3 s) for the first labels or points layer: in a worker.
        self._imports_ready = False
        run_in_thread(importlib.import_module, "pandas", on_done=self._imports_done, on_error=self._imports_done)
        QTimer.singleShot(STEP_GAP_MS, self._build_next_layer)

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

    @property
    def layers_ready(self) -> bool:
        """The scene's layers are built (a few event-loop turns after the panel starts)."""
        return not self._layers_to_build

    @property
    def busy(self) -> bool:
        """A job runs, or a scene is still being shown (its layers fill over a few turns)."""
        return super().busy or bool(self._show_steps)

    def _session_ready(self, result) -> None:
        session, renderer, display = result
        self.set_session(session, renderer, display, stepwise=True)

    def set_scene(self, scene) -> None:
        """Show ``scene`` (already open); renders on the calling thread."""
        from ..render import SceneRenderer

        self.set_session(EditSession(scene, "editor"), SceneRenderer(scene))

    def set_session(self, session: EditSession, renderer, display: dict | None = None,
                    stepwise: bool = False) -> None:
        """Show ``session`` in the scene's layers.

        ``display`` holds the contrast limits and range of the image (:func:`_display`; computed
        here when not given). ``stepwise``: fill one layer per event-loop turn, so no turn keeps
        the UI thread longer than about one redraw (the panel is busy until the last step).
        """
        if self._unsubscribe:
            self._unsubscribe()
        if self.renderer is not None:
            self.renderer.close()
        self._layers_follow = False
        self.session, self.renderer = session, renderer
        self.renderer.subscribe(self._rendered)
        self._unsubscribe = session.scene.subscribe(self._scene_changed)
        self._build_all_layers()  # normally built already, when the panel started
        steps = self._steps_to_show(session, display or _display(renderer))
        if not stepwise:
            for step in steps:
                step()
            return
        self._show_steps = steps
        QTimer.singleShot(STEP_GAP_MS, self._next_show_step)

    def _next_show_step(self) -> None:
        if not self._show_steps:
            return
        step = self._show_steps.pop(0)
        start = time.perf_counter()
        try:
            step()
        except Exception:
            self._show_steps = []
            raise
        logger.debug("showing the scene: %s took %.0f ms", step.__name__, 1000 * (time.perf_counter() - start))
        if self._show_steps:
            QTimer.singleShot(STEP_GAP_MS, self._next_show_step)

    # ---- the scene's layers ------------------------------------------------------------------

    def _scene_layer(self, name: str) -> Any:
        attr = {"synthetic": "image_layer", "constraint": "constraint_layer", "lesion labels": "labels_layer",
                "lesion mask": "mask_layer", "lesions": "points_layer"}[name]
        return getattr(self, attr)

    def _imports_done(self, _result=None) -> None:
        self._imports_ready = True

    def _build_next_layer(self) -> None:
        """Build one missing scene layer (one per event-loop turn while the panel starts)."""
        waiting = not self._imports_ready and self._layers_to_build[:1] != ["synthetic"]
        if self._layers_to_build and not self._show_steps and not waiting:
            self._add_scene_layer(self._layers_to_build.pop(0))
        if self._layers_to_build:
            QTimer.singleShot(STEP_GAP_MS, self._build_next_layer)

    def _build_all_layers(self) -> None:
        """Build every scene layer not built yet (or removed by the user) now."""
        for name in SCENE_LAYERS:
            layer = self._scene_layer(name)
            if (layer is None or layer not in self.viewer.layers) and name not in self._layers_to_build:
                self._layers_to_build.append(name)
        while self._layers_to_build:
            self._add_scene_layer(self._layers_to_build.pop(0))

    def _add_scene_layer(self, name: str, ndim: int | None = None) -> None:
        if name.startswith("lesions:"):
            name, ndim = "lesions", int(name.split(":")[1])
        """Add one scene layer, empty and hidden, where the next scene will most likely be."""
        source = self.viewer.layers[self.source_combo.currentText()] if self.source_combo.currentText() else None
        if ndim is None:
            ndim = source.ndim if source is not None else 2
        transform = {"scale": (1.0,) * ndim, "translate": (0.0,) * ndim}
        if source is not None and source.ndim == ndim:
            transform = {"scale": tuple(source.scale), "translate": tuple(source.translate)}
        tiny = (1,) * ndim
        previous = self.viewer.layers.selection.active
        if name == "synthetic":
            self.image_layer = self.viewer.add_image(np.zeros(tiny, np.float32), name=name, colormap="gray",
                                                     visible=False, **transform)
        elif name == "constraint":
            self.constraint_layer = self.viewer.add_labels(np.zeros(tiny, np.uint8), name=name, opacity=0.2,
                                                           visible=False, **transform)
            self.constraint_layer.events.paint.connect(self._constraint_painted)
        elif name == "lesion labels":
            # uint16, as the label map is shown (see _display): a change of dtype rebuilds the visual.
            self.labels_layer = self.viewer.add_labels(np.zeros(tiny, np.uint16), name=name, opacity=0.35,
                                                       visible=False, **transform)
        elif name == "lesion mask":
            self.mask_layer = self.viewer.add_labels(np.zeros(tiny, np.uint8), name=name, visible=False, **transform)
        else:
            self._add_handles(ndim, transform)
        self._stack_scene_layers()
        if previous is not None and previous in self.viewer.layers:
            self.viewer.layers.selection.active = previous  # adding a layer selects it: give it back

    def _add_handles(self, ndim: int, transform: dict) -> None:
        """The handles layer for ``ndim``-D scenes (the active one unless handles of the active kind exist)."""
        from ._common import viewer_grid

        active = self.points_layer is None or self.points_layer not in self.viewer.layers or self.points_layer.ndim == ndim
        # Drawn once while empty (where no grid would give it a cell of its own), so the first
        # scene does not pay for building the markers' shader.
        warm = not viewer_grid(self.viewer).enabled and not self._layers_follow
        layer = self.viewer.add_points(
            np.empty((0, ndim)), name="lesions" if active else f"lesions ({ndim}D scenes)", face_color="transparent",
            border_color="yellow", border_width=0.1, border_width_is_relative=True, visible=warm, **transform,
        )
        # The handles carry no text; a text visual would cost a glyph atlas and a shader at its first draw.
        layer.text.visible = False
        layer.events.data.connect(self._points_changed)
        layer.selected_data.events.items_changed.connect(self._points_selected)
        for key in ("Delete", "Backspace"):
            layer.bind_key(key, lambda _layer: self.delete_selected(), overwrite=True)
        self._handles[ndim] = layer
        if active:
            self.points_layer = layer
        if warm:
            QTimer.singleShot(5 * STEP_GAP_MS, lambda: self._hide_unused_handles(layer))

    def _hide_unused_handles(self, layer) -> None:
        if layer is not self.points_layer or not self._layers_follow:
            layer.visible = False

    def _stack_scene_layers(self) -> None:
        """The scene's layers in their order, above every other layer."""
        layers = [self._scene_layer(name) for name in SCENE_LAYERS[:-1]]
        layers += [layer for layer in self._handles.values() if layer is not self.points_layer] + [self.points_layer]
        layers = [layer for layer in layers if layer is not None and layer in self.viewer.layers]
        indices = [self.viewer.layers.index(layer) for layer in layers]
        top = len(self.viewer.layers)
        if indices != list(range(top - len(indices), top)):
            # The whole new order, moved to the bottom: napari (0.9.2) mis-orders a batch moved
            # to the end of the list when its order differs from the list's (a CT scene after a
            # radiograph put its handles under the image and the CT source on top).
            others = [index for index in range(top) if index not in indices]
            self.viewer.layers.move_multiple(others + indices, 0)

    @staticmethod
    def _place(layer, data, transform: dict) -> None:
        """Show ``layer`` with new data and geometry, touching only what changed (each set redraws).

        The layer is made visible first: napari updates a hidden layer's extent only when it
        is next shown with a change of its geometry.
        """
        layer.visible = True
        if data is not None:
            layer.data = data
        for key in ("scale", "translate"):
            if not np.allclose(getattr(layer, key), transform[key]):
                setattr(layer, key, transform[key])

    def _steps_to_show(self, session: EditSession, display: dict) -> list[Callable[[], None]]:
        """Fill the scene's layers, one layer a step (each step costs about one redraw)."""
        from .._napari import layer_metadata, layer_transform

        image = self.renderer.source
        transform = layer_transform(image)

        def grid_off() -> None:
            # The scene's layers replace the images opened beside it: those stay loaded but
            # hidden, and a side-by-side grid (the demo's CXR | CT) is switched off, or the
            # synthetic image, its labels and the handles would each land in a grid cell.
            from ._common import viewer_grid

            viewer_grid(self.viewer).enabled = False

        def hide(layer) -> Callable[[], None]:
            def step() -> None:
                layer.visible = False
            step.__name__ = f"hide {layer.name}"
            return step

        def stack() -> None:
            self._stack_scene_layers()

        def show(layer) -> Callable[[], None]:
            def step() -> None:
                layer.visible = True
            step.__name__ = f"show {layer.name}"
            return step

        def contrast() -> None:
            layer = self.image_layer
            layer.metadata = layer_metadata(image)
            layer.contrast_limits_range = display["range"]
            layer.contrast_limits = display["limits"]

        def fill(layer, data, then: tuple = ()) -> list[Callable[[], None]]:
            """Steps that give ``layer`` new data and geometry, each about a third of a redraw.

            Same dimensions: show the layer (napari updates a hidden layer's extent only when it
            is shown with a change of its geometry), then data and any change of geometry. A
            radiograph's layers turning into a volume's: data and scale, then translate, while
            the layer is hidden (napari slices nothing; setting the geometry also clears its
            stale extent, which a redraw would trip over), then show it. Each change of a
            layer's extent re-slices every layer of the viewer, hence the turns. ``then``:
            steps to run once the data is in, before the layer is shown.
            """
            if layer.ndim == image.ndim:
                def data_step() -> None:
                    self._place(layer, data, transform)
                data_step.__name__ = f"fill {layer.name}"
                return ([] if layer.visible else [show(layer)]) + [data_step, *then]

            def hidden_data() -> None:
                layer.visible = False
                layer.data = data
                # In the same turn: a redraw before the geometry is set would meet the stale
                # extent of the old number of dimensions (an IndexError in napari's _update_draw).
                layer.scale = transform["scale"]

            def translate() -> None:
                layer.translate = transform["translate"]

            hidden_data.__name__ = f"fill {layer.name}"
            translate.__name__ = f"translate {layer.name}"
            return [hidden_data, translate, *then, show(layer)]

        fills = [(self.image_layer, self.renderer.image), (self.labels_layer, display["labels"]),
                 (self.mask_layer, np.zeros(image.shape, np.uint8))]
        layer_steps: list[Callable[[], None]] = []
        for layer, data in fills:
            layer_steps += fill(layer, data, (contrast,) if layer is self.image_layer else ())

        def retire_handles() -> None:
            # A points layer keeps its number of dimensions: a volume after a radiograph gets
            # handles of its own; the other stay hidden for the next scene of their kind
            # (removing a layer costs napari a full garbage collection, about 0.5 s).
            old = self.points_layer
            self._syncing = True
            try:
                old.data = np.empty((0, old.ndim))
            finally:
                self._syncing = False
            old.visible = False
            old.name = f"lesions ({old.ndim}D scenes)"

        def switch_handles() -> None:
            new_layer = self._handles.get(image.ndim)
            if new_layer is None or new_layer not in self.viewer.layers:
                self.points_layer = None
                self._add_scene_layer("lesions", ndim=image.ndim)
            else:
                self.points_layer = new_layer
                self.points_layer.name = "lesions"
            self._stack_scene_layers()

        def place_handles() -> None:
            # The geometry first (setting it clears the layer's extent, shown or not), then
            # show the layer: two turns.
            for key in ("scale", "translate"):
                if not np.allclose(getattr(self.points_layer, key), transform[key]):
                    setattr(self.points_layer, key, transform[key])

        def show_handles() -> None:
            self.points_layer.visible = True
            self._layers_follow = True

        def sync_handles() -> None:
            self._sync_from_scene()

        def show_constraint() -> None:
            self._show_constraint()

        def select_handles() -> None:
            self.viewer.layers.selection.active = self.points_layer  # napari shows its controls

        def select_mode() -> None:
            self.points_layer.mode = "select"

        def finish() -> None:
            self._fit_view()
            self.say(f"scene {Path(session.scene.folder or '.').name}: {len(session.scene.lesions)} lesions")

        sources = [hide(layer) for layer in self._image_layers() if layer.visible]
        steps = [grid_off, *sources, stack, *layer_steps]
        if self.points_layer.ndim != image.ndim:
            steps += [retire_handles, switch_handles]
        return [*steps, place_handles, show_handles, sync_handles, show_constraint, select_handles, select_mode,
                finish]

    def _fit_view(self) -> None:
        """Fit the scene's image in the canvas, not the hidden images beside it."""
        if self.image_layer.ndim == self.viewer.dims.ndim:
            self.viewer.reset_view(layers=[self.image_layer])
            return
        # napari fits a subset of layers only when they have all the viewer's dimensions (a
        # radiograph's scene beside a CT): centre and zoom on the image's rows and columns.
        from ._common import viewer_camera

        extent = np.asarray(self.image_layer.extent.world, float)[:, -2:]
        size = np.maximum(extent[1] - extent[0], 1e-6)
        height, width = self.viewer.canvas.size
        camera = viewer_camera(self.viewer)
        camera.center = tuple((extent[0] + extent[1]) / 2.0)
        camera.zoom = 0.95 * min(height / size[0], width / size[1])

    def _show_constraint(self) -> None:
        """The constraint layer follows the scene's mask (hidden while the scene has none)."""
        from .._napari import layer_transform

        if self.constraint_layer is None or self.constraint_layer not in self.viewer.layers:
            self._add_scene_layer("constraint")
        mask = self.scene.mask("constraint")
        if mask is None:
            self.constraint_layer.visible = False
            return
        self._place(self.constraint_layer, np.asarray(mask, np.uint8), layer_transform(self.renderer.source))
        # Showing a layer can select it: give the selection back, so clicks keep placing lesions.
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
        if not self._layers_follow:
            return  # the last step of showing the scene fills the layers
        shown = self.labels_layer.data
        if shown is not self.renderer.labels:  # the uint16 copy napari draws faster (see _display)
            shown[region] = self.renderer.labels[region]
        self.image_layer.refresh()
        self.labels_layer.refresh()

    def _scene_changed(self, change: Change) -> None:
        if not self._layers_follow:
            return  # the last step of showing the scene syncs the layers
        if change.masks and "constraint" in change.masks:
            mask = self.scene.mask("constraint")
            if not self.constraint_layer.visible or mask is None:
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
        if not self._layers_follow:
            return
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
        if on and self._layers_follow:
            # The tool selects its own layer; clicks are still taken whichever layer is active.
            self.viewer.layers.selection.active = self.points_layer
            self.points_layer.mode = "select"
        self.say("click in the image to place a lesion" if on else "")

    def _paint_tool_active(self) -> bool:
        layer = self.viewer.layers.selection.active
        return layer is not None and str(getattr(layer, "mode", "")) in PAINT_MODES

    def _on_viewer_mouse(self, viewer, event):
        """Place on a click (press and release within a few pixels), never on a drag."""
        if (not self.place_check.isChecked() or not self._layers_follow or event.button != 1
                or event.modifiers or self._paint_tool_active()):
            return
        if self.points_layer.get_value(event.position, world=True) is not None:
            return  # a click on a handle selects it
        clicked = yield from click_position(event)
        if clicked is not None:
            self.place_at(self.image_layer.world_to_data(clicked))

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
        session = self.session
        if self._syncing or not self._layers_follow or session is None or getattr(event, "action", "changed") != "changed":
            return
        data = np.asarray(self.points_layer.data)
        if len(data) != len(self.scene.lesions):
            self._sync_from_scene()  # points added/removed by hand: the scene decides
            return
        for rec, point in zip(list(self.scene.lesions), data):
            if np.allclose(session.index_of(rec.id), point, atol=1e-3):
                continue
            try:
                session.move_to_index(rec.id, point)
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


def _display(renderer) -> dict:
    """What showing a rendered scene needs, computed off the UI thread (slow on a volume).

    The image's contrast limits (the auto window) and slider range, and the label map as
    uint16 (a scene holds at most 1000 lesions): napari maps int32 labels to a texture type on
    every slice it draws (about 15 ms per 1024x1024 slice); the copy is kept up to date region
    by region as the scene is edited.
    """
    image = renderer.source
    array = np.asarray(image.array)
    lo, hi = window_limits(array, "auto", image.modality)
    data_lo, data_hi = float(np.nanmin(array)), float(np.nanmax(array))
    labels = renderer.labels
    if labels.size and 0 <= labels.min() and labels.max() <= np.iinfo(np.uint16).max:
        labels = labels.astype(np.uint16)
    return {"limits": (lo, hi), "range": (min(lo, data_lo), max(hi, data_hi, min(lo, data_lo) + 1e-6)),
            "labels": labels}


def _new_session_rendered(source: SceneSource, folder: str):
    from ..render import SceneRenderer

    session = new_session(source, folder)
    renderer = SceneRenderer(session.scene)
    return session, renderer, _display(renderer)


def _open_session_rendered(folder: str):
    from ..render import SceneRenderer

    session = open_session(folder)
    renderer = SceneRenderer(session.scene)
    return session, renderer, _display(renderer)


__all__ = ["LesionEditorWidget", "default_scene_folder"]
