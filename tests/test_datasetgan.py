"""DatasetGAN core: generator, augmentation, training, features, classifier ensemble, sampling, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from napari_synthseg.cli import main as cli_main
from napari_synthseg.datasetgan import (
    FeatureStore,
    FitConfig,
    GanConfig,
    PixelClassifierConfig,
    TrainConfig,
    feature_channels,
    fit_ensemble,
    generate_pairs,
    image_and_features,
    load_classifier,
    load_generator,
    load_image_folder,
    predict_features,
    read_labelled_samples,
    sample_images,
    save_classifier,
    train_generator,
    write_samples,
)
from napari_synthseg.datasetgan.augment import diff_augment
from napari_synthseg.datasetgan.classifier import jensen_shannon
from napari_synthseg.datasetgan.features import balanced_pixel_indices
from napari_synthseg.datasetgan.generator import Generator, ModulatedConv2d, seeded_inputs
from napari_synthseg.datasetgan.train import images_from_array, state_path_for
from napari_synthseg.errors import CancelledError, SynthsegError
from napari_synthseg.utils.progress import CancelToken

TINY = dict(size=32, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16)
FAST_FIT = FitConfig(epochs=4, batch_size=512, max_per_class=300, lr=3e-3)


def _toy_images(n: int = 12, size: int = 32, seed: int = 0) -> np.ndarray:
    """Bright discs of random size/position on a dark gradient: easy structure to learn."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        r = rng.uniform(0.15, 0.3) * size
        img = 40 + 60 * yy / size + 140 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)
        out.append(np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny generator after a few CPU steps, saved to disk (shared by the tests below)."""
    torch.set_num_threads(2)
    folder = tmp_path_factory.mktemp("dgan")
    out = folder / "G.safetensors"
    result = train_generator(
        images_from_array(_toy_images()),
        out,
        GanConfig(**TINY),
        TrainConfig(steps=4, batch_size=4, checkpoint_every=0, preview_every=0, r1_every=2),
    )
    return folder, result


def test_modulated_conv_matches_per_sample_weights():
    # Independent reference: build each sample's modulated, demodulated kernel explicitly.
    torch.manual_seed(0)
    conv = ModulatedConv2d(5, 7, 3, w_dim=6)
    x, w = torch.randn(3, 5, 9, 9), torch.randn(3, 6)
    got = conv(x, w)
    style = conv.affine(w)
    ref = []
    for b in range(3):
        k = conv.weight * conv.scale * style[b][None, :, None, None]
        k = k / torch.sqrt(k.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        ref.append(F.conv2d(x[b : b + 1], k, padding=1))
    torch.testing.assert_close(got, torch.cat(ref), rtol=1e-4, atol=1e-5)


def test_generator_shapes_features_and_seeds():
    torch.manual_seed(0)
    cfg = GanConfig(**TINY)
    G = Generator(cfg).eval()
    z, noise = seeded_inputs(cfg, [3, 4], "cpu")
    img, feats = G(z, noise=noise, return_features=True)
    assert img.shape == (2, 1, 32, 32)
    assert [f.shape[1] for f in feats.maps] == G.feature_channels()
    assert feature_channels(G) == sum(cfg.channels(r) for r in (4, 8, 16, 32)) * 2
    # The same seed gives the same image whatever batch it is drawn in.
    a = sample_images(G, [1, 2, 3])
    b = sample_images(G, [3, 2, 1])
    np.testing.assert_array_equal(a, b[::-1])
    assert not np.array_equal(a[0], a[1])
    # Truncation 0 collapses every sample onto w_avg: images differ only by noise.
    t0 = sample_images(G, [1, 2], truncation_psi=0.0).astype(float)
    t1 = a[:2].astype(float)
    assert np.abs(t0[0] - t0[1]).mean() < np.abs(t1[0] - t1[1]).mean()
    with pytest.raises(SynthsegError, match="power of two"):
        GanConfig(size=48)


def test_diff_augment_keeps_gradients_and_cuts_out():
    torch.manual_seed(0)
    x = torch.ones(64, 1, 16, 16, requires_grad=True)
    y = diff_augment(x, "cutout")
    # Cutout removes a 8x8 square, clipped at the border: at most a quarter of the pixels.
    zero_frac = (y == 0).float().mean().item()
    assert 0.05 < zero_frac <= 0.25
    diff_augment(x, "color,translation,cutout").sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # Translation moves content by whole pixels: values are a subset of input values and 0.
    ramp = torch.arange(256.0).reshape(1, 1, 16, 16).repeat(4, 1, 1, 1)
    moved = diff_augment(ramp, "translation")
    assert set(moved.unique().tolist()) <= set(range(256))
    with pytest.raises(SynthsegError, match="unknown augmentation"):
        diff_augment(x, "flip")


def test_train_resume_cancel_and_provenance(trained, tmp_path):
    folder, result = trained
    assert result.steps == 4 and result.images_seen == 16
    gen = load_generator(result.generator_path)
    prov = gen.provenance
    assert prov["steps"] == 4 and prov["final"] is True
    assert len(prov["data_sha256"]) == 64 and prov["history"][0]["steps"] == [0, 4]
    assert state_path_for(result.generator_path).exists()

    # Resume from a copy: continues the step count and keeps the history.
    import shutil

    out = tmp_path / "G.safetensors"
    shutil.copy(result.generator_path, out)
    shutil.copy(state_path_for(result.generator_path), state_path_for(out))
    tc = TrainConfig(steps=6, batch_size=4, checkpoint_every=0, preview_every=0)
    seen = []
    res2 = train_generator(images_from_array(_toy_images()), out, train_config=tc, resume=out,
                           preview=lambda step, imgs: seen.append((step, imgs.shape)))
    assert res2.steps == 6
    prov2 = load_generator(out).provenance
    assert [h["steps"] for h in prov2["history"]] == [[0, 4], [4, 6]]
    assert seen == [(6, (8, 32, 32))]
    # EMA and raw generator weights differ after training (EMA lags).
    before = load_generator(result.generator_path).module.state_dict()
    after = load_generator(out).module.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)

    # Cancel writes a resumable checkpoint first.
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        train_generator(images_from_array(_toy_images()), tmp_path / "C.safetensors", GanConfig(**TINY),
                        TrainConfig(steps=5, batch_size=4), cancel=token)
    assert load_generator(tmp_path / "C.safetensors").provenance["final"] is False

    with pytest.raises(SynthsegError, match="px"):
        train_generator(images_from_array(_toy_images(size=64)), tmp_path / "D.safetensors",
                        GanConfig(**TINY), tc)


def test_balanced_indices_and_feature_store():
    rng = np.random.default_rng(0)
    labels = np.zeros((20, 20), np.int64)
    labels[:2, :3] = 2  # 6 rare pixels
    labels[5:15, 5:15] = 1  # 100 pixels
    idx = balanced_pixel_indices(labels, 50, rng)
    counts = np.bincount(labels.reshape(-1)[idx], minlength=3)
    assert counts.tolist() == [50, 50, 6]
    assert len(np.unique(idx)) == idx.size

    feats = torch.arange(3 * 400, dtype=torch.float32).reshape(3, 20, 20).half()
    with FeatureStore(3, max_per_class=50, seed=1) as store:
        store.add(feats, labels)
        store.add(feats, labels)
        x, y = store.arrays()
        assert x.shape == (212, 3) and x.dtype == np.float16 and isinstance(x, np.memmap)
        # Every stored row is the feature vector of a pixel with that label.
        flat = feats.reshape(3, -1).T.numpy()
        lab = labels.reshape(-1)
        for row, cls in zip(x[:106], y[:106]):
            pix = np.flatnonzero((flat == row).all(1))
            assert pix.size == 1 and lab[pix[0]] == cls
        assert store.class_counts == {0: 100, 1: 100, 2: 12}
        mean, std = store.channel_stats()
        np.testing.assert_allclose(mean, np.asarray(x, np.float64).mean(0), rtol=1e-5)
        path = store.path
    assert not path.exists()


def test_jensen_shannon_reference_values():
    same = torch.tensor([[[0.2, 0.8]], [[0.2, 0.8]]])
    assert jensen_shannon(same).item() == pytest.approx(0.0, abs=1e-6)
    opposite = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert jensen_shannon(opposite).item() == pytest.approx(math.log(2), rel=1e-5)


def _threshold_labels(images: np.ndarray, thr: float) -> list[np.ndarray]:
    return [(img > thr).astype(np.int64) for img in images]


def test_fit_predict_save_load_and_mismatch(trained, tmp_path):
    folder, result = trained
    gen = load_generator(result.generator_path)
    G = gen.module
    train_seeds, test_seeds = [10, 11], [12, 13]
    imgs = sample_images(G, train_seeds + test_seeds)
    thr = float(np.median(imgs[:2]))
    # Two hand-made label maps: "bright" vs "dark" by a threshold on the sample itself.
    labels = _threshold_labels(imgs[:2], thr)
    torch.manual_seed(0)
    ens, prov = fit_ensemble(
        G, train_seeds, labels, ("dark", "bright"), generator_sha256=gen.sha256,
        config=PixelClassifierConfig(in_features=0, hidden=(32,), ensemble_size=3), fit=FAST_FIT,
    )
    assert prov["seeds"] == train_seeds and prov["pixels"] > 0
    # A 4-step generator's features do not generalise across seeds (the benchmark measures
    # that on a trained one); here: the ensemble reproduces the hand labels it was fitted on,
    # and it is less sure about unseen samples than about the labelled ones.
    scores = []
    for seed, img in zip(train_seeds + test_seeds, imgs):
        _, feats = image_and_features(G, seed)
        pred = predict_features(ens, feats)
        assert pred.probabilities.shape == (2, 32, 32)
        np.testing.assert_allclose(pred.probabilities.sum(0), 1.0, atol=1e-5)
        assert (pred.uncertainty >= 0).all() and pred.uncertainty.max() <= math.log(3) + 1e-6
        scores.append(pred.score)
        if seed in train_seeds:
            ref, got = img > thr, pred.labels == 1
            iou = (ref & got).sum() / max((ref | got).sum(), 1)
            assert iou > 0.8, iou
    assert min(scores[2:]) > max(scores[:2])

    # Round trip through safetensors gives identical predictions.
    path = save_classifier(ens, tmp_path / "C.safetensors", prov)
    loaded = load_classifier(path, generator=gen)
    _, feats = image_and_features(G, 12)
    np.testing.assert_array_equal(predict_features(loaded.module, feats).labels, predict_features(ens, feats).labels)
    assert loaded.provenance["seeds"] == train_seeds
    g2 = load_generator(result.generator_path)
    np.testing.assert_array_equal(sample_images(g2.module, [5]), sample_images(G, [5]))

    # A classifier is tied to its generator.
    other = tmp_path / "G2.safetensors"
    train_generator(images_from_array(_toy_images(seed=1)), other, GanConfig(**TINY),
                    TrainConfig(steps=1, batch_size=4, checkpoint_every=0, preview_every=0))
    with pytest.raises(SynthsegError, match="not on this one"):
        load_classifier(path, generator=load_generator(other))
    bigger = tmp_path / "G3.safetensors"
    train_generator(images_from_array(_toy_images(size=64)), bigger, GanConfig(**{**TINY, "size": 64}),
                    TrainConfig(steps=1, batch_size=4, checkpoint_every=0, preview_every=0))
    with pytest.raises(SynthsegError, match="fit a classifier for this generator"):
        load_classifier(path, generator=load_generator(bigger))
    with pytest.raises(SynthsegError, match="features per pixel"):
        predict_features(ens, torch.zeros(7, 4, 4, dtype=torch.float16))

    # Bad label sets.
    with pytest.raises(SynthsegError, match="at least 2"):
        fit_ensemble(G, [10], labels[:1], ("dark", "bright"), fit=FAST_FIT)
    with pytest.raises(SynthsegError, match="nodule is not labelled"):
        fit_ensemble(G, train_seeds, labels, ("dark", "bright", "nodule"), fit=FAST_FIT)
    with pytest.raises(SynthsegError, match="generator makes 32x32"):
        fit_ensemble(G, train_seeds, [labels[0], np.zeros((16, 16), np.int64)], ("dark", "bright"), fit=FAST_FIT)
    with pytest.raises(SynthsegError, match="holds label 5"):
        fit_ensemble(G, train_seeds, [labels[0], labels[1] * 5], ("dark", "bright"), fit=FAST_FIT)


def test_sample_and_generate_folders(trained, tmp_path):
    folder, result = trained
    gen = load_generator(result.generator_path)
    samples = write_samples(gen, 3, tmp_path / "samples", start_seed=20, truncation_psi=0.8)
    manifest = json.loads((samples / "samples.json").read_text())
    assert manifest["seeds"] == [20, 21, 22] and manifest["generator_sha256"] == gen.sha256
    png = sitk.GetArrayFromImage(sitk.ReadImage(str(samples / "sample_000021.png")))
    np.testing.assert_array_equal(png, sample_images(gen.module, [21], truncation_psi=0.8)[0])
    with pytest.raises(SynthsegError, match="already exists"):
        write_samples(gen, 1, samples)

    thr = float(np.median(png))
    for seed in (20, 22):
        img = sitk.GetArrayFromImage(sitk.ReadImage(str(samples / f"sample_{seed:06d}.png")))
        sitk.WriteImage(sitk.GetImageFromArray((img > thr).astype(np.uint8)), str(samples / f"sample_{seed:06d}_label.png"))
    labelled = read_labelled_samples(samples, gen)
    assert labelled.seeds == [20, 22] and labelled.truncation_psi == 0.8

    ens, prov = fit_ensemble(gen.module, labelled.seeds, labelled.labels, ("dark", "bright"),
                             generator_sha256=gen.sha256, truncation_psi=0.8,
                             config=PixelClassifierConfig(in_features=0, hidden=(16,), ensemble_size=2),
                             fit=FitConfig(epochs=1, max_per_class=200))
    clf = load_classifier(save_classifier(ens, tmp_path / "C.safetensors", prov), generator=gen)
    prov = generate_pairs(gen, clf, 4, tmp_path / "pairs", start_seed=100, drop_fraction=0.5, fmt="nifti")
    assert len(prov["seeds"]) == 4 and len(prov["dropped_seeds"]) == 4
    # The dropped ones are the most uncertain.
    unc = prov["uncertainty_by_seed"]
    assert max(unc[str(s)] for s in prov["seeds"]) <= min(unc[str(s)] for s in prov["dropped_seeds"])
    assert prov["classifier_sha256"] == clf.sha256 and prov["generator_sha256"] == gen.sha256
    assert prov["classes"] == {"0": "dark", "1": "bright"}
    on_disk = json.loads((tmp_path / "pairs" / "provenance.json").read_text())
    assert on_disk["seeds"] == prov["seeds"]
    for pair in prov["pairs"]:
        lab = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pairs" / pair["label"])))
        img = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pairs" / pair["image"])))
        assert lab.shape == img.shape == (32, 32) and set(np.unique(lab)) <= {0, 1}
    assert len(list((tmp_path / "pairs" / "images").iterdir())) == 4

    # The same pairs as an nnU-Net v2 raw dataset.
    root = tmp_path / "Dataset501_Gen"
    prov_nn = generate_pairs(gen, clf, 4, root, start_seed=100, drop_fraction=0.5, fmt="png", layout="nnunet")
    assert prov_nn["seeds"] == prov["seeds"]
    dataset = json.loads((root / "dataset.json").read_text())
    assert dataset["labels"] == {"dark": 0, "bright": 1} and dataset["numTraining"] == 4
    assert dataset["file_ending"] == ".png" and dataset["channel_names"] == {"0": "CXR"}
    cases = sorted(p.name[: -len(".png")] for p in (root / "labelsTr").iterdir())
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == [f"{c}_0000.png" for c in cases]
    assert [f"gen_{s:07d}" for s in prov["seeds"]] == cases

    # A labelled folder written in one go (what the widget saves) reads back the same.
    from napari_synthseg.datasetgan.sampling import write_labelled_samples

    lab = np.zeros((32, 32), np.int64)
    lab[3:9, 4:20] = 2
    folder = write_labelled_samples(gen, [5, 6, 7], {6: lab}, tmp_path / "lab", 0.9, ("bg", "a", "b"))
    back = read_labelled_samples(folder, gen)
    assert back.seeds == [6] and back.class_names == ("bg", "a", "b") and back.truncation_psi == 0.9
    np.testing.assert_array_equal(back.labels[0], lab)
    png = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "sample_000007.png")))
    np.testing.assert_array_equal(png, sample_images(gen.module, [7], truncation_psi=0.9)[0])
    with pytest.raises(SynthsegError, match="not among the samples"):
        write_labelled_samples(gen, [5], {9: lab}, tmp_path / "lab2", 0.9)

    # Samples from another generator are refused.
    other = tmp_path / "G2.safetensors"
    train_generator(images_from_array(_toy_images(seed=2)), other, GanConfig(**TINY),
                    TrainConfig(steps=1, batch_size=4, checkpoint_every=0, preview_every=0))
    with pytest.raises(SynthsegError, match="drawn from generator"):
        read_labelled_samples(samples, load_generator(other))


def test_image_folder_loading_and_mixed_sizes(tmp_path, shared_data):
    imgs = load_image_folder(shared_data / "cxr" / "nih_nodule", 32)
    assert imgs.pixels.shape == (20, 32, 32) and imgs.pixels.dtype == np.uint8
    assert imgs.source_shape == (1024, 1024) and len(imgs.sha256) == 64
    # Downsampling is area averaging: compare one image with an independent block mean.
    first = sitk.GetArrayFromImage(sitk.ReadImage(imgs.paths[0])).astype(float)
    ref = first.reshape(32, 32, 32, 32).mean(axis=(1, 3))
    assert np.abs(imgs.pixels[0] - ref).max() <= 1.0

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((40, 40), np.uint8)), str(mixed / "a.png"))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((50, 50), np.uint8)), str(mixed / "b.png"))
    with pytest.raises(SynthsegError, match="mixed sizes"):
        load_image_folder(mixed, 32)
    with pytest.raises(SynthsegError, match="no images"):
        load_image_folder(_empty(tmp_path), 32)


def _empty(tmp_path):
    p = tmp_path / "empty"
    p.mkdir()
    return p


def test_cli_end_to_end(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for i, img in enumerate(_toy_images(6, size=64)):
        sitk.WriteImage(sitk.GetImageFromArray(img), str(images / f"img_{i}.png"))
    gpath = tmp_path / "G.safetensors"
    common = ["--channel-max", "8", "--z-dim", "8", "--batch", "4", "--device", "cpu"]
    assert cli_main(["train-generator", "--images", str(images), "--size", "32", "--out", str(gpath),
                     "--steps", "2", *common, "--previews", str(tmp_path / "prev")]) == 0
    assert (tmp_path / "prev" / "preview_0000002.png").exists()
    assert cli_main(["train-generator", "--images", str(images), "--size", "32", "--out", str(gpath),
                     "--steps", "3", "--resume", *common]) == 0
    assert load_generator(gpath).provenance["steps"] == 3

    samples = tmp_path / "samples"
    assert cli_main(["datasetgan", "sample", "--generator", str(gpath), "--n", "3", "--out", str(samples)]) == 0
    cpath = tmp_path / "C.safetensors"
    # No labels painted yet: a one-line user error, exit status 2.
    assert cli_main(["datasetgan", "fit", "--generator", str(gpath), "--labels", str(samples),
                     "--out", str(cpath), "--classes", "bg,fg"]) == 2
    assert "label at least 2 samples" in capsys.readouterr().err
    for seed in (0, 1):
        img = sitk.GetArrayFromImage(sitk.ReadImage(str(samples / f"sample_{seed:06d}.png")))
        lab = np.zeros_like(img)
        lab[8:20, 8:20] = 1
        sitk.WriteImage(sitk.GetImageFromArray(lab), str(samples / f"sample_{seed:06d}_label.png"))
    assert cli_main(["datasetgan", "fit", "--generator", str(gpath), "--labels", str(samples),
                     "--out", str(cpath), "--classes", "bg,fg", "--ensemble", "2", "--epochs", "1"]) == 0
    out = tmp_path / "pairs"
    assert cli_main(["datasetgan", "generate", "--generator", str(gpath), "--classifier", str(cpath),
                     "--n", "2", "--out", str(out)]) == 0
    prov = json.loads((out / "provenance.json").read_text())
    assert len(prov["pairs"]) == 2 and (out / prov["pairs"][0]["label"]).exists()
    # A classifier and a generator that do not belong together.
    g2 = tmp_path / "G2.safetensors"
    assert cli_main(["train-generator", "--images", str(images), "--size", "32", "--out", str(g2),
                     "--steps", "1", *common]) == 0
    capsys.readouterr()
    assert cli_main(["datasetgan", "generate", "--generator", str(g2), "--classifier", str(cpath),
                     "--n", "2", "--out", str(tmp_path / "bad")]) == 2
    assert "fitted on generator" in capsys.readouterr().err
