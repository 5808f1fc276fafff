"""Progress reporting and cancellation shared by the CLI, batch jobs and napari workers.

Long functions take ``progress: ProgressCallback | None`` and ``cancel: CancelToken | None``.
The core never imports Qt: a widget wraps the callback in a napari worker signal, the CLI prints
it. Call :meth:`CancelToken.raise_if_cancelled` at safe points (between iterations/cases).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, Optional

from ..errors import CancelledError

# progress(step, total, message)
ProgressCallback = Callable[[int, int, str], None]


class CancelToken:
    """A thread-safe flag the UI sets and the worker polls."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise CancelledError("cancelled by the user")


def report(progress: Optional[ProgressCallback], step: int, total: int, message: str = "") -> None:
    """Call ``progress`` if given (keeps call sites one line)."""
    if progress is not None:
        progress(step, total, message)


class ConsoleProgress:
    """A progress callback for the CLI: one updating line on a terminal, sparse lines otherwise."""

    def __init__(self, stream=None, min_interval: float = 0.5) -> None:
        self.stream = stream or sys.stderr
        self.min_interval = min_interval
        self._last = 0.0
        self._start = time.perf_counter()

    def __call__(self, step: int, total: int, message: str = "") -> None:
        now = time.perf_counter()
        if step < total and now - self._last < self.min_interval:
            return
        self._last = now
        pct = 100.0 * step / total if total else 100.0
        line = f"[{step}/{total} {pct:5.1f}% {now - self._start:7.1f}s] {message}"
        if self.stream.isatty():
            end = "\n" if step >= total else "\r"
            self.stream.write("\x1b[2K" + line + end)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
