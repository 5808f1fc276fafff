"""Learned inpainting: tiny models trained from scratch here, save/load, modes, samples, bad input."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from napari_synthseg.cli import main as cli_main
from napari_synthseg.errors import CancelledError, SynthsegError
from napari_synthseg.fill import get_filler
from napari_synthseg.inpaint import (Inpainter, InpainterConfig, InpaintNet, LearnedFiller,
                                     TrainConfig, builtin_model_path, inpaint_samples,
                                     train_inpainter)
from napari_synthseg.inpaint.masks import (blob_mask, outpaint_mask, random_training_mask,
                                           stroke_mask)
from napari_synthseg.inpaint.network import push_pull_fill
from napari_synthseg.io import read_image
from napari_synthseg.models import read_model_info, register_architecture, save_model
from napari_synthseg.utils.progress import CancelToken

TINY = dict(base_channels=8, bottleneck_channels=16, n_ffc_blocks=1)


def _texture(rng, shape=(96, 96), offset=-600.0):
    """Smooth anatomy-like background plus fine texture, in HU-like native units."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    base = offset + 150 * np.sin(xx / 17.0 + rng.uniform(0, 6)) + 100 * np.cos(yy / 23.0)
    return (base + 20 * rng.standard_normal(shape)).astype(np.float32)


def _write(arr, path, spacing=(0.7, 0.7)):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing[: arr.ndim])
    sitk.WriteImage(img, str(path))
    return path


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from 2 threads, and on busy shared cores the OpenMP threads of
    one process wait on each other (measured: 47 s instead of 5 s for the tiny training)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    """Six textured images; the last three carry a bright 'lesion' disc and its mask."""
    root = tmp_path_factory.mktemp("inpaint_data")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        arr = _texture(rng)
        if i >= 3:
            m = blob_mask(arr.shape, rng, radius=8.0, irregularity=0.0)
            arr[m] += 400.0
            _write(m.astype(np.uint8), root / "masks" / f"img{i}_mask.mha")
        _write(arr, root / "images" / f"img{i}.mha")
    return root


@pytest.fixture(scope="module")
def tiny_model(train_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    train_inpainter([train_dir / "images"], out, masks_dir=train_dir / "masks",
                    model_config=InpainterConfig(**TINY, modes=("healthy", "lesion", "outpaint")),
                    train_config=TrainConfig(steps=30, batch=4, crop=48, adv_weight=0.01,
                                             fm_weight=0.1, adv_start=10, checkpoint_every=0,
                                             lr=3e-3),
                    device="cpu")
    return out


# ---------------------------------------------------------------- training / save / load
def test_training_writes_model_with_provenance(tiny_model, train_dir):
    info = read_model_info(tiny_model)
    prov = info["provenance"]
    assert info["architecture"] == "synthseg-inpaint-ffc-unet-v1"
    assert info["config"]["base_channels"] == 8
    assert prov["steps"] == 30 and prov["train_seconds"] > 0
    # data hashes are the files' real sha256 (independent reference: hashlib)
    expect = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
              for p in (train_dir / "images").iterdir()}
    assert {f["name"]: f["sha256"] for f in prov["data"]["files"]} == expect
    assert prov["metrics"]["train_hole_l1_norm"] > 0
    assert json.dumps(prov)  # JSON, no pickle


def test_trained_model_beats_context_mean(tiny_model):
    """Filling with the model must be better than the trivial mean-of-context fill."""
    rng = np.random.default_rng(5)
    img = _texture(rng, (80, 80))
    m = blob_mask(img.shape, rng, radius=9.0, centre=(40, 40))
    out = LearnedFiller(tiny_model).fill(img, m, seed=0)
    err = np.abs(out[m] - img[m]).mean()
    naive = np.abs(img[~m].mean() - img[m]).mean()
    assert err < naive


def test_resume_continues_and_refuses_when_done(train_dir, tmp_path):
    out = tmp_path / "r.safetensors"
    cfg = InpainterConfig(**TINY)
    train_inpainter([train_dir / "images"], out, model_config=cfg,
                    train_config=TrainConfig(steps=4, batch=2, crop=32, checkpoint_every=0))
    first = read_model_info(out)["provenance"]
    train_inpainter([train_dir / "images"], out, resume=True,
                    train_config=TrainConfig(steps=7, batch=3, crop=32, checkpoint_every=0))
    second = read_model_info(out)["provenance"]
    assert first["steps"] == 4 and second["steps"] == 7
    assert second["train_seconds"] >= first["train_seconds"]
    # throughput covers both segments (4 x 2 + 3 x 3 crops), not only the last one
    assert second["crops_seen"] == 17
    seconds = second["train_seconds"]  # stored rounded to 0.1 s
    assert 17 / (seconds + 0.06) <= second["metrics"]["images_per_second"] <= 17 / max(seconds - 0.06, 0.01)
    with pytest.raises(SynthsegError, match="already has 7 steps"):
        train_inpainter([train_dir / "images"], out, resume=True,
                        train_config=TrainConfig(steps=7, batch=2, crop=32))


def test_cancel_saves_checkpoint_and_raises(train_dir, tmp_path):
    out = tmp_path / "c.safetensors"
    token = CancelToken()
    seen = []

    def progress(step, total, msg):
        seen.append(step)
        if step >= 2:
            token.cancel()

    with pytest.raises(CancelledError):
        train_inpainter([train_dir / "images"], out, model_config=InpainterConfig(**TINY),
                        train_config=TrainConfig(steps=50, batch=2, crop=32, checkpoint_every=0),
                        progress=progress, cancel=token)
    prov = read_model_info(out)["provenance"]
    assert prov["steps"] == 2 and prov["metrics"]["cancelled"] is True
    assert seen[0] == 0


def test_ctrl_c_saves_a_resumable_checkpoint(train_dir, tmp_path):
    """Ctrl+C in the CLI (KeyboardInterrupt) leaves a checkpoint that --resume continues."""
    out = tmp_path / "k.safetensors"

    def progress(step, total, msg):
        if step >= 3:
            raise KeyboardInterrupt

    tc = dict(batch=2, crop=32, checkpoint_every=0)
    with pytest.raises(KeyboardInterrupt):
        train_inpainter([train_dir / "images"], out, model_config=InpainterConfig(**TINY),
                        train_config=TrainConfig(steps=50, **tc), progress=progress)
    prov = read_model_info(out)["provenance"]
    assert prov["steps"] == 3 and prov["metrics"]["cancelled"] is True
    train_inpainter([train_dir / "images"], out, model_config=InpainterConfig(**TINY),
                    train_config=TrainConfig(steps=5, **tc), resume=True)
    assert read_model_info(out)["provenance"]["steps"] == 5


def test_lesion_mode_needs_masks(train_dir, tmp_path):
    with pytest.raises(SynthsegError, match="lesion mode needs lesion masks"):
        train_inpainter([train_dir / "images"], tmp_path / "x.safetensors",
                        model_config=InpainterConfig(**TINY, modes=("healthy", "lesion")),
                        train_config=TrainConfig(steps=1, batch=1, crop=32))


def test_hole_losses_match_numpy_references():
    from napari_synthseg.inpaint.train import hole_loss

    rng = np.random.default_rng(11)
    pred = rng.normal(size=(3, 1, 16, 16)).astype(np.float32)
    target = rng.normal(size=(3, 1, 16, 16)).astype(np.float32)
    hole = np.zeros((3, 1, 16, 16), np.float32)
    hole[0, 0, 2:6, 2:6] = 1
    hole[1, 0, 4:14, 3:9] = 1
    hole[2, 0, 0:2, 0:16] = 1
    h = hole > 0
    d = pred - target
    t = [torch.from_numpy(a) for a in (pred, target, hole)]
    assert float(hole_loss("l1", *t)) == pytest.approx(np.abs(d[h]).mean(), rel=1e-5)
    assert float(hole_loss("mse", *t)) == pytest.approx((d[h] ** 2).mean(), rel=1e-5)
    # psnr: every crop counts by its own relative error, not by its share of the pixels
    per = [np.mean(d[i][h[i]] ** 2) for i in range(3)]
    assert float(hole_loss("psnr", *t)) == pytest.approx(np.mean(np.log(np.array(per) + 1e-6)),
                                                          rel=1e-5)
    # mse-native: squared errors back in native units (crop i normalised by scale[i]), pooled
    scale = np.array([2.0, 10.0, 5.0], np.float32)
    native = np.concatenate([(d[i][h[i]] * scale[i]) ** 2 for i in range(3)])
    expect = native.sum() / h.sum() / np.mean(scale ** 2)
    assert float(hole_loss("mse-native", *t, torch.from_numpy(scale))) == pytest.approx(expect, rel=1e-5)
    with pytest.raises(SynthsegError, match="scale"):
        hole_loss("mse-native", *t)
    with pytest.raises(SynthsegError, match="unknown hole loss"):
        hole_loss("ssim", *t)


def test_nodule_samples_are_centred_blobs_in_the_lung(tmp_path):
    """Nodule-shaped holes: radius range per 1024 px, centred in the allowed region."""
    from napari_synthseg.inpaint.data import CropSampler, load_training_images

    rng = np.random.default_rng(2)
    arr = (100 + 20 * rng.standard_normal((512, 512))).astype(np.float32)
    organ = np.zeros(arr.shape, np.uint8)
    organ[100:400, 60:200] = 1  # the only region where centres may fall (after erosion)
    (tmp_path / "img").mkdir()
    (tmp_path / "org").mkdir()
    _write(arr, tmp_path / "img" / "a.mha")
    _write(organ, tmp_path / "org" / "a.mha")
    items = load_training_images([tmp_path / "img"], organ_dir=tmp_path / "org",
                                 nodule_centres=True)
    c = items[0].centres[0]
    assert c.any() and not (c & (organ == 0)).any()
    s = CropSampler(items, 64, ("healthy",), nodule_prob=1.0, nodule_radius=(10.0, 20.0),
                    outpaint_prob=0.0, seed=3)
    for _ in range(10):
        smp = s.sample()
        hole = smp.hole > 0
        assert smp.mode == 0 and smp.image.shape == (64, 64)
        # 512-px image: 10-20 px per 1024 -> 5-10 px radius; lobulation changes the area a bit
        r_eq = np.sqrt(hole.sum() / np.pi)
        assert 3.5 < r_eq < 12.0
        cy, cx = np.argwhere(hole).mean(axis=0)
        assert abs(cy - 32) < 24 and abs(cx - 32) < 24
        ys, xs = np.nonzero(hole)
        # one connected blob, not strokes or a box
        assert (ys.max() - ys.min()) < 30 and (xs.max() - xs.min()) < 30
    # nodule_jitter=0: the hole sits at the crop centre, as around a mask at inference
    centred = CropSampler(items, 64, ("healthy",), nodule_prob=1.0, nodule_radius=(10.0, 20.0),
                          outpaint_prob=0.0, seed=3, nodule_jitter=0.0)
    offsets = [np.abs(np.argwhere(centred.sample().hole > 0).mean(axis=0) - 31.5).max() for _ in range(10)]
    assert max(offsets) < 3.0


def test_cli_train_records_new_options(train_dir, tmp_path):
    model = tmp_path / "n.safetensors"
    rc = cli_main(["train-inpainter", "--images", str(train_dir / "images"), "--out", str(model),
                   "--steps", "2", "--size", "32", "--batch", "2", "--channels", "8",
                   "--bottleneck", "16", "--blocks", "1", "--hole-loss", "psnr",
                   "--nodule-prob", "1", "--nodule-radius", "30", "60", "--grad-weight", "0",
                   "--ring-weight", "0", "--intensity-jitter", "0.2",
                   "--val-images", str(train_dir / "images" / "img0.mha")])
    assert rc == 0
    prov = read_model_info(model)["provenance"]
    tc = prov["train_config"]
    assert tc["hole_loss"] == "psnr" and tc["nodule_prob"] == 1.0
    assert list(tc["nodule_radius"]) == [30.0, 60.0] and tc["intensity_jitter"] == 0.2
    assert "val_nodule_psnr_db" in prov["metrics"]
    assert cli_main(["train-inpainter", "--images", str(train_dir / "images"), "--out",
                     str(tmp_path / "bad.safetensors"), "--steps", "1", "--size", "32",
                     "--nodule-prob", "1.5"]) == 2


def test_local_body_trains_saves_loads_and_fills(train_dir, tmp_path):
    """The ``local`` network body: trained by the CLI, stored in the file's config, used on load."""
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open

    model = tmp_path / "local.safetensors"
    rc = cli_main(["train-inpainter", "--images", str(train_dir / "images"), "--out", str(model),
                   "--steps", "25", "--size", "48", "--batch", "4", "--channels", "8", "--lr", "3e-3",
                   "--body", "local", "--pushpull-mix", "0", "--hole-loss", "mse", "--threads", "1",
                   "--noise-channels", "0"])
    assert rc == 0
    info = read_model_info(model)
    assert info["config"]["body"] == "local" and info["provenance"]["train_config"]["pushpull_mix"] == 0.0
    assert info["config"]["noise_channels"] == 0
    assert cli_main(["train-inpainter", "--images", str(train_dir / "images"), "--out",
                     str(tmp_path / "neg.safetensors"), "--noise-channels", "-1"]) == 2
    inp = Inpainter(model, device="cpu")
    assert hasattr(inp.net, "local") and not hasattr(inp.net, "blocks")
    rng = np.random.default_rng(3)
    img = _texture(rng, (80, 80))
    m = blob_mask(img.shape, rng, radius=9.0, centre=(40, 40))
    out = LearnedFiller(model).fill(img, m, seed=0)
    assert np.array_equal(out[~m], img[~m])
    prior = get_filler("biharmonic").fill(img, m)
    assert np.abs(out[m] - prior[m]).max() > 1e-3  # the trained residual is not zero
    assert np.abs(out[m] - img[m]).mean() < np.abs(img[~m].mean() - img[m]).mean()

    # a file from before the option existed (no "body" in its config) loads as the FFC body
    with safe_open(str(model), "np") as f:
        meta = dict(f.metadata())
    ffc = tmp_path / "ffc.safetensors"
    train_inpainter([train_dir / "images"], ffc, model_config=InpainterConfig(**TINY),
                    train_config=TrainConfig(steps=1, batch=2, crop=32, checkpoint_every=0))
    with safe_open(str(ffc), "np") as f:
        ffc_meta = dict(f.metadata())
    cfg = json.loads(ffc_meta["config"])
    del cfg["body"]
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(ffc)), str(old), metadata=dict(ffc_meta, config=json.dumps(cfg)))
    assert hasattr(Inpainter(old, device="cpu").net, "blocks")
    # an unknown body is refused with the choices, not a traceback
    bad = tmp_path / "bad_body.safetensors"
    save_file(load_file(str(model)), str(bad),
              metadata=dict(meta, config=json.dumps(dict(json.loads(meta["config"]), body="transformer"))))
    with pytest.raises(SynthsegError, match="body 'transformer'.*ffc, local"):
        Inpainter(bad, device="cpu")


def test_image_norm_scale_trains_and_fills_with_the_whole_images_range(train_dir, tmp_path):
    """norm_scale="image": training crops and fills use the whole image's range, not the crop's."""
    from napari_synthseg.inpaint.data import CropSampler, load_training_images
    from napari_synthseg.inpaint.normalize import image_half_range

    items = load_training_images([train_dir / "images"])
    ref = np.percentile(items[0].array, (1, 99))
    assert items[0].half_range == pytest.approx(0.5 * (ref[1] - ref[0]), rel=1e-6)
    cfg = InpainterConfig(**TINY, norm_scale="image", body="local")
    sampler = CropSampler(items[:1], 32, ("healthy",), seed=0, config=cfg)
    assert [float(sampler.sample().scale) for _ in range(5)] == pytest.approx([items[0].half_range] * 5)
    crop_sampler = CropSampler(items[:1], 32, ("healthy",), seed=0, config=InpainterConfig(**TINY))
    assert len({round(float(crop_sampler.sample().scale), 3) for _ in range(5)}) > 1  # per crop

    model = tmp_path / "img_norm.safetensors"
    assert cli_main(["train-inpainter", "--images", str(train_dir / "images"), "--out", str(model),
                     "--steps", "10", "--size", "32", "--batch", "2", "--channels", "8", "--body", "local",
                     "--norm-scale", "image", "--hole-loss", "mse-native", "--threads", "1"]) == 0
    assert read_model_info(model)["config"]["norm_scale"] == "image"
    rng = np.random.default_rng(4)
    img = _texture(rng, (96, 96))
    img[:, :20] += 900.0  # a bright band far from the hole widens the image's range only
    m = blob_mask(img.shape, rng, radius=6.0, centre=(48, 60))
    filler = LearnedFiller(model)
    out = filler.fill(img, m, seed=0)
    # the filler crops around the hole but normalises with the whole image's range
    ys, xs = np.nonzero(m)
    box = (slice(max(ys.min() - 32, 0), ys.max() + 33), slice(max(xs.min() - 32, 0), xs.max() + 33))
    inp = filler.inpainter
    whole = inp.predict(img[box], m[box], rng=np.random.default_rng(0),
                        image_half_range=image_half_range(img))
    own = inp.predict(img[box], m[box], rng=np.random.default_rng(0))
    assert not np.allclose(whole[m[box]], own[m[box]], atol=1e-3)  # the scale matters
    np.testing.assert_allclose(out[box][m[box]], whole[m[box]], atol=1e-3)


# ---------------------------------------------------------------- inference contract
def test_outside_mask_unchanged_native_range(tiny_model):
    rng = np.random.default_rng(1)
    img = np.round(_texture(rng, (120, 140), offset=-900)).astype(np.int16)
    m = np.zeros(img.shape, bool)
    m[50:70, 60:85] = True
    out = LearnedFiller(tiny_model).fill(img, m, seed=1)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[~m], img[~m].astype(np.float32))
    assert np.isfinite(out).all()
    # native HU scale: filled values stay in the neighbourhood's range, not in [-1, 1]
    assert out[m].mean() < -500 and abs(out[m].mean() - img[~m].mean()) < 300


def test_seeds_differ_but_reproduce(tiny_model):
    rng = np.random.default_rng(2)
    img = _texture(rng)
    m = blob_mask(img.shape, rng, radius=10.0, centre=(48, 48))
    a, b = inpaint_samples(img, m, model=tiny_model, n_samples=2, seed=10)
    (a2,) = inpaint_samples(img, m, model=tiny_model, n_samples=1, seed=10)
    (b2,) = inpaint_samples(img, m, model=tiny_model, n_samples=1, seed=11)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)
    assert np.abs(a[m] - b[m]).max() > 1e-3
    np.testing.assert_array_equal(a[~m], b[~m])


def test_modes_lesion_and_outpaint(tiny_model):
    rng = np.random.default_rng(3)
    img = _texture(rng, (96, 96))
    m = blob_mask(img.shape, rng, radius=8.0, centre=(48, 48), irregularity=0.0)
    healthy = inpaint_samples(img, m, model=tiny_model, mode="healthy", seed=0)[0]
    lesion = inpaint_samples(img, m, model=tiny_model, mode="lesion", seed=0)[0]
    assert not np.allclose(healthy[m], lesion[m])  # the mode input changes the fill
    np.testing.assert_array_equal(lesion[~m], img[~m])
    out = inpaint_samples(img, m, model=tiny_model, mode="outpaint", margin=4, seed=0)[0]
    ys, xs = np.nonzero(m)
    keep = np.zeros_like(m)
    keep[ys.min() - 4: ys.max() + 5, xs.min() - 4: xs.max() + 5] = True
    np.testing.assert_array_equal(out[keep], img[keep])  # lesion box + margin kept
    assert not np.allclose(out[~keep], img[~keep])  # everything else regenerated


def test_healthy_only_model_refuses_lesion_mode(train_dir, tmp_path):
    out = tmp_path / "h.safetensors"
    train_inpainter([train_dir / "images"], out, model_config=InpainterConfig(**TINY),
                    train_config=TrainConfig(steps=1, batch=1, crop=32))
    with pytest.raises(SynthsegError, match="trained for healthy, outpaint only"):
        LearnedFiller(out, mode="lesion")


def test_tiling_blends_seamlessly(tmp_path):
    """With a zero residual head the model outputs the (global) push-pull fill: tiling with
    overlap blending must reproduce the untiled result, proving weights sum to one everywhere."""
    torch.manual_seed(0)
    net = InpaintNet(InpainterConfig(**TINY))
    path = save_model(net, net.config, tmp_path / "z.safetensors")
    rng = np.random.default_rng(4)
    img = _texture(rng, (300, 260))
    m = stroke_mask(img.shape, rng) | blob_mask(img.shape, rng, radius=40.0)
    whole = Inpainter(path, tile=512).predict(img, m, rng=np.random.default_rng(0))
    tiled = Inpainter(path, tile=96, overlap=24).predict(img, m, rng=np.random.default_rng(0))
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-3)
    # independent reference for the push-pull fill: a hole in a constant image stays constant
    t = torch.full((1, 1, 40, 40), 3.0)
    hole = torch.zeros_like(t)
    hole[..., 10:30, 5:35] = 1
    np.testing.assert_allclose(push_pull_fill(t, hole).numpy(), 3.0, atol=1e-5)


def test_biharmonic_prior_matches_classical_biharmonic(tmp_path):
    """An untrained model (zero residual head) with the biharmonic prior returns exactly the
    biharmonic fill: compared with the classical filler (scikit-image), an independent path."""
    net = InpaintNet(InpainterConfig(**TINY, prior="biharmonic"))
    path = save_model(net, net.config, tmp_path / "b.safetensors")
    rng = np.random.default_rng(9)
    img = _texture(rng, (64, 80), offset=300.0)
    m = blob_mask(img.shape, rng, radius=9.0, centre=(30, 40))
    got = Inpainter(path).predict(img, m, rng=np.random.default_rng(0))
    ref = get_filler("biharmonic").fill_region(img, m, None, None)
    np.testing.assert_allclose(got[m], ref[m], rtol=0, atol=0.05)
    # outpainting never uses the (slow, wild) biharmonic extrapolation
    big = np.ones_like(m)
    big[20:40, 30:50] = False
    out = Inpainter(path).predict(img, big, mode="outpaint", rng=np.random.default_rng(0))
    assert np.isfinite(out).all() and out[big].std() < 5 * img.std()


def test_texture_grain_matches_context_noise(tmp_path):
    """Seeded grain: same seed same grain, other seed other grain, and its strength follows the
    context's fine-scale noise (independent reference: the white noise we put in, sd 10)."""
    net = InpaintNet(InpainterConfig(**TINY))  # zero head: output = smooth prior
    path = save_model(net, net.config, tmp_path / "g.safetensors")
    rng = np.random.default_rng(10)
    yy, xx = np.mgrid[:128, :128].astype(np.float32)
    img = 500 + 2 * xx + rng.normal(0, 10, (128, 128)).astype(np.float32)
    m = blob_mask(img.shape, rng, radius=20.0, centre=(64, 64), irregularity=0.0)
    f0 = LearnedFiller(path, texture=0.0).fill(img, m, seed=0)
    a = LearnedFiller(path, texture=1.0).fill(img, m, seed=0)
    a2 = LearnedFiller(path, texture=1.0).fill(img, m, seed=0)
    b = LearnedFiller(path, texture=1.0).fill(img, m, seed=1)
    np.testing.assert_array_equal(a, a2)
    inner = m & (np.hypot(yy - 64, xx - 64) < 16)
    grain = (a - f0)[inner]
    assert 6.0 < grain.std() < 14.0
    assert np.abs(a - b)[inner].mean() > 3.0
    np.testing.assert_array_equal(a[~m], img[~m])


def test_volume_with_context_slices(train_dir, tmp_path):
    rng = np.random.default_rng(6)
    vol = np.stack([_texture(rng, (48, 48)) for _ in range(5)])
    vdir = tmp_path / "vols"
    vdir.mkdir()
    _write(vol, vdir / "v.nii.gz", spacing=(1.0, 1.0, 2.0))
    out = tmp_path / "v.safetensors"
    train_inpainter([vdir], out, model_config=InpainterConfig(**TINY, context_slices=1),
                    train_config=TrainConfig(steps=3, batch=2, crop=32))
    m = np.zeros(vol.shape, bool)
    m[1:4, 20:28, 18:30] = True
    res = get_filler("learned", model_path=out).fill(vol, m, seed=0)
    np.testing.assert_array_equal(res[~m], vol[~m])
    assert np.isfinite(res).all() and not np.allclose(res[m], 0)


# ---------------------------------------------------------------- bad input
def test_bad_masks_are_user_errors(tiny_model):
    img = _texture(np.random.default_rng(7), (64, 64))
    f = LearnedFiller(tiny_model)
    with pytest.raises(SynthsegError, match="empty"):
        f.fill(img, np.zeros(img.shape, bool))
    with pytest.raises(SynthsegError, match="whole image"):
        f.fill(img, np.ones(img.shape, bool))
    with pytest.raises(SynthsegError, match="off the image|does not match"):
        inpaint_samples(img, np.ones((80, 80), bool), model=tiny_model)
    with pytest.raises(SynthsegError, match="off the"):
        outpaint_mask((64, 64), (70, 70, 90, 90))
    with pytest.raises(SynthsegError, match="empty"):
        inpaint_samples(img, np.zeros(img.shape, bool), model=tiny_model, mode="outpaint")


def _fake_safetensors(path, metadata):
    header = json.dumps({"__metadata__": metadata, "w": {"dtype": "F32", "shape": [1],
                                                          "data_offsets": [0, 4]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0\0\0")
    return path


def test_bad_model_files_refused(tmp_path, tiny_model):
    pkl = tmp_path / "evil.safetensors"
    pkl.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(SynthsegError, match="pickle"):
        Inpainter(pkl)

    @dataclass
    class OtherCfg:
        width: int = 2

    @register_architecture("test-other-arch", OtherCfg)
    class Other(torch.nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.lin = torch.nn.Linear(cfg.width, 1)

    other = save_model(Other(OtherCfg()), OtherCfg(), tmp_path / "other.safetensors")
    with pytest.raises(SynthsegError, match="test-other-arch"):
        Inpainter(other)
    newer = _fake_safetensors(tmp_path / "newer.safetensors",
                              {"format": "napari-synthseg", "format_version": "99",
                               "architecture": "synthseg-inpaint-ffc-unet-v1", "config": "{}"})
    with pytest.raises(SynthsegError, match="newer"):
        Inpainter(newer)
    info = read_model_info(tiny_model)
    cfg = dict(info["config"], future_setting=1)
    alien = _fake_safetensors(tmp_path / "alien.safetensors",
                              {"format": "napari-synthseg", "format_version": "1",
                               "architecture": info["architecture"], "config": json.dumps(cfg)})
    with pytest.raises(SynthsegError, match="future_setting"):
        Inpainter(alien)
    with pytest.raises(SynthsegError, match="not found"):
        Inpainter(tmp_path / "missing.safetensors")


# ---------------------------------------------------------------- masks, registry, builtin
def test_training_masks_stay_inside_organ():
    rng = np.random.default_rng(8)
    allowed = np.zeros((128, 128), bool)
    allowed[20:100, 10:60] = True
    for _ in range(20):
        m = random_training_mask(allowed.shape, rng, allowed=allowed)
        assert m.any() and not (m & ~allowed).any()
    om = outpaint_mask((50, 60), (10, 20, 20, 30), margin=2)
    assert not om[8:22, 18:32].any() and om.sum() == 50 * 60 - 14 * 14


def test_registered_by_name_and_builtin_model_loads():
    path = builtin_model_path()
    assert path.stat().st_size < 6_000_000
    f = get_filler("learned")  # default: the shipped CXR model
    assert isinstance(f, LearnedFiller) and "healthy" in f.inpainter.modes
    prov = f.inpainter.loaded.provenance
    assert prov["steps"] > 0 and prov["data"]["n_images"] > 0


def test_builtin_picks_the_shipped_model_for_each_mode():
    from napari_synthseg.inpaint.infer import BUILTIN_FOR_MODE, resolve_model_path

    assert resolve_model_path("builtin") == builtin_model_path("cxr_inpainter_small")
    assert resolve_model_path("builtin", "outpaint") == builtin_model_path("cxr_outpainter_small")
    for mode, name in BUILTIN_FOR_MODE.items():
        assert mode in Inpainter(f"builtin:{name}", device="cpu").modes
    with pytest.raises(SynthsegError, match="no built-in model does 'lesion'"):
        resolve_model_path("builtin", "lesion")
    rng = np.random.default_rng(2)
    img = _texture(rng, (96, 96))
    keep = blob_mask(img.shape, rng, radius=6.0, centre=(48, 48))
    out = inpaint_samples(img, keep, mode="outpaint", n_samples=1, margin=4, threads=1)[0]
    np.testing.assert_array_equal(out[keep], img[keep])  # the kept lesion is untouched
    assert not np.allclose(out[:10], img[:10])  # everything away from it is regenerated


def test_cli_train_and_inpaint(train_dir, tmp_path):
    model = tmp_path / "cli.safetensors"
    rc = cli_main(["train-inpainter", "--images", str(train_dir / "images"), "--out", str(model),
                   "--steps", "2", "--size", "32", "--batch", "2", "--channels", "8",
                   "--bottleneck", "16", "--blocks", "1"])
    assert rc == 0 and model.exists()
    src = train_dir / "images" / "img0.mha"
    ref = read_image(src)
    m = np.zeros(ref.shape, np.uint8)
    m[30:50, 30:50] = 1
    mpath = _write(m, tmp_path / "m.mha")
    outdir = tmp_path / "outs"
    outdir.mkdir()
    rc = cli_main(["inpaint", str(src), "--mask", str(mpath), "--model", str(model),
                   "--samples", "2", "--out", str(outdir)])
    assert rc == 0
    files = sorted(p for p in outdir.iterdir() if not p.name.endswith(".provenance.json"))
    assert len(files) == 2
    # issue 15: every output carries a provenance sidecar (method, model hash, source hash)
    import json

    for f in files:
        side = json.loads(f.with_name(f.name + ".provenance.json").read_text())
        assert side["model"]["sha256"] and side["source"]["sha256"] and side["mask"]["sha256"]
        assert side["method"] == "inpaint:healthy" and side["software"]["version"]
    for f in files:
        got = read_image(f)
        assert got.spacing == pytest.approx(ref.spacing)
        np.testing.assert_array_equal(got.array[m == 0], ref.array[m == 0])
    assert cli_main(["inpaint", str(src), "--mask", str(mpath), "--model", str(model),
                     "--mode", "lesion", "--out", str(tmp_path / "l.nii.gz")]) == 2
    assert cli_main(["inpaint", str(src), "--mask", str(mpath), "--model", "telea",
                     "--out", str(tmp_path / "t_{i}.mha"), "--samples", "1"]) == 0
