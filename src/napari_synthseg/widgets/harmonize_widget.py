"""Harmonization panel: a thin adapter over :mod:`napari_synthseg.workflow.harmonize`.

Works on the scene of the viewer's lesion editor (:func:`._common.scene_editor`):

1. *Train* a one-image harmonizer on the clean source image, by default on a square region
   around the lesion selected in the editor, in a worker, with a per-scale bar beside the
   panel's progress, a live preview of the scale being trained (layer ``harmonizer preview``,
   left of the image) and Cancel. The model stays in memory; *Save* / *Load* a file.
2. *Harmonize* the selected lesion (:func:`~napari_synthseg.workflow.harmonize.harmonize_lesion`
   in a worker): the naive crop and the samples appear side by side right of the image.
3. *Accept* sample k (:func:`~napari_synthseg.workflow.harmonize.accept_harmonized`): stored in
   the lesion record with the model hash, scale, seed and margin, exactly as
   ``synthseg harmonize --accept``; an unsaved model is first saved beside the scene.

Defaults (SinGAN ``fast``, the injection scale the model implies, samples, margin, add-back)
are the workflow's settings dataclasses.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import napari
import numpy as np
from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton

from ..errors import SynthsegError
from ..workflow.harmonize import (
    ADD_BACK_CHOICES,
    ARCHITECTURES,
    PRESETS,
    HarmonizeResult,
    HarmonizeSettings,
    TrainHarmonizerSettings,
    accept_harmonized,
    check_model_fits,
    default_injection_scale,
    harmonize_lesion,
    save_model_beside_scene,
)
from ._base import JobPanel
from ._common import scene_editor, viewer_camera
from ._fields import (
    PAIRED_CHARS,
    combo,
    discard,
    offer_samples,
    optional_value,
    pair,
    path_field,
    sample_picker,
    save_file_into,
    spin,
)

PREVIEW = "harmonizer preview"
REGION = "harmonizer region"
NAIVE = "harmonize naive"
OUTLINE = "harmonize lesion outline"
REGIONS = ("around selected lesion", "whole image")


class HarmonizeWidget(JobPanel):
    """Train / load a harmonizer and harmonize the lesion selected in the lesion editor."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer)
        train, harmonize = TrainHarmonizerSettings(), HarmonizeSettings()
        self.model: Any = None  # napari_synthseg.harmonize.Harmonizer
        self.result: HarmonizeResult | None = None
        self.sample_layers: list[Any] = []
        self.preview_layer: Any = None
        self.region_layer: Any = None
        self._result_scene: Any = None  # the scene the samples were made in
        self._result_layer: Any = None  # the editor's image layer they are shown beside
        self._stages: list[int] = []  # iterations per scale of the running training
        self._train_info: dict[str, Any] = {}
        self._relay.progress.connect(self._on_stage)
        self._relay.preview.connect(self._on_preview)

        # -- 1. train -----------------------------------------------------------------------
        form = self.group("1. Train on this image")
        self.arch_combo = combo(ARCHITECTURES, train.architecture,
                                "SinGAN: one generator per scale, any injection scale (best in the "
                                "benchmark); ConSinGAN: one growing generator", chars=PAIRED_CHARS)
        self.preset_combo = combo(PRESETS, train.preset,
                                  "fast: minutes on a CPU; paper: the published settings (hours on a CPU)",
                                  chars=PAIRED_CHARS)
        self.region_combo = combo(REGIONS, chars=PAIRED_CHARS)
        self.region_size_spin = spin(32, 4096, train.config().region_size, "side of the square training region",
                                     " px")
        self.iter_spin = spin(0, 100_000, train.iterations or 0, "iterations per scale", special="preset")
        self.train_seed_spin = spin(0, 2**31 - 1, train.seed)
        self.train_seed_spin.setPrefix("seed ")
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.train)
        self.stage_bar = QProgressBar()
        self.stage_bar.setRange(0, 1)
        self.stage_bar.setFormat("scale %v/%m")
        self.stage_bar.setMaximumHeight(16)
        form.addRow("Model", pair(self.arch_combo, self.preset_combo))
        form.addRow("Region", pair(self.region_combo, self.region_size_spin))
        form.addRow("Iterations", pair(self.iter_spin, self.train_seed_spin))
        form.addRow(self.train_button)
        form.addRow(self.stage_bar)

        # -- model file ---------------------------------------------------------------------
        form = self.group("Model file")
        self.model_edit, file_row = path_field(
            "MODEL.safetensors", save_file_into(self, "Harmonizer model", "Models (*.safetensors)"))
        save = QPushButton("Save")
        save.clicked.connect(lambda: discard(self.save_model(self.model_edit.text())))
        load = QPushButton("Load")
        load.clicked.connect(lambda: discard(self.load_model(self.model_edit.text())))
        self.model_info = QLabel("no model")
        self.model_info.setWordWrap(True)
        form.addRow(file_row)
        form.addRow(pair(save, load))
        form.addRow(self.model_info)

        # -- 2. harmonize -------------------------------------------------------------------
        form = self.group("2. Harmonize the selected lesion")
        self.scale_spin = spin(0, 0, 0, "scale where the naive paste enters (0 = coarsest; lower changes "
                               "more); set from the model when one is trained or loaded")
        self.samples_spin = spin(1, 16, harmonize.samples)
        self.seed_spin = spin(0, 2**31 - 1, harmonize.seed)
        self.seed_spin.setPrefix("seed ")
        self.margin_spin = spin(0, 128, harmonize.margin_px, "ramp around the lesion where the result is blended in",
                                " px")
        self.add_back_combo = combo(ADD_BACK_CHOICES, harmonize.add_back,
                                    "how the GAN output enters the blend. auto: 'original' on radiographs "
                                    "(the GAN's coarse part plus the fine detail of the image without the "
                                    "lesion, NODE21's add-back), else 'coarse' for ConSinGAN and 'replace' "
                                    "for SinGAN")
        tolerance = harmonize.contrast_tolerance
        self.tolerance_spin = spin(-1, 50, -1 if tolerance is None else round(100 * tolerance),
                                   "contrast-preserving harmonization: hold the lesion's mean contrast within "
                                   "this share of the naive paste's by re-scaling its coarse band (the texture "
                                   "stays the GAN's); off: the GAN's output as it is, and samples that lost "
                                   "the lesion are refused", " %", special="off")
        self.harmonize_button = QPushButton("Harmonize selected lesion")
        self.harmonize_button.clicked.connect(self.harmonize_selected)
        self.accept_spin, self.accept_button, accept_row = sample_picker(self.accept)
        form.addRow("Scale", self.scale_spin)
        form.addRow("Samples", pair(self.samples_spin, self.seed_spin))
        form.addRow("Margin", self.margin_spin)
        form.addRow("Add-back", self.add_back_combo)
        form.addRow("Keep contrast ±", self.tolerance_spin)
        form.addRow(self.harmonize_button)
        form.addRow(accept_row)
        self.finish_layout()
        self.busy_while_running(self.train_button, self.harmonize_button, self.accept_button, save, load)
        self.say("select a lesion in the lesion editor, then train or load a harmonizer")

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

    @staticmethod
    def _selected(editor) -> str:
        lesion_id = editor.selected_id()
        if lesion_id is None or lesion_id not in editor.scene.lesion_ids:
            raise SynthsegError("select a lesion in the lesion editor first")
        return lesion_id

    # ---- training -----------------------------------------------------------------------------

    def train_settings(self) -> TrainHarmonizerSettings:
        return TrainHarmonizerSettings(architecture=self.arch_combo.currentText(),
                                       preset=self.preset_combo.currentText(),
                                       iterations=self.iter_spin.value() or None, seed=self.train_seed_spin.value())

    def train(self):
        """Start training in a worker; returns the worker (None on a user error or while busy)."""
        from ..harmonize import pyramid_shapes, select_region, train_harmonizer

        if self.busy:
            return None
        try:
            editor = self._editor()
            image = editor.renderer.source.array
            settings = self.train_settings()
            config = dataclasses.replace(settings.config(), region_size=self.region_size_spin.value())
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
            self.fail(exc)
            return None
        self._stages = [int(config.niter)] * n_scales
        self._train_info = {"roi": roi, "image_layer": editor.image_layer}
        self._show_region(roi, editor.image_layer)
        self.stage_bar.setRange(0, n_scales)
        self.stage_bar.setValue(0)
        relay = self._relay

        def preview(scale: int, array: np.ndarray) -> None:  # worker thread: queued to the UI
            relay.preview.emit(int(scale), np.array(array, np.float32))

        def done(model) -> None:
            self.set_model(model)
            self.say(f"trained in {model.provenance.get('train_seconds', 0):.0f} s; kept in memory "
                     "(Save keeps it in a file; Accept saves it beside the scene)")

        return self.run_job(
            train_harmonizer, image, config=config, roi=roi, seed=settings.seed, preview=preview,
            preview_every=max(1, int(config.niter) // 4),
            provenance={"source": ", ".join(editor.scene.source.paths), "preset": settings.preset},
            on_done=done,
            message=f"training {settings.architecture} ({settings.preset}) on x {roi[1]} y {roi[0]} "
                    f"{roi[3]}x{roi[2]} px, {n_scales} scales…",
        )

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

    def _on_stage(self, step: int, total: int, message: str) -> None:
        """The scale being trained (1-based): the first whose iterations are not all done."""
        if not self._stages:
            return
        done, stage = 0, 0
        for stage, n in enumerate(self._stages):
            if step < done + n or stage == len(self._stages) - 1:
                break
            done += n
        self.stage_bar.setValue(stage + 1)

    def _on_preview(self, scale: int, array: np.ndarray) -> None:
        """Show the latest sample of the scale being trained left of the image, on its region."""
        layer_ref = self._train_info.get("image_layer")
        roi = self._train_info.get("roi")
        if layer_ref is None or roi is None:
            return
        r, _c, h, w = roi
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
        """Use ``model`` (a trained or loaded Harmonizer); the scale starts at the model's default."""
        self.model = model
        consingan = model.architecture == "consingan"
        self.scale_spin.setRange(0, 0 if consingan else model.n_scales - 1)
        self.scale_spin.setValue(default_injection_scale(model))
        self.scale_spin.setEnabled(not consingan)
        r, c, h, w = model.roi
        sha = model.sha256[:12] if model.sha256 else "not saved"
        self.model_info.setText(
            f"{model.architecture}, {model.n_scales} scales ({model.config.shapes[0][1]}.."
            f"{model.config.shapes[-1][1]} px), region x {c} y {r} {w}x{h} px, sha256 {sha}"
        )

    def save_model(self, path: str) -> Path | None:
        try:
            if self.model is None:
                raise SynthsegError("train or load a harmonizer first")
            path = str(path).strip()
            if not path.endswith(".safetensors"):
                raise SynthsegError("give a model file name ending in .safetensors")
            if not Path(path).parent.is_dir():
                raise SynthsegError(f"folder {Path(path).parent} does not exist; create it or pick another")
            try:
                out = self.model.save(path)
            except OSError as exc:
                raise SynthsegError(f"cannot write {path}: {exc.strerror or exc}") from None
        except SynthsegError as exc:
            self.fail(exc)
            return None
        self.set_model(self.model)
        self.say(f"saved {Path(out).name}")
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
                check_model_fits(model, editor.renderer.source.array)
        except SynthsegError as exc:
            self.fail(exc)
            return None
        self.set_model(model)
        self.say(f"loaded {Path(path).name}")
        return model

    # ---- harmonize ----------------------------------------------------------------------------

    def harmonize_settings(self) -> HarmonizeSettings:
        scale = self.scale_spin.value() if self.model is not None else None
        tolerance = optional_value(self.tolerance_spin)
        return HarmonizeSettings(injection_scale=scale, samples=self.samples_spin.value(), seed=self.seed_spin.value(),
                                 margin_px=self.margin_spin.value(), add_back=self.add_back_combo.currentText(),
                                 contrast_tolerance=None if tolerance is None else tolerance / 100)

    def harmonize_selected(self):
        """Harmonize the editor's selected lesion in a worker (None on a user error or while busy)."""
        if self.busy:
            return None
        try:
            editor = self._editor()
            lesion_id = self._selected(editor)
            if self.model is None:
                raise SynthsegError("train or load a harmonizer first")
            check_model_fits(self.model, editor.renderer.source.array)
            settings = self.harmonize_settings()
        except SynthsegError as exc:
            self.fail(exc)
            return None
        scene, image_layer = editor.scene, editor.image_layer

        def done(result: HarmonizeResult) -> None:
            self._result_scene, self._result_layer = scene, image_layer
            self._show(result)

        return self.run_job(harmonize_lesion, scene, lesion_id, self.model, settings, on_done=done,
                            message=f"harmonizing {lesion_id}…")

    @property
    def samples(self) -> list[np.ndarray] | None:
        return None if self.result is None else self.result.samples

    def _crop_box(self, mask: np.ndarray, margin: int) -> tuple:
        rows, cols = np.nonzero(mask)
        pad = max(32, 4 * margin)
        height, width = mask.shape
        return (slice(max(0, rows.min() - pad), min(height, rows.max() + pad + 1)),
                slice(max(0, cols.min() - pad), min(width, cols.max() + pad + 1)))

    def _show(self, result: HarmonizeResult) -> None:
        """Naive crop and samples side by side, right of the image, level with the lesion."""
        for layer in self.sample_layers:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.sample_layers = []
        if self.preview_layer is not None and self.preview_layer in self.viewer.layers:
            self.preview_layer.visible = False
        self.result = result
        ref = self._result_layer
        box = self._crop_box(result.mask, result.settings.margin_px)
        sy, sx = (float(v) for v in ref.scale[-2:])
        ty, tx = (float(v) for v in ref.translate[-2:])
        width = box[1].stop - box[1].start
        gap = max(4, width // 16)  # px of the image
        x0 = tx + sx * (ref.data.shape[-1] + 2 * gap)
        y0 = ty + sy * box[0].start
        n = len(result.samples)
        arrays = [(NAIVE, result.naive)] + [
            # The sample number last: napari elides long layer names in the middle.
            (f"harmonized {result.lesion_id} (scale {result.injection_scale}, seed {result.settings.seed}) "
             + f"sample {k + 1}/{n}", s)
            for k, s in enumerate(result.samples)
        ]
        for i, (name, array) in enumerate(arrays):
            self.sample_layers.append(self.viewer.add_image(
                np.asarray(array[box], np.float32), name=name, scale=(sy, sx),
                translate=(y0, x0 + i * sx * (width + gap)), colormap="gray",
                contrast_limits=tuple(ref.contrast_limits),
                metadata={"synthseg_harmonize": {"sample": i - 1, "lesion": result.lesion_id}},
            ))
        # The lesion's outline on every crop: the label is what the harmonization must keep.
        crop = result.mask[box]
        outline = np.zeros((crop.shape[0], len(arrays) * (width + gap) - gap), np.uint8)
        for i in range(len(arrays)):
            outline[:, i * (width + gap) : i * (width + gap) + width][crop] = 1
        layer = self.viewer.add_labels(outline, name=OUTLINE, scale=(sy, sx), translate=(y0, x0), opacity=0.6)
        layer.contour = 1
        self.sample_layers.append(layer)
        offer_samples(self.accept_spin, self.accept_button, n)
        self.focus_results()
        refused = [k for k, check in enumerate(result.checks) if not check.accepted]
        self.say(
            f"{result.lesion_id}: naive paste and {n} sample(s) right of the image ({result.model.architecture}, "
            f"scale {result.injection_scale}, add-back {result.add_back}); accept one to store it in the scene"
            + ("; " + "; ".join(result.describe(k) for k in refused) if refused else "")
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
        """Store sample ``index`` (0-based) in the lesion record; the editor's render shows it."""
        try:
            if self.result is None or not 0 <= index < len(self.result.samples):
                raise SynthsegError("harmonize a lesion first, then pick a sample to accept")
            editor = self._editor()
            if editor.scene is not self._result_scene:
                raise SynthsegError("the scene changed since harmonizing; harmonize again")
            model = self.result.model
            if not model.sha256:  # a record cites its model file by hash
                saved = save_model_beside_scene(model, editor.scene)
                self.model_edit.setText(str(saved))
                if model is self.model:
                    self.set_model(model)
            record = accept_harmonized(editor.scene, self.result, index)
        except SynthsegError as exc:
            self.fail(exc)
            return None
        self.say(f"{self.result.lesion_id}: stored sample {index + 1} (model {model.sha256[:12]}); "
                 "editing the lesion drops it")
        return record


__all__ = ["HarmonizeWidget"]
