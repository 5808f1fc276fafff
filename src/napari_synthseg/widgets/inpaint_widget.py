"""Inpainting widget: fill a mask with a learned model or a classical method, several samples.

Thin: all work is :func:`napari_synthseg.inpaint.inpaint_samples`, run off the UI thread with
progress and cancel. The samples appear side by side (each shifted right by one image width)
as image layers; their arrays stay in :attr:`InpaintWidget.samples` with the request that made
them in :attr:`InpaintWidget.last_request`. "Accept" stores the chosen one as a record of the
Lesion editor's scene (``lesions.accept``); a caller can instead set
:attr:`InpaintWidget.on_accept` to ``callback(index, array, request)``.
The "Train a model" group runs :func:`napari_synthseg.inpaint.train_inpainter` in a worker with
the same progress bar and Cancel button (cancel keeps a resumable checkpoint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import napari
import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
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
from ._common import ProgressRelay, report_error, run_in_thread, show_info

METHODS = [
    ("learned: built-in CXR model", "builtin"),  # the shipped model for the chosen mode
    ("learned: model file…", "file"),
    ("classical: biharmonic", "biharmonic"),
    ("classical: Telea", "telea"),
]


class InpaintWidget(QWidget):
    """Pick image + mask layers, a model or classical method, a mode and a number of samples."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.samples: Optional[List[np.ndarray]] = None
        self.sample_layers: List[Any] = []
        self.last_request: Dict[str, Any] = {}
        self.on_accept: Optional[Callable[[int, np.ndarray, Dict[str, Any]], None]] = None
        self._worker = None
        self._cancel: Optional[CancelToken] = None
        self._relay = ProgressRelay()
        self._relay.progress.connect(self._on_progress)

        self.image_combo = QComboBox()
        self.mask_combo = QComboBox()
        self.method_combo = QComboBox()
        for label, key in METHODS:
            self.method_combo.addItem(label, key)
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("MODEL.safetensors")
        browse = QPushButton("…")
        browse.setFixedWidth(30)
        browse.clicked.connect(self._browse)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit)
        model_row.addWidget(browse)
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(["healthy", "lesion", "outpaint"])
        self.samples_spin = QSpinBox()
        self.samples_spin.setRange(1, 16)
        self.samples_spin.setValue(3)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.margin_spin = QSpinBox()
        self.margin_spin.setRange(0, 512)
        self.margin_spin.setValue(8)
        self.margin_spin.setToolTip("outpaint: pixels kept around the lesion's box")
        self.texture_spin = QDoubleSpinBox()
        self.texture_spin.setRange(0.0, 3.0)
        self.texture_spin.setSingleStep(0.25)
        self.texture_spin.setValue(1.0)
        self.texture_spin.setToolTip("learned fills: seeded grain like the surroundings "
                                     "(0 = smooth fill, best for lesion extraction)")

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Mask", self.mask_combo)
        form.addRow("Method", self.method_combo)
        form.addRow("Model file", model_row)
        form.addRow("Mode", self.mode_combo)
        form.addRow("Samples", self.samples_spin)
        form.addRow("Seed", self.seed_spin)
        form.addRow("Outpaint margin (px)", self.margin_spin)
        form.addRow("Texture", self.texture_spin)

        self.run_button = QPushButton("Inpaint")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        self.accept_spin = QSpinBox()
        self.accept_spin.setRange(0, 0)
        self.accept_spin.setPrefix("sample ")
        self.accept_spin.setMaximumWidth(120)
        self.accept_button = QPushButton("Accept sample")
        self.accept_button.setEnabled(False)
        self.accept_button.clicked.connect(lambda: self.accept(self.accept_spin.value()))
        accept_row = QHBoxLayout()
        accept_row.addWidget(self.accept_spin)
        accept_row.addWidget(self.accept_button)

        # -- training (a model from a folder of images, with progress and cancel)
        self.train_images_edit = QLineEdit()
        self.train_images_edit.setPlaceholderText("folder of training images")
        self.train_masks_edit = QLineEdit()
        self.train_masks_edit.setPlaceholderText("optional: lesion masks (enables lesion mode)")
        self.train_out_edit = QLineEdit()
        self.train_out_edit.setPlaceholderText("output MODEL.safetensors")
        self.train_steps_spin = QSpinBox()
        self.train_steps_spin.setRange(1, 1_000_000)
        self.train_steps_spin.setValue(2000)
        self.train_size_spin = QSpinBox()
        self.train_size_spin.setRange(16, 1024)
        self.train_size_spin.setSingleStep(8)
        self.train_size_spin.setValue(128)
        self.train_batch_spin = QSpinBox()
        self.train_batch_spin.setRange(1, 256)
        self.train_batch_spin.setValue(8)
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.train)
        train_box = QGroupBox("Train a model")
        train_form = QFormLayout(train_box)
        train_form.addRow("Images", self.train_images_edit)
        train_form.addRow("Lesion masks", self.train_masks_edit)
        train_form.addRow("Output", self.train_out_edit)
        train_form.addRow("Steps", self.train_steps_spin)
        train_form.addRow("Crop (px)", self.train_size_spin)
        train_form.addRow("Batch", self.train_batch_spin)
        train_form.addRow(self.train_button)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addLayout(accept_row)
        layout.addWidget(train_box)
        layout.addStretch(1)

        self.method_combo.currentIndexChanged.connect(lambda _: self._method_changed())
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        self._method_changed()

    # -- layers --------------------------------------------------------------------------------
    def _refresh_layers(self, event=None) -> None:
        for combo, kinds in ((self.image_combo, (napari.layers.Image,)),
                             (self.mask_combo, (napari.layers.Labels, napari.layers.Image))):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            for layer in self.viewer.layers:
                if isinstance(layer, kinds) and layer not in self.sample_layers:
                    combo.addItem(layer.name)
            idx = combo.findText(current)
            if idx < 0 and combo is self.mask_combo:
                labels = [i for i in range(combo.count())
                          if isinstance(self.viewer.layers[combo.itemText(i)], napari.layers.Labels)]
                idx = labels[0] if labels else 0
            combo.setCurrentIndex(max(idx, 0))
            combo.blockSignals(False)

    def _method_changed(self) -> None:
        self.model_edit.setEnabled(self.method_combo.currentData() == "file")

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Inpainting model", "", "Models (*.safetensors)")
        if path:
            self.model_edit.setText(path)
            self.method_combo.setCurrentIndex(1)

    def _model(self) -> str:
        key = self.method_combo.currentData()
        if key == "file":
            text = self.model_edit.text().strip()
            if not text:
                raise SynthsegError("choose a model file (.safetensors) or another method")
            if not Path(text).is_file():
                raise SynthsegError(f"model file not found: {text}")
            return text
        if key == "builtin":
            # name the model the mode uses, so the accepted record's provenance says which one
            from ..inpaint.infer import builtin_for_mode

            return builtin_for_mode(self.mode_combo.currentText())
        return key

    # -- run -----------------------------------------------------------------------------------
    def run(self):
        """Start inpainting in a worker thread; returns the worker (None on a user error)."""
        try:
            image_layer = self.viewer.layers[self.image_combo.currentText()]
            mask_layer = self.viewer.layers[self.mask_combo.currentText()]
        except (KeyError, ValueError):
            report_error(SynthsegError("add an image layer and a mask (labels) layer first"))
            return None
        try:
            model = self._model()
            image = np.asarray(image_layer.data)
            mask = np.asarray(mask_layer.data) > 0
            if mask.shape != image.shape:
                raise SynthsegError(f"mask layer shape {mask.shape} does not match the image "
                                    f"{image.shape}; draw the mask on this image")
        except SynthsegError as exc:
            report_error(exc)
            return None
        from ..inpaint import inpaint_samples

        request = dict(image_layer=image_layer.name, mask_layer=mask_layer.name, model=model,
                       mode=self.mode_combo.currentText(), n_samples=self.samples_spin.value(),
                       seed=self.seed_spin.value(), margin=self.margin_spin.value(),
                       texture=self.texture_spin.value(), mask=mask)
        self._cancel = CancelToken()
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText("inpainting…")
        self.progress_bar.setRange(0, 0)
        spacing = None
        scale = tuple(float(s) for s in image_layer.scale)
        if len(scale) == image.ndim:
            spacing = scale

        def done(samples):
            self._finish()
            self._show(samples, image_layer, request)

        def failed(exc):
            self._finish()
            self.status.setText(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            report_error(exc)

        self._worker = run_in_thread(
            inpaint_samples, image, mask, model=model, mode=request["mode"],
            n_samples=request["n_samples"], seed=request["seed"], margin=request["margin"],
            texture=request["texture"] if model not in ("biharmonic", "telea") else 0.0,
            spacing=spacing, progress=self._relay.progress.emit, cancel=self._cancel,
            on_done=done, on_error=failed)
        return self._worker

    def train(self):
        """Train a model in a worker thread (Cancel keeps a resumable checkpoint)."""
        images = self.train_images_edit.text().strip()
        out = self.train_out_edit.text().strip()
        if not images or not Path(images).is_dir():
            report_error(SynthsegError("choose a folder of training images"))
            return None
        if not out.endswith(".safetensors"):
            report_error(SynthsegError("the output model file must end in .safetensors"))
            return None
        masks = self.train_masks_edit.text().strip() or None
        from ..inpaint import InpainterConfig, TrainConfig, train_inpainter

        modes = ("healthy", "lesion", "outpaint") if masks else ("healthy", "outpaint")
        mc = InpainterConfig(modes=modes, prior="biharmonic")
        tc = TrainConfig(steps=self.train_steps_spin.value(), crop=self.train_size_spin.value() // 8 * 8,
                         batch=self.train_batch_spin.value(), checkpoint_every=500)
        self._cancel = CancelToken()
        self.run_button.setEnabled(False)
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText("training…")

        def done(path):
            self._finish()
            self.train_button.setEnabled(True)
            self.model_edit.setText(str(path))
            self.method_combo.setCurrentIndex(1)
            self.status.setText(f"trained {Path(path).name}; selected as the model file")

        def failed(exc):
            self._finish()
            self.train_button.setEnabled(True)
            self.status.setText(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            report_error(exc)

        self._worker = run_in_thread(
            train_inpainter, [images], out, masks_dir=masks, model_config=mc, train_config=tc,
            progress=self._relay.progress.emit, cancel=self._cancel, on_done=done, on_error=failed)
        return self._worker

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()
            self.status.setText("cancelling…")

    def _finish(self) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1)

    def _on_progress(self, step: int, total: int, message: str) -> None:
        if total > 0:
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(step)
        self.status.setText(message)

    def _show(self, samples: List[np.ndarray], image_layer, request: Dict[str, Any]) -> None:
        for layer in self.sample_layers:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.sample_layers = []
        self.samples = samples
        self.last_request = request
        scale = np.asarray(image_layer.scale, float)
        translate = np.asarray(image_layer.translate, float).copy()
        width = image_layer.data.shape[-1] * scale[-1]
        gap = 0.02 * width
        for i, arr in enumerate(samples):
            offset = translate.copy()
            offset[-1] += (i + 1) * (width + gap)
            layer = self.viewer.add_image(
                arr, name=f"{request['mode']} sample {i} (seed {request['seed'] + i})",
                scale=scale, translate=offset, colormap=image_layer.colormap.name,
                contrast_limits=image_layer.contrast_limits,
                metadata={"synthseg": {"inpaint_sample": i, "seed": request["seed"] + i,
                                       "mode": request["mode"], "model": request["model"]}})
            self.sample_layers.append(layer)
        self.accept_spin.setRange(0, len(samples) - 1)
        self.accept_button.setEnabled(True)
        self.status.setText(f"{len(samples)} sample(s), {request['mode']}, model "
                            f"{Path(str(request['model'])).name}; shown to the right of the image")
        self._refresh_layers()

    def accept(self, index: int) -> Optional[np.ndarray]:
        """Hand sample ``index`` to :attr:`on_accept` (wired to the scene by the caller)."""
        if not self.samples or not 0 <= index < len(self.samples):
            report_error(SynthsegError("run the inpainting first, then pick a sample to accept"))
            return None
        arr = self.samples[index]
        request = dict(self.last_request, seed=self.last_request["seed"] + index)
        if self.on_accept is not None:
            self.on_accept(index, arr, request)
            return arr
        try:
            record = self._accept_into_scene(index, arr, request)
        except SynthsegError as exc:
            report_error(exc)
            return None
        show_info(f"sample {index} stored in the scene as {record.id} ({record.kind})")
        return arr

    def _accept_into_scene(self, index: int, sample: np.ndarray, request: Dict[str, Any]):
        """Default accept: a record in the lesion editor's scene (see lesions.accept)."""
        from ..lesions.accept import accept_fill_sample
        from ..models import file_sha256
        from ._common import scene_editor

        editor = scene_editor(self.viewer)
        if editor is None or editor.scene is None:
            raise SynthsegError("open a scene in the Lesion editor first: accepted samples become scene records")
        scene = editor.scene
        layer = self.viewer.layers[request["image_layer"]] if request["image_layer"] in self.viewer.layers else None
        source = ((layer.metadata or {}).get("synthseg") or {}).get("source_paths") if layer is not None else None
        same_image = layer is editor.image_layer or (
            source is not None and [str(Path(p).resolve()) for p in source] == scene.source.paths
        )
        if not same_image:
            raise SynthsegError(
                f"the samples were made on '{request['image_layer']}', not on the scene's image; "
                "inpaint the editor's 'synthetic' layer (or the scene's source image)"
            )
        mask = np.asarray(request["mask"], bool)
        fill_mask = None
        if request["mode"] == "outpaint":
            from ..inpaint.masks import mask_bbox, outpaint_mask

            fill_mask = outpaint_mask(mask.shape, mask_bbox(mask), request["margin"])
        model = str(request["model"])
        provenance = {"model": model, "seed": int(request["seed"]), "sample": int(index),
                      "texture": float(request.get("texture", 0.0))}
        if Path(model).is_file():
            provenance["model_sha256"] = file_sha256(model)
        return accept_fill_sample(scene, sample, mask, request["mode"], provenance, fill_mask=fill_mask)
