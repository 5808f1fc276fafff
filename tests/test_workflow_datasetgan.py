"""The DatasetGAN job without Qt: defaults, checks, and the same classifier whichever way it is fitted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_synthseg.cli import build_parser
from napari_synthseg.errors import SynthsegError
from napari_synthseg.workflow import datasetgan as dgan


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    """A tiny generator trained for a few steps through the workflow job (as the CLI and panel do)."""
    import SimpleITK as sitk

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("wf_dgan")
    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    for i in range(6):
        cy, cx = rng.uniform(10, 22, 2)
        img = (40 + 150 * (((yy - cy) ** 2 + (xx - cx) ** 2) < 40)).astype(np.uint8)
        sitk.WriteImage(sitk.GetImageFromArray(img), str(images / f"img_{i}.png"))
    settings = dgan.TrainGeneratorSettings(size=32, steps=3, batch=4, channel_max=8, z_dim=8, checkpoint_every=0,
                                           preview_every=0)
    previews = []
    result = dgan.train_generator(images, folder / "G.safetensors", settings, device="cpu",
                                  preview=lambda step, imgs: previews.append((step, imgs.shape)))
    assert result.steps == 3 and previews and previews[-1][0] == 3
    return dgan.load_generator(result.generator_path)


def test_defaults_are_the_cli_flags_and_the_core_constants():
    from napari_synthseg.datasetgan.augment import DEFAULT_POLICY
    from napari_synthseg.datasetgan.classifier import DEFAULT_CLASSES

    # The workflow's literals must not drift from the core's own constants.
    assert dgan.DEFAULT_CLASSES == DEFAULT_CLASSES
    assert dgan.TrainGeneratorSettings().augment == DEFAULT_POLICY
    parser = build_parser()
    train = parser.parse_args(["train-generator", "--images", "x", "--out", "y.safetensors"])
    t = dgan.TrainGeneratorSettings()
    assert (train.size, train.steps, train.batch, train.lr, train.channel_max, train.z_dim, train.augment) == (
        t.size, t.steps, t.batch, t.lr, t.channel_max, t.z_dim, t.augment)
    sample = parser.parse_args(["datasetgan", "sample", "--generator", "g", "--n", "2", "--out", "o"])
    assert (sample.start_seed, sample.truncation) == (0, dgan.SampleSettings().truncation_psi)
    fit = parser.parse_args(["datasetgan", "fit", "--generator", "g", "--labels", "l", "--out", "c"])
    f = dgan.FitSettings()
    assert (fit.ensemble, fit.epochs, fit.max_per_class, fit.seed) == (f.ensemble, f.epochs, f.max_per_class, f.seed)
    gen = parser.parse_args(["datasetgan", "generate", "--generator", "g", "--classifier", "c", "--n", "3",
                             "--out", "o"])
    g = dgan.GenerateSettings()
    assert (gen.start_seed, gen.drop, gen.format, gen.layout, gen.truncation) == (
        g.start_seed, g.drop_fraction, g.fmt, g.layout, g.truncation_psi)
    # The generator the settings describe.
    gan = t.gan_config()
    assert (gan.size, gan.z_dim, gan.w_dim, gan.channel_max) == (128, 128, 128, 128)
    assert t.train_config().batch_size == 16


@pytest.mark.parametrize("text, names", [
    (None, dgan.DEFAULT_CLASSES),
    ("", dgan.DEFAULT_CLASSES),
    (" bg , lung ,, heart ", ("bg", "lung", "heart")),
    (["background", "nodule"], ("background", "nodule")),
])
def test_class_names(text, names):
    assert dgan.parse_class_names(text) == names


@pytest.mark.parametrize("text, message", [
    ("background", "at least two"),
    ("bg,lung,bg", "must differ"),
])
def test_bad_class_names(text, message):
    with pytest.raises(SynthsegError, match=message):
        dgan.parse_class_names(text)
    with pytest.raises(SynthsegError, match="give the class names"):
        dgan.parse_class_names("", None)


@pytest.mark.parametrize("make, message", [
    (lambda: dgan.TrainGeneratorSettings(size=48), "power of two"),
    (lambda: dgan.TrainGeneratorSettings(steps=0), "steps"),
    (lambda: dgan.TrainGeneratorSettings(lr=-1.0), "learning rate"),
    (lambda: dgan.TrainGeneratorSettings(augment="blur"), "unknown augmentation"),
    (lambda: dgan.SampleSettings(n=0), "number of samples"),
    (lambda: dgan.SampleSettings(truncation_psi=float("nan")), "truncation"),
    (lambda: dgan.FitSettings(ensemble=0), "ensemble"),
    (lambda: dgan.GenerateSettings(drop_fraction=1.0), "drop fraction"),
    (lambda: dgan.GenerateSettings(fmt="jpeg"), "format"),
    (lambda: dgan.GenerateSettings(layout="coco"), "layout"),
])
def test_settings_refuse_bad_values_in_one_line(make, message):
    with pytest.raises(SynthsegError, match=message) as info:
        make()
    assert "\n" not in str(info.value)


def test_more_seeds_follow_the_stack_at_its_truncation():
    settings = dgan.SampleSettings(n=3, start_seed=5, truncation_psi=0.7)
    assert dgan.more_seeds(settings, [], 0.7) == [5, 6, 7]
    assert dgan.more_seeds(settings, [5, 6, 9], 0.7) == [10, 11, 12]
    with pytest.raises(SynthsegError, match="truncation changed"):
        dgan.more_seeds(settings, [5, 6], 1.0)


def test_paths_are_checked_before_any_work(tmp_path):
    with pytest.raises(SynthsegError, match=".safetensors"):
        dgan.check_model_path(tmp_path / "G.pt")
    with pytest.raises(SynthsegError, match="does not exist"):
        dgan.check_model_path(tmp_path / "missing" / "G.safetensors")
    with pytest.raises(SynthsegError, match="choose a folder"):
        dgan.check_image_folder("")
    with pytest.raises(SynthsegError, match="not found"):
        dgan.load_generator(tmp_path / "nothing.safetensors")
    with pytest.raises(SynthsegError, match="not found"):
        dgan.train_generator(tmp_path / "no_images", tmp_path / "G.safetensors",
                             dgan.TrainGeneratorSettings(size=32, steps=1))


def _labels(generator, seeds, psi):
    images = dgan.sample_images(generator, seeds, psi)
    threshold = float(np.median(images))
    return [(img > threshold).astype(np.uint8) for img in images]


def test_panel_and_cli_fits_give_the_same_classifier(generator, tmp_path):
    """In-memory label maps (the panel) and a labelled sample folder (the CLI) make one classifier."""
    psi, seeds = 0.7, [3, 4, 5]
    maps = _labels(generator, seeds, psi)
    names = ("background", "bright")
    settings = dgan.FitSettings(ensemble=2, epochs=1, max_per_class=200, seed=4)

    with pytest.raises(SynthsegError, match="label at least 2"):
        dgan.check_labels(generator, maps[:1], names, settings)
    with pytest.raises(SynthsegError, match="holds label 2"):
        dgan.check_labels(generator, [m * 2 for m in maps], names, settings)

    panel = dgan.fit_classifier(generator, seeds[:2], maps[:2], names, psi, tmp_path / "panel.safetensors", settings)
    folder = dgan.save_labelled(generator, seeds, dict(zip(seeds[:2], maps[:2])), tmp_path / "labelled", psi, names)
    cli = dgan.fit_from_folder(generator, folder, tmp_path / "cli.safetensors", None, settings)

    assert panel.config.class_names == cli.config.class_names == names  # from samples.json
    for key in ("seeds", "fit", "generator_sha256", "pixels_per_class"):
        assert panel.provenance[key] == cli.provenance[key], key
    assert panel.provenance["fit"]["max_per_class"] == 200 and panel.provenance["fit"]["seed"] == 4
    assert cli.provenance["label_files"] == ["sample_000003_label.png", "sample_000004_label.png"]
    a, b = panel.module.state_dict(), cli.module.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)

    # Predictions of the stack, and labelled pairs citing both model files.
    labels, uncertainty = dgan.predict_stack(generator, panel, seeds, psi)
    assert labels.shape == uncertainty.shape == (3, 32, 32) and labels.max() <= 1
    assert (uncertainty >= 0).all()
    prov = dgan.generate(generator, panel, tmp_path / "pairs", dgan.GenerateSettings(n=2, drop_fraction=0.5))
    assert len(prov["seeds"]) == 2 and len(prov["dropped_seeds"]) == 2
    assert prov["classifier_sha256"] == panel.sha256 and prov["truncation_psi"] == psi
    assert json.loads((tmp_path / "pairs" / "provenance.json").read_text())["seeds"] == prov["seeds"]
    with pytest.raises(SynthsegError, match="choose an output folder"):
        dgan.generate(generator, panel, "  ")


def test_samples_for_labelling(generator, tmp_path):
    out = dgan.write_samples(generator, tmp_path / "s", dgan.SampleSettings(n=2, start_seed=9))
    manifest = json.loads((out / "samples.json").read_text())
    assert manifest["seeds"] == [9, 10] and manifest["truncation_psi"] == 0.7
    np.testing.assert_array_equal(dgan.sample_images(generator, [9], 0.7)[0],
                                  dgan.sample_images(generator, [9, 10], 0.7)[0])
