"""DatasetGAN labelling flow in napari.

Load a generator -> sample N seeded images into an Image stack with an empty Labels stack ->
paint full label maps on a few slices (value k = class k, 0 = background) -> fit the classifier
ensemble off the UI thread -> predictions (and their uncertainty) for every unlabelled slice
appear at once -> copy a prediction into the labels, fix it, refit -> generate M labelled pairs
into a folder. All work is done by :mod:`napari_synthseg.datasetgan`; this widget moves arrays
between it and layers.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

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
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..errors import SynthsegError
from ..utils.progress import CancelToken
from ._common import ProgressRelay, report_error, run_in_thread, show_info

SAMPLES = "DatasetGAN samples"
LABELS = "DatasetGAN labels"
PREDICTION = "DatasetGAN prediction"
UNCERTAINTY = "DatasetGAN uncertainty (JSD)"
TRAINING = "DatasetGAN training preview"


def _pair(a: QWidget, b: QWidget) -> QWidget:
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(a)
    row.addWidget(b)
    return box


class DatasetGanWidget(QWidget):
    """Label a few generator samples and turn them into a labelled data factory."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.generator = None  # LoadedModel
        self.classifier = None  # LoadedModel (saved in a private temp file, so it has a hash)
        self._classifier_file: Path | None = None
        self.seeds: list[int] = []
        self._tmpdir = Path(tempfile.mkdtemp(prefix="synthseg-dgan-ui-"))
        self._cancel: CancelToken | None = None
        self._worker = None
        self.busy = False
        self.last_result = None
        self._bridge = ProgressRelay()
        self._bridge.progress.connect(self._on_progress)
        self._bridge.preview.connect(self._on_preview)

        # generator
        self.generator_edit = QLineEdit()
        self.generator_edit.setPlaceholderText("generator .safetensors")
        browse = QPushButton("…")
        browse.setFixedWidth(30)
        browse.clicked.connect(self._browse_generator)
        load = QPushButton("Load")
        load.clicked.connect(lambda: self.load_generator(self.generator_edit.text()))
        self.generator_info = QLabel("no generator")
        self.generator_info.setWordWrap(True)
        gbox = QGroupBox("1. Generator")
        gl = QVBoxLayout(gbox)
        row = QHBoxLayout()
        row.addWidget(self.generator_edit)
        row.addWidget(browse)
        row.addWidget(load)
        gl.addLayout(row)
        gl.addWidget(self.generator_info)
        # Training a generator here is for small runs and previews; long runs belong in the CLI.
        self.train_images_edit = QLineEdit()
        self.train_images_edit.setPlaceholderText("folder of training images (same size)")
        self.train_out_edit = QLineEdit()
        self.train_out_edit.setPlaceholderText("new generator .safetensors")
        self.train_size_combo = QComboBox()
        self.train_size_combo.addItems(["32", "64", "128", "256"])
        self.train_size_combo.setCurrentText("64")
        self.train_steps_spin = QSpinBox()
        self.train_steps_spin.setRange(1, 1_000_000)
        self.train_steps_spin.setValue(2000)
        self.train_width_spin = QSpinBox()
        self.train_width_spin.setRange(4, 512)
        self.train_width_spin.setValue(32)
        train_btn = QPushButton("Train generator (previews as it goes)")
        train_btn.clicked.connect(lambda: self.train(self.train_images_edit.text(), self.train_out_edit.text()))
        tf = QFormLayout()
        tf.addRow("Images", self.train_images_edit)
        tf.addRow("Size / steps", _pair(self.train_size_combo, self.train_steps_spin))
        tf.addRow("Widest layer", self.train_width_spin)
        tf.addRow("Save as", self.train_out_edit)
        tf.addRow(train_btn)
        gl.addLayout(tf)

        # samples and classes
        self.n_spin = QSpinBox()
        self.n_spin.setRange(1, 256)
        self.n_spin.setValue(8)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 99_999_999)
        self.trunc_spin = QDoubleSpinBox()
        self.trunc_spin.setRange(0.0, 1.5)
        self.trunc_spin.setSingleStep(0.05)
        self.trunc_spin.setValue(0.7)
        self.classes_edit = QLineEdit("background,lung,heart,nodule")
        self.classes_edit.editingFinished.connect(self._update_legend)
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        sample_btn = QPushButton("Sample N images")
        sample_btn.clicked.connect(lambda: self.sample())
        more_btn = QPushButton("Add N more")
        more_btn.clicked.connect(lambda: self.sample(append=True))
        sbox = QGroupBox("2. Samples to label")
        sf = QFormLayout(sbox)
        sf.addRow("N", self.n_spin)
        sf.addRow("First seed", self.seed_spin)
        sf.addRow("Truncation ψ", self.trunc_spin)
        sf.addRow("Classes", self.classes_edit)
        sf.addRow(self.legend)
        row = QHBoxLayout()
        row.addWidget(sample_btn)
        row.addWidget(more_btn)
        sf.addRow(row)

        # fit
        self.ensemble_spin = QSpinBox()
        self.ensemble_spin.setRange(1, 20)
        self.ensemble_spin.setValue(5)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 50)
        self.epochs_spin.setValue(3)
        self.fit_btn = QPushButton("Fit classifier on labelled slices")
        self.fit_btn.clicked.connect(lambda: self.fit())
        accept_btn = QPushButton("Use prediction of this slice as labels")
        accept_btn.clicked.connect(lambda: self.accept_prediction())
        save_btn = QPushButton("Save classifier…")
        save_btn.clicked.connect(self._save_classifier_dialog)
        save_labels_btn = QPushButton("Save labelled samples…")
        save_labels_btn.clicked.connect(self._save_labelled_dialog)
        fbox = QGroupBox("3. Classifier ensemble")
        ff = QFormLayout(fbox)
        ff.addRow("Members", self.ensemble_spin)
        ff.addRow("Epochs", self.epochs_spin)
        ff.addRow(self.fit_btn)
        ff.addRow(accept_btn)
        ff.addRow(save_btn)
        ff.addRow(save_labels_btn)

        # generate
        self.m_spin = QSpinBox()
        self.m_spin.setRange(1, 100000)
        self.m_spin.setValue(100)
        self.drop_spin = QDoubleSpinBox()
        self.drop_spin.setRange(0.0, 0.9)
        self.drop_spin.setSingleStep(0.05)
        self.drop_spin.setValue(0.1)
        self.format_combo = QComboBox()
        self.format_combo.addItems(["png", "nifti"])
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("new output folder")
        gen_btn = QPushButton("Generate M labelled pairs")
        gen_btn.clicked.connect(lambda: self.generate(self.out_edit.text()))
        obox = QGroupBox("4. Generate")
        of = QFormLayout(obox)
        of.addRow("M", self.m_spin)
        of.addRow("Drop most uncertain", self.drop_spin)
        of.addRow("Format", self.format_combo)
        of.addRow("Folder", self.out_edit)
        of.addRow(gen_btn)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)

        # A scroll area, so a short viewer window scrolls the controls instead of squashing them.
        inner = QWidget()
        layout = QVBoxLayout(inner)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        for box in (gbox, sbox, fbox, obox):
            layout.addWidget(box)
        row = QHBoxLayout()
        row.addWidget(self.progress_bar)
        row.addWidget(self.cancel_btn)
        layout.addLayout(row)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self._update_legend()

    # ---------------------------------------------------------------------------------- util
    def class_names(self) -> tuple[str, ...]:
        names = tuple(c.strip() for c in self.classes_edit.text().split(",") if c.strip())
        if len(names) < 2:
            raise SynthsegError("give at least two class names, background first")
        return names

    def _update_legend(self) -> None:
        try:
            names = self.class_names()
        except SynthsegError as exc:
            self.legend.setText(str(exc))
            return
        self.legend.setText("Paint label values: " + " · ".join(f"{k} {n}" for k, n in enumerate(names)))

    def _layer(self, name: str):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _on_progress(self, step: int, total: int, message: str) -> None:
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(min(step, max(total, 1)))
        self.status.setText(message)

    def _start(self, func, on_done, *args, **kwargs):
        if self.busy:
            raise SynthsegError("still working on the last request; wait or cancel it")
        self.busy = True
        self._cancel = CancelToken()
        self.cancel_btn.setEnabled(True)

        def finish(result):
            self.busy = False
            self.cancel_btn.setEnabled(False)
            try:
                on_done(result)
            except SynthsegError as exc:
                report_error(exc)

        def fail(exc):
            self.busy = False
            self.cancel_btn.setEnabled(False)
            self.status.setText(f"stopped: {exc}")
            report_error(exc)

        self._worker = run_in_thread(
            func, *args, on_done=finish, on_error=fail,
            progress=self._bridge.progress.emit, cancel=self._cancel, **kwargs,
        )
        return self._worker

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    def _browse_generator(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Generator", "", "safetensors (*.safetensors)")
        if path:
            self.generator_edit.setText(path)
            self.load_generator(path)

    # ----------------------------------------------------------------------------- generator
    def train(self, images: str, out: str):
        """Train a generator off the UI thread; previews (fixed seeds) update an image layer."""
        from ..datasetgan.generator import GanConfig
        from ..datasetgan.train import TrainConfig, load_image_folder, train_generator

        try:
            if not images.strip() or not out.strip():
                raise SynthsegError("choose a folder of training images and a file to save the generator to")
            size = int(self.train_size_combo.currentText())
            gan = GanConfig(size=size, z_dim=64, w_dim=64, channel_max=self.train_width_spin.value())
            tc = TrainConfig(steps=self.train_steps_spin.value(), batch_size=8, preview_every=50,
                             checkpoint_every=250)
        except SynthsegError as exc:
            report_error(exc)
            return None
        preview = self._bridge.preview.emit

        def work(progress=None, cancel=None):
            data = load_image_folder(images, size, cancel=cancel)
            return train_generator(data, out, gan, tc, progress=progress, cancel=cancel, preview=preview)

        def done(result):
            self.status.setText(f"trained {result.steps} steps ({result.images_per_second:.1f} images/s)")
            self.load_generator(str(result.generator_path))

        try:
            return self._start(work, done)
        except SynthsegError as exc:
            report_error(exc)
            return None

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
        from ..datasetgan.train import load_generator

        try:
            if not path:
                raise SynthsegError("choose a generator file first")
            self.generator = load_generator(path)
        except SynthsegError as exc:
            report_error(exc)
            return
        self.generator_edit.setText(str(path))
        self.classifier = None
        prov = self.generator.provenance
        cfg = self.generator.config
        self.generator_info.setText(
            f"{Path(path).name}: {cfg.size}x{cfg.size} px, {prov.get('steps', '?')} steps, "
            f"sha256 {self.generator.sha256[:12]}"
        )

    def _need_generator(self):
        if self.generator is None:
            raise SynthsegError("load a generator first")
        return self.generator

    # ------------------------------------------------------------------------------- samples
    def sample(self, append: bool = False):
        """Add N seeded samples as an image stack with a Labels stack of the same shape.

        Sampling and, once a classifier is fitted, the prediction of the new samples run off
        the UI thread; returns the worker (None on a user error).
        """
        from ..datasetgan.sampling import sample_images

        try:
            gen = self._need_generator()
            n, psi = self.n_spin.value(), self.trunc_spin.value()
            images = self._layer(SAMPLES)
            append = append and images is not None
            if append:
                if abs(images.metadata.get("truncation_psi", psi) - psi) > 1e-9:
                    raise SynthsegError("truncation changed; sample a new stack instead of adding to this one")
                start = max(self.seeds) + 1
            else:
                start = self.seed_spin.value()
            seeds = list(range(start, start + n))
        except SynthsegError as exc:
            report_error(exc)
            return None
        classifier = self.classifier
        # Appending keeps the shown prediction (and any correction made in it): predict only
        # the new samples when the prediction layer still matches the stack.
        shown = self._layer(PREDICTION)
        extend = append and shown is not None and shown.data.shape[0] == len(self.seeds)
        predict_seeds = seeds if (extend or not append) else list(self.seeds) + seeds

        def work(progress=None, cancel=None):
            new = sample_images(gen.module, seeds, psi)
            if classifier is None:
                return new, None
            if cancel is not None:
                cancel.raise_if_cancelled()
            return new, _predict_stack(gen.module, classifier.module, predict_seeds, psi)

        def done(result):
            new, prediction = result
            self._add_samples(gen, new, seeds, psi, append)
            if prediction is not None:
                pred, unc = prediction
                if extend:
                    pred = np.concatenate([self._layer(PREDICTION).data, pred])
                    unc = np.concatenate([self._layer(UNCERTAINTY).data, unc])
                self._show_prediction(pred, unc)

        try:
            self.status.setText(f"sampling {n} images…")
            return self._start(work, done)
        except SynthsegError as exc:
            report_error(exc)
            return None

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
            self.seeds = seeds
            images = self.viewer.add_image(new, name=SAMPLES, colormap="gray", contrast_limits=(0, 255))
            labels = self.viewer.add_labels(np.zeros(new.shape, np.uint8), name=LABELS)
        meta = {"seeds": list(self.seeds), "truncation_psi": psi, "generator_sha256": gen.sha256}
        images.metadata.update(meta)
        labels.metadata.update(meta)
        labels.metadata["class_names"] = list(self.class_names())
        self.viewer.layers.selection.active = labels
        labels.mode = "paint"
        self.status.setText(f"{len(self.seeds)} samples (seeds {self.seeds[0]}..{self.seeds[-1]})")

    def labelled_indices(self) -> list[int]:
        labels = self._layer(LABELS)
        if labels is None:
            return []
        return [i for i in range(labels.data.shape[0]) if np.any(labels.data[i])]

    # ---------------------------------------------------------------------------------- fit
    def fit(self):
        """Fit the ensemble on slices that carry any label, off the UI thread."""
        from ..datasetgan.classifier import FitConfig, PixelClassifierConfig, fit_ensemble, save_classifier

        try:
            gen = self._need_generator()
            labels = self._layer(LABELS)
            if labels is None:
                raise SynthsegError("sample images and paint labels first")
            idx = self.labelled_indices()
            names = self.class_names()
            seeds = [self.seeds[i] for i in idx]
            maps = [np.asarray(labels.data[i]).astype(np.int64) for i in idx]
            psi = float(labels.metadata.get("truncation_psi", 1.0))
            config = PixelClassifierConfig(in_features=0, ensemble_size=self.ensemble_spin.value())
            fit = FitConfig(epochs=self.epochs_spin.value())
            # Cheap checks now, so a bad label set fails at the click and not in the worker.
            from ..datasetgan.classifier import validate_labels

            validate_labels(maps, names, gen.config.size, fit.min_labelled)
        except SynthsegError as exc:
            report_error(exc)
            return None
        target = self._tmpdir / f"classifier_{len(list(self._tmpdir.iterdir()))}.safetensors"
        stack_seeds = list(self.seeds)

        def work(progress=None, cancel=None):
            ens, prov = fit_ensemble(
                gen.module, seeds, maps, names, generator_sha256=gen.sha256, truncation_psi=psi,
                config=config, fit=fit, progress=progress, cancel=cancel,
            )
            save_classifier(ens, target, prov)
            from ..datasetgan.classifier import load_classifier

            loaded = load_classifier(target, generator=gen)
            return loaded, _predict_stack(gen.module, loaded.module, stack_seeds, psi)

        def done(result):
            loaded, (pred, unc) = result
            self.classifier = loaded
            self._classifier_file = target
            self.status.setText(
                f"fitted {loaded.config.ensemble_size} classifiers on {len(seeds)} labelled samples "
                f"({loaded.provenance.get('seconds', '?')} s)"
            )
            self._show_prediction(pred, unc)

        try:
            return self._start(work, done)
        except SynthsegError as exc:
            report_error(exc)
            return None

    def _show_prediction(self, pred: np.ndarray, unc: np.ndarray) -> None:
        if PREDICTION in self.viewer.layers:
            self.viewer.layers[PREDICTION].data = pred
            self.viewer.layers[UNCERTAINTY].data = unc
        else:
            top = float(np.log(max(self.classifier.config.ensemble_size, 2)))
            self.viewer.add_image(unc, name=UNCERTAINTY, colormap="inferno", opacity=0.6, visible=False,
                                  contrast_limits=(0.0, top))
            self.viewer.add_labels(pred, name=PREDICTION, opacity=0.5)
        labels = self._layer(LABELS)
        if labels is not None:
            self.viewer.layers.selection.active = labels

    def current_slice(self) -> int:
        return int(self.viewer.dims.current_step[0])

    def accept_prediction(self, index: int | None = None) -> None:
        """Copy the (possibly corrected) prediction of a slice into the labels: one more example."""
        pred, labels = self._layer(PREDICTION), self._layer(LABELS)
        if pred is None or labels is None:
            report_error(SynthsegError("fit a classifier first; there is no prediction to use"))
            return
        i = self.current_slice() if index is None else int(index)
        labels.data[i] = pred.data[i]
        labels.refresh()
        self.status.setText(f"slice {i} (seed {self.seeds[i]}) is now labelled; fix it in '{LABELS}' and refit")

    def save_classifier(self, path: str | Path) -> Path:
        if self.classifier is None:
            raise SynthsegError("fit a classifier first")
        # Copy the very file that was hashed, so generated data's provenance names this file.
        shutil.copyfile(self._classifier_file, path)
        return Path(path)

    def save_labelled(self, folder: str | Path) -> Path:
        """Write the stack and its labelled slices as a sample folder (``datasetgan fit --labels``)."""
        from ..datasetgan.sampling import write_labelled_samples

        gen = self._need_generator()
        labels = self._layer(LABELS)
        if labels is None:
            raise SynthsegError("sample images first")
        maps = {self.seeds[i]: np.asarray(labels.data[i]) for i in self.labelled_indices()}
        psi = float(labels.metadata.get("truncation_psi", 1.0))
        return write_labelled_samples(gen, self.seeds, maps, folder, psi, self.class_names())

    def _save_labelled_dialog(self) -> None:
        folder = QFileDialog.getSaveFileName(self, "New folder for the labelled samples", "labelled_samples")[0]
        if folder:
            try:
                self.save_labelled(folder)
                show_info(f"saved {len(self.labelled_indices())} labelled samples to {Path(folder).name}")
            except SynthsegError as exc:
                report_error(exc)

    def _save_classifier_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save classifier", "classifier.safetensors", "safetensors (*.safetensors)")
        if path:
            try:
                self.save_classifier(path)
                show_info(f"saved {Path(path).name}")
            except SynthsegError as exc:
                report_error(exc)

    # ----------------------------------------------------------------------------- generate
    def generate(self, out: str | Path):
        from ..datasetgan.sampling import generate_pairs

        try:
            gen = self._need_generator()
            if self.classifier is None:
                raise SynthsegError("fit a classifier first")
            if not str(out).strip():
                raise SynthsegError("choose an output folder (a new folder name)")
        except SynthsegError as exc:
            report_error(exc)
            return None
        clf, m, drop, fmt = self.classifier, self.m_spin.value(), self.drop_spin.value(), self.format_combo.currentText()

        def work(progress=None, cancel=None):
            return generate_pairs(gen, clf, m, out, drop_fraction=drop, fmt=fmt, progress=progress, cancel=cancel)

        def done(prov):
            self.last_result = prov
            self.status.setText(f"wrote {len(prov['seeds'])} pairs to {out} (dropped {len(prov['dropped_seeds'])})")
            show_info(f"wrote {len(prov['seeds'])} labelled pairs")

        try:
            return self._start(work, done)
        except SynthsegError as exc:
            report_error(exc)
            return None


def _predict_stack(G, ensemble, seeds: list[int], psi: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N, H, W) uint8 and JSD uncertainty (N, H, W) float32 for seeds."""
    from ..datasetgan.classifier import predict_features
    from ..datasetgan.features import image_and_features

    size = G.config.size
    pred = np.zeros((len(seeds), size, size), np.uint8)
    unc = np.zeros((len(seeds), size, size), np.float32)
    for i, seed in enumerate(seeds):
        _, feats = image_and_features(G, seed, psi)
        p = predict_features(ensemble, feats)
        pred[i], unc[i] = p.labels, p.uncertainty
    return pred, unc
