"""Lesion generator panel: train (or resume) the learned nodule generator; a thin adapter.

Pick the nodule library (a folder with ``index.csv``, such as the shared LIDC nodules; only
the train side of the fixed series-level split is read), an output ``.safetensors`` file and a
budget (steps and/or minutes). *Train* runs
:func:`~napari_synthseg.workflow.train_generator.train_generator_model` in a worker with
progress (step and loss) and Cancel; Cancel and the time budget save a resumable checkpoint,
and *Resume* continues it later. The finished file is summarised under the button and handed
to the Lesion editor's *Generated samples* when the editor is docked (*Use in editor*). Every
default and check is the workflow's (:class:`~napari_synthseg.workflow.train_generator.TrainGeneratorSettings`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import napari
from qtpy.QtWidgets import QCheckBox, QLabel, QPushButton, QSizePolicy

from ..errors import SynthsegError
from ..workflow.train_generator import (
    NETWORKS,
    TrainGeneratorSettings,
    check_generator_training,
    model_summary,
    train_generator_model,
)
from ._base import JobPanel
from ._common import scene_editor
from ._fields import combo, discard, dspin, folder_into, optional_value, pair, path_field, save_file_into, spin

logger = logging.getLogger(__name__)


class LesionGeneratorWidget(JobPanel):
    """Train or resume a lesion generator; hand the result to the Lesion editor."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer)
        d = TrainGeneratorSettings()
        self.trained: Path | None = None

        form = self.group("Train a lesion generator")
        self.library_edit, library_row = path_field("nodule library folder (index.csv)",
                                                    folder_into(self, "Nodule library"))
        self.out_edit, out_row = path_field("output MODEL.safetensors",
                                            save_file_into(self, "Generator model", "Models (*.safetensors)"))
        self.network_combo = combo(NETWORKS, d.network,
                                   tip="U-Net width: " + "; ".join(f"{k} {','.join(map(str, v))}"
                                                                   for k, v in NETWORKS.items()))
        self.steps_spin = spin(1, 100_000_000, d.steps, "total optimiser steps (a resumed run continues to this)")
        self.minutes_spin = dspin(0.0, 43_200.0, d.max_minutes, 5.0, 0,
                                  tip="stop and save after this many minutes (the file stays resumable)",
                                  special="no limit")
        self.minutes_spin.setSuffix(" min")
        self.tail_spin = dspin(0.0, 1.0, d.lr_tail, 0.05, 2,
                               tip="learning rate: constant, or a half-cosine down to this fraction at the "
                                   "last step (finishing a long or resumed run)", special="constant")
        self.limit_spin = spin(0, 1_000_000, d.limit, "train-side nodules to use (all, or the first N for a quick try)",
                               special="all nodules")
        self.resume_check = QCheckBox("Resume the output file")
        self.resume_check.setToolTip("continue training the output model up to Steps")
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.train)
        self.use_button = QPushButton("Use in editor")
        self.use_button.setToolTip("sample the Lesion editor's generated lesions from this model")
        self.use_button.clicked.connect(lambda: discard(self.use_in_editor()))
        self.use_button.setEnabled(False)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        form.addRow("Library", library_row)
        form.addRow("Output", out_row)
        form.addRow("Network", self.network_combo)
        form.addRow("Budget", pair(self.steps_spin, self.minutes_spin))
        form.addRow("LR tail", self.tail_spin)
        form.addRow("Nodules", self.limit_spin)
        form.addRow(self.resume_check)
        form.addRow(pair(self.train_button, self.use_button))
        form.addRow(self.summary)
        self.finish_layout()
        self.busy_while_running(self.train_button, self.use_button, self.resume_check)
        self.out_edit.editingFinished.connect(self._show_existing)

    def settings(self) -> TrainGeneratorSettings:
        """The panel's fields over the workflow's defaults (raises SynthsegError on a bad value)."""
        minutes = optional_value(self.minutes_spin)
        tail = optional_value(self.tail_spin)
        limit = optional_value(self.limit_spin)
        return TrainGeneratorSettings(steps=self.steps_spin.value(), max_minutes=float(minutes or 0.0),
                                      lr_tail=float(tail or 0.0), network=self.network_combo.currentText(),
                                      limit=int(limit or 0))

    def train(self):
        """Train in a worker (Cancel keeps a resumable checkpoint); None on a user error."""
        library = self.library_edit.text().strip()
        out = self.out_edit.text().strip()
        resume = self.resume_check.isChecked()
        try:
            settings = self.settings()
            check_generator_training(library, out, resume=resume)
        except SynthsegError as exc:
            self.fail(exc)
            return None
        verb = "resuming" if resume else "training"
        return self.run_job(train_generator_model, library, out, settings, resume, on_done=self._trained,
                            on_error=self._stopped, message=f"{verb} {Path(out).name}… (loading nodules)")

    def use_in_editor(self) -> bool:
        """Hand the trained (or chosen) model to the docked Lesion editor's generated samples."""
        path = self.trained or (Path(self.out_edit.text().strip()) if self.out_edit.text().strip() else None)
        editor = scene_editor(self.viewer)
        if path is None or not path.is_file():
            self.fail(SynthsegError("train a model first (or choose an existing output file)"))
            return False
        if editor is None:
            self.fail(SynthsegError("open the Lesion editor first: its Generated samples use the model"))
            return False
        editor.generated_samples.use_model(str(path))
        self.say(f"the Lesion editor's generated samples now come from {path.name}")
        return True

    def _trained(self, path: Path) -> None:
        self.trained = Path(path)
        self.summary.setText(model_summary(path))
        self.use_button.setEnabled(True)
        self.resume_check.setChecked(True)  # the next Train continues this file
        self.say(f"trained {Path(path).name}")

    def _stopped(self, exc: BaseException) -> None:
        """Cancel (or an error after the first checkpoint) leaves a resumable file: show it."""
        self.fail(exc)
        out = Path(self.out_edit.text().strip())
        if out.is_file():
            try:
                self.summary.setText(model_summary(out) + "; tick Resume and Train to continue")
            except SynthsegError:
                return
            self.trained = out
            self.use_button.setEnabled(True)

    def _show_existing(self) -> None:
        out = Path(self.out_edit.text().strip())
        if out.suffix == ".safetensors" and out.is_file():
            try:
                self.summary.setText(model_summary(out))
            except SynthsegError as exc:
                self.summary.setText(str(exc).splitlines()[0])
                return
            self.use_button.setEnabled(True)


__all__ = ["LesionGeneratorWidget"]
