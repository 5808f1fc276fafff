"""Lesion QA in napari: original | synthetic | signed difference, outlines, A/R/F decisions.

The review has a viewer of its own: docked in a viewer that shows other layers (the lesion
editor's), the panel opens a second napari window for the grid, so the grid never mixes in the
editor's layers and the review keys (A/R/F, arrows, Page Up/Down) are bound only there, acting
while that window has the focus. Scenes come from the process's scene store: a decision made
here is in the editor's scene at once, and the reverse.

The three images sit side by side in napari's grid mode (one camera: zoom and pan are linked),
each with the same lesion outlines (one label array shared by three Labels layers, coloured by
decision). Keys: A accept, R reject, F flag the current lesion; Right/Down next lesion,
Left/Up previous (across scenes); Page Down / Page Up next / previous scene. Every decision
is written to the scene folder at once (the scene autosaves). All QA numbers come from
:mod:`napari_synthseg.qa`; export runs :func:`napari_synthseg.export.export_dataset` in a
worker thread with a progress bar.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
import numpy as np
from napari.utils.colormaps import Colormap, DirectLabelColormap
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
)

from .._napari import layer_transform
from ..errors import CancelledError, SynthsegError
from ..export import FORMATS
from ..io import window_limits
from ..qa import STATUS_COLORS, find_scenes, qa_scene
from ..scene import Scene
from ..utils.progress import CancelToken
from ..workflow.review import DECISION_KEYS, ExportSettings, ReviewSession
from ._base import JobPanel
from ._common import (
    ProgressRelay,
    guard_gl_context,
    report_error,
    run_in_thread,
    show_info,
    viewer_camera,
    viewer_grid,
)

LAYER_NAMES = ("QA original", "QA synthetic", "QA difference")
OUTLINE_NAMES = ("QA outlines (original)", "QA outlines (synthetic)", "QA outlines (difference)")
# One text layer per grid cell (the grid places the same number of layers in every cell); only
# the synthetic view's carries the numbers, the others stay empty.
TEXT_NAMES = ("QA numbers (original)", "QA numbers (synthetic)", "QA numbers (difference)")
KEYS = DECISION_KEYS
QA_LAYERS = set(LAYER_NAMES) | set(OUTLINE_NAMES) | set(TEXT_NAMES)


class QAWidget(JobPanel):
    """Walk through scenes and decide every lesion; export the accepted ones."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, renderer=None):
        super().__init__(napari_viewer)
        self.host = napari_viewer
        self.viewer = napari_viewer  # where the grid is drawn: the host, or a QA window of its own
        self.review = ReviewSession()
        self.renderer = renderer
        self.folders: list[Path] = []
        self.scene_index = -1
        self.lesion_index = -1
        self.scene: Any = None  # the live Scene shown (None before the first is loaded)
        self.qa: Any = None  # its SceneQA (rendered images, metrics)
        self._wanted: tuple[int, int] | None = None  # (scene, lesion) asked for, still loading
        self._preparing: dict[Path, object] = {}  # folder -> worker opening and rendering it
        self._prepared: dict[Path, tuple] = {}  # folder -> (scene.json stamp, Scene, SceneQA)
        self.last_load_error: BaseException | None = None
        self.user = self.review.by
        self._worker = None
        self._cancel: CancelToken | None = None
        self._bound: list[str] = []

        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("folder of scenes")
        browse = QPushButton("Open…")
        browse.clicked.connect(self._browse)
        top = QHBoxLayout()
        top.addWidget(self.folder_edit)
        top.addWidget(browse)

        self.scene_label = QLabel("no scenes loaded")
        # a long scene name or a path in the details wraps or is cut, never widens the panel
        self.scene_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        prev_scene = QPushButton("◀ scene")
        next_scene = QPushButton("scene ▶")
        prev_scene.clicked.connect(lambda: self.go_scene(self.scene_index - 1))
        next_scene.clicked.connect(lambda: self.go_scene(self.scene_index + 1))
        nav = QHBoxLayout()
        nav.addWidget(prev_scene)
        nav.addWidget(self.scene_label, 1)
        nav.addWidget(next_scene)

        self.lesion_list = QListWidget()
        self.lesion_list.setMinimumHeight(120)
        self.lesion_list.currentRowChanged.connect(self._row_changed)
        self.details = QLabel("")
        self.details.setWordWrap(True)
        self.details.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.reason_edit = QLineEdit()
        self.reason_edit.setPlaceholderText("reason (optional, used by the next decision)")
        buttons = QHBoxLayout()
        for key, status in KEYS.items():
            b = QPushButton(f"{status[:-2].capitalize()} ({key.upper()})" if status != "flagged" else "Flag (F)")
            b.clicked.connect(lambda _=False, s=status: self.decide(s))
            buttons.addWidget(b)
        reject_image = QPushButton("Reject whole image")
        reject_image.clicked.connect(lambda: self.decide_image("rejected"))

        review = QGroupBox("Review: A accept, R reject, F flag, arrows")
        rl = QVBoxLayout(review)
        rl.addLayout(nav)
        rl.addWidget(self.lesion_list, 1)
        rl.addWidget(self.details)
        rl.addWidget(self.reason_edit)
        rl.addLayout(buttons)
        rl.addWidget(reject_image)

        self.format_combo = QComboBox()
        self.format_combo.addItems(FORMATS)
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("output folder (nnU-Net: nnUNet_raw)")
        self.name_edit = QLineEdit("Synthseg")
        self.split_edit = QLineEdit()
        self.split_edit.setPlaceholderText("train,val,test of patients, e.g. 0.8,0.1,0.1 (empty: all train)")
        self.real_spin = QDoubleSpinBox()
        self.real_spin.setRange(0.0, 1.0)
        self.real_spin.setSingleStep(0.125)
        self.real_spin.setDecimals(3)
        self.ratio_edit = QLineEdit()
        self.ratio_edit.setPlaceholderText("synthetic per real training case (empty: all accepted)")
        self.workers_spin = QSpinBox()
        self.workers_spin.setRange(1, 64)
        self.workers_spin.setValue(2)
        self.export_button = QPushButton("Export accepted")
        self.export_button.clicked.connect(self.start_export)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_export)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m")
        export = QGroupBox("Export")
        form = QFormLayout(export)
        form.addRow("Format", self.format_combo)
        form.addRow("Out", self.out_edit)
        form.addRow("Name", self.name_edit)
        form.addRow("Split", self.split_edit)
        form.addRow("Real fraction", self.real_spin)
        form.addRow("Synthetic ratio", self.ratio_edit)
        form.addRow("Workers", self.workers_spin)
        row = QHBoxLayout()
        row.addWidget(self.export_button)
        row.addWidget(self.cancel_button)
        form.addRow(row)
        form.addRow(self.progress)

        self.body.addLayout(top)
        self.body.addWidget(review, 1)
        self.body.addWidget(export)
        self.finish_layout()

        self._relay = ProgressRelay()
        self._relay.progress.connect(self._on_progress)
        self._bind_keys()

    # ---- keys --------------------------------------------------------------------------------

    def _bind_keys(self) -> None:
        bindings = {
            **{k: (lambda s: lambda v: self.decide(s))(status) for k, status in KEYS.items()},
            "Right": lambda v: self.step(+1),
            "Down": lambda v: self.step(+1),
            "Left": lambda v: self.step(-1),
            "Up": lambda v: self.step(-1),
            "PageDown": lambda v: self.go_scene(self.scene_index + 1),
            "PageUp": lambda v: self.go_scene(self.scene_index - 1),
        }
        for key, func in bindings.items():
            self.viewer.bind_key(key, func, overwrite=True)
            self._bound.append(key)

    def unbind_keys(self) -> None:
        for key in self._bound:
            self.viewer.keymap.pop(key, None)
            try:
                from app_model.types import KeyBinding

                self.viewer.keymap.pop(KeyBinding.from_str(key), None)
            except Exception:
                pass
        self._bound.clear()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt name
        self.unbind_keys()
        super().closeEvent(event)

    # ---- scenes ------------------------------------------------------------------------------

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of scenes")
        if folder:
            self.folder_edit.setText(folder)
            try:
                self.load_folders(find_scenes(folder))
            except SynthsegError as exc:
                report_error(exc)

    def load_folders(self, folders) -> None:
        self.folders = [Path(f) for f in folders]
        self._prepared.clear()
        self._wanted = None
        if self.folders and not self.folder_edit.text():
            self.folder_edit.setText(str(self.folders[0].parent))
        self.go_scene(0)

    @property
    def loading(self) -> bool:
        """True while the scene the user asked for is still being rendered in a worker."""
        return self._wanted is not None

    def go_scene(self, index: int, lesion: int = 0) -> None:
        """Show scene ``index`` at ``lesion`` (-1: its last lesion).

        Opening and rendering a scene takes seconds on a large radiograph or CT, so it runs in a
        worker: the neighbours of the shown scene are prepared in the background, and moving to
        one that is ready is immediate. A prepared scene is used only if its scene.json has not
        changed since it was read.
        """
        if not self.folders:
            return
        index = max(0, min(index, len(self.folders) - 1))
        folder = self.folders[index]
        ready = self._prepared.pop(folder, None)
        if ready is not None and ready[0] == _scene_stamp(folder):
            self._wanted = None
            self._show_scene(index, lesion, ready[1], ready[2])
            return
        self._wanted = (index, lesion)
        self.scene_label.setText(f"loading {index + 1}/{len(self.folders)}  {folder.name} …")
        self._prepare(folder)

    def _prepare(self, folder: Path) -> None:
        if folder in self._preparing:
            return
        def done(result: Any, f: Path = folder) -> None:
            self._prepared_scene(f, result)

        def failed(exc: BaseException, f: Path = folder) -> None:
            self._prepare_failed(f, exc)

        self._preparing[folder] = run_in_thread(_open_for_qa, folder, self.renderer, on_done=done, on_error=failed)

    def _prepared_scene(self, folder: Path, result) -> None:
        self._preparing.pop(folder, None)
        self._prepared[folder] = result
        if self._wanted is not None and self.folders[self._wanted[0]] == folder:
            self.go_scene(*self._wanted)

    def _prepare_failed(self, folder: Path, exc: BaseException) -> None:
        self._preparing.pop(folder, None)
        self.last_load_error = exc
        # A neighbour prepared in the background reports its error only when the user goes there.
        if self._wanted is not None and self.folders[self._wanted[0]] == folder:
            self._wanted = None
            if self.scene is not None:
                self.scene_label.setText(
                    f"{self.scene_index + 1}/{len(self.folders)}  {self.folders[self.scene_index].name}")
            report_error(exc)

    def _show_scene(self, index: int, lesion: int, snapshot: Scene, qa) -> None:
        # The snapshot was rendered from the scene.json that is still on disk (stamp checked),
        # so the live scene (refreshed from disk by the store) matches what qa shows.
        scene = ReviewSession.open(self.folders[index])
        self.scene_index, self.scene, self.qa = index, scene, qa
        self._show_layers()
        self._fill_list()
        if scene.lesions:
            self.go_lesion(lesion if lesion >= 0 else len(scene.lesions) - 1)
        else:
            self.lesion_index = -1
            self.details.setText("this scene has no lesions")
        neighbours = [self.folders[j] for j in (index + 1, index - 1) if 0 <= j < len(self.folders)]
        for folder in list(self._prepared):
            if folder not in neighbours:
                del self._prepared[folder]
        for folder in neighbours:
            if folder not in self._prepared:
                self._prepare(folder)

    def wait_idle(self, timeout_s: float = 300.0) -> None:
        """Process events until no scene is loading or being prepared (CLI ``--no-block``, tests)."""
        import time

        from qtpy.QtWidgets import QApplication

        end = time.monotonic() + timeout_s
        while (self._wanted is not None or self._preparing) and time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.01)

    def _foreign_layers(self) -> bool:
        return any(layer.name not in QA_LAYERS for layer in self.viewer.layers)

    def _use_own_viewer(self) -> None:
        """Draw the grid in a QA window of its own (the host shows other layers)."""
        self.unbind_keys()
        self.viewer = napari.Viewer(title="napari-synthseg QA")
        guard_gl_context(self.viewer)  # two viewers: each deletes its GL objects in its own context
        self.viewer.window._qt_window.resize(1200, 700)
        self._bind_keys()

    def _show_layers(self) -> None:
        if self._foreign_layers():
            self._use_own_viewer()
        r = self.qa.rendered
        img = r.original
        limits = window_limits(img.array, "auto", img.modality)
        diff = r.difference
        spread = float(np.max(np.abs(diff))) or 1.0
        datas = (img.array, r.image, diff)
        contrasts = (limits, limits, (-spread, spread))
        # Diverging map with a black centre: unchanged pixels stay dark, outlines stay visible.
        cmaps = ("gray", "gray", Colormap([[0.25, 0.55, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0], [1.0, 0.45, 0.2, 1.0]],
                                          name="synthseg-signed-difference"))
        transform = layer_transform(img)
        for name, data, clim, cmap in zip(LAYER_NAMES, datas, contrasts, cmaps):
            if name in self.viewer.layers:
                layer = self.viewer.layers[name]
                layer.data = data
                layer.contrast_limits = clim
                layer.scale, layer.translate = transform["scale"], transform["translate"]
            else:
                self.viewer.add_image(data, name=name, contrast_limits=clim, colormap=cmap, **transform)
        labels = r.labels
        for name in OUTLINE_NAMES:
            if name in self.viewer.layers:
                layer = self.viewer.layers[name]
                layer.data = labels
                layer.scale, layer.translate = transform["scale"], transform["translate"]
            else:
                layer = self.viewer.add_labels(labels, name=name, opacity=1.0, **transform)
                layer.contour = max(1, int(round(min(labels.shape[-2:]) / 512)))
                layer.editable = False
        self._update_text()
        # Order image, outline, text, image, ... so grid stride 3 groups each image with its overlays.
        wanted = [n for group in zip(LAYER_NAMES, OUTLINE_NAMES, TEXT_NAMES) for n in group]
        for i, name in enumerate(wanted):
            j = self.viewer.layers.index(name)
            if j != i:
                self.viewer.layers.move(j, i)
        viewer_grid(self.viewer).stride = 3
        viewer_grid(self.viewer).shape = (1, 3)
        viewer_grid(self.viewer).enabled = True
        self._recolor()
        self.viewer.layers.selection.active = self.viewer.layers[LAYER_NAMES[1]]
        self.viewer.reset_view()
        name = self.folders[self.scene_index].name
        self.scene_label.setText(f"{self.scene_index + 1}/{len(self.folders)}  {name}")

    def _text_rows(self):
        """Anchor (world mm, top-right of the lesion's box) and caption of every drawn lesion."""
        r = self.qa.rendered
        img = r.original
        boxes = __import__("scipy.ndimage", fromlist=["find_objects"]).find_objects(r.labels)
        coords, texts, statuses = [], [], []
        for rec in self.scene.lesions:
            box = boxes[rec.label - 1] if 0 < rec.label <= len(boxes) else None
            if box is None:
                continue
            # Whole-voxel centre so the caption lies on a slice napari shows in 3D.
            corner = np.array([b.start + (b.stop - b.start - 1) // 2 for b in box], dtype=float)
            corner[-2] = box[-2].stop + 3 + 0.7 * (box[-2].stop - box[-2].start)  # below the lesion (text is centred)
            transform = layer_transform(img)
            coords.append(corner * np.asarray(transform["scale"]) + np.asarray(transform["translate"]))
            m = self.qa.metrics.get(rec.id)
            numbers = "" if m is None else f"\nCNR {m.cnr:.1f}  grad {m.gradient_ratio:.1f}" + (
                "" if m.range_ok else "  RANGE")
            texts.append(f"{rec.id} {rec.status}{numbers}")
            statuses.append(rec.status)
        ndim = r.labels.ndim
        return np.asarray(coords, float).reshape(-1, ndim), texts, statuses

    def _update_text(self) -> None:
        coords, texts, statuses = self._text_rows()
        hexes = ["#{:02x}{:02x}{:02x}".format(*STATUS_COLORS.get(s, (200, 200, 200))) for s in statuses]
        for name in TEXT_NAMES:
            shown = name == TEXT_NAMES[1]
            data = coords if shown else np.zeros((0, coords.shape[1]))
            features = {"text": texts if shown else [], "status": statuses if shown else [],
                        "color": hexes if shown else []}
            if name in self.viewer.layers:
                layer = self.viewer.layers[name]
                layer.data = data
                layer.features = features
            else:
                layer = self.viewer.add_points(
                    data, name=name, size=0.01, features=features, face_color="transparent",
                    border_width=0, out_of_slice_display=True,
                    text={"string": "{text}", "size": 9, "anchor": "center",
                          "color": {"feature": "color"}},
                )
                layer.editable = False
            layer.refresh()

    def _recolor(self) -> None:
        colors: dict[int | None, tuple[float, ...]] = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0)}
        for rec in self.scene.lesions:
            rgb = STATUS_COLORS.get(rec.status, (200, 200, 200))
            colors[rec.label] = tuple(c / 255.0 for c in rgb) + (1.0,)
        cmap = DirectLabelColormap(color_dict=colors)
        for name in OUTLINE_NAMES:
            self.viewer.layers[name].colormap = cmap

    def _item_text(self, rec) -> str:
        m = self.qa.metrics.get(rec.id)
        numbers = m.summary() if m is not None else ""
        reason = (rec.decision or {}).get("reason") or ""
        return f"{rec.id}  {rec.status:<8}  {rec.kind}  {numbers}" + (f"  — {reason}" if reason else "")

    def _fill_list(self) -> None:
        self.lesion_list.blockSignals(True)
        self.lesion_list.clear()
        for rec in self.scene.lesions:
            item = QListWidgetItem(self._item_text(rec))
            item.setForeground(_qcolor(STATUS_COLORS.get(rec.status, (200, 200, 200))))
            self.lesion_list.addItem(item)
        self.lesion_list.blockSignals(False)

    def _row_changed(self, row: int) -> None:
        if row >= 0 and self.scene is not None and row != self.lesion_index:
            self.go_lesion(row)

    def go_lesion(self, index: int) -> None:
        """Select lesion ``index`` of the current scene and centre the view on it."""
        if self.scene is None or not self.scene.lesions:
            return
        index = max(0, min(index, len(self.scene.lesions) - 1))
        self.lesion_index = index
        rec = self.scene.lesions[index]
        self.lesion_list.blockSignals(True)
        self.lesion_list.setCurrentRow(index)
        self.lesion_list.blockSignals(False)
        labels = self.qa.rendered.labels
        img = self.qa.rendered.original
        coords = np.argwhere(labels == rec.label)
        if coords.size:
            lo, hi = coords.min(axis=0), coords.max(axis=0)
            centre = (lo + hi) / 2.0
            centre[:-2] = lo[:-2] + (hi[:-2] - lo[:-2]) // 2  # a whole slice, as the caption
            extent = (hi - lo + 1) * np.asarray(img.scale)
            transform = layer_transform(img)
            world = centre * np.asarray(transform["scale"]) + np.asarray(transform["translate"])
            if labels.ndim == 3:
                self.viewer.dims.set_point(0, world[0])
            viewer_camera(self.viewer).center = tuple(world[-2:])
            # About five lesion diameters across one grid cell.
            size = max(float(extent[-2:].max()) * 5.0, 10.0)
            canvas = self.viewer.window._qt_viewer.canvas.size if hasattr(self.viewer, "window") else (600, 600)
            cell_px = max(50.0, min(canvas[0], canvas[1] / 3.0))
            viewer_camera(self.viewer).zoom = cell_px / size
        m = self.qa.metrics.get(rec.id)
        size_txt = ""
        if m is not None:
            size_txt = (f"{m.area_mm2:.1f} mm²" if m.area_mm2 is not None else f"{m.volume_mm3:.0f} mm³")
            self.details.setText(
                f"<b>{rec.id}</b> {rec.kind}, {rec.size_mm:.1f} mm, status <b>{rec.status}</b><br>"
                f"contrast {m.contrast:+.3g} (CNR {m.cnr:.2f}), added {m.added:+.3g}<br>"
                f"gradient ratio {m.gradient_ratio:.2f}, ring gradient change {m.ring_gradient_change:.2f}<br>"
                f"{size_txt} (Ø {m.equivalent_diameter_mm:.1f} mm), "
                f"range {'ok' if m.range_ok else f'OUT ({100 * m.out_of_range_fraction:.1f} %)'}"
            )

    def step(self, delta: int) -> None:
        """Next/previous lesion, moving to the next/previous scene at the ends."""
        if self.scene is None or self.loading:
            return
        target = self.lesion_index + delta
        if 0 <= target < len(self.scene.lesions):
            self.go_lesion(target)
        elif delta > 0 and self.scene_index + 1 < len(self.folders):
            self.go_scene(self.scene_index + 1, 0)
        elif delta < 0 and self.scene_index > 0:
            self.go_scene(self.scene_index - 1, -1)

    # ---- decisions ---------------------------------------------------------------------------

    def decide(self, status: str, advance: bool = True) -> None:
        """Record ``status`` for the current lesion (saved at once) and move on."""
        if self.loading:  # the shown scene is about to be replaced: the key was meant for the next
            show_info("still loading the scene: decide once it is shown")
            return
        if self.scene is None or not (0 <= self.lesion_index < len(self.scene.lesions)):
            return
        rec = self.scene.lesions[self.lesion_index]
        reason = self.reason_edit.text().strip()
        try:
            self.review.decide(self.scene, rec.id, status, reason)
        except SynthsegError as exc:
            report_error(exc)
            return
        self.reason_edit.clear()
        rec = self.scene.lesions[self.lesion_index]
        item = self.lesion_list.item(self.lesion_index)
        if item is not None:
            item.setText(self._item_text(rec))
            item.setForeground(_qcolor(STATUS_COLORS.get(rec.status, (200, 200, 200))))
        self._recolor()
        self._update_text()
        if advance and self.lesion_index + 1 < len(self.scene.lesions):
            self.step(+1)
        elif advance and self.scene_index + 1 < len(self.folders):
            self.step(+1)
        else:
            self.go_lesion(self.lesion_index)  # the last one: show its new status

    def decide_image(self, status: str) -> None:
        if self.scene is None or self.loading:
            return
        reason = self.reason_edit.text().strip()
        try:
            self.review.decide_image(self.scene, status, reason)
        except SynthsegError as exc:
            report_error(exc)
            return
        self.reason_edit.clear()
        show_info(f"{self.folders[self.scene_index].name}: image {status}")
        self.go_scene(self.scene_index + 1)

    # ---- export ------------------------------------------------------------------------------

    def start_export(self) -> None:
        try:
            settings = ExportSettings.from_text(
                self.format_combo.currentText(), self.name_edit.text(), self.split_edit.text(),
                self.real_spin.value(), self.ratio_edit.text(), self.workers_spin.value(),
            )
            out = self.out_edit.text().strip()
            if not out:
                raise SynthsegError("choose an output folder for the export")
            if not self.folders:
                raise SynthsegError("load a folder of scenes first")
        except SynthsegError as exc:
            report_error(exc)
            return
        self._cancel = CancelToken()
        self.export_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self._worker = run_in_thread(
            settings.run, list(self.folders), out, renderer=self.renderer, progress=self._relay.progress.emit,
            cancel=self._cancel, on_done=self._export_done, on_error=self._export_failed,
        )

    def cancel_export(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    def _on_progress(self, step: int, total: int, message: str) -> None:
        self.progress.setMaximum(max(total, 1))
        self.progress.setValue(step)

    def _finish(self) -> None:
        self.export_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self._worker = None

    def _export_done(self, result) -> None:
        self._finish()
        self.last_export = result
        show_info(f"exported {len(result.plan.cases)} cases to {result.path}")

    def _export_failed(self, exc: BaseException) -> None:
        self._finish()
        self.last_error = exc
        if isinstance(exc, (SynthsegError, CancelledError)):
            report_error(exc)
        else:
            raise exc


def _scene_stamp(folder: Path):
    """Changes whenever the scene is saved (scene.json is rewritten atomically on every save)."""
    try:
        st = (Path(folder) / "scene.json").stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _open_for_qa(folder: Path, renderer):
    """Worker: open and render one scene; the stamp is taken first so a save during it shows."""
    stamp = _scene_stamp(folder)
    # A private copy to render in the worker; the panel decides on the live scene, which it
    # takes from the store on the UI thread (its listeners, e.g. an editor's layers, run there).
    scene = Scene.open(folder)
    return stamp, scene, qa_scene(scene, renderer)


def _qcolor(rgb):
    from qtpy.QtGui import QColor

    return QColor(*rgb)
