"""Reader study: one blinded case at a time, answered by keyboard, saved at once, resumable.

Thin: the case set, the answer file and the scoring are :mod:`napari_synthseg.evaluate.reader_study`;
this widget shows the next case as an image layer (a 3D case opens on its central slice; scroll
the slider or use the arrow keys) and turns keys into :meth:`ReaderSession.answer` calls.

Keys (in the viewer canvas or this panel): **R** real, **S** synthetic, then **1**-**5**
confidence (1 guess ... 5 certain), which saves the answer and shows the next case. **Backspace**
clears a pending R/S.
"""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .._napari import layer_transform
from ..errors import SynthsegError
from ..evaluate.reader_study import ReaderSession
from ._common import report_error, show_info

LAYER_NAME = "case"
_CHOICE_KEYS = {"r": "real", "s": "synthetic"}


class ReaderStudyWidget(QWidget):
    """Blinded real-vs-synthetic reading of a study folder (``synthseg evaluate reader-study``)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, study: str | Path | None = None, reader: str = ""):
        super().__init__()
        self.viewer = napari_viewer
        self.session: ReaderSession | None = None
        self.case: str | None = None
        self.pending: str | None = None

        self.folder_edit = QLineEdit(str(study or ""))
        self.folder_edit.setPlaceholderText("reader study folder")
        browse = QPushButton("…")
        browse.setFixedWidth(30)
        browse.clicked.connect(self._browse)
        self.reader_edit = QLineEdit(reader)
        self.reader_edit.setPlaceholderText("your name (letters, digits)")
        start = QPushButton("Start / resume")
        start.clicked.connect(lambda: self.start(self.folder_edit.text(), self.reader_edit.text()))
        row = QHBoxLayout()
        row.addWidget(self.folder_edit)
        row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Study", row)
        form.addRow("Reader", self.reader_edit)

        self.status = QLabel("open a study")
        self.prompt = QLabel("")
        self.prompt.setWordWrap(True)
        buttons = QHBoxLayout()
        self.real_button = QPushButton("Real (R)")
        self.synth_button = QPushButton("Synthetic (S)")
        self.real_button.clicked.connect(lambda: self.choose("real"))
        self.synth_button.clicked.connect(lambda: self.choose("synthetic"))
        buttons.addWidget(self.real_button)
        buttons.addWidget(self.synth_button)
        confidence = QHBoxLayout()
        self.confidence_buttons = []
        for level in range(1, 6):
            b = QPushButton(str(level))
            b.setFixedWidth(32)
            b.clicked.connect(lambda _=False, lv=level: self.confirm(lv))
            confidence.addWidget(b)
            self.confidence_buttons.append(b)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(start)
        layout.addWidget(self.status)
        layout.addWidget(self.prompt)
        layout.addLayout(buttons)
        layout.addWidget(QLabel("Confidence: 1 guess … 5 certain"))
        layout.addLayout(confidence)
        layout.addStretch(1)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._bind_viewer_keys()
        self._update_controls()
        if study and reader:
            self.start(study, reader)

    # ---- keys ----------------------------------------------------------------------------

    def _bind_viewer_keys(self, target=None) -> None:
        # The same keys when the canvas has focus (napari key bindings), so readers never need
        # to click the panel. The case layer gets them too: a layer's own bindings (image layers
        # use the digits for their modes) win over the viewer's.
        for key in ("r", "s", "1", "2", "3", "4", "5", "Backspace"):
            (target or self.viewer).bind_key(key, self._viewer_key(key), overwrite=True)

    def _viewer_key(self, key: str):
        def handler(_viewer):
            self.handle_key(key)

        return handler

    def keyPressEvent(self, event) -> None:  # noqa: N802 (Qt API name)
        text = event.text().lower()
        if event.key() == Qt.Key.Key_Backspace:
            text = "Backspace"
        if text and self.handle_key(text):
            event.accept()
            return
        super().keyPressEvent(event)

    def handle_key(self, key: str) -> bool:
        """Act on one key; True when it meant something here."""
        if self.session is None or self.case is None:
            return False
        if key.lower() in _CHOICE_KEYS:
            self.choose(_CHOICE_KEYS[key.lower()])
            return True
        if key in ("1", "2", "3", "4", "5"):
            self.confirm(int(key))
            return True
        if key == "Backspace":
            self.pending = None
            self._update_controls()
            return True
        return False

    # ---- flow ----------------------------------------------------------------------------

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Reader study folder")
        if folder:
            self.folder_edit.setText(folder)

    def start(self, folder: str | Path, reader: str) -> None:
        """Open the study for ``reader`` and show their first unanswered case."""
        try:
            self.session = ReaderSession(Path(folder), reader.strip())
        except SynthsegError as exc:
            report_error(exc)
            return
        self.folder_edit.setText(str(folder))
        self.reader_edit.setText(reader.strip())
        self.show_next()

    def choose(self, choice: str) -> None:
        if self.case is None:
            return
        self.pending = choice
        self._update_controls()

    def confirm(self, confidence: int) -> None:
        if self.session is None or self.case is None or self.pending is None:
            return
        try:
            self.session.answer(self.case, self.pending, confidence)
        except (SynthsegError, OSError) as exc:
            report_error(SynthsegError(str(exc)))
            return
        self.show_next()

    def show_next(self) -> None:
        from ..io import read_image

        assert self.session is not None
        self.pending = None
        self.case = self.session.next_case()
        if self.case is None:
            if LAYER_NAME in self.viewer.layers:
                self.viewer.layers.remove(LAYER_NAME)
            show_info(f"all {len(self.session.cases)} cases answered; thank you")
            self._update_controls()
            return
        image = read_image(self.session.case_path(self.case))
        data = np.asarray(image.array)
        transform = layer_transform(image)  # CT patches head up, like every other layer
        if LAYER_NAME in self.viewer.layers:
            layer = self.viewer.layers[LAYER_NAME]
            layer.data = data
            layer.scale, layer.translate = transform["scale"], transform["translate"]
        else:
            # Pixels are already windowed to 0..255 by the study; fixed limits keep every case alike.
            layer = self.viewer.add_image(data, name=LAYER_NAME, **transform, colormap="gray",
                                          contrast_limits=(0, 255), interpolation2d="nearest")
            self._bind_viewer_keys(layer)
        layer.contrast_limits = (0, 255)
        if data.ndim == 3:
            self.viewer.dims.ndisplay = 2
            self.viewer.dims.set_current_step(0, data.shape[0] // 2)
        self.viewer.reset_view()
        self._update_controls()

    def _update_controls(self) -> None:
        active = self.session is not None and self.case is not None
        for b in (self.real_button, self.synth_button):
            b.setEnabled(active)
        for b in self.confidence_buttons:
            b.setEnabled(active and self.pending is not None)
        self.real_button.setStyleSheet("font-weight: bold" if self.pending == "real" else "")
        self.synth_button.setStyleSheet("font-weight: bold" if self.pending == "synthetic" else "")
        if self.session is None:
            self.status.setText("open a study")
            self.prompt.setText("")
            return
        total = len(self.session.cases)
        if self.case is None:
            self.status.setText(f"{self.session.reader}: all {total} cases answered")
            self.prompt.setText("Done. The study lead scores the answers with synthseg evaluate reader-study-score.")
            return
        self.status.setText(f"{self.session.reader}: case {self.session.done + 1} of {total} ({self.case})")
        if self.pending is None:
            self.prompt.setText("Is the lesion at the centre real or synthetic? Press R or S.")
        else:
            self.prompt.setText(f"{self.pending}: how sure? Press 1 (guess) … 5 (certain); Backspace to change.")
