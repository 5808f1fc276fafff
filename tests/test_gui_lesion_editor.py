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
