"""Inpainting panel: a thin adapter over :mod:`napari_synthseg.workflow.inpaint`.

Pick an image layer and a mask (Labels layers only: wave 1 offered the image itself as the mask,
52 s and black samples), a learned model or a classical method, a mode and a number of samples.
The job (:func:`~napari_synthseg.workflow.inpaint.inpaint`) runs in a worker with progress and
Cancel; the samples appear side by side right of the image as layers named
``inpaint <mode> seed <s> (sample k/n)``. *Accept* stores the chosen sample in the lesion
editor's scene (:func:`~napari_synthseg.workflow.inpaint.accept_inpainted`); a caller can
instead set :attr:`InpaintWidget.on_accept` to ``callback(index, array, provenance)``.
*Train a model* runs :func:`~napari_synthseg.workflow.inpaint.train_inpainter_model` the same
way (Cancel keeps a resumable checkpoint). Every default is read from the workflow's settings.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari
import numpy as np
from qtpy.QtWidgets import QPushButton

from ..errors import SynthsegError
from ..workflow.inpaint import (
    MODES,
    InpaintSettings,
    TrainInpainterSettings,
    accept_inpainted,
    check_training_paths,
    fill_mask,
    inpaint,
    sample_provenance,
    train_inpainter_model,
)
from ._base import JobPanel
from ._common import scene_editor
from ._fields import (
    combo,
    dspin,
    folder_into,
    offer_samples,
    open_file_into,
    optional_value,
    pair,
    path_field,
    refill,
    sample_picker,
    save_file_into,
    spin,
)

METHODS = (
    ("learned: built-in CXR model", "builtin"),  # the shipped model for the chosen mode
    ("learned: model file…", "file"),
    ("classical: biharmonic", "biharmonic"),
    ("classical: Telea", "telea"),
)
#: Metadata key of sample layers (not "synthseg": the lesion editor lists those as scene sources).
SAMPLE_KEY = "synthseg_inpaint"


def sample_layer_name(settings: InpaintSettings, index: int) -> str:
    """``inpaint healthy seed 3 (sample 1/3)``: distinct for every sample of every request."""
    return f"inpaint {settings.mode} seed {int(settings.seed) + index} (sample {index + 1}/{settings.samples})"


class InpaintWidget(JobPanel):
    """Fill a painted mask with several seeded samples; accept one into the scene."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer)
        defaults, train = InpaintSettings(), TrainInpainterSettings()
        self.samples: list[np.ndarray] | None = None
        self.sample_layers: list[Any] = []
        self.last_settings: InpaintSettings | None = None
        self.last_mask: np.ndarray | None = None
        self.last_image_layer: Any = None
        self.on_accept: Callable[[int, np.ndarray, dict[str, Any]], None] | None = None

        form = self.group("Fill a mask")
        self.image_combo = combo(tip="image to fill (the editor's 'synthetic' layer to accept into a scene)")
        self.mask_combo = combo(tip="Labels layer painted over the region to fill")
        self.method_combo = combo()
        for label, key in METHODS:
            self.method_combo.addItem(label, key)
        self.model_edit, model_row = path_field(
            "MODEL.safetensors", open_file_into(self, "Inpainting model", "Models (*.safetensors)"))
        method = self.method_combo.findData(defaults.model)
        if method < 0:  # the default names a model file
            method = self.method_combo.findData("file")
            self.model_edit.setText(defaults.model)
        self.method_combo.setCurrentIndex(method)
        self.mode_combo = combo(MODES, defaults.mode)
        self.samples_spin = spin(1, 64, defaults.samples)
        self.seed_spin = spin(0, 2**31 - 1, defaults.seed, "seed of the first sample; sample k uses seed + k")
        self.seed_spin.setPrefix("seed ")
        self.margin_spin = spin(0, 512, defaults.margin_px, "outpaint: pixels kept around the lesion's box", " px")
        self.texture_spin = dspin(-0.25, 1.0, -0.25 if defaults.texture is None else defaults.texture, 0.25,
                                  tip="learned fills: seeded grain like the surroundings (0 = smooth fill, "
                                      "best for lesion extraction); auto: 0 for one sample, 1 for several",
                                  special="auto")
        self.run_button = QPushButton("Inpaint")
        self.run_button.clicked.connect(self.run)
        self.accept_spin, self.accept_button, accept_row = sample_picker(self.accept)
        form.addRow("Image", self.image_combo)
        form.addRow("Mask", self.mask_combo)
        form.addRow("Method", self.method_combo)
        form.addRow("Model", model_row)
        form.addRow("Mode", self.mode_combo)
        form.addRow("Samples", pair(self.samples_spin, self.seed_spin))
        form.addRow("Margin", self.margin_spin)
        form.addRow("Texture", self.texture_spin)
        form.addRow(self.run_button)
        form.addRow(accept_row)

        form = self.group("Train a model")
        self.train_images_edit, images_row = path_field("folder of training images",
                                                        folder_into(self, "Training images"))
        self.train_masks_edit, masks_row = path_field("optional: lesion masks (enables lesion mode)",
                                                      folder_into(self, "Lesion masks"))
        self.train_out_edit, out_row = path_field("output MODEL.safetensors",
                                                  save_file_into(self, "New model", "Models (*.safetensors)"))
        self.train_steps_spin = spin(1, 1_000_000, train.steps)
        self.train_size_spin = spin(16, 1024, train.crop_px, "training crop side (multiple of 8)", " px")
        self.train_size_spin.setSingleStep(8)
        self.train_batch_spin = spin(1, 256, train.batch)
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.train)
        form.addRow("Images", images_row)
        form.addRow("Masks", masks_row)
        form.addRow("Output", out_row)
        form.addRow("Steps", self.train_steps_spin)
        form.addRow("Crop", self.train_size_spin)
        form.addRow("Batch", self.train_batch_spin)
        form.addRow(self.train_button)
        self.finish_layout()
        self.busy_while_running(self.run_button, self.train_button)

        self.method_combo.currentIndexChanged.connect(lambda _: self._method_changed())
        self.mode_combo.currentTextChanged.connect(lambda _: self._method_changed())
        self.model_edit.textEdited.connect(lambda _: self.method_combo.setCurrentIndex(1))
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        self._method_changed()

    # ---- layers -------------------------------------------------------------------------------

    def _refresh_layers(self, event=None) -> None:
        editor = scene_editor(self.viewer)
        images = [layer.name for layer in self.viewer.layers
                  if isinstance(layer, napari.layers.Image) and layer not in self.sample_layers]
        masks = [layer.name for layer in self.viewer.layers if isinstance(layer, napari.layers.Labels)]
        has_scene = editor is not None and editor.scene is not None  # the editor's layers exist before any scene
        preferred_image = [editor.image_layer.name] if has_scene and editor.image_layer is not None else []
        preferred_mask = [editor.mask_layer.name] if has_scene and editor.mask_layer is not None else []
        refill(self.image_combo, images, preferred_image)
        refill(self.mask_combo, masks, preferred_mask)

    def _method_changed(self) -> None:
        self.model_edit.setEnabled(self.method_combo.currentData() == "file")
        self.margin_spin.setEnabled(self.mode_combo.currentText() == "outpaint")

    # ---- settings -----------------------------------------------------------------------------

    def settings(self) -> InpaintSettings:
        """The request the fields describe (raises a one-line error for a bad choice)."""
        key = self.method_combo.currentData()
        model = key
        if key == "file":
            model = self.model_edit.text().strip()
            if not model:
                raise SynthsegError("choose a model file (.safetensors) or another method")
        settings = InpaintSettings(
            model=model, mode=self.mode_combo.currentText(), samples=self.samples_spin.value(),
            seed=self.seed_spin.value(), margin_px=self.margin_spin.value(), texture=optional_value(self.texture_spin),
        )
        settings.model_name()  # a missing model file fails at the click, not in the worker
        return settings

    def _chosen_layers(self):
        image_name, mask_name = self.image_combo.currentText(), self.mask_combo.currentText()
        if image_name not in self.viewer.layers:
            raise SynthsegError("open an image first")
        if mask_name not in self.viewer.layers:
            raise SynthsegError("add a Labels layer and paint the region to fill in it")
        return self.viewer.layers[image_name], self.viewer.layers[mask_name]

    # ---- run ----------------------------------------------------------------------------------

    def run(self):
        """Start inpainting in a worker; returns the worker (None on a user error)."""
        try:
            image_layer, mask_layer = self._chosen_layers()
            settings = self.settings()
            image = np.asarray(image_layer.data)
            mask = fill_mask(np.asarray(mask_layer.data), image.shape, what=f"mask '{mask_layer.name}'")
        except SynthsegError as exc:
            self.fail(exc)
            return None
        scale = tuple(abs(float(s)) for s in image_layer.scale)  # a volume's z scale is negative (head up)
        spacing = scale if len(scale) == image.ndim else None
        return self.run_job(
            inpaint, image, mask, settings, spacing=spacing,
            on_done=lambda samples: self._show(samples, image_layer, mask, settings),
            message=f"inpainting {settings.samples} sample(s) with {Path(settings.model_name()).name}…",
        )

    def _show(self, samples: list[np.ndarray], image_layer, mask: np.ndarray, settings: InpaintSettings) -> None:
        """The samples side by side right of the image, each shifted by one image width."""
        for layer in self.sample_layers:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.sample_layers = []
        self.samples, self.last_settings, self.last_mask, self.last_image_layer = samples, settings, mask, image_layer
        scale = np.asarray(image_layer.scale, float)
        translate = np.asarray(image_layer.translate, float)
        width = image_layer.data.shape[-1] * scale[-1]
        gap = 0.02 * width
        for i, array in enumerate(samples):
            offset = translate.copy()
            offset[-1] += (i + 1) * (width + gap)
            self.sample_layers.append(self.viewer.add_image(
                array, name=sample_layer_name(settings, i), scale=scale, translate=offset,
                colormap=image_layer.colormap.name, contrast_limits=image_layer.contrast_limits,
                metadata={SAMPLE_KEY: sample_provenance(settings, i)},
            ))
        offer_samples(self.accept_spin, self.accept_button, len(samples))
        self._refresh_layers()
        self.say(f"{len(samples)} sample(s), {settings.mode}, model {Path(settings.model_name()).name}, "
                 f"texture {settings.effective_texture():g}; shown right of the image")

    def accept(self, index: int) -> np.ndarray | None:
        """Accept sample ``index`` (0-based): into the editor's scene, or to :attr:`on_accept`."""
        settings, mask = self.last_settings, self.last_mask
        if not self.samples or settings is None or mask is None or not 0 <= index < len(self.samples):
            self.fail(SynthsegError("run the inpainting first, then pick a sample to accept"))
            return None
        sample = self.samples[index]
        if self.on_accept is not None:
            self.on_accept(index, sample, sample_provenance(settings, index))
            return sample
        try:
            record = self._accept_into_scene(index, sample, mask, settings)
        except SynthsegError as exc:
            self.fail(exc)
            return None
        self.say(f"sample {index + 1} stored in the scene as {record.id} ({record.kind}); Ctrl+Z in the editor undoes")
        return sample

    def _accept_into_scene(self, index: int, sample: np.ndarray, mask: np.ndarray, settings: InpaintSettings):
        editor = scene_editor(self.viewer)
        if editor is None or editor.scene is None:
            raise SynthsegError("open a scene in the Lesion editor first: accepted samples become scene records")
        # Whether the sample was made on the scene's image is the workflow's rule (pixels, not layers).
        current = editor.renderer.image if editor.renderer is not None else None
        return accept_inpainted(editor.scene, sample, mask, settings, index, current=current)

    # ---- training -----------------------------------------------------------------------------

    def train(self):
        """Train a model in a worker (Cancel keeps a resumable checkpoint); None on a user error."""
        images = self.train_images_edit.text().strip()
        out = self.train_out_edit.text().strip()
        masks = self.train_masks_edit.text().strip() or None
        try:
            settings = TrainInpainterSettings(steps=self.train_steps_spin.value(),
                                              crop_px=self.train_size_spin.value() // 8 * 8,
                                              batch=self.train_batch_spin.value())
            check_training_paths(images, out, masks)
        except SynthsegError as exc:
            self.fail(exc)
            return None
        return self.run_job(train_inpainter_model, images, out, masks, settings, on_done=self._trained,
                            message=f"training {Path(out).name}…")

    def _trained(self, path: Path) -> None:
        self.model_edit.setText(str(path))
        self.method_combo.setCurrentIndex(self.method_combo.findData("file"))
        self.say(f"trained {Path(path).name}; selected as the model file")


__all__ = ["InpaintWidget", "sample_layer_name"]
