"""The lesion editor's library strip and generated samples in a real napari, with real clicks:
filter the real-lesion library, click a thumbnail, click the image to place that nodule; sample
generated nodules at a clicked site, see them side by side, click one to accept it."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

pytest.importorskip("napari")

from test_gui_session_e2e import UiClock, _click
from test_workflow_library_samples import make_small_library

pytestmark = [pytest.mark.gui, pytest.mark.slow]

_LOAD = max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
MAX_FREEZE_MS = float(os.environ.get("SYNTHSEG_MAX_FREEZE_MS", "100")) * _LOAD


def _shot(viewer, path):
    from qtpy.QtWidgets import QApplication

    # let the layout settle and the canvas draw once before grabbing the window
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)
    viewer.window._qt_window.grab().save(str(path))


def _panel_shot(section, path):
    """The section itself (the docked panel may be scrolled elsewhere)."""
    section.grab().save(str(path))


def _click_widget(widget, point=None):
    """A real left click on a Qt widget (press + release through the event loop)."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    QTest.mouseClick(widget, Qt.LeftButton, Qt.NoModifier, point if point is not None else widget.rect().center())
    QApplication.processEvents()


def _scroll_to(editor, child):
    from qtpy.QtWidgets import QApplication

    editor.ensureWidgetVisible(child, 10, 10)
    QApplication.processEvents()


@pytest.fixture
def editor(make_napari_viewer, shared_data, tmp_path, monkeypatch):
    """The lesion editor's own fixture (a scene on the NODE21 CXR), with a fresh thumbnail cache."""
    from test_gui_lesion_editor import open_editor_with_scene

    from napari_synthseg.workflow.library_browser import clear_thumbnail_memory

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    clear_thumbnail_memory()
    return open_editor_with_scene(make_napari_viewer, shared_data, tmp_path)


def test_library_strip_thumbnails_filter_click_and_place(editor, shared_data, tmp_path, artifacts_dir):
    from napari_synthseg.widgets._base import PANEL_WIDTH

    viewer, widget = editor
    library = make_small_library(shared_data, tmp_path, n=8)
    strip = widget.library_strip
    assert not strip.grid.isVisibleTo(strip)  # compact until a library is chosen
    strip.folder_edit.setText(str(library.folder))
    with UiClock() as clock:
        strip.refresh()
        strip.wait_idle()
    assert not strip.busy
    assert strip.grid.count() == 8 and strip.grid.isVisibleTo(strip)
    assert clock.worst_ms < MAX_FREEZE_MS, f"UI thread paused {clock.worst_ms:.0f} ms while thumbnails were made"
    # every thumbnail was drawn (not the blank placeholder), captioned with diameter and class
    for k in range(strip.grid.count()):
        item = strip.grid.item(k)
        image = item.icon().pixmap(56, 56).toImage()
        values = {image.pixel(x, y) for x in range(0, 56, 4) for y in range(0, 56, 4)}
        assert len(values) > 5, "thumbnail not drawn"
        assert " mm\n" in item.text()
    # the strip fits the 340 px panel (inside a group box's margins)
    assert strip.minimumSizeHint().width() <= PANEL_WIDTH - 40
    assert widget.generated_samples.minimumSizeHint().width() <= PANEL_WIDTH - 40
    assert not strip.grid.horizontalScrollBar().isVisible()

    # filter by class and by diameter range
    rows = {r["id"]: r for r in library.list()}
    cls = rows[strip.entries[0].lesion_id]["nodule_class"]
    strip.class_combo.setCurrentText(cls)
    strip.wait_idle()
    assert strip.grid.count() == sum(r["nodule_class"] == cls for r in rows.values())
    strip.class_combo.setCurrentText("any")
    strip.wait_idle()
    diameters = sorted(r["diameter_mm"] for r in rows.values())
    strip.min_spin.setValue(np.floor(diameters[2]))
    strip.max_spin.setValue(np.ceil(diameters[5]))
    strip.wait_idle()
    expected = sum(np.floor(diameters[2]) <= d <= np.ceil(diameters[5]) for d in diameters)
    assert strip.grid.count() == expected
    _scroll_to(widget, strip)
    _shot(viewer, artifacts_dir / "editor_library_strip.png")

    # a real click on the second thumbnail makes that nodule the next lesion, at its own size
    item = strip.grid.item(1)
    chosen_id = item.data(0x0100)  # Qt.UserRole
    _click_widget(strip.grid.viewport(), strip.grid.visualItemRect(item).center())
    assert strip.last_choice is not None and strip.last_choice.entry.lesion_id == chosen_id
    assert widget.lesion_combo.currentData() == "file"
    assert widget.lesion_path.text().endswith(f"{chosen_id}.json")
    assert widget.size_spin.value() == pytest.approx(round(rows[chosen_id]["diameter_mm"], 1))

    # and a real click in the image places it (projected into the radiograph)
    widget.place_check.setChecked(True)
    _click(viewer, widget.image_layer, (420, 380))
    [record] = widget.scene.lesions
    assert record.source["type"] == "library" and record.source["id"] == chosen_id
    assert record.source["sha256"] == library.item_sha256(chosen_id)
    assert record.source["image_sha256"] == rows_sha(library, chosen_id)
    _shot(viewer, artifacts_dir / "editor_library_placed.png")


def rows_sha(library, lesion_id):
    return library.metadata(lesion_id)["reference"]["image_sha256"]


def test_generated_samples_side_by_side_accept_by_click(editor, artifacts_dir):
    from qtpy.QtWidgets import QApplication

    viewer, widget = editor
    # No warm-up: torch is imported with the panel, and the model is read in the worker, so the
    # first sampling of the session is held to the same pause budget as the others.
    samples = widget.generated_samples
    widget.size_spin.setValue(16.0)
    widget.contrast_spin.setValue(2.0)
    widget.seed_spin.setValue(40)
    samples.class_combo.setCurrentText("solid")
    samples.count_spin.setValue(4)
    _click_widget(samples.sample_btn)
    assert samples.sample_btn.isChecked() and not widget.place_check.isChecked()

    with UiClock() as clock:
        _click(viewer, widget.image_layer, (420, 380))  # the site
        QApplication.processEvents()  # sampling starts right after the click's event
        assert samples.busy and not samples.cancel_btn.isHidden()
        started = time.perf_counter()
        samples.wait_idle()
        ready = time.perf_counter()
    assert widget.scene.lesions == []  # samples do not change the scene
    assert [c.seed for c in samples.candidates] == [40, 41, 42, 43]
    assert len(samples.buttons) == 4
    assert clock.worst_before_ms(ready) < MAX_FREEZE_MS, f"UI paused {clock.worst_before_ms(ready):.0f} ms"
    print(f"4 samples in {ready - started:.1f} s; worst UI pause {clock.worst_before_ms(ready):.0f} ms")
    # four thumbnails side by side within the panel, on one row
    tops = {b.geometry().top() for b in samples.buttons}
    assert len(tops) == 1
    assert max(b.geometry().right() for b in samples.buttons) <= samples.width()
    _panel_shot(samples, artifacts_dir / "editor_generated_samples_panel.png")

    # a real click on the third sample adds it as an ordinary generated lesion with its seed
    shown = list(samples.buttons)
    _click_widget(samples.buttons[2])
    [record] = widget.scene.lesions
    assert record.source["type"] == "generated" and record.seed == 42 and record.source["seed"] == 42
    assert record.source["class"] == "solid"
    assert samples.candidates == [] and widget.seed_spin.value() == 44
    assert samples.buttons == [] and not any(b.isVisibleTo(samples) for b in shown)
    assert widget.selected_id() == record.id
    _panel_shot(widget, artifacts_dir / "editor_generated_accepted_panel.png")
    widget.undo()
    assert widget.scene.lesions == []


def test_generated_samples_cancel(editor):
    viewer, widget = editor
    samples = widget.generated_samples
    samples.count_spin.setValue(8)
    samples.sample_at((420, 380))
    assert samples.busy
    _click_widget(samples.cancel_btn)
    samples.wait_idle()
    assert not samples.busy and samples.candidates == [] and samples.info.text() == "cancelled"
    assert widget.scene.lesions == []


def test_generated_samples_in_a_ct_show_the_slice_through_the_site(make_napari_viewer, shared_data, tmp_path,
                                                                    artifacts_dir):
    from qtpy.QtWidgets import QApplication

    from napari_synthseg.generator import get_generator
    from napari_synthseg.widgets.lesion_editor import LesionEditorWidget

    get_generator("builtin")
    viewer = make_napari_viewer()
    viewer.window._qt_window.resize(1500, 1000)
    [ct] = viewer.open(str(shared_data / "ct/lung_pet_ct_dx_A0001/dicom"), plugin="napari-synthseg")
    widget = LesionEditorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Lesion editor", area="right")
    widget.folder_edit.setText(str(tmp_path / "ct_scene"))
    widget.new_scene_from_layer()
    widget.wait_idle()
    ct.visible = False
    site = (40, 250, 150)
    viewer.dims.set_point(0, float(widget.image_layer.data_to_world(site)[0]))
    samples = widget.generated_samples
    samples.class_combo.setCurrentText("part-solid")
    samples.count_spin.setValue(2)
    widget.size_spin.setValue(12.0)
    widget.seed_spin.setValue(7)
    _click_widget(samples.sample_btn)
    _click(viewer, widget.image_layer, site)  # a real click on the shown slice
    QApplication.processEvents()
    samples.wait_idle()
    assert [c.seed for c in samples.candidates] == [7, 8] and widget.scene.lesions == []
    for candidate in samples.candidates:
        assert candidate.after.ndim == 2  # the axial slice through the site
        assert candidate.record.source["class"] == "part-solid"
        index = widget.renderer.source.physical_to_index(candidate.record.center_mm)[::-1]
        assert abs(index[0] - site[0]) < 0.5 and np.allclose(index[1:], site[1:], atol=2.0)
    _panel_shot(samples, artifacts_dir / "editor_generated_samples_ct_panel.png")
    _click_widget(samples.buttons[1])
    [record] = widget.scene.lesions
    assert record.seed == 8 and record.source["type"] == "generated"
    assert (widget.renderer.labels[site[0]] == record.label).any()
