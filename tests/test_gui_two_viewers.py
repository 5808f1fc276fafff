"""Two viewers open at once (the editor's and the QA window): each deletes its GL objects in its own context.

napari 0.9.2 flushes a removed layer's OpenGL deletions into whichever context is current. With
a second viewer's context current, it deleted that viewer's shaders and textures of the same
numbers, and that viewer's next draw failed (the project's CI failed on it once, in the README
session test). pytest-qt fails a test on any exception raised in the Qt event loop, so a failed
draw fails these tests.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

pytestmark = pytest.mark.gui


def _two_viewers_with_the_same_layers(make_napari_viewer, qtbot):
    viewers = [make_napari_viewer(show=True), make_napari_viewer(show=True)]
    for viewer in viewers:
        # The same layers in the same order: the same GL object numbers in each context.
        viewer.add_image(np.random.default_rng(0).random((64, 64)), name="image")
        viewer.add_labels(np.zeros((64, 64), np.uint8), name="labels")
        viewer.add_points(np.array([[10.0, 10.0]]), name="points")
    qtbot.wait(300)
    return viewers


def _scene_canvas(viewer):
    return viewer.window._qt_viewer.canvas._scene_canvas


def test_removing_layers_in_one_viewer_leaves_the_others_drawing(make_napari_viewer, qtbot):
    from napari_synthseg.widgets._common import guard_gl_context

    editor_viewer, qa_viewer = _two_viewers_with_the_same_layers(make_napari_viewer, qtbot)
    for viewer in (editor_viewer, qa_viewer):
        guard_gl_context(viewer)
        connected = len(viewer.layers.events.removing.callbacks)
        guard_gl_context(viewer)  # once per viewer, however often a panel asks
        assert len(viewer.layers.events.removing.callbacks) == connected

    # The editor's canvas drew last (its context is current), then the QA window drops layers.
    _scene_canvas(editor_viewer).native.repaint()
    _scene_canvas(editor_viewer).set_current()
    qa_viewer.layers.remove("image")
    qa_viewer.layers.remove("labels")
    _scene_canvas(editor_viewer).native.repaint()  # raised GLError (GL_INVALID_VALUE) before the guard
    qtbot.wait(100)

    # And the other way round, clearing the editor's viewer (what closing a viewer does).
    _scene_canvas(qa_viewer).native.repaint()
    _scene_canvas(qa_viewer).set_current()
    editor_viewer.layers.clear()
    _scene_canvas(qa_viewer).native.repaint()
    qtbot.wait(100)
    assert [layer.name for layer in qa_viewer.layers] == ["points"]


def test_the_panels_and_the_qa_window_guard_their_viewers(make_napari_viewer):
    from napari_synthseg.widgets._common import _GL_GUARDED
    from napari_synthseg.widgets.qa_widget import QAWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((8, 8)), name="not a QA layer")  # QA then reviews in a window of its own
    qa = QAWidget(viewer)
    assert viewer in _GL_GUARDED
    qa._use_own_viewer()
    try:
        assert qa.viewer is not viewer and qa.viewer in _GL_GUARDED
    finally:
        qa.viewer.close()
