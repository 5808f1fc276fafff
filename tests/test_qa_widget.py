"""GUI test of the QA widget: grid of three views, keyboard decisions saved at once, export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_synthseg.widgets._common import viewer_camera, viewer_grid

from _disk_renderer import make_cxr_scenes, render_disks

pytestmark = pytest.mark.gui


def _press(qtbot, viewer, key):
    from qtpy.QtCore import Qt

    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, getattr(Qt, f"Key_{key}"))


def _settled(qtbot, widget):
    qtbot.waitUntil(lambda: widget.scene is not None and not widget.loading, timeout=60000)


def test_qa_widget_keyboard_review_and_export(make_napari_viewer, qtbot, tmp_path, shared_data, artifacts_dir):
    from napari_synthseg.qa import STATUS_COLORS
    from napari_synthseg.scene import Scene
    from napari_synthseg.widgets.qa_widget import LAYER_NAMES, OUTLINE_NAMES, TEXT_NAMES, QAWidget

    files = sorted((shared_data / "cxr" / "nih_nodule").glob("*.png"))[:2]
    folders = make_cxr_scenes(tmp_path / "scenes", files, per_source=1, decisions=("placed",) * 3)
    viewer = make_napari_viewer()
    widget = QAWidget(viewer, renderer=render_disks)
    viewer.window.add_dock_widget(widget, name="Lesion QA", area="right")
    viewer.window._qt_window.resize(1500, 800)
    widget.load_folders(folders)
    _settled(qtbot, widget)

    assert [layer.name for layer in viewer.layers] == [
        n for group in zip(LAYER_NAMES, OUTLINE_NAMES, TEXT_NAMES) for n in group]
    assert viewer_grid(viewer).enabled and viewer_grid(viewer).stride == 3
    captions = list(viewer.layers["QA numbers (synthetic)"].features["text"])
    assert len(captions) == 3 and captions[0].startswith("L0001 placed\nCNR")
    expected_image, expected_labels = render_disks(Scene.open(folders[0]))
    np.testing.assert_array_equal(viewer.layers["QA outlines (synthetic)"].data, expected_labels)
    np.testing.assert_allclose(viewer.layers["QA difference"].data,
                               expected_image - Scene.open(folders[0]).load_image().array)
    assert widget.lesion_list.count() == 3 and "CNR" in widget.lesion_list.item(0).text()
    # Jumping to a lesion centres the camera on it (world coordinates are mm).
    rec = Scene.open(folders[0]).lesions[0]
    assert np.allclose(viewer_camera(viewer).center[-2:], rec.center_mm[::-1], atol=1.0)
    qtbot.wait(200)
    viewer.window._qt_window.grab().save(str(artifacts_dir / "qa_widget_start.png"))

    _press(qtbot, viewer, "A")
    widget.reason_edit.setText("looks pasted")
    _press(qtbot, viewer, "R")
    _press(qtbot, viewer, "Up")  # back to L0002 ...
    _press(qtbot, viewer, "Down")  # ... and on to L0003
    assert widget.lesion_index == 2
    _press(qtbot, viewer, "F")
    on_disk = {r.id: r for r in Scene.open(folders[0]).lesions}  # saved at once
    assert [on_disk[i].status for i in ("L0001", "L0002", "L0003")] == ["accepted", "rejected", "flagged"]
    assert on_disk["L0002"].decision["reason"] == "looks pasted"
    assert on_disk["L0001"].decision["by"].startswith("user:")
    _settled(qtbot, widget)
    assert widget.scene_index == 1 and widget.lesion_index == 0  # F on the last lesion moved on
    _press(qtbot, viewer, "Left")
    _settled(qtbot, widget)
    assert widget.scene_index == 0 and widget.lesion_index == 2
    assert list(viewer.layers["QA numbers (synthetic)"].features["status"]) == ["accepted", "rejected", "flagged"]
    colors = viewer.layers["QA outlines (original)"].colormap.color_dict
    assert np.allclose(colors[2][:3], np.array(STATUS_COLORS["rejected"]) / 255.0)
    qtbot.wait(200)
    viewer.window._qt_window.grab().save(str(artifacts_dir / "qa_widget_decided.png"))

    widget.format_combo.setCurrentText("coco")
    widget.out_edit.setText(str(tmp_path / "coco"))
    widget.workers_spin.setValue(1)
    widget.export_button.click()
    assert not widget.export_button.isEnabled()  # runs in a worker thread
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60000)
    assert getattr(widget, "last_error", None) is None
    coco = json.loads((tmp_path / "coco" / "annotations" / "instances_train.json").read_text())
    assert len(coco["images"]) == 1 and [a["lesion_id"] for a in coco["annotations"]] == ["L0001"]
    assert widget.progress.value() == widget.progress.maximum() == 1
    widget.unbind_keys()


def test_synthseg_qa_opens_the_widget(tmp_path, shared_data, qtbot):

    files = sorted((shared_data / "cxr" / "nih_nodule").glob("*.png"))[:1]
    make_cxr_scenes(tmp_path / "scenes", files, per_source=1)
    # The real command in its own process: a second napari.Viewer() in the test process would
    # re-register the plugin's commands.
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "napari_synthseg.cli", "qa", str(tmp_path / "scenes"), "--renderer",
         "_disk_renderer:render_disks", "--no-block"], capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 scenes loaded" in result.stderr


def test_qa_widget_loads_scenes_off_the_ui_thread(make_napari_viewer, qtbot, tmp_path, shared_data):
    """Scenes open and render in a worker; neighbours are prepared, a changed one is re-read."""
    import threading

    from napari_synthseg.scene import Scene
    from napari_synthseg.widgets.qa_widget import QAWidget

    files = sorted((shared_data / "cxr" / "nih_nodule").glob("*.png"))[:3]
    folders = make_cxr_scenes(tmp_path / "scenes", files, per_source=1, decisions=("placed",) * 2)
    calls = []
    gate = threading.Event()
    gate.set()

    def renderer(scene):
        calls.append((scene.folder.name, threading.current_thread() is threading.main_thread()))
        gate.wait(30)
        return render_disks(scene)

    viewer = make_napari_viewer()
    widget = QAWidget(viewer, renderer=renderer)
    widget.load_folders(folders)
    _settled(qtbot, widget)
    assert calls and not any(on_ui for _, on_ui in calls)  # never rendered on the UI thread
    qtbot.waitUntil(lambda: not widget._preparing, timeout=60000)
    assert [name for name, _ in calls] == [folders[0].name, folders[1].name]  # next one prepared

    widget.go_scene(1)  # prepared: shown at once, no new render of it
    assert not widget.loading and widget.scene_index == 1
    assert [name for name, _ in calls].count(folders[1].name) == 1
    qtbot.waitUntil(lambda: not widget._preparing, timeout=60000)
    assert folders[2] in widget._prepared and folders[0] in widget._prepared

    # Scene 2 changes on disk after it was prepared: it is read again, with the change.
    other = Scene.open(folders[2])
    other.set_decision(other.lesions[0].id, "rejected", by="user:other", reason="")
    gate.clear()  # hold the re-render so the loading state can be checked
    widget.go_scene(2)
    assert widget.loading and widget.scene_index == 1 and "loading" in widget.scene_label.text()
    widget.decide("accepted")  # a key pressed while loading is not applied to the old scene
    assert Scene.open(folders[1]).lesions[0].status == "placed"
    gate.set()
    _settled(qtbot, widget)
    assert widget.scene_index == 2 and widget.scene.lesions[0].status == "rejected"
    assert [name for name, _ in calls].count(folders[2].name) == 2
    widget.wait_idle()
    widget.unbind_keys()
