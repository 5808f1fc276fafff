"""The DatasetGAN labelling flow in a real napari (run under xvfb-run -a)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory):
    import torch

    from napari_synthseg.datasetgan import GanConfig, TrainConfig, train_generator
    from napari_synthseg.datasetgan.train import images_from_array

    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    imgs = np.stack([
        (40 + 150 * (((yy - rng.uniform(10, 22)) ** 2 + (xx - rng.uniform(10, 22)) ** 2) < 40)).astype(np.uint8)
        for _ in range(8)
    ])
    out = tmp_path_factory.mktemp("dgan_gui") / "G.safetensors"
    train_generator(images_from_array(imgs), out,
                    GanConfig(size=32, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16),
                    TrainConfig(steps=3, batch_size=4, checkpoint_every=0, preview_every=0))
    return out


def test_labelling_flow(make_napari_viewer, qtbot, tiny_generator, tmp_path, artifacts_dir):
    from napari_synthseg.widgets.datasetgan_widget import LABELS, PREDICTION, SAMPLES, UNCERTAINTY, DatasetGanWidget

    viewer = make_napari_viewer()
    viewer.window._qt_window.resize(1920, 1080)
    widget = DatasetGanWidget(viewer)
    viewer.window.add_dock_widget(widget, name="DatasetGAN", area="right")
    # Every default is the workflow's (the CLI's): one set of numbers for both.
    from napari_synthseg.workflow import datasetgan as dgan

    assert widget.n_spin.value() == dgan.SampleSettings().n
    assert widget.trunc_spin.value() == dgan.SampleSettings().truncation_psi
    assert widget.train_size_combo.currentText() == str(dgan.TrainGeneratorSettings().size)
    assert widget.train_width_spin.value() == dgan.TrainGeneratorSettings().channel_max
    assert widget.m_spin.value() == dgan.GenerateSettings().n
    assert widget.classes_edit.text() == ",".join(dgan.DEFAULT_CLASSES)

    # Fitting before anything is loaded is a one-line error, not a crash.
    assert widget.fit() is None and "load a generator" in widget.status.text()

    widget.load_generator(str(tiny_generator))
    assert "32x32" in widget.generator_info.text()
    widget.n_spin.setValue(4)
    widget.seed_spin.setValue(7)
    widget.classes_edit.setText("background,bright")
    widget._update_legend()
    assert "1 bright" in widget.legend.text()
    worker = widget.sample()
    assert worker is not None and widget.busy  # sampled off the UI thread
    assert widget.sample() is None  # a second click while busy is refused, not queued
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    images, labels = viewer.layers[SAMPLES], viewer.layers[LABELS]
    assert images.data.shape == labels.data.shape == (4, 32, 32)
    assert images.metadata["seeds"] == [7, 8, 9, 10]

    # One labelled slice is too few: refused at the click.
    thr = float(np.median(images.data[:2]))
    labels.data[0] = (images.data[0] > thr).astype(np.uint8)
    assert widget.fit() is None and PREDICTION not in viewer.layers
    assert "label at least 2 samples" in widget.status.text()
    labels.data[1] = (images.data[1] > thr).astype(np.uint8)
    labels.refresh()
    widget.ensemble_spin.setValue(3)
    widget.epochs_spin.setValue(3)
    assert widget.labelled_indices() == [0, 1]
    worker = widget.fit()
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert widget.classifier is not None
    pred = viewer.layers[PREDICTION]
    assert pred.data.shape == (4, 32, 32) and UNCERTAINTY in viewer.layers
    # The fit reproduces the labelled slices (reference: the hand-made label maps).
    for i in (0, 1):
        ref, got = labels.data[i] == 1, pred.data[i] == 1
        assert (ref & got).sum() / max((ref | got).sum(), 1) > 0.7

    # New samples get a prediction as they arrive; the shown prediction of the others (and any
    # correction made in it) is kept, and equals a fresh prediction of the whole stack.
    from napari_synthseg.workflow.datasetgan import predict_stack

    viewer.layers[PREDICTION].data[2, 0, 0] = 1 - viewer.layers[PREDICTION].data[2, 0, 0]
    corrected = np.array(viewer.layers[PREDICTION].data[:4])
    widget.n_spin.setValue(2)
    assert widget.sample(append=True) is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert widget.seeds == [7, 8, 9, 10, 11, 12]
    assert viewer.layers[PREDICTION].data.shape == (6, 32, 32)
    np.testing.assert_array_equal(viewer.layers[PREDICTION].data[:4], corrected)
    fresh, _ = predict_stack(widget.generator, widget.classifier, [11, 12], 0.7)
    np.testing.assert_array_equal(viewer.layers[PREDICTION].data[4:], fresh)
    assert labels.data.shape == (6, 32, 32) and not labels.data[4:].any()

    # Take the prediction of slice 3 as another labelled example (after a "correction").
    viewer.dims.set_current_step(0, 3)
    viewer.layers[PREDICTION].data[3, :2, :] = 0
    widget.accept_prediction()
    np.testing.assert_array_equal(labels.data[3], viewer.layers[PREDICTION].data[3])
    assert widget.labelled_indices() == [0, 1, 3]
    viewer.layers[UNCERTAINTY].visible = True
    viewer.reset_view()
    viewer.window._qt_window.grab().save(str(artifacts_dir / "datasetgan_labelling.png"))

    # The labelled stack round-trips into the CLI's sample-folder format.
    from napari_synthseg.datasetgan import read_labelled_samples

    folder = widget.save_labelled(tmp_path / "labelled")
    back = read_labelled_samples(folder, widget.generator)
    assert back.seeds == [7, 8, 10] and back.class_names == ("background", "bright")
    for seed, lab in zip(back.seeds, back.labels):
        np.testing.assert_array_equal(lab, labels.data[widget.seeds.index(seed)])

    saved = widget.save_classifier(tmp_path / "C.safetensors")
    from napari_synthseg.models import file_sha256

    assert file_sha256(saved) == widget.classifier.sha256

    # The classifier's provenance holds every fit setting, the same as a CLI fit records.
    fit_prov = widget.classifier.provenance
    assert fit_prov["fit"]["max_per_class"] == dgan.FitSettings().max_per_class
    assert fit_prov["fit"]["epochs"] == 3 and fit_prov["seeds"] == [7, 8]  # fitted before slice 3 was added

    widget.m_spin.setValue(3)
    widget.drop_spin.setValue(0.25)
    widget.layout_combo.setCurrentText("nnunet")
    out = tmp_path / "Dataset901_Toy"
    assert widget.generate(str(out)) is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    prov = json.loads((out / "provenance.json").read_text())
    assert len(prov["seeds"]) == 3 and len(prov["dropped_seeds"]) == 1
    assert prov["classifier_sha256"] == widget.classifier.sha256
    assert widget.last_result["seeds"] == prov["seeds"]
    assert (out / "dataset.json").exists() and len(list((out / "labelsTr").iterdir())) == 3
    viewer.window._qt_window.grab().save(str(artifacts_dir / "datasetgan_generated.png"))
    widget.grab().save(str(artifacts_dir / "datasetgan_panel.png"))
    assert widget.width() <= 420


def test_train_generator_in_widget_shows_previews(make_napari_viewer, qtbot, tmp_path, artifacts_dir):
    import SimpleITK as sitk

    from napari_synthseg.widgets.datasetgan_widget import TRAINING, DatasetGanWidget

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        sitk.WriteImage(sitk.GetImageFromArray(rng.integers(0, 255, (40, 40), dtype=np.uint8)), str(folder / f"{i}.png"))
    viewer = make_napari_viewer()
    viewer.window._qt_window.resize(1400, 1000)
    widget = DatasetGanWidget(viewer)
    viewer.window.add_dock_widget(widget, name="DatasetGAN", area="right")
    assert widget.train("", "") is None  # nothing chosen: one-line error
    assert "folder of training images" in widget.status.text()
    assert widget.train(str(folder), str(tmp_path / "G.pt")) is None and ".safetensors" in widget.status.text()
    widget.train_size_combo.setCurrentText("32")
    widget.train_steps_spin.setValue(2)
    widget.train_width_spin.setValue(4)
    widget.train_batch_spin.setValue(4)
    out = tmp_path / "G.safetensors"
    assert widget.train(str(folder), str(out)) is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert out.exists() and widget.generator is not None
    assert "2 steps" in widget.generator_info.text()
    preview = viewer.layers[TRAINING]
    assert preview.data.shape == (64, 128) and preview.metadata["step"] == 2
    viewer.window._qt_window.grab().save(str(artifacts_dir / "datasetgan_training_preview.png"))
