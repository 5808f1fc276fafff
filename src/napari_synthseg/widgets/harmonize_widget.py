"""Harmonization widget: train a SinGAN/ConSinGAN on the scene's image, harmonize a lesion.

Works on the scene of the viewer's lesion editor (:func:`._common.scene_editor`):

1. *Train* a one-image harmonizer on the clean source image, by default on a square region
   around the lesion selected in the editor, off the UI thread, with a per-scale progress bar, a
   live preview of the scale being trained (layer ``harmonizer preview``, left of the image)
   and Cancel. The model stays in memory; *Save* / *Load* a ``.safetensors`` file.
2. *Harmonize* the selected lesion: the scene is rendered without the lesion's stored
   harmonization (the naive placement), the GAN re-generates it from the injection scale, and
   the naive crop and the samples appear side by side right of the image.
3. *Accept* sample k: stored in the lesion record as an overlay with the model hash, scale,
   seed and margin (as ``synthseg harmonize --accept``); the editor's render updates. Any later
   edit of the lesion drops the overlay (the lesion can be harmonized again).

All computing is :mod:`napari_synthseg.harmonize`; this widget moves arrays between it, the
scene and layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import napari
import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..errors import SynthsegError
from ..utils.progress import CancelToken
from ._common import ProgressRelay, report_error, run_in_thread, scene_editor, show_info, viewer_camera

PREVIEW = "harmonizer preview"
REGION = "harmonizer region"
NAIVE = "harmonize naive"
OUTLINE = "harmonize lesion outline"
REGIONS = ("around selected lesion", "whole image")
ADD_BACK_CHOICES = ("auto", "original", "coarse", "replace", "detail")


def _spin(lo: int, hi: int, value: int, tip: str = "", suffix: str = "") -> QSpinBox:
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setValue(value)
    if tip:
        box.setToolTip(tip)
    if suffix:
        box.setSuffix(suffix)
    return box


class HarmonizeWidget(QWidget):
    """Train / load a harmonizer and harmonize the lesion selected in the lesion editor."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.model = None  # napari_synthseg.harmonize.Harmonizer
        self.samples: Optional[List[np.ndarray]] = None
        self.sample_layers: List[Any] = []
        self.preview_layer = None
        self.region_layer = None
        self.last_request: Dict[str, Any] = {}
        self.busy = False
        self._worker = None
        self._cancel: Optional[CancelToken] = None
        self._stages: List[int] = []  # iterations per scale of the running training
        self._train_info: Dict[str, Any] = {}
        self._relay = ProgressRelay()
        self._relay.progress.connect(self._on_progress)
        self._relay.preview.connect(self._on_preview)

        # -- 1. train ----------------------------------------------------------------------
        self.arch_combo = QComboBox()
        self.arch_combo.addItems(["singan", "consingan"])
        self.arch_combo.setToolTip("SinGAN: one generator per scale, any injection scale "
                                   "(best in the benchmark); ConSinGAN: one growing generator")
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(["fast", "paper"])
        self.preset_combo.setToolTip("fast: minutes on a CPU; paper: the published settings (hours on a CPU)")
        self.region_combo = QComboBox()
        self.region_combo.addItems(REGIONS)
        self.region_size_spin = _spin(32, 4096, 256, "side of the square training region", " px")
        self.iter_spin = _spin(0, 100000, 0, "iterations per scale; 0 = the preset's")
        self.iter_spin.setSpecialValueText("preset")
        self.train_seed_spin = _spin(0, 2**31 - 1, 0)
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.train)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.stage_label = QLabel("")
        self.stage_bar = QProgressBar()
        self.stage_bar.setRange(0, 1)
        self.stage_bar.setFormat("scale %v/%m")
        self.total_bar = QProgressBar()
        self.total_bar.setRange(0, 1)
        train_box = QGroupBox("1. Train a harmonizer on this image")
        form = QFormLayout(train_box)
        form.addRow("Architecture", self.arch_combo)
        form.addRow("Preset", self.preset_combo)
        form.addRow("Region", self.region_combo)
        form.addRow("Region size", self.region_size_spin)
        form.addRow("Iterations", self.iter_spin)
        form.addRow("Seed", self.train_seed_spin)
        row = QHBoxLayout()
        row.addWidget(self.train_button)
        row.addWidget(self.cancel_button)
        form.addRow(row)
        form.addRow("Scale", self.stage_bar)
        form.addRow("Total", self.total_bar)
        form.addRow(self.stage_label)

        # -- model file --------------------------------------------------------------------
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("MODEL.safetensors")
        browse = QPushButton("…")
        browse.setFixedWidth(30)
        browse.clicked.connect(self._browse)
        save = QPushButton("Save")
        save.clicked.connect(lambda: self.save_model(self.model_edit.text()))
        load = QPushButton("Load")
        load.clicked.connect(lambda: self.load_model(self.model_edit.text()))
        self.model_info = QLabel("no model")
        self.model_info.setWordWrap(True)
        model_box = QGroupBox("Model")
        lay = QVBoxLayout(model_box)
        row = QHBoxLayout()
        for w in (self.model_edit, browse, save, load):
            row.addWidget(w)
        lay.addLayout(row)
        lay.addWidget(self.model_info)

        # -- 2. harmonize ------------------------------------------------------------------
        self.scale_spin = _spin(0, 0, 0, "scale where the naive paste enters (0 = coarsest; "
                                "lower changes more; SinGAN fast: start at n_scales-2)")
        self.samples_spin = _spin(1, 16, 4)
        self.seed_spin = _spin(0, 2**31 - 1, 0)
        self.margin_spin = _spin(0, 128, 8, "ramp around the lesion where the result is blended in", " px")
        self.add_back_combo = QComboBox()
        self.add_back_combo.addItems(ADD_BACK_CHOICES)
        self.add_back_combo.setToolTip(
            "how the GAN output enters the blend. auto: 'original' on radiographs (the GAN's coarse "
            "part plus the fine detail of the image without the lesion, NODE21's add-back), else "
            "'coarse' for ConSinGAN and 'replace' for SinGAN"
        )
        self.harmonize_button = QPushButton("Harmonize selected lesion")
        self.harmonize_button.clicked.connect(self.harmonize_selected)
        self.accept_spin = _spin(0, 0, 0)
        self.accept_spin.setPrefix("sample ")
        self.accept_button = QPushButton("Accept sample")
        self.accept_button.setEnabled(False)
        self.accept_button.clicked.connect(lambda: self.accept(self.accept_spin.value()))
        self.status = QLabel("")
        self.status.setWordWrap(True)
        harm_box = QGroupBox("2. Harmonize the lesion selected in the lesion editor")
        form = QFormLayout(harm_box)
        form.addRow("Injection scale", self.scale_spin)
        form.addRow("Samples", self.samples_spin)
        form.addRow("Seed", self.seed_spin)
        form.addRow("Blend margin", self.margin_spin)
        form.addRow("Add-back", self.add_back_combo)
        form.addRow(self.harmonize_button)
        row = QHBoxLayout()
        row.addWidget(self.accept_spin)
        row.addWidget(self.accept_button)
        form.addRow(row)

        layout = QVBoxLayout(self)
        for w in (train_box, model_box, harm_box):
            layout.addWidget(w)
        layout.addWidget(self.status)
        layout.addStretch(1)

    # ---- the editor's scene -------------------------------------------------------------------

    def _editor(self):
        editor = scene_editor(self.viewer)
        if editor is None or editor.scene is None:
            raise SynthsegError(
                "open the lesion editor (Plugins > SynthSeg lesion synthesis > Lesion editor) and "
                "create or open a scene first"
            )
        if editor.renderer.source.array.ndim != 2:
            raise SynthsegError(
                f"harmonization works on 2D images; this scene is {editor.renderer.source.array.ndim}D "
                "(export one slice as its own image first)"
            )
        return editor

    def _selected(self, editor) -> str:
        lesion_id = editor.selected_id()
        if lesion_id is None or lesion_id not in editor.scene.lesion_ids:
            raise SynthsegError("select a lesion in the lesion editor first")
        return lesion_id

    # ---- training -----------------------------------------------------------------------------

    def _config(self):
        from ..harmonize import preset

        changes = {"region_size": self.region_size_spin.value()}
        if self.iter_spin.value() > 0:
            changes["niter"] = self.iter_spin.value()
        return preset(self.arch_combo.currentText(), self.preset_combo.currentText(), **changes)

    def train(self):
        """Start training in a worker thread; returns the worker (None on a user error)."""
        from ..harmonize import pyramid_shapes, select_region, train_harmonizer

        if self.busy:
            return None
        try:
            editor = self._editor()
            image = editor.renderer.source.array
            config = self._config()
            if self.region_combo.currentText() == REGIONS[0]:
                lesion_id = self._selected(editor)
                mask = editor.renderer.lesion_mask(lesion_id)
                if not mask.any():
                    raise SynthsegError(f"lesion {lesion_id} has no pixels inside the image")
                roi = select_region(image.shape, None, mask, config.region_size)
            else:
                roi = select_region(image.shape)
            n_scales = len(pyramid_shapes(config, roi[2:]))
        except SynthsegError as exc:
            report_error(exc)
            return None
        self._stages = [int(config.niter)] * n_scales
        self._train_info = {"roi": roi, "image_layer": editor.image_layer}
        self._show_region(roi, editor.image_layer)
        self._cancel = CancelToken()
        self._set_busy(True, training=True)
        self.stage_bar.setRange(0, n_scales)
        self.stage_bar.setValue(0)
        self.total_bar.setRange(0, sum(self._stages))
        self.total_bar.setValue(0)
        self.status.setText(f"training {self.arch_combo.currentText()} ({self.preset_combo.currentText()}) "
                            f"on x {roi[1]} y {roi[0]} {roi[3]}x{roi[2]} px, {n_scales} scales…")
        relay = self._relay

        def preview(scale: int, array: np.ndarray) -> None:
            relay.preview.emit(int(scale), np.array(array, np.float32))

        def done(model):
            self._set_busy(False)
            self.set_model(model)
            self.status.setText(
                f"trained in {model.provenance.get('train_seconds', 0):.0f} s; kept in memory "
                "(Save to keep it in a file)"
            )

        def failed(exc):
            self._set_busy(False)
            self.status.setText(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            report_error(exc)

        source = editor.scene.source
        self._worker = run_in_thread(
            train_harmonizer, image, config=config, roi=roi, seed=self.train_seed_spin.value(),
            progress=relay.progress.emit, cancel=self._cancel, preview=preview,
            preview_every=max(1, int(config.niter) // 4),
            provenance={"source": ", ".join(source.paths), "preset": self.preset_combo.currentText()},
            on_done=done, on_error=failed,
        )
        return self._worker

    def _show_region(self, roi, ref) -> None:
        """Outline the training region on the image (pixel edges, numpy order)."""
        r, c, h, w = roi
        corners = np.array([[r - 0.5, c - 0.5], [r + h - 0.5, c + w - 0.5]])
        active = self.viewer.layers.selection.active  # keep the editor's handles in use
        if self.region_layer is not None and self.region_layer in self.viewer.layers:
            self.viewer.layers.remove(self.region_layer)
        self.region_layer = self.viewer.add_shapes(
            [corners], shape_type="rectangle", name=REGION, edge_color="cyan", face_color="transparent",
            edge_width=2, scale=tuple(ref.scale[-2:]), translate=tuple(ref.translate[-2:]),
        )
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()
            self.status.setText("cancelling…")

    def _set_busy(self, busy: bool, training: bool = False) -> None:
        self.busy = busy
        for button in (self.train_button, self.harmonize_button):
            button.setEnabled(not busy)
        self.accept_button.setEnabled(not busy and bool(self.samples))
        self.cancel_button.setEnabled(busy and training)
        if not busy:
            self._cancel = None

    def _on_progress(self, step: int, total: int, message: str) -> None:
        if total > 0:
            self.total_bar.setRange(0, total)
            self.total_bar.setValue(step)
        # The scale being trained (1-based): the first whose iterations are not all done.
        done, stage = 0, 0
        for stage, n in enumerate(self._stages):
            if step < done + n or stage == len(self._stages) - 1:
                break
            done += n
        if self._stages:
            self.stage_bar.setValue(stage + 1)
        self.stage_label.setText(message)

    def _on_preview(self, scale: int, array: np.ndarray) -> None:
        """Show the latest sample of the scale being trained left of the image, on its region."""
        layer_ref = self._train_info.get("image_layer")
        roi = self._train_info.get("roi")
        if layer_ref is None or roi is None:
            return
        r, c, h, w = roi
        sy, sx = (float(v) for v in layer_ref.scale[-2:])
        ty, tx = (float(v) for v in layer_ref.translate[-2:])
        fy, fx = h / array.shape[0], w / array.shape[1]
        gap = 0.02 * layer_ref.data.shape[-1]
        pixel = (sy * fy, sx * fx)
        # Pixel centres: a coarse pixel covers f fine ones, its centre is (f - 1) / 2 in.
        translate = (ty + sy * (r + (fy - 1) / 2), tx - sx * (w + gap) + sx * (fx - 1) / 2)
        name = f"{PREVIEW} (scale {scale + 1}/{len(self._stages)})"
        if self.preview_layer is None or self.preview_layer not in self.viewer.layers:
            active = self.viewer.layers.selection.active
            self.preview_layer = self.viewer.add_image(
                array, name=name, scale=pixel, translate=translate, colormap="gray",
                contrast_limits=tuple(layer_ref.contrast_limits),
            )
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
        else:
            self.preview_layer.data = array
            self.preview_layer.scale = pixel
            self.preview_layer.translate = translate
            self.preview_layer.name = name
        self.preview_layer.visible = True

    # ---- model --------------------------------------------------------------------------------

    def set_model(self, model) -> None:
        """Use ``model`` (a trained or loaded Harmonizer) for harmonizing."""
        self.model = model
        n = model.n_scales
        consingan = model.architecture == "consingan"
        self.scale_spin.setRange(0, 0 if consingan else n - 1)
        self.scale_spin.setValue(0 if consingan else max(0, n - 2))
        self.scale_spin.setEnabled(not consingan)
        r, c, h, w = model.roi
        sha = model.sha256[:12] if model.sha256 else "not saved"
        self.model_info.setText(
            f"{model.architecture}, {n} scales ({model.config.shapes[0][1]}..{model.config.shapes[-1][1]} px), "
            f"region x {c} y {r} {w}x{h} px, sha256 {sha}"
        )

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Harmonizer model", self.model_edit.text(),
                                              "Models (*.safetensors)",
                                              options=QFileDialog.DontConfirmOverwrite)
        if path:
            self.model_edit.setText(path)

    def save_model(self, path: str) -> Optional[Path]:
        try:
            if self.model is None:
                raise SynthsegError("train or load a harmonizer first")
            path = str(path).strip()
            if not path:
                raise SynthsegError("give a model file name (.safetensors)")
            if not path.endswith(".safetensors"):
                raise SynthsegError("the model file must end in .safetensors")
            if not Path(path).parent.is_dir():
                raise SynthsegError(f"folder {Path(path).parent} does not exist; create it or pick another")
            try:
                out = self.model.save(path)
            except OSError as exc:
                raise SynthsegError(f"cannot write {path}: {exc.strerror or exc}") from None
        except SynthsegError as exc:
            report_error(exc)
            return None
        self.set_model(self.model)
        show_info(f"saved {out}")
        return out

    def load_model(self, path: str):
        from ..harmonize import Harmonizer

        try:
            path = str(path).strip()
            if not path or not Path(path).is_file():
                raise SynthsegError(f"model file not found: {path or '(none given)'}")
            model = Harmonizer.load(path)
            editor = scene_editor(self.viewer)
            if editor is not None and editor.scene is not None:
                self._check_image(model, editor.renderer.source.array)
        except SynthsegError as exc:
            report_error(exc)
            return None
        self.set_model(model)
        return model

    @staticmethod
    def _check_image(model, image: np.ndarray) -> None:
        from ..harmonize import image_sha256

        if tuple(image.shape) != tuple(model.image_shape) or image_sha256(image) != model.image_sha256:
            raise SynthsegError(
                "this harmonizer was trained on another image than the scene's; train one on this image"
            )

    # ---- harmonize ------------------------------------------------------------------------------

    def _naive(self, scene, lesion_id):
        from ..render import SceneRenderer

        renderer = SceneRenderer(scene, follow=False, without_overlay={lesion_id})
        return np.array(renderer.image), renderer.lesion_mask(lesion_id)

    def harmonize_selected(self):
        """Harmonize the editor's selected lesion in a worker thread (None on a user error)."""
        from ..harmonize import harmonize
        from ..harmonize.apply import default_add_back
        from ..render import render_without

        if self.busy:
            return None
        try:
            editor = self._editor()
            lesion_id = self._selected(editor)
            if self.model is None:
                raise SynthsegError("train or load a harmonizer first")
            source = editor.renderer.source.array
            self._check_image(self.model, source)
            naive, mask = self._naive(editor.scene, lesion_id)
            if not mask.any():
                raise SynthsegError(f"lesion {lesion_id} has no pixels inside the image")
            add_back = self.add_back_combo.currentText()
            if add_back == "auto":
                kind = editor.scene.lesion(lesion_id).kind
                add_back = default_add_back(self.model, editor.renderer.source.modality, kind)
            original = render_without(editor.scene, lesion_id) if add_back == "original" else None
        except SynthsegError as exc:
            report_error(exc)
            return None
        request = dict(scene=editor.scene, lesion_id=lesion_id, model=self.model, add_back=add_back,
                       injection_scale=self.scale_spin.value(), n_samples=self.samples_spin.value(),
                       seed=self.seed_spin.value(), margin=self.margin_spin.value(), naive=naive,
                       mask=mask, image_layer=editor.image_layer)
        self._set_busy(True)
        self.status.setText(f"harmonizing {lesion_id}…")

        def done(samples):
            self._set_busy(False)
            self._show(samples, request)

        def failed(exc):
            self._set_busy(False)
            self.status.setText(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            report_error(exc)

        self._worker = run_in_thread(
            harmonize, self.model, naive, mask, request["injection_scale"], request["n_samples"],
            request["seed"], request["margin"], reference_image=source, add_back=add_back,
            original_image=original, on_done=done, on_error=failed,
        )
        return self._worker

    def _crop_box(self, mask: np.ndarray, margin: int) -> tuple:
        rows, cols = np.nonzero(mask)
        pad = max(32, 4 * margin)
        H, W = mask.shape
        return (slice(max(0, rows.min() - pad), min(H, rows.max() + pad + 1)),
                slice(max(0, cols.min() - pad), min(W, cols.max() + pad + 1)))

    def _show(self, samples: List[np.ndarray], request: Dict[str, Any]) -> None:
        """Naive crop and samples side by side, right of the image, level with the lesion."""
        for layer in self.sample_layers:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.sample_layers = []
        if self.preview_layer is not None and self.preview_layer in self.viewer.layers:
            self.preview_layer.visible = False
        self.samples = samples
        self.last_request = request
        ref = request["image_layer"]
        box = self._crop_box(request["mask"], request["margin"])
        sy, sx = (float(v) for v in ref.scale[-2:])
        ty, tx = (float(v) for v in ref.translate[-2:])
        width = box[1].stop - box[1].start
        gap = max(4, width // 16)  # px of the image
        x0 = tx + sx * (ref.data.shape[-1] + 2 * gap)
        y0 = ty + sy * box[0].start
        arrays = [(NAIVE, request["naive"])] + [
            (f"harmonized sample {k} (scale {request['injection_scale']}, seed {request['seed']})", s)
            for k, s in enumerate(samples)
        ]
        for i, (name, arr) in enumerate(arrays):
            layer = self.viewer.add_image(
                np.asarray(arr[box], np.float32), name=name, scale=(sy, sx),
                translate=(y0, x0 + i * sx * (width + gap)), colormap="gray",
                contrast_limits=tuple(ref.contrast_limits),
                metadata={"synthseg_harmonize": {"sample": i - 1, "lesion": request["lesion_id"]}},
            )
            self.sample_layers.append(layer)
        # The lesion's outline on every crop: the label is what the harmonization must keep.
        crop = request["mask"][box]
        outline = np.zeros((crop.shape[0], len(arrays) * (width + gap) - gap), np.uint8)
        for i in range(len(arrays)):
            outline[:, i * (width + gap) : i * (width + gap) + width][crop] = 1
        layer = self.viewer.add_labels(outline, name=OUTLINE, scale=(sy, sx), translate=(y0, x0), opacity=0.6)
        layer.contour = 1
        self.sample_layers.append(layer)
        self.accept_spin.setRange(0, len(samples) - 1)
        self.accept_button.setEnabled(True)
        self.focus_results()
        m = request["model"]
        self.status.setText(
            f"{request['lesion_id']}: naive paste and {len(samples)} sample(s) right of the image "
            f"({m.architecture}, scale {request['injection_scale']}, seed {request['seed']}, "
            f"margin {request['margin']} px); accept one to store it in the scene"
        )

    def focus_results(self) -> None:
        """Move the camera onto the naive crop and the samples."""
        layers = [layer for layer in self.sample_layers if layer in self.viewer.layers]
        if not layers:
            return
        try:
            self.viewer.fit_to_view(layers=layers)
        except (AttributeError, TypeError):  # napari < 0.6: no fit_to_view(layers=)
            extent = np.array([layer.extent.world for layer in layers])
            lo, hi = extent[:, 0].min(axis=0), extent[:, 1].max(axis=0)
            viewer_camera(self.viewer).center = tuple((lo + hi) / 2)

    def accept(self, index: int):
        """Store sample ``index`` in the lesion record (the editor's render shows it)."""
        from ..harmonize import blend_weights
        from ..lesions.place import attach_overlay

        try:
            req = self.last_request
            if not self.samples or not 0 <= index < len(self.samples):
                raise SynthsegError("harmonize a lesion first, then pick a sample to accept")
            editor = self._editor()
            scene, lesion_id = editor.scene, req["lesion_id"]
            if scene is not req["scene"] or lesion_id not in scene.lesion_ids:
                raise SynthsegError(f"the scene or lesion {lesion_id} changed since harmonizing; harmonize again")
            naive, _ = self._naive(scene, lesion_id)
            if not np.array_equal(naive, req["naive"]):
                raise SynthsegError(
                    f"lesion {lesion_id} or its surroundings changed since harmonizing; harmonize again"
                )
            model = req["model"]
            self._ensure_saved(model, scene)
            margin = req["margin"]
            sample = self.samples[index]
            weight = blend_weights(req["mask"], margin)
            rows, cols = np.nonzero(weight > 0)
            box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
            # The sample already holds the margin blend: the overlay replaces its box as shown.
            record = attach_overlay(
                scene, lesion_id, sample[box], np.ones(sample[box].shape, np.float32),
                [box[0].start, box[1].start],
                provenance={
                    "engine": model.architecture, "model_sha256": model.sha256,
                    "injection_scale": req["injection_scale"], "seed": req["seed"], "sample": int(index),
                    "blend_margin_px": margin, "add_back": req["add_back"],
                },
            )
        except SynthsegError as exc:
            report_error(exc)
            return None
        self.status.setText(f"{lesion_id}: stored sample {index} (model {model.sha256[:12]}); "
                            "editing the lesion drops it")
        return record

    def _ensure_saved(self, model, scene) -> None:
        """A record cites a model by file hash: save an unsaved model beside the scene."""
        if model.sha256:
            return
        if scene.folder is None:
            raise SynthsegError("save the model first (Model > Save) so the lesion can record its hash")
        folder = Path(scene.folder) / "harmonizers"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"_unsaved_{id(model):x}.safetensors"
        model.save(tmp)
        final = folder / f"{model.architecture}_{model.sha256[:16]}.safetensors"
        tmp.replace(final)
        self.model_edit.setText(str(final))
        if model is self.model:
            self.set_model(model)


__all__ = ["HarmonizeWidget"]
