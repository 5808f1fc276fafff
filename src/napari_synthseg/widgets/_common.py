"""Small helpers every widget uses: error display and running work off the UI thread."""

from __future__ import annotations

import functools
import os
import sys
import threading
import weakref
from typing import Any, Callable, Generator

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, Signal

from ..errors import CancelledError, SynthsegError
from ..models.weights import warm_up_model_loading

# The first model load of a process imports torch's meta-device machinery (about 800 modules,
# 1-2 s, the GIL held in 100-400 ms chunks whichever thread loads): done once here, while napari
# loads the plugin's panels, so a model loaded in a worker mid-session never pauses the UI.
warm_up_model_loading()


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
    """Run ``func`` in a napari worker thread and call back on the UI thread.

    The worker runs at a lower scheduling priority (Linux), so that on a machine with few
    cores the UI thread and the renderer's threads come first and the UI keeps drawing.
    """
    from napari.qt.threading import create_worker

    func = _in_background(func)
    # Connecting "errored" through _connect stops superqt from also re-raising every error in
    # the event loop; napari's own relay would show user errors with a traceback, so it goes
    # too: ``on_error`` shows them as one line and re-raises real bugs (report_error).
    worker = create_worker(
        func, *args, **kwargs, _start_thread=False, _connect={"returned": on_done, "errored": on_error}
    )
    relay = getattr(worker, "_relay_error", None)
    if relay is not None:
        try:
            worker.errored.disconnect(relay)
        except (TypeError, RuntimeError):  # not connected in this napari version
            pass
    worker.start()
    return worker


#: Niceness added to a worker thread (Linux): the UI thread and the renderer's threads first.
WORKER_NICENESS = 5


def _in_background(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func``, run at a lower priority in whatever thread calls it (Linux only).

    A thread's niceness can only go up without privileges, so a pool thread stays at the lower
    priority for the jobs after this one; every job on the pool is background work.
    """

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        if sys.platform.startswith("linux"):
            try:
                tid = threading.get_native_id()
                current = os.getpriority(os.PRIO_PROCESS, tid)
                target = min(os.getpriority(os.PRIO_PROCESS, os.getpid()) + WORKER_NICENESS, 19)  # main thread's
                if current < target:
                    os.setpriority(os.PRIO_PROCESS, tid, target)
            except OSError:  # not allowed here: run at the normal priority
                pass
        return func(*args, **kwargs)

    return run


# Viewers whose layer removals already make their own OpenGL context current (see below).
_GL_GUARDED: weakref.WeakSet[Any] = weakref.WeakSet()


def guard_gl_context(viewer) -> None:
    """Make napari delete a viewer's OpenGL objects in that viewer's own context.

    napari (0.9.2) flushes a removed layer's OpenGL deletions at once (``context.finish()`` in
    ``VispyCanvas._clean_and_update_scenegraph``) into whichever context happens to be current.
    Each viewer's canvas has a context of its own (vispy shares none under Qt 5.4+/Qt 6), and
    shader, buffer and texture names are small integers counted per context: with the editor's
    viewer and the QA window both open, removing or clearing the layers of one deleted the
    other's objects of the same numbers, and the other's next draw failed (``GLError``
    ``GL_INVALID_VALUE`` in ``glVertexAttribPointer``, an image not drawn). Making the viewer's
    canvas current when a layer is about to go sends the deletions to the right context; the
    removal runs without an event-loop turn in between, so nothing else can take the context
    back. Connected once per viewer.

    Parameters
    ----------
    viewer : napari.Viewer
        A viewer with a window (a bare ``ViewerModel`` has no canvas and needs none).
    """
    if viewer is None or viewer in _GL_GUARDED:
        return
    layers = getattr(viewer, "layers", None)
    if layers is None or not hasattr(layers.events, "removing"):
        return
    ref = weakref.ref(viewer)

    def make_current(event=None) -> None:
        scene_canvas = _scene_canvas(ref())
        if scene_canvas is not None:
            scene_canvas.set_current()

    layers.events.removing.connect(make_current)
    _GL_GUARDED.add(viewer)


def _scene_canvas(viewer):
    """The vispy ``SceneCanvas`` that draws ``viewer`` (None without a window or once closed)."""
    window = getattr(viewer, "window", None)
    qt_viewer = getattr(window, "_qt_viewer", None) if window is not None else None
    canvas = getattr(getattr(qt_viewer, "canvas", None), "_scene_canvas", None)
    if canvas is None or getattr(canvas, "_closed", False) or getattr(canvas, "_backend", None) is None:
        return None
    return canvas


class ProgressRelay(QObject):
    """Carries progress (and previews) from a worker thread to the UI thread.

    Emitting from the worker and connecting to a bound method of a widget makes Qt queue the
    call onto the widget's (UI) thread; a lambda would run in the worker thread.
    ``progress(step, total, message)``; ``preview(index, array)`` for live images.
    """

    progress = Signal(int, int, str)
    preview = Signal(int, object)


def viewer_camera(viewer):
    """The camera (napari >= 0.9 moved it to ``viewer.scene.camera``)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def viewer_grid(viewer):
    """The grid settings (napari >= 0.9 moved them to ``viewer.canvas.grid``)."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


# The lesion editor that owns the scene of a viewer: other widgets (inpainting, harmonization)
# put accepted results into that scene instead of keeping a second one.
_SCENE_EDITORS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def register_scene_editor(viewer, editor) -> None:
    _SCENE_EDITORS[viewer] = editor


def scene_editor(viewer):
    """The lesion editor docked in ``viewer`` (or None); its ``.scene`` may be None."""
    return _SCENE_EDITORS.get(viewer)


__all__ = [
    "ProgressRelay",
    "guard_gl_context",
    "register_scene_editor",
    "report_error",
    "run_in_thread",
    "scene_editor",
    "show_error",
    "show_info",
    "show_warning",
    "viewer_camera",
    "viewer_grid",
]


#: Click tolerance: a press and release further apart than this (screen pixels) is a pan/drag.
CLICK_TOLERANCE_PX = 4


def click_position(event) -> Generator[None, None, np.ndarray | None]:
    """Follow a napari mouse-drag callback from press to release (``yield from`` it).

    Returns the world position of the press if the mouse stayed within
    :data:`CLICK_TOLERANCE_PX` screen pixels (a click), or None if it moved further (a pan or
    drag, which must never place anything).
    """
    start_world, start_screen = np.array(event.position), np.array(event.pos)
    dragged = False
    yield
    while event.type == "mouse_move":
        if np.abs(np.array(event.pos) - start_screen).max() > CLICK_TOLERANCE_PX:
            dragged = True
        yield
    return None if dragged else start_world
