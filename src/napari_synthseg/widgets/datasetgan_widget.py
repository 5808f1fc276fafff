"""DatasetGAN labelling panel: a thin adapter over :mod:`napari_synthseg.workflow.datasetgan`.

Load (or train) a generator -> sample N seeded images into an Image stack with an empty Labels
stack -> paint full label maps on a few slices (value k = class k, 0 = background) -> fit the
classifier ensemble in a worker -> predictions (and their uncertainty) for every slice appear
at once -> copy a prediction into the labels, fix it, refit -> generate M labelled pairs into a
folder. Every default, check and provenance rule is in the workflow module (the same calls as
``synthseg train-generator`` and ``synthseg datasetgan``); this panel moves arrays between it
and layers.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

import napari
import numpy as np
from qtpy.QtWidgets import QFileDialog, QLabel, QLineEdit, QPushButton

from ..errors import SynthsegError
from ..workflow import datasetgan as dgan
from ._base import JobPanel
from ._fields import (
    PAIRED_CHARS,
    combo,
    dspin,
    folder_into,
    open_file_into,
    pair,
    path_field,
    save_file_into,
    spin,
)

SAMPLES = "DatasetGAN samples"
LABELS = "DatasetGAN labels"
PREDICTION = "DatasetGAN prediction"
UNCERTAINTY = "DatasetGAN uncertainty (JSD)"
TRAINING = "DatasetGAN training preview"
#: Generator sizes offered for training in the panel (long, large runs belong in the CLI).
TRAIN_SIZES = ("32", "64", "128", "256")


class DatasetGanWidget(JobPanel):
    """Label a few generator samples and turn them into a labelled data factory."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer)
        train, sample = dgan.TrainGeneratorSettings(), dgan.SampleSettings()
        fit, generate = dgan.FitSettings(), dgan.GenerateSettings()
        self.generator: Any = None  # LoadedModel
        self.classifier: Any = None  # LoadedModel, saved in a private temp file so it has a file hash
        self._classifier_file: Path | None = None
        self.seeds: list[int] = []
        self._tmpdir = Path(tempfile.mkdtemp(prefix="synthseg-dgan-ui-"))
        self.last_result: dict | None = None
        self._relay.preview.connect(self._on_preview)

        # -- 1. generator -------------------------------------------------------------------
        form = self.group("1. Generator")
        self.generator_edit, file_row = path_field(
            "generator .safetensors", open_file_into(self, "Generator", "safetensors (*.safetensors)"))
        load = QPushButton("Load generator")
        load.clicked.connect(lambda: self.load_generator(self.generator_edit.text()))
        self.generator_info = QLabel("no generator")
        self.generator_info.setWordWrap(True)
        self.train_images_edit, images_row = path_field("folder of training images", folder_into(self, "Images"))
        self.train_out_edit, out_row = path_field(
            "new generator .safetensors", save_file_into(self, "New generator", "safetensors (*.safetensors)"))
        self.train_size_combo = combo(TRAIN_SIZES, str(train.size), "generator size (px)", chars=PAIRED_CHARS)
        self.train_steps_spin = spin(1, 1_000_000, train.steps, "training steps")
        self.train_width_spin = spin(4, 512, train.channel_max, "widest layer (channels)")
        self.train_batch_spin = spin(1, 256, train.batch, "images per step")
        self.train_button = QPushButton("Train generator")
        self.train_button.setToolTip("small runs with live previews; long runs belong in synthseg train-generator")
        self.train_button.clicked.connect(lambda: self.train(self.train_images_edit.text(), self.train_out_edit.text()))
        form.addRow("File", file_row)
        form.addRow(load)
        form.addRow(self.generator_info)
        form.addRow("Images", images_row)
        form.addRow("Size, steps", pair(self.train_size_combo, self.train_steps_spin))
        form.addRow("Width, batch", pair(self.train_width_spin, self.train_batch_spin))
        form.addRow("Save as", out_row)
        form.addRow(self.train_button)

        # -- 2. samples ---------------------------------------------------------------------
        form = self.group("2. Samples to label")
        self.n_spin = spin(1, 256, sample.n)
        self.seed_spin = spin(0, 2**31 - 1, sample.start_seed, "seed of the first sample")
        self.seed_spin.setPrefix("seed ")
        self.trunc_spin = dspin(0.0, 2.0, sample.truncation_psi, 0.05, tip="truncation ψ (1 = none)")
        self.classes_edit = QLineEdit(",".join(dgan.DEFAULT_CLASSES))
        self.classes_edit.setToolTip("class names, background (value 0) first")
        self.classes_edit.editingFinished.connect(self._update_legend)
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.sample_button = QPushButton("Sample N")
        self.sample_button.clicked.connect(lambda: self.sample())
        self.more_button = QPushButton("Add N more")
        self.more_button.clicked.connect(lambda: self.sample(append=True))
        form.addRow("N", pair(self.n_spin, self.seed_spin))
        form.addRow("Truncation", self.trunc_spin)
        form.addRow("Classes", self.classes_edit)
        form.addRow(self.legend)
        form.addRow(pair(self.sample_button, self.more_button))

        # -- 3. classifier ------------------------------------------------------------------
        form = self.group("3. Classifier ensemble")
        self.ensemble_spin = spin(1, 20, fit.ensemble, "ensemble members")
        self.epochs_spin = spin(1, 50, fit.epochs, "epochs")
        self.fit_btn = QPushButton("Fit on labelled slices")
        self.fit_btn.clicked.connect(lambda: self.fit())
        accept_btn = QPushButton("Use this slice's prediction")
        accept_btn.setToolTip("copy the prediction of the shown slice into the labels (fix it, then refit)")
        accept_btn.clicked.connect(lambda: self.accept_prediction())
        save_btn = QPushButton("Save classifier…")
        save_btn.clicked.connect(self._save_classifier_dialog)
        save_labels_btn = QPushButton("Save labelled…")
        save_labels_btn.clicked.connect(self._save_labelled_dialog)
        form.addRow("Nets, epochs", pair(self.ensemble_spin, self.epochs_spin))
        form.addRow(self.fit_btn)
        form.addRow(accept_btn)
        form.addRow(pair(save_btn, save_labels_btn))

        # -- 4. generate --------------------------------------------------------------------
        form = self.group("4. Generate labelled pairs")
        self.m_spin = spin(1, 100_000, generate.n, "pairs to keep")
        self.drop_spin = dspin(0.0, 0.9, generate.drop_fraction, 0.05,
                               tip="fraction of the most uncertain candidates to drop")
        self.format_combo = combo(dgan.FORMATS, generate.fmt, "file format", chars=PAIRED_CHARS)
        self.layout_combo = combo(dgan.LAYOUTS, generate.layout,
                                  tip="plain: images/ + labels/; nnunet: an nnU-Net v2 raw dataset", chars=PAIRED_CHARS)
        self.out_edit, gen_out_row = path_field("new output folder", folder_into(self, "Output folder"))
        self.generate_btn = QPushButton("Generate M pairs")
        self.generate_btn.clicked.connect(lambda: self.generate(self.out_edit.text()))
        form.addRow("M, drop", pair(self.m_spin, self.drop_spin))
        form.addRow("Format", pair(self.format_combo, self.layout_combo))
        form.addRow("Folder", gen_out_row)
        form.addRow(self.generate_btn)
        self.finish_layout()
        self.busy_while_running(load, self.train_button, self.sample_button, self.more_button, self.fit_btn,
                                self.generate_btn)
        self._update_legend()

    # ---- helpers ------------------------------------------------------------------------------

    def class_names(self) -> tuple[str, ...]:
        return dgan.parse_class_names(self.classes_edit.text(), None)

    def _update_legend(self) -> None:
        try:
            names = self.class_names()
        except SynthsegError as exc:
            self.legend.setText(str(exc))
            return
        self.legend.setText("Paint label values: " + " · ".join(f"{k} {n}" for k, n in enumerate(names)))

    def _layer(self, name: str):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _need_generator(self):
        if self.generator is None:
            raise SynthsegError("load a generator first")
        return self.generator

    # ---- 1. generator -------------------------------------------------------------------------

    def train(self, images: str, out: str):
        """Train a generator in a worker; previews of fixed seeds update an image layer."""
        try:
            settings = dataclasses.replace(
                dgan.TrainGeneratorSettings(), size=int(self.train_size_combo.currentText()),
                steps=self.train_steps_spin.value(), channel_max=self.train_width_spin.value(),
                batch=self.train_batch_spin.value(),
            )
            dgan.check_image_folder(images)
            dgan.check_model_path(out, "generator")
        except SynthsegError as exc:
            self.fail(exc)
            return None

        def done(result) -> None:
            self.load_generator(str(result.generator_path))
            self.say(f"trained {result.steps} steps ({result.images_per_second:.1f} images/s)")

        return self.run_job(dgan.train_generator, images, out, settings, preview=self._relay.preview.emit,
                            on_done=done, message=f"training a {settings.size} px generator…")

    def _on_preview(self, step: int, images) -> None:
        n, h, w = images.shape
        cols = min(n, 4)
        rows = (n + cols - 1) // cols
        grid = np.zeros((rows * h, cols * w), np.uint8)
        for i, img in enumerate(images):
            grid[(i // cols) * h : (i // cols + 1) * h, (i % cols) * w : (i % cols + 1) * w] = img
        if TRAINING in self.viewer.layers:
            self.viewer.layers[TRAINING].data = grid
        else:
            self.viewer.add_image(grid, name=TRAINING, colormap="gray", contrast_limits=(0, 255))
        self.viewer.layers[TRAINING].metadata["step"] = step

    def load_generator(self, path: str) -> None:
        try:
            self.generator = dgan.load_generator(path)
        except SynthsegError as exc:
            self.fail(exc)
            return
        self.generator_edit.setText(str(path))
        self.classifier = None
        steps = self.generator.provenance.get("steps", "?")
        size = self.generator.config.size
        self.generator_info.setText(f"{Path(path).name}: {size}x{size} px, {steps} steps, "
                                    f"sha256 {self.generator.sha256[:12]}")

    # ---- 2. samples ---------------------------------------------------------------------------

    def sample(self, append: bool = False):
        """Add N seeded samples as an image stack with a Labels stack of the same shape.

        Sampling and, once a classifier is fitted, the prediction of the new samples run in a
        worker; returns the worker (None on a user error or while busy).
        """
        try:
            gen = self._need_generator()
            settings = dgan.SampleSettings(n=self.n_spin.value(), start_seed=self.seed_spin.value(),
                                           truncation_psi=self.trunc_spin.value())
            images = self._layer(SAMPLES)
            append = append and images is not None
            if append:
                shown_psi = float(images.metadata.get("truncation_psi", settings.truncation_psi))
                seeds = dgan.more_seeds(settings, self.seeds, shown_psi)
            else:
                seeds = settings.seeds()
        except SynthsegError as exc:
            self.fail(exc)
            return None
        psi, classifier = settings.truncation_psi, self.classifier
        # Appending keeps the shown prediction (and any correction made in it): predict only
        # the new samples when the prediction layer still matches the stack.
        shown = self._layer(PREDICTION)
        extend = append and shown is not None and shown.data.shape[0] == len(self.seeds)
        predict_seeds = seeds if (extend or not append) else list(self.seeds) + seeds

        def work(progress=None, cancel=None):
            new = dgan.sample_images(gen, seeds, psi)
            if classifier is None:
                return new, None
            return new, dgan.predict_stack(gen, classifier, predict_seeds, psi, progress=progress, cancel=cancel)

        def done(result) -> None:
            new, prediction = result
            self._add_samples(gen, new, seeds, psi, append)
            if prediction is not None:
                labels, uncertainty = prediction
                if extend:
                    labels = np.concatenate([self._layer(PREDICTION).data, labels])
                    uncertainty = np.concatenate([self._layer(UNCERTAINTY).data, uncertainty])
                self._show_prediction(labels, uncertainty)

        return self.run_job(work, on_done=done, message=f"sampling {len(seeds)} images…")

    def _add_samples(self, gen, new: np.ndarray, seeds: list[int], psi: float, append: bool) -> None:
        images, labels = self._layer(SAMPLES), self._layer(LABELS)
        if append and images is not None and labels is not None:
            images.data = np.concatenate([images.data, new])
            labels.data = np.concatenate([labels.data, np.zeros_like(new, dtype=labels.data.dtype)])
            self.seeds += seeds
        else:
            for name in (SAMPLES, LABELS, PREDICTION, UNCERTAINTY):
                if name in self.viewer.layers:
                    self.viewer.layers.remove(name)
            self.seeds = list(seeds)
            images = self.viewer.add_image(new, name=SAMPLES, colormap="gray", contrast_limits=(0, 255))
            labels = self.viewer.add_labels(np.zeros(new.shape, np.uint8), name=LABELS)
        meta = {"seeds": list(self.seeds), "truncation_psi": psi, "generator_sha256": gen.sha256}
        images.metadata.update(meta)
        labels.metadata.update(meta)
        try:
            labels.metadata["class_names"] = list(self.class_names())
        except SynthsegError as exc:
            self.fail(exc)
        self.viewer.layers.selection.active = labels
        labels.mode = "paint"
        self.say(f"{len(self.seeds)} samples (seeds {self.seeds[0]}..{self.seeds[-1]}); paint labels, then fit")

    def labelled_indices(self) -> list[int]:
        labels = self._layer(LABELS)
        if labels is None:
            return []
        return [i for i in range(labels.data.shape[0]) if np.any(labels.data[i])]

    # ---- 3. classifier ------------------------------------------------------------------------

    def fit(self):
        """Fit the ensemble on slices that carry any label, in a worker (None on a user error)."""
        try:
            gen = self._need_generator()
            labels = self._layer(LABELS)
            if labels is None:
                raise SynthsegError("sample images and paint labels first")
            settings = dgan.FitSettings(ensemble=self.ensemble_spin.value(), epochs=self.epochs_spin.value())
            names = self.class_names()
            indices = self.labelled_indices()
            seeds = [self.seeds[i] for i in indices]
            maps = [np.asarray(labels.data[i]).astype(np.int64) for i in indices]
            psi = float(labels.metadata.get("truncation_psi", 1.0))
            dgan.check_labels(gen, maps, names, settings)  # a bad label set fails at the click
        except SynthsegError as exc:
            self.fail(exc)
            return None
        target = self._tmpdir / f"classifier_{len(list(self._tmpdir.iterdir()))}.safetensors"
        stack_seeds = list(self.seeds)

        def work(progress=None, cancel=None):
            loaded = dgan.fit_classifier(gen, seeds, maps, names, psi, target, settings, progress=progress,
                                         cancel=cancel)
            return loaded, dgan.predict_stack(gen, loaded, stack_seeds, psi, cancel=cancel)

        def done(result) -> None:
            loaded, (prediction, uncertainty) = result
            self.classifier, self._classifier_file = loaded, target
            self._show_prediction(prediction, uncertainty)
            self.say(f"fitted {loaded.config.ensemble_size} classifiers on {len(seeds)} labelled samples "
                     f"({loaded.provenance.get('seconds', '?')} s)")

        return self.run_job(work, on_done=done, message=f"fitting on {len(seeds)} labelled samples…")

    def _show_prediction(self, prediction: np.ndarray, uncertainty: np.ndarray) -> None:
        if PREDICTION in self.viewer.layers:
            self.viewer.layers[PREDICTION].data = prediction
            self.viewer.layers[UNCERTAINTY].data = uncertainty
        else:
            top = float(np.log(max(self.classifier.config.ensemble_size, 2)))  # JSD's upper bound
            self.viewer.add_image(uncertainty, name=UNCERTAINTY, colormap="inferno", opacity=0.6, visible=False,
                                  contrast_limits=(0.0, top))
            self.viewer.add_labels(prediction, name=PREDICTION, opacity=0.5)
        labels = self._layer(LABELS)
        if labels is not None:
            self.viewer.layers.selection.active = labels

    def current_slice(self) -> int:
        return int(self.viewer.dims.current_step[0])

    def accept_prediction(self, index: int | None = None) -> None:
        """Copy the (possibly corrected) prediction of a slice into the labels: one more example."""
        prediction, labels = self._layer(PREDICTION), self._layer(LABELS)
        if prediction is None or labels is None:
            self.fail(SynthsegError("fit a classifier first; there is no prediction to use"))
            return
        i = self.current_slice() if index is None else int(index)
        labels.data[i] = prediction.data[i]
        labels.refresh()
        self.say(f"slice {i} (seed {self.seeds[i]}) is now labelled; fix it in '{LABELS}' and refit")

    def save_classifier(self, path: str | Path) -> Path:
        """Copy the fitted classifier's file (the very file hashed, so data cite this file)."""
        if self.classifier is None or self._classifier_file is None:
            raise SynthsegError("fit a classifier first")
        shutil.copyfile(self._classifier_file, path)
        return Path(path)

    def save_labelled(self, folder: str | Path) -> Path:
        """Write the stack and its labelled slices as a sample folder (``datasetgan fit --labels``)."""
        gen = self._need_generator()
        labels = self._layer(LABELS)
        if labels is None:
            raise SynthsegError("sample images first")
        maps = {self.seeds[i]: np.asarray(labels.data[i]) for i in self.labelled_indices()}
        psi = float(labels.metadata.get("truncation_psi", 1.0))
        return dgan.save_labelled(gen, self.seeds, maps, folder, psi, self.class_names())

    def _save_labelled_dialog(self) -> None:
        self._save_as("New folder for the labelled samples", "labelled_samples", "", self.save_labelled)

    def _save_classifier_dialog(self) -> None:
        self._save_as("Save classifier", "classifier.safetensors", "safetensors (*.safetensors)", self.save_classifier)

    def _save_as(self, title: str, name: str, filter_: str, save) -> None:
        """Ask for a path, then ``save(path)``; a user error is one line."""
        path = QFileDialog.getSaveFileName(self, title, name, filter_)[0]
        if not path:
            return
        try:
            save(path)
        except SynthsegError as exc:
            self.fail(exc)
            return
        self.say(f"saved {Path(path).name}")

    # ---- 4. generate --------------------------------------------------------------------------

    def generate(self, out: str | Path):
        """Generate M labelled pairs into a new folder, in a worker (None on a user error)."""
        try:
            gen = self._need_generator()
            if self.classifier is None:
                raise SynthsegError("fit a classifier first")
            if not str(out).strip():
                raise SynthsegError("choose an output folder (a new folder name)")
            settings = dgan.GenerateSettings(n=self.m_spin.value(), drop_fraction=self.drop_spin.value(),
                                             fmt=self.format_combo.currentText(),
                                             layout=self.layout_combo.currentText())
        except SynthsegError as exc:
            self.fail(exc)
            return None

        def done(provenance: dict) -> None:
            self.last_result = provenance
            self.say(f"wrote {len(provenance['seeds'])} pairs to {Path(out).name} "
                     f"(dropped {len(provenance['dropped_seeds'])} most uncertain)")

        return self.run_job(dgan.generate, gen, self.classifier, out, settings, on_done=done,
                            message=f"generating {settings.n} labelled pairs…")


__all__ = ["DatasetGanWidget"]
