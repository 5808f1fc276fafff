"""A real napari (run under xvfb-run -a): reader, window presets, series picker, samples, writer."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui


def _shot(viewer, path):
    viewer.window._qt_window.grab().save(str(path))
    assert path.stat().st_size > 10_000


def test_open_cxr_and_ct_series_switch_presets(make_napari_viewer, shared_data, artifacts_dir, qtbot):
    from napari_synthseg.widgets.window_widget import WindowWidget

    viewer = make_napari_viewer()
    viewer.window._qt_window.resize(1920, 1080)
    widget = WindowWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Window / series", area="right")

    [cxr] = viewer.open(str(shared_data / "cxr/node21/c3883.mha"), plugin="napari-synthseg")
    assert cxr.data.dtype == np.uint16 and cxr.data.max() > 255  # native 12-bit values
    np.testing.assert_allclose(cxr.scale, (0.12684766839378236, 0.1268), rtol=1e-3)

    [ct] = viewer.open(str(shared_data / "ct/lung_pet_ct_dx_A0001/dicom"), plugin="napari-synthseg")
    assert ct.data.shape == (64, 512, 512) and ct.data.dtype == np.int16
    # Drawn head up: world axis 0 is minus z (slice 0, z = -439 mm, is the most inferior).
    np.testing.assert_allclose(ct.scale, (-5.0, 0.841796875, 0.841796875))
    np.testing.assert_allclose(ct.translate, (439.0, -93.0631599, -228.036842), atol=1e-4)
    assert ct.metadata["synthseg"]["geometry"]["modality"] == "CT"
    assert tuple(ct.contrast_limits) == (-1350.0, 150.0)  # CT lung window by default

    widget.layer_combo.setCurrentText(ct.name)
    widget.set_preset("ct-mediastinum")
    assert tuple(ct.contrast_limits) == (-160.0, 240.0)
    widget.set_preset("ct-bone")
    assert tuple(ct.contrast_limits) == (-500.0, 1300.0)
    viewer.dims.set_point(0, 204.0)  # a tumour slice (README: z -234..-184 mm; world axis 0 is minus z)
    viewer.layers.selection.active = ct
    viewer.reset_view()
    widget.set_preset("ct-lung")
    _shot(viewer, artifacts_dir / "foundation_ct_lung_window.png")
    assert widget.width() <= 420  # compact when docked at 1920x1080
    widget.grab().save(str(artifacts_dir / "window_panel.png"))
    widget.set_preset("no-such-preset")
    assert "unknown window preset" in widget.status.text()

    viewer.layers.selection.active = cxr
    widget.layer_combo.setCurrentText(cxr.name)
    widget.set_preset("cxr-auto")
    lo, hi = cxr.contrast_limits
    assert hi > 255
    viewer.layers.remove(ct)
    viewer.reset_view()
    _shot(viewer, artifacts_dir / "foundation_cxr_auto_window.png")


def test_series_picker_loads_chosen_series(make_napari_viewer, tmp_path, qtbot):
    from _dicom import write_series
    from napari_synthseg.widgets.window_widget import WindowWidget

    folder = tmp_path / "mixed"
    write_series(folder, np.full((4, 12, 12), -800), "1.2.826.0.1.3680043.2.1125.71", prefix="a")
    write_series(folder, np.full((2, 12, 12), 300), "1.2.826.0.1.3680043.2.1125.72", prefix="b")
    viewer = make_napari_viewer()
    widget = WindowWidget(viewer)
    assert widget.list_series(str(folder)) is not None  # scanned in a worker
    widget.wait_idle()
    assert widget.series_list.count() == 2 and "2 series" in widget.status.text()
    widget.series_list.setCurrentRow(1)
    assert widget.load_selected_series() is not None
    # Wait for the result rather than the worker's signal: a fast read can finish before a
    # signal wait is set up.
    qtbot.waitUntil(lambda: len(viewer.layers) == 1, timeout=60000)
    assert viewer.layers[0].data.shape == (2, 12, 12)
    assert int(viewer.layers[0].data.max()) == 300


def test_reader_error_is_one_line_notification(make_napari_viewer, tmp_path, monkeypatch):
    import napari_synthseg._napari as hooks

    shown = []
    monkeypatch.setattr(hooks, "_notify_error", shown.append)
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x00" * 400)
    viewer = make_napari_viewer()
    with pytest.raises(Exception):
        viewer.open(str(bad), plugin="napari-synthseg")
    assert len(shown) == 1 and "\n" not in shown[0] and "broken.nii.gz" in shown[0]
    assert len(viewer.layers) == 0


def test_samples_open_and_write_back(make_napari_viewer, tmp_path, artifacts_dir):
    from napari_synthseg._napari import layer_transform
    from napari_synthseg.io import read_image

    viewer = make_napari_viewer()
    for key in ("cxr", "ct", "mri"):
        viewer.open_sample("napari-synthseg", key)
    assert len(viewer.layers) == 3
    ct = viewer.layers[1]
    assert ct.data.dtype == np.int16 and ct.data.min() < -900
    out = tmp_path / "ct_copy.nii.gz"
    ct.save(str(out), plugin="napari-synthseg")
    back = read_image(out)
    np.testing.assert_array_equal(back.array, ct.data)
    # Read back, the file is drawn exactly where the layer was (head up: negative z scale).
    assert layer_transform(back)["scale"][0] < 0
    np.testing.assert_allclose(layer_transform(back)["scale"], ct.scale)
    np.testing.assert_allclose(layer_transform(back)["translate"], ct.translate)
    labels = viewer.add_labels(np.zeros(ct.data.shape, np.uint8), scale=ct.scale, translate=ct.translate,
                               metadata=ct.metadata)
    labels.data[5, 100:110, 100:120] = 2
    labels.save(str(tmp_path / "labels.nii.gz"), plugin="napari-synthseg")
    lab = read_image(tmp_path / "labels.nii.gz")
    assert int(lab.array.sum()) == 2 * 200
    np.testing.assert_allclose(lab.origin, back.origin, atol=1e-4)
    # A labels layer made in napari (no metadata, only the CT's scale and translate) is written
    # with the geometry that puts every voxel where it was drawn.
    plain = viewer.add_labels(np.zeros(ct.data.shape, np.uint8), scale=ct.scale, translate=ct.translate)
    plain.data[5, 100:110, 100:120] = 3
    plain.save(str(tmp_path / "plain.nii.gz"), plugin="napari-synthseg")
    plain_back = read_image(tmp_path / "plain.nii.gz")
    for k, index in ((5, (105, 110)), (0, (0, 0)), (ct.data.shape[0] - 1, (511, 511))):
        voxel = np.array([index[1], index[0], k], float)  # SimpleITK (x, y, z)
        np.testing.assert_allclose(plain_back.index_to_physical(voxel), back.index_to_physical(voxel), atol=1e-4)
    np.testing.assert_allclose(layer_transform(plain_back)["scale"], ct.scale)
    np.testing.assert_allclose(layer_transform(plain_back)["translate"], ct.translate, atol=1e-4)
    plain.visible = False
    labels.visible = False
    for shown in viewer.layers[:3]:
        for layer in viewer.layers:
            layer.visible = layer is shown
        if shown.ndim == 3:
            viewer.dims.set_point(0, float(np.mean(shown.extent.world[:, 0])))
        viewer.reset_view()
        _shot(viewer, artifacts_dir / f"foundation_sample_{shown.name.split()[0].lower()}.png")


def test_cli_view_builds_viewer(tmp_path):
    """The real command in its own process (a second napari.Viewer() in the test process would
    re-register the plugin's commands)."""
    import subprocess
    import sys

    shot = tmp_path / "view.png"
    result = subprocess.run(
        [sys.executable, "-m", "napari_synthseg.cli", "view", "--sample", "cxr", "--sample", "ct", "--no-block",
         "--screenshot", str(shot)], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.stat().st_size > 10_000
