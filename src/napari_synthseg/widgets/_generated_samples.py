"""The lesion editor's generated-samples section: several seeded samples side by side, accept one.

*Sample at click* takes the next click in the image as the site; the learned lesion generator
then makes ``N`` seeded nodules of the chosen class there, with the editor's new-lesion settings
(size, blend, contrast, feather; seeds from its Seed field), in a worker thread with its own
progress bar and Cancel. The samples appear side by side as thumbnails (CT: the axial slice
through the site; radiograph: the projected nodule in the image around the site); clicking one
adds it to the scene as an ordinary generated lesion that keeps its seed, so it renders the
same every time and moving it re-generates it from that seed. *Other seeds* samples the same
site again with the next seeds. Every rule is in :mod:`napari_synthseg.workflow.generated_samples`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

# torch's and MONAI's C libraries hold the GIL for 0.1-1.5 s at a time while they load,
# whichever thread imports them. The panel imports them when napari loads the plugin's widgets
# (as micro-sam's widgets import torch), so the first sampling request in a session does not
# pause the UI for them (see also _common's warm-up); the model is read in the sampling worker.
import torch  # noqa: F401
from qtpy.QtCore import QSize, Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

import napari_synthseg.generator  # noqa: F401

from ..errors import CancelledError, SynthsegError
from ..utils.progress import CancelToken
from ..workflow.generated_samples import (
    CANDIDATE_PX,
    DEFAULT_SAMPLE_COUNT,
    MAX_SAMPLE_COUNT,
    GeneratedCandidate,
    sample_seeds,
)
from ..workflow.spec import LesionSpec, ProceduralKind
from ._base import show_progress, wait_while
from ._common import ProgressRelay, click_position, run_in_thread
from ._fields import open_file_into, path_field
from ._library_strip import rgb_icon

logger = logging.getLogger(__name__)
#: Thumbnails per row (four fit across the 340 px panel).
COLUMNS = 4


class GeneratedSamples(QWidget):
    """Class, count, *Sample at click*, *Other seeds*, progress/Cancel and the samples' grid.

    Parameters
    ----------
    editor : LesionEditorWidget
        Gives the session, the viewer, the new-lesion settings and the status line.
    """

    def __init__(self, editor: Any) -> None:
        super().__init__()
        self.editor = editor
        self.candidates: list[GeneratedCandidate] = []
        self.site_index: tuple[float, ...] | None = None  # numpy-order data index of the last site
        self._worker: Any = None
        self._cancel: CancelToken | None = None
        self._relay = ProgressRelay()
        self._relay.progress.connect(self._on_progress)

        self.class_combo = QComboBox()
        for kind in ProceduralKind:
            self.class_combo.addItem(kind.value)
        self.class_combo.setToolTip("nodule class the generator is conditioned on")
        self.class_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.class_combo.setMinimumContentsLength(6)
        self.count_spin = QSpinBox()
        self.count_spin.setRange(1, MAX_SAMPLE_COUNT)
        self.count_spin.setValue(DEFAULT_SAMPLE_COUNT)
        self.count_spin.setSuffix(" samples")
        self.sample_btn = QPushButton("Sample at click")
        self.sample_btn.setCheckable(True)
        self.sample_btn.setToolTip("click in the image: the generator makes these samples there, side by side")
        self.sample_btn.toggled.connect(self._sample_tool_toggled)
        self.again_btn = QPushButton("Other seeds")
        self.again_btn.setToolTip("sample the same site again with the next seeds")
        self.again_btn.clicked.connect(self.sample_again)
        self.again_btn.setEnabled(False)
        # empty = the built-in generator; a file trained with the Lesion generator panel or
        # `synthseg train-lesion-generator` otherwise (the records keep its path and hash)
        self.model_edit, model_row = path_field(
            "built-in generator", open_file_into(self, "Generator model", "Models (*.safetensors)"))
        self.model_edit.setToolTip("generator model file (empty: the built-in one)")
        self.progress_bar = QProgressBar()
        self.progress_bar.setMaximumHeight(12)
        self.progress_bar.setTextVisible(False)
        self.progress_bar.hide()
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.cancel)
        self.cancel_btn.hide()
        for widget in (self.progress_bar, self.cancel_btn):
            # keep their room while hidden: the panel does not relayout when sampling starts/ends
            policy = widget.sizePolicy()
            policy.setRetainSizeWhenHidden(True)
            widget.setSizePolicy(policy)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.info.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.buttons: list[QToolButton] = []
        grid_box = QWidget()
        # room for one row from the start: the panel does not jump (and the canvas beside it is
        # not resized) when the samples arrive
        grid_box.setMinimumHeight(CANDIDATE_PX + 34)
        self.grid = QGridLayout(grid_box)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(2)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        top = QHBoxLayout()
        top.addWidget(self.class_combo, 3)
        top.addWidget(self.count_spin, 2)
        actions = QHBoxLayout()
        actions.addWidget(self.sample_btn)
        actions.addWidget(self.again_btn)
        progress = QHBoxLayout()
        progress.addWidget(self.progress_bar, 1)
        progress.addWidget(self.cancel_btn)
        layout.addLayout(top)
        layout.addWidget(model_row)
        layout.addLayout(actions)
        layout.addLayout(progress)
        layout.addWidget(grid_box)
        layout.addWidget(self.info)

        editor.viewer.mouse_drag_callbacks.append(self._on_viewer_mouse)
        # One click tool at a time: placing and sampling exclude each other.
        editor.place_check.toggled.connect(self._place_tool_toggled)

    # ---- the site -----------------------------------------------------------------------------

    def _place_tool_toggled(self, on: bool) -> None:
        if on:
            self.sample_btn.setChecked(False)

    def _sample_tool_toggled(self, on: bool) -> None:
        editor = self.editor
        if on:
            editor.place_check.setChecked(False)
            if editor.points_layer is not None:
                editor.viewer.layers.selection.active = editor.points_layer
                editor.points_layer.mode = "select"
            editor.say("click in the image where the generated samples should go")

    def _on_viewer_mouse(self, viewer, event):
        """A click (press and release within a few pixels) samples there; a drag pans."""
        editor = self.editor
        if (not self.sample_btn.isChecked() or editor.session is None or event.button != 1 or event.modifiers
                or editor._paint_tool_active()):
            return
        if editor.points_layer is not None and editor.points_layer.get_value(event.position, world=True) is not None:
            return  # a click on a lesion handle selects it
        clicked = yield from click_position(event)
        if clicked is not None:
            index = editor.image_layer.world_to_data(clicked)
            # after the canvas's mouse event: starting shows the progress bar and Cancel, and a
            # panel relayout inside vispy's event handler breaks its GL framebuffer stack
            QTimer.singleShot(0, lambda: self.sample_at(index))

    # ---- sampling -----------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def spec(self) -> LesionSpec:
        model = self.model_edit.text().strip()
        return LesionSpec.parse(f"generated:{self.class_combo.currentText()}" + (f"@{model}" if model else ""))

    def use_model(self, path: str) -> None:
        """Sample from the generator file ``path`` from now on (empty: the built-in one)."""
        self.model_edit.setText(str(path))

    def sample_at(self, index_numpy, first_seed: int | None = None):
        """Make the samples at a numpy-order data index (in a worker); returns the worker."""
        editor = self.editor
        if editor.session is None:
            editor.fail(SynthsegError("open or create a scene first"))
            return None
        if self.busy:
            editor.say("still sampling; wait or cancel")
            return None
        try:
            spec = self.spec()
            settings = editor.place_settings()
            seeds = sample_seeds(editor.seed_spin.value() if first_seed is None else first_seed,
                                 self.count_spin.value())
        except SynthsegError as exc:
            editor.fail(exc)
            return None
        self.site_index = tuple(float(v) for v in np.asarray(index_numpy))
        at_xyz = tuple(self.site_index[::-1])
        self._clear()
        self._cancel = CancelToken()
        self._set_busy(True)
        self.info.setText(f"sampling {len(seeds)} {spec.kind.value if spec.kind else ''} nodules (seeds "
                          f"{seeds[0]}-{seeds[-1]})…")
        self._worker = run_in_thread(editor.session.preview_generated, spec, settings, seeds, at_xyz=at_xyz,
                                     progress=self._relay.progress.emit, cancel=self._cancel,
                                     on_done=self._shown, on_error=self._failed)
        return self._worker

    def sample_again(self):
        """The same site with the seeds after the last request's."""
        if self.site_index is None:
            return None
        last = max((c.seed for c in self.candidates), default=self.editor.seed_spin.value() - 1)
        self.editor.seed_spin.setValue(last + 1)
        return self.sample_at(self.site_index)

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()
            self.info.setText("cancelling…")

    def wait_idle(self, timeout_s: float = 300.0) -> None:
        """Process events until the samples are made (tests, scripted use)."""
        wait_while(lambda: self.busy, timeout_s)

    def _set_busy(self, busy: bool) -> None:
        self.progress_bar.setVisible(busy)
        self.cancel_btn.setVisible(busy)
        self.sample_btn.setEnabled(not busy)
        self.again_btn.setEnabled(not busy and self.site_index is not None)
        if busy:
            self.progress_bar.setRange(0, 0)
        else:
            self._worker = None
            self._cancel = None

    def _on_progress(self, step: int, total: int, message: str) -> None:
        show_progress(self.progress_bar, self.info, step, total, message)

    def _failed(self, exc: BaseException) -> None:
        self._set_busy(False)
        if isinstance(exc, CancelledError):
            self.info.setText("cancelled")
            return
        self.info.setText(str(exc).splitlines()[0] if isinstance(exc, SynthsegError) else "")
        self.editor.fail(exc)

    def _shown(self, candidates: list[GeneratedCandidate]) -> None:
        self._set_busy(False)
        self.candidates = list(candidates)
        for k, candidate in enumerate(self.candidates):
            button = QToolButton()
            button.setIcon(rgb_icon(candidate.picture))
            button.setIconSize(QSize(CANDIDATE_PX - 4, CANDIDATE_PX - 4))
            button.setText(candidate.caption)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextUnderIcon)
            button.setToolTip(f"seed {candidate.seed}: click to add this one to the scene")
            button.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            font = button.font()
            font.setPointSizeF(max(6.5, font.pointSizeF() - 1.5))
            button.setFont(font)
            button.clicked.connect(lambda _checked=False, c=candidate: self.accept(c))
            self.grid.addWidget(button, k // COLUMNS, k % COLUMNS)
            self.buttons.append(button)
        self.info.setText(f"{len(self.candidates)} samples: click one to add it")
        self.editor.say(f"{len(self.candidates)} generated samples ready; click one to add it")

    def _clear(self) -> None:
        for button in self.buttons:
            self.grid.removeWidget(button)
            button.hide()  # gone now; deleteLater only frees it at the next event-loop turn
            button.deleteLater()
        self.buttons = []
        self.candidates = []

    # ---- accepting ----------------------------------------------------------------------------

    def accept(self, candidate: GeneratedCandidate):
        """Add ``candidate`` to the scene (undoable); the others are dropped."""
        editor = self.editor
        if editor.session is None:
            return None
        try:
            record = editor.session.accept_generated(candidate)
        except SynthsegError as exc:
            editor.fail(exc)
            return None
        # the next request uses new seeds, reproducibly
        editor.seed_spin.setValue(max(c.seed for c in self.candidates) + 1)
        self._clear()
        self.again_btn.setEnabled(False)
        self.site_index = None
        editor.select(record.id)
        self.info.setText(f"added seed {candidate.seed} as {record.id}")
        editor.say(f"placed {editor.session.describe(record.id)} (generated, seed {candidate.seed})")
        return record


__all__ = ["GeneratedSamples"]
