"""Small helpers every widget uses: error display and running work off the UI thread."""

from __future__ import annotations

from typing import Any, Callable

from napari.utils.notifications import show_error, show_info, show_warning

from ..errors import CancelledError, SynthsegError


def report_error(exc: BaseException) -> None:
    """One-line notification for user errors; napari's handler keeps real bugs' tracebacks."""
    if isinstance(exc, CancelledError):
        show_info("cancelled")
    elif isinstance(exc, SynthsegError):
        show_error(str(exc))
    else:
        raise exc


def run_in_thread(
    func: Callable[..., Any],
    *args: Any,
    on_done: Callable[[Any], None],
    on_error: Callable[[BaseException], None] = report_error,
    **kwargs: Any,
):
    """Run ``func`` in a napari worker thread and call back on the UI thread."""
    from napari.qt.threading import create_worker

    worker = create_worker(func, *args, **kwargs, _start_thread=False)
    worker.returned.connect(on_done)
    worker.errored.connect(on_error)
    worker.start()
    return worker


__all__ = ["report_error", "run_in_thread", "show_error", "show_info", "show_warning"]
