"""The lesion editor in a real napari: place by click, drag, edit, undo/redo, delete, remove."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_synthseg.widgets._common import viewer_camera  # noqa: E402

pytestmark = pytest.mark.gui


def _shot(viewer, path):
    viewer.window._qt_window.grab().save(str(path))


@pytest.fixture
def editor(make_napari_viewer, shared_data, tmp_path):
    return open_editor_with_scene(make_napari_viewer, shared_data, tmp_path)


def open_editor_with_scene(make_napari_viewer, shared_data, tmp_path):
    """A docked lesion editor with a new scene on the NODE21 CXR (its source layer hidden)."""
    from napari_synthseg.widgets.lesion_editor import LesionEditorWidget

    viewer = make_napari_viewer()
    viewer.window._qt_window.resize(1500, 1000)
    [layer] = viewer.open(str(shared_data / "cxr/node21/c3883.mha"), plugin="napari-synthseg")
    widget = LesionEditorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Lesion editor", area="right")
    widget.source_combo.setCurrentText(layer.name)
    widget.folder_edit.setText(str(tmp_path / "scene"))
    widget.new_scene_from_layer()
    widget.wait_idle()
    layer.visible = False
    return viewer, widget


def canvas_point(viewer, world_yx):
    """Screen position (in the canvas widget) of a 2D world point, from napari's own transform."""
    from qtpy.QtCore import QPoint

    canvas = viewer.window._qt_viewer.canvas
    transform = canvas.view.scene.transform  # world (x, y) -> canvas pixels
    x, y = transform.map([world_yx[-1], world_yx[-2], 0, 1])[:2]
    return QPoint(int(round(x)), int(round(y)))


def click(widget, index_numpy):
    """A real left click (press + release) on the canvas at a data index of the synthetic layer."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    viewer = widget.viewer
    world = widget.image_layer.data_to_world(index_numpy)
    native = viewer.window._qt_viewer.canvas.native
    point = canvas_point(viewer, world)
    QTest.mouseClick(native, Qt.LeftButton, Qt.NoModifier, point)


def test_place_drag_edit_undo_delete(editor, artifacts_dir, tmp_path):
    from napari_synthseg.render import render_scene
    from napari_synthseg.scene import Scene

    viewer, widget = editor
    widget.place_check.setChecked(True)
    widget.size_spin.setValue(9.0)
    widget.blend_combo.setCurrentText("alpha")
    click(widget, (400, 350))
    widget.lesion_combo.setCurrentIndex(1)  # part-solid
    widget.blend_combo.setCurrentText("poisson")
    widget.size_spin.setValue(14.0)
    click(widget, (420, 700))
    scene = widget.scene
    assert scene.lesion_ids == ["L0001", "L0002"]
    assert set(np.unique(widget.labels_layer.data)) == {0, 1, 2}
    assert len(widget.points_layer.data) == 2 and widget.lesion_list.count() == 2
    _shot(viewer, artifacts_dir / "editor_two_lesions.png")

    # Drag the first handle: move the point as napari's select mode does, then the data event.
    before = widget.renderer.labels.copy()
    data = np.array(widget.points_layer.data)
    data[0] += (60, -40)
    widget.points_layer.data = data
    rec = scene.lesion("L0001")
    np.testing.assert_allclose(widget.renderer.source.physical_to_index(rec.center_mm)[::-1], data[0], atol=1e-6)
    assert not np.array_equal(before, widget.renderer.labels)
    assert (widget.renderer.labels == 1)[460 - 20:460 + 20, 310 - 20:310 + 20].any()

    # Edit the selected lesion: resize and re-blend (each field applies on its own).
    widget.select("L0002")
    assert widget.size_spin.value() == 14.0  # selecting never overwrites the new-lesion settings
    widget.edit_size.setValue(20.0)
    widget.edit_blend.setCurrentText("additive")
    widget.apply_to_selected()
    assert scene.lesion("L0002").size_mm == 20.0 and scene.lesion("L0002").blend["mode"] == "additive"
    _shot(viewer, artifacts_dir / "editor_after_drag_and_edit.png")

    # Undo all three edits (Ctrl+Z path = widget.undo), redo one, delete one.
    widget.undo()
    assert scene.lesion("L0002").blend["mode"] == "poisson" and scene.lesion("L0002").size_mm == 20.0
    widget.undo()
    assert scene.lesion("L0002").size_mm == 14.0
    widget.undo()
    assert np.array_equal(before, widget.renderer.labels)
    widget.redo()
    widget.select("L0002")
    widget.delete_selected()
    assert scene.lesion_ids == ["L0001"] and widget.lesion_list.count() == 1
    assert len(widget.points_layer.data) == 1
    widget.undo()
    assert scene.lesion_ids == ["L0001", "L0002"]

    # The autosaved scene renders to exactly what the viewer shows.
    reopened = render_scene(Scene.open(scene.folder))
    np.testing.assert_array_equal(reopened.image, widget.image_layer.data)
    np.testing.assert_array_equal(reopened.labels, widget.labels_layer.data)


def test_refused_placement_keeps_scene(editor, monkeypatch):
    import napari_synthseg.widgets._base as base

    viewer, widget = editor
    shown = []
    monkeypatch.setattr(base, "report_error", shown.append)
    widget.place_check.setChecked(True)
    widget.size_spin.setValue(10.0)
    widget.place_at((2, 2))  # the lesion would leave the image
    assert widget.scene.lesions == [] and len(shown) == 1 and "outside the image" in str(shown[0])
    assert "outside the image" in widget.status.text()


def test_remove_painted_real_lesion(editor, artifacts_dir):
    viewer, widget = editor
    mask = np.zeros(widget.mask_layer.data.shape, np.uint8)
    mask[500:530, 300:330] = 1
    widget.mask_layer.data = mask
    widget.fill_combo.setCurrentText("biharmonic")
    widget.remove_painted()
    widget.wait_idle()
    [rec] = widget.scene.lesions
    assert rec.kind == "removal" and widget.renderer.labels.max() == 0
    assert not np.array_equal(widget.renderer.image[500:530, 300:330], widget.renderer.base[500:530, 300:330])


def test_ct_scene_in_3d(make_napari_viewer, shared_data, tmp_path, artifacts_dir):
    from napari_synthseg.widgets.lesion_editor import LesionEditorWidget

    viewer = make_napari_viewer()
    viewer.window._qt_window.resize(1500, 1000)
    [ct] = viewer.open(str(shared_data / "ct/lung_pet_ct_dx_A0001/dicom"), plugin="napari-synthseg")
    widget = LesionEditorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Lesion editor", area="right")
    widget.folder_edit.setText(str(tmp_path / "ct_scene"))
    widget.new_scene_from_layer()
    widget.wait_idle()
    ct.visible = False
    widget.lesion_combo.setCurrentIndex(widget.lesion_combo.count() - 1)
    widget.lesion_path.setText(str(shared_data / "ct/nodule_patches/nodule_05_ct.mha"))
    widget.size_spin.setValue(15.0)
    widget.blend_combo.setCurrentText("poisson")
    widget.place_at((40, 250, 150))
    assert widget.scene.lesion_ids == ["L0001"]
    assert (widget.renderer.labels[40] == 1).any()
    viewer.dims.set_point(0, float(widget.image_layer.data_to_world((40, 0, 0))[0]))
    viewer_camera(viewer).center = tuple(widget.image_layer.data_to_world((40, 250, 150))[1:])
    viewer_camera(viewer).zoom = 4
    _shot(viewer, artifacts_dir / "editor_ct_nodule.png")


def _canvas_point_of(viewer, layer, index_numpy):
    """Screen position of a data index in whatever plane is displayed (rows, columns of dims.displayed)."""
    from qtpy.QtCore import QPoint

    world = layer.data_to_world(index_numpy)
    rows, cols = viewer.dims.displayed[-2:]
    transform = viewer.window._qt_viewer.canvas.view.scene.transform
    x, y = transform.map([world[cols], world[rows], 0, 1])[:2]
    return QPoint(int(round(x)), int(round(y)))


def test_ct_coronal_view_is_head_up_and_clicks_land_on_the_voxel(make_napari_viewer, shared_data, tmp_path,
                                                                  artifacts_dir, qtbot):
    """SimpleITK's slice 0 is the most inferior one; napari draws row 0 at the top. Every layer of
    a CT (the reader's and the scene's) is drawn head up, and clicks and handle drags in a
    coronal view still land on the voxel under the mouse."""
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtGui import QMouseEvent
    from qtpy.QtWidgets import QApplication

    from napari_synthseg.widgets.lesion_editor import LesionEditorWidget

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1500, 1000)
    [ct] = viewer.open(str(shared_data / "ct/lung_pet_ct_dx_A0001/dicom"), plugin="napari-synthseg")
    widget = LesionEditorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Lesion editor", area="right")
    widget.folder_edit.setText(str(tmp_path / "ct_scene"))
    widget.new_scene_from_layer()
    widget.wait_idle()
    source = widget.renderer.source
    assert source.direction_matrix[2, 2] > 0  # slice index grows towards the head
    scene_layers = [widget.image_layer, widget.labels_layer, widget.mask_layer, widget.points_layer,
                    widget.constraint_layer]
    for layer in [ct, *scene_layers]:
        assert layer.ndim == 3 and layer.scale[0] < 0, layer.name
        np.testing.assert_allclose(layer.scale, ct.scale)
        np.testing.assert_allclose(layer.translate, ct.translate)
    depth, rows, cols = source.shape
    # World axis 0 is minus the physical z: the world position of a slice is -z of its centre.
    for k in (0, depth - 1):
        z_mm = source.index_to_physical((0, 0, k))[2]
        np.testing.assert_allclose(widget.image_layer.data_to_world((k, 0, 0))[0], -z_mm)

    # Coronal view: rows are z, columns x, at the middle row of the volume.
    viewer.dims.order = (1, 0, 2)
    row = rows // 2
    viewer.dims.set_point(1, float(widget.image_layer.data_to_world((0, row, 0))[1]))
    viewer.reset_view(layers=[widget.image_layer])
    QApplication.processEvents()
    top = _canvas_point_of(viewer, widget.image_layer, (depth - 1, row, cols // 2))
    bottom = _canvas_point_of(viewer, widget.image_layer, (0, row, cols // 2))
    assert top.y() < bottom.y()  # the most superior slice is at the top of the screen

    # A real click in the coronal view places the lesion on the voxel under the mouse, off the
    # middle slice so that an upside-down mapping would miss it.
    ct.visible = False
    widget.place_check.setChecked(True)
    widget.size_spin.setValue(10.0)
    target = (round(depth * 0.7), row, round(cols * 0.35))
    native = viewer.window._qt_viewer.canvas.native
    from qtpy.QtTest import QTest

    QTest.mouseClick(native, Qt.LeftButton, Qt.NoModifier, _canvas_point_of(viewer, widget.image_layer, target))
    assert widget.scene.lesion_ids == ["L0001"], widget.status.text()
    np.testing.assert_allclose(widget.session.index_of("L0001"), target, atol=1.0)
    labels_at = np.argwhere(widget.renderer.labels == 1).mean(axis=0)
    np.testing.assert_allclose(labels_at, target, atol=2.0)

    # Drag its handle 6 slices up (towards the head) and 20 columns right, in the same view.
    widget.place_check.setChecked(False)
    viewer.layers.selection.active = widget.points_layer
    widget.points_layer.mode = "select"
    goal = (target[0] + 6, row, target[2] + 20)
    a = _canvas_point_of(viewer, widget.points_layer, target)
    b = _canvas_point_of(viewer, widget.points_layer, goal)
    assert b.y() < a.y()  # towards the head is up the screen

    def send(kind, point, buttons):
        types = {"press": QMouseEvent.MouseButtonPress, "move": QMouseEvent.MouseMove,
                 "release": QMouseEvent.MouseButtonRelease}
        button = Qt.NoButton if kind == "move" else Qt.LeftButton
        QApplication.sendEvent(native, QMouseEvent(types[kind], point, native.mapToGlobal(point), button, buttons,
                                                   Qt.NoModifier))
        QApplication.processEvents()

    send("press", a, Qt.LeftButton)
    for step in range(1, 7):
        send("move", QPoint(a.x() + (b.x() - a.x()) * step // 6, a.y() + (b.y() - a.y()) * step // 6), Qt.LeftButton)
    send("release", b, Qt.NoButton)
    np.testing.assert_allclose(widget.session.index_of("L0001"), goal, atol=1.0)
    _shot(viewer, artifacts_dir / "editor_ct_coronal_head_up.png")


def test_a_present_library_is_the_default_source(make_napari_viewer, shared_data, tmp_path, monkeypatch, qtbot):
    """Real nodules are the editor's default source wherever a library is present (issue 15)."""
    from test_library_lidc import _small_index

    from napari_synthseg.lesions.library import LIBRARY_ENV, LesionLibrary
    from napari_synthseg.widgets.lesion_editor import LesionEditorWidget

    def open_editor():
        viewer = make_napari_viewer()
        widget = LesionEditorWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Lesion editor", area="right")
        qtbot.waitUntil(lambda: widget.layers_ready, timeout=10000)  # its layers are built at start
        return widget

    monkeypatch.delenv(LIBRARY_ENV, raising=False)
    assert open_editor().lesion_spec().source.value == "procedural"
    folder, _ = _small_index(shared_data, tmp_path, n=2)
    LesionLibrary(tmp_path / "lib").import_index(folder)
    monkeypatch.setenv(LIBRARY_ENV, str(tmp_path / "lib"))
    widget = open_editor()
    assert widget.lesion_combo.currentData() == "file" and widget.lesion_path.isEnabled()
    assert widget.lesion_path.text() == str(tmp_path / "lib")
    assert widget.lesion_spec().source.value == "library"
