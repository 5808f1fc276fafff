"""GUI: the inpainting widget fills a drawn mask off the UI thread and shows samples side by side."""

from __future__ import annotations

import numpy as np
import pytest

from napari_synthseg.inpaint.masks import blob_mask
from napari_synthseg.io import read_image
from napari_synthseg.widgets._common import viewer_camera


@pytest.mark.gui
def test_inpaint_widget_samples_side_by_side(make_napari_viewer, qtbot, shared_data, artifacts_dir):
    from napari_synthseg.widgets.inpaint_widget import InpaintWidget

    img = read_image(shared_data / "cxr" / "nih_nodule" / "00003285_001.png").array
    img = img[200:712, 100:612]  # right lung field, 512 x 512
    mask = blob_mask(img.shape, np.random.default_rng(0), radius=22.0, centre=(250, 260))
    viewer = make_napari_viewer()
    viewer.add_image(img, name="cxr", colormap="gray")
    viewer.add_labels(mask.astype(np.uint8), name="lesion mask", opacity=0.3)
    widget = InpaintWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right", name="Inpaint")
    viewer.window._qt_window.resize(1920, 1080)
    assert widget.image_combo.currentText() == "cxr"
    assert widget.mask_combo.currentText() == "lesion mask"
    # only Labels layers can be the mask (wave 1 offered the image itself: 52 s, black samples)
    assert [widget.mask_combo.itemText(i) for i in range(widget.mask_combo.count())] == ["lesion mask"]
    # defaults come from the workflow: texture "auto" (None), three samples
    from napari_synthseg.workflow.inpaint import InpaintSettings

    assert widget.settings() == InpaintSettings(seed=0) and widget.settings().texture is None
    widget.samples_spin.setValue(3)
    widget.seed_spin.setValue(5)
    accepted = []
    widget.on_accept = lambda i, arr, req: accepted.append((i, arr, req))
    worker = widget.run()
    assert worker is not None
    qtbot.waitUntil(lambda: widget.samples is not None, timeout=120_000)
    assert len(widget.samples) == 3 and len(widget.sample_layers) == 3
    assert [layer.name for layer in widget.sample_layers] == [
        f"inpaint healthy seed {5 + i} (sample {i + 1}/3)" for i in range(3)]
    # sample layers are neither offered as images to fill nor listed as the editor's sources
    assert widget.image_combo.count() == 1
    assert all("synthseg" not in layer.metadata for layer in widget.sample_layers)
    for arr in widget.samples:
        np.testing.assert_array_equal(arr[~mask], img[~mask].astype(np.float32))
    # the widget's default texture makes the seeded samples differ visibly
    assert np.abs(widget.samples[0] - widget.samples[1])[mask].mean() > 0.5
    # side by side: each sample shifted right by at least one image width
    xs = [layer.translate[-1] for layer in widget.sample_layers]
    assert all(b - a >= img.shape[1] for a, b in zip([0.0] + xs[:-1], xs))
    widget.accept(1)
    assert accepted and accepted[0][0] == 1 and accepted[0][2]["seed"] == 6
    assert accepted[0][2]["texture"] == 1.0  # auto texture for several samples
    assert accepted[0][2]["model"] == "builtin:cxr_inpainter_small"  # the model the mode used
    assert "cxr_inpainter_small" in widget.status.text()
    # look at the filled nodule region in the image and the three samples
    viewer.layers["lesion mask"].visible = False
    viewer.reset_view()
    viewer_camera(viewer).center = (250, 4 * (img.shape[1] * 1.02) / 2)
    qtbot.wait(200)
    canvas_w = viewer.window._qt_viewer.canvas.size[1] if hasattr(viewer.window._qt_viewer.canvas, "size") else 740
    viewer_camera(viewer).zoom = 0.95 * canvas_w / (4 * img.shape[1] * 1.02)
    viewer.window._qt_window.grab().save(str(artifacts_dir / "inpaint_widget.png"))
    # the panel keeps its compact width docked at 1920x1080 and scrolls instead of growing
    assert widget.width() <= 420 and widget.widget().sizeHint().height() > 0
    widget.grab().save(str(artifacts_dir / "inpaint_panel.png"))

    # user errors are one line in the panel, not exceptions: a mask of another shape, an empty
    # mask, a mask covering most of the image
    viewer.add_labels(np.zeros((10, 10), np.uint8), name="wrong")
    widget.mask_combo.setCurrentText("wrong")
    assert widget.run() is None and "shape" in widget.status.text()
    viewer.add_labels(np.zeros(img.shape, np.uint8), name="empty")
    widget.mask_combo.setCurrentText("empty")
    assert widget.run() is None and "empty" in widget.status.text()
    viewer.add_labels(np.ones(img.shape, np.uint8), name="everything")
    widget.mask_combo.setCurrentText("everything")
    assert widget.run() is None and "covers 100%" in widget.status.text()


@pytest.mark.gui
def test_inpaint_widget_trains_a_model(make_napari_viewer, qtbot, tmp_path):
    import SimpleITK as sitk

    from napari_synthseg.models import read_model_info
    from napari_synthseg.widgets.inpaint_widget import InpaintWidget

    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        sitk.WriteImage(sitk.GetImageFromArray(rng.normal(100, 10, (48, 48)).astype(np.float32)),
                        str(tmp_path / "imgs" / f"i{i}.mha"))
    widget = InpaintWidget(make_napari_viewer())
    widget.train_images_edit.setText(str(tmp_path / "imgs"))
    widget.train_out_edit.setText(str(tmp_path / "m.safetensors"))
    widget.train_steps_spin.setValue(2)
    widget.train_size_spin.setValue(32)
    widget.train_batch_spin.setValue(1)
    assert widget.train() is not None
    qtbot.waitUntil(lambda: widget.train_button.isEnabled(), timeout=120_000)
    assert read_model_info(tmp_path / "m.safetensors")["provenance"]["steps"] == 2
    assert widget.method_combo.currentData() == "file"
    assert widget.model_edit.text() == str(tmp_path / "m.safetensors")


@pytest.mark.gui
def test_accepted_sample_becomes_a_scene_record(make_napari_viewer, qtbot, shared_data, tmp_path, artifacts_dir):
    from napari_synthseg.render import render_scene
    from napari_synthseg.scene import Scene
    from napari_synthseg.widgets.inpaint_widget import InpaintWidget
    from napari_synthseg.widgets.lesion_editor import LesionEditorWidget

    viewer = make_napari_viewer()
    [layer] = viewer.open(str(shared_data / "cxr/node21/c3883.mha"), plugin="napari-synthseg")
    editor = LesionEditorWidget(viewer)
    editor.folder_edit.setText(str(tmp_path / "scene"))
    editor.new_scene_from_layer()
    editor.wait_idle()
    layer.visible = False
    mask = np.zeros(editor.mask_layer.data.shape, np.uint8)
    mask[500:540, 300:340] = 1
    editor.mask_layer.data = mask
    widget = InpaintWidget(viewer)
    # with a scene open, the editor's image and mask are the default choice
    assert widget.image_combo.currentText() == "synthetic"
    assert widget.mask_combo.currentText() == "lesion mask"
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("biharmonic"))
    widget.samples_spin.setValue(1)
    widget.run()
    qtbot.waitUntil(lambda: widget.samples is not None, timeout=120_000)
    sample = widget.samples[0]
    assert widget.accept(0) is not None
    [record] = editor.scene.lesions
    assert record.kind == "removal" and record.source["type"] == "inpaint"
    np.testing.assert_array_equal(editor.renderer.image, sample)
    np.testing.assert_array_equal(render_scene(Scene.open(tmp_path / "scene")).image, sample)
    assert editor.renderer.labels.max() == 0
    editor.undo()
    assert editor.scene.lesions == []


@pytest.mark.gui
def test_training_user_errors_are_one_line(make_napari_viewer, tmp_path):
    from napari_synthseg.widgets.inpaint_widget import InpaintWidget

    widget = InpaintWidget(make_napari_viewer())
    assert widget.train() is None and "folder of training images" in widget.status.text()
    widget.train_images_edit.setText(str(tmp_path))
    widget.train_out_edit.setText(str(tmp_path / "m.pt"))
    assert widget.train() is None and ".safetensors" in widget.status.text()
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("file"))
    widget.model_edit.setText(str(tmp_path / "missing.safetensors"))
    assert widget.run() is None  # no layers: one line, no exception
    assert widget.last_error is not None
