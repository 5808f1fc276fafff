"""GUI: the Lesion generator panel trains, resumes and cancels a (tiny) generator off the UI
thread, driven by real mouse clicks, and hands the model to the Lesion editor's samples."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")

pytestmark = pytest.mark.gui


def _click(qtbot, widget):
    from qtpy.QtCore import Qt

    qtbot.waitUntil(widget.isVisible, timeout=10_000)  # the docked panel is shown and laid out
    assert widget.isEnabled(), widget.text()
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton)


def test_panel_trains_resumes_cancels_and_feeds_the_editor(make_napari_viewer, qtbot, lidc, tmp_path,
                                                           artifacts_dir):
    from napari_synthseg.models import read_model_info
    from napari_synthseg.widgets.generator_widget import LesionGeneratorWidget
    from napari_synthseg.widgets.lesion_editor import LesionEditorWidget
    from napari_synthseg.workflow.train_generator import TrainGeneratorSettings

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    panel = LesionGeneratorWidget(viewer)
    viewer.window.add_dock_widget(panel, area="right", name="Lesion generator")
    # the fields start from the workflow's defaults
    d = TrainGeneratorSettings()
    assert panel.steps_spin.value() == d.steps and panel.network_combo.currentText() == d.network
    assert panel.settings() == d

    # a user error is one line, nothing starts
    _click(qtbot, panel.train_button)
    assert panel.busy is False and "library folder" in panel.status.text()

    panel.last_error = None
    out = tmp_path / "mine.safetensors"
    panel.library_edit.setText(str(lidc))
    panel.out_edit.setText(str(out))
    panel.network_combo.setCurrentText("tiny")
    panel.limit_spin.setValue(12)
    panel.steps_spin.setValue(2)
    _click(qtbot, panel.train_button)
    assert panel.busy and not panel.train_button.isEnabled() and panel.cancel_button.isVisible()
    qtbot.waitUntil(lambda: not panel.busy, timeout=180_000)
    assert panel.last_error is None, panel.last_error
    assert read_model_info(out)["provenance"]["steps"] == 2
    assert "mine.safetensors: 2 steps" in panel.summary.text()
    assert panel.resume_check.isChecked()  # the next Train continues this file

    # resume to 3 steps
    panel.steps_spin.setValue(3)
    _click(qtbot, panel.train_button)
    qtbot.waitUntil(lambda: not panel.busy, timeout=180_000)
    assert read_model_info(out)["provenance"]["steps"] == 3

    # a long run, cancelled by the Cancel button once it reports a loss: the file stays resumable
    panel.steps_spin.setValue(100_000)
    _click(qtbot, panel.train_button)
    qtbot.waitUntil(lambda: panel.status.text().startswith("loss"), timeout=180_000)
    viewer.window._qt_window.grab().save(str(artifacts_dir / "generator_panel_training.png"))
    _click(qtbot, panel.cancel_button)
    qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)
    assert panel.status.text() == "cancelled"
    steps = read_model_info(out)["provenance"]["steps"]
    assert 3 < steps < 100_000
    assert "tick Resume" in panel.summary.text()

    # hand it to the Lesion editor's generated samples
    editor = LesionEditorWidget(viewer)
    viewer.window.add_dock_widget(editor, area="right", name="Lesion editor")
    _click(qtbot, panel.use_button)
    assert editor.generated_samples.model_edit.text() == str(out)
    spec = editor.generated_samples.spec()
    assert str(spec.path) == str(out)
    assert "Lesion editor's generated samples" in panel.status.text()
    # a message longer than the panel is wide wraps, and every line shows
    status = panel.status
    qtbot.waitUntil(lambda: status.width() > 0 and status.heightForWidth(status.width()) > status.fontMetrics().height() * 1.5)
    qtbot.waitUntil(lambda: status.height() >= status.heightForWidth(status.width()))
    panel.grab().save(str(artifacts_dir / "generator_panel.png"))
