"""GUI: the inpainting widget fills a drawn mask off the UI thread and shows samples side by side."""

from __future__ import annotations

import numpy as np
import pytest

from napari_synthseg.widgets._common import viewer_camera

from napari_synthseg.inpaint.masks import blob_mask
from napari_synthseg.io import read_image


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
    viewer.window._qt_window.resize(1600, 900)
    assert widget.image_combo.currentText() == "cxr"
    assert widget.mask_combo.currentText() == "lesion mask"
    widget.samples_spin.setValue(3)
    widget.seed_spin.setValue(5)
    accepted = []
    widget.on_accept = lambda i, arr, req: accepted.append((i, arr, req))
    worker = widget.run()
    assert worker is not None
    qtbot.waitUntil(lambda: widget.samples is not None, timeout=120_000)
    assert len(widget.samples) == 3 and len(widget.sample_layers) == 3
    for arr in widget.samples:
        np.testing.assert_array_equal(arr[~mask], img[~mask].astype(np.float32))
    # the widget's default texture makes the seeded samples differ visibly
    assert np.abs(widget.samples[0] - widget.samples[1])[mask].mean() > 0.5
    # side by side: each sample shifted right by at least one image width
    xs = [layer.translate[-1] for layer in widget.sample_layers]
    assert all(b - a >= img.shape[1] for a, b in zip([0.0] + xs[:-1], xs))
    widget.accept(1)
    assert accepted and accepted[0][0] == 1 and accepted[0][2]["seed"] == 6
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

    # a user error (mask of another shape) is reported, not raised
    viewer.add_labels(np.zeros((10, 10), np.uint8), name="wrong")
    widget.mask_combo.setCurrentText("wrong")
    assert widget.run() is None


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
    layer.visible = False
    mask = np.zeros(editor.mask_layer.data.shape, np.uint8)
    mask[500:540, 300:340] = 1
    editor.mask_layer.data = mask
    widget = InpaintWidget(viewer)
    widget.image_combo.setCurrentText("synthetic")
    widget.mask_combo.setCurrentText("lesion mask")
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
