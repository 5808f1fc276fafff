"""Small helpers every widget uses: error display and running work off the UI thread."""

from __future__ import annotations

import weakref
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


# The lesion editor that owns the scene of a viewer: other widgets (inpainting, harmonization)
# put accepted results into that scene instead of keeping a second one.
_SCENE_EDITORS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def register_scene_editor(viewer, editor) -> None:
    _SCENE_EDITORS[viewer] = editor


def scene_editor(viewer):
    """The lesion editor docked in ``viewer`` (or None); its ``.scene`` may be None."""
    return _SCENE_EDITORS.get(viewer)


__all__ = [
    "register_scene_editor",
    "report_error",
    "run_in_thread",
    "scene_editor",
    "show_error",
    "show_info",
    "show_warning",
]
