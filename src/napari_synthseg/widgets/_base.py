"""The one base every panel uses: a compact scrollable body, a status line, progress and cancel.

A panel lays out its controls in :meth:`JobPanel.group` boxes and runs anything slow with
:meth:`JobPanel.run_job`, which moves it to a napari worker thread, disables the panel's
"busy" controls, shows progress (determinate when the job reports steps) and a Cancel button,
and reports a user error as one line in the status line and a notification. Panels hold no
workflow rules: those are in :mod:`napari_synthseg.workflow`.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Callable

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..errors import CancelledError, SynthsegError
from ..utils.progress import CancelToken
from ._common import ProgressRelay, guard_gl_context, report_error, run_in_thread, show_info

logger = logging.getLogger(__name__)

#: Width every panel fits in: 1920 px minus napari's canvas and layer list leave about this.
PANEL_WIDTH = 340
#: Height below which a panel scrolls instead of shrinking further (several panels docked in one area).
PANEL_MIN_HEIGHT = 220


def compact_combos(parent: QWidget, characters: int = 8) -> None:
    """Keep every combo box under ``parent`` from growing with its longest item.

    A combo listing layer or file names (``CT Lung-PET-CT-Dx A0001 ...``) would otherwise widen
    the whole panel past the dock and cut its rows off; the items stay readable in the drop-down.
    """
    for combo in parent.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(characters)


class StatusLabel(QLabel):
    """A word-wrapped label that is always tall enough for all its lines.

    Under an ``Ignored`` horizontal policy (so a long path never widens the panel) a wrapped
    QLabel keeps the height of one line: the second line of a message was cut off (seen in
    the generator panel's screenshot). It sets its minimum height from ``heightForWidth`` after
    every text change and resize.
    """

    def _fit(self) -> None:
        width = self.width()
        if width > 0:
            self.setMinimumHeight(self.heightForWidth(width))

    def setText(self, text: str | None) -> None:  # noqa: N802 (Qt's name)
        super().setText(text)
        self._fit()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        self._fit()


class JobPanel(QScrollArea):
    """A scrollable dock panel with a status line, a progress bar and Cancel.

    Subclasses add controls with :meth:`group` and call :meth:`run_job` for slow work.
    """

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        guard_gl_context(napari_viewer)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFrameShape(QScrollArea.Shape.NoFrame)
        # The body gets PANEL_WIDTH; the vertical scroll bar comes on top of it, so nothing is
        # cut off at the right when the panel scrolls (horizontal scrolling is off).
        scroll_bar = self.verticalScrollBar()
        self.setMinimumWidth(PANEL_WIDTH + (scroll_bar.sizeHint().width() if scroll_bar is not None else 0))
        # Docked one above another, each panel keeps room for a few rows and scrolls the rest.
        self.setMinimumHeight(PANEL_MIN_HEIGHT)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Ignored)
        inner = QWidget()
        self.body = QVBoxLayout(inner)
        self.body.setContentsMargins(4, 4, 4, 4)
        self.body.setSpacing(4)
        self.setWidget(inner)

        self.status = StatusLabel("")
        self.status.setWordWrap(True)
        # A long path in a message wraps or is cut, never widens the panel.
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress_bar = QProgressBar()
        self.progress_bar.setMaximumHeight(14)
        self.progress_bar.setTextVisible(False)
        self.progress_bar.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.hide()
        self._footer = QHBoxLayout()
        self._footer.addWidget(self.progress_bar, 1)
        self._footer.addWidget(self.cancel_button)

        self._relay = ProgressRelay()
        self._relay.progress.connect(self._on_progress)
        self._cancel: CancelToken | None = None
        self._worker = None
        self._busy_controls: list[QWidget] = []
        self.last_error: BaseException | None = None

    # ---- layout -------------------------------------------------------------------------------

    def group(self, title: str) -> QFormLayout:
        """A titled box of label/field rows added to the panel's body."""
        box = QGroupBox(title)
        form = QFormLayout(box)
        form.setContentsMargins(6, 6, 6, 6)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.body.addWidget(box)
        return form

    def finish_layout(self) -> None:
        """Status line and progress at the bottom; call once after the groups."""
        self.body.addWidget(self.status)
        self.body.addLayout(self._footer)
        self.body.addStretch(1)
        body = self.widget()
        if body is not None:
            compact_combos(body)

    def busy_while_running(self, *widgets: QWidget) -> None:
        """Controls disabled while a job runs (so a second click cannot start a second job)."""
        self._busy_controls.extend(widgets)

    # ---- messages -----------------------------------------------------------------------------

    def say(self, text: str) -> None:
        """One line in the status line (and the log)."""
        self.status.setText(text)
        logger.info("%s: %s", type(self).__name__, text)

    def fail(self, exc: BaseException) -> None:
        """A user error as one line here and as a notification; a bug keeps its traceback."""
        self.last_error = exc
        if isinstance(exc, CancelledError):
            self.say("cancelled")
            show_info("cancelled")
            return
        if isinstance(exc, SynthsegError):
            self.say(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        report_error(exc)

    # ---- jobs ---------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def run_job(
        self,
        func: Callable[..., Any],
        *args: Any,
        on_done: Callable[[Any], None],
        message: str = "working…",
        on_error: Callable[[BaseException], None] | None = None,
        **kwargs: Any,
    ):
        """Run ``func(*args, **kwargs)`` in a worker thread; ``on_done(result)`` on the UI thread.

        When ``func`` takes ``progress`` and ``cancel`` arguments they are connected to the
        panel's progress bar and Cancel button.
        """
        if self.busy:
            self.say("still working on the last request; wait or cancel it")
            return None
        params = _parameters(func)
        self._cancel = CancelToken()
        if "progress" in params and "progress" not in kwargs:
            kwargs["progress"] = self._relay.progress.emit
        cancellable = "cancel" in params and "cancel" not in kwargs
        if cancellable:
            kwargs["cancel"] = self._cancel
        self._set_busy(True, message, cancellable)

        def done(result: Any) -> None:
            self._set_busy(False)
            on_done(result)

        def failed(exc: BaseException) -> None:
            self._set_busy(False)
            (on_error or self.fail)(exc)

        self._worker = run_in_thread(func, *args, on_done=done, on_error=failed, **kwargs)
        return self._worker

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()
            self.say("cancelling…")

    def wait_idle(self, timeout_s: float = 300.0) -> None:
        """Process events until the running job is done (tests, scripted use)."""
        wait_while(lambda: self.busy, timeout_s)

    def _set_busy(self, busy: bool, message: str = "", cancellable: bool = False) -> None:
        for widget in self._busy_controls:
            widget.setEnabled(not busy)
        self.progress_bar.setVisible(busy)
        self.cancel_button.setVisible(busy and cancellable)
        if busy:
            self.progress_bar.setRange(0, 0)  # busy indicator until the job reports steps
            self.say(message)
        else:
            self._worker = None
            self._cancel = None

    def _on_progress(self, step: int, total: int, message: str) -> None:
        show_progress(self.progress_bar, self.status, step, total, message)


def wait_while(busy: Callable[[], bool], timeout_s: float) -> None:
    """Process Qt events while ``busy()`` holds, at most ``timeout_s`` (tests, scripted use)."""
    import time

    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout_s
    while busy() and time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.005)


def show_progress(bar: QProgressBar, label: QLabel, step: int, total: int, message: str) -> None:
    """A job's progress report on a bar (steps, once it knows how many) and a label (its message)."""
    if total > 0:
        bar.setRange(0, total)
        bar.setValue(min(step, total))
    if message:
        label.setText(message)


def _parameters(func: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return set()


def row(*widgets: QWidget) -> QHBoxLayout:
    """Widgets side by side (for a form row)."""
    layout = QHBoxLayout()
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget)
    return layout


def vbox(*widgets: QWidget) -> QVBoxLayout:
    layout = QVBoxLayout()
    for widget in widgets:
        layout.addWidget(widget)
    return layout
