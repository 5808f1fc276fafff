"""SinGAN / ConSinGAN harmonization: tiny models train, save, load and harmonize on CPU."""

from __future__ import annotations

import dataclasses
import json
import struct

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_synthseg.errors import CancelledError, SynthsegError
from napari_synthseg.harmonize import (
    ConSinGAN,
    Harmonizer,
    SinGAN,
    harmonize,
    naive_removal,
    preset,
    pyramid_shapes,
    remove_lesion,
    select_region,
    train_harmonizer,
    uses_hypersignal_model,
)
from napari_synthseg.utils.progress import CancelToken


@pytest.fixture(autouse=True)
def one_thread():
    # The CI box is small and shared: one thread avoids OpenMP contention (10x here).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(arch: str, **changes):
    base = dict(niter=4, min_size=12, max_size=48, train_crop=16, nfc=8)
    if arch == "consingan":
        base.update(train_stages=3, train_depth=2)
    else:
        base.update(scale_factor=0.5, max_nfc=8)
    base.update(changes)
    return preset(arch, "fast", **base)


def tissue(shape=(64, 72), seed=0, dtype=np.float32) -> np.ndarray:
    """Smooth random texture plus a gradient, like a CXR region (native units ~ 0..1000)."""
    rng = np.random.default_rng(seed)
    tex = ndimage.gaussian_filter(rng.normal(0, 1, shape), 2.0)
    tex = 400 + 300 * tex / tex.std() + np.linspace(0, 200, shape[1])[None]
    return tex.astype(dtype) if np.issubdtype(dtype, np.floating) else np.clip(tex, 0, 4000).astype(dtype)


def lesion(shape, center=(30, 36), radius=5) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


@pytest.fixture(scope="module")
def trained():
    """One tiny model per architecture, trained once for the module (a few seconds)."""
    torch.set_num_threads(1)
    image = tissue()
    return image, {
        arch: train_harmonizer(image, config=tiny(arch), seed=7) for arch in ("singan", "consingan")
    }


# --------------------------------------------------------------------------------------------
# configs and pyramids
# --------------------------------------------------------------------------------------------


def test_paper_singan_pyramid_matches_node21():
    # NODE21: 256 px crop, factor 0.85 -> "16 scales instead of 9"; SinGAN shrinks to 250 px
    # and makes the coarsest short side min_size (25).
    shapes = pyramid_shapes(preset("singan", "paper"), (256, 256))
    assert len(shapes) == 16
    assert shapes[-1] == (250, 250) and shapes[0] == (25, 25)
    ratios = [shapes[i][0] / shapes[i + 1][0] for i in range(len(shapes) - 1)]
    assert all(0.8 < r < 0.9 for r in ratios)
    # SinGAN's default factor 0.75 gives 10 scales (0..9) on the same crop
    assert len(pyramid_shapes(preset("singan", "paper", scale_factor=0.75), (256, 256))) == 10


def test_paper_consingan_is_the_harmonization_recipe():
    cfg = preset("consingan", "paper")
    assert (cfg.train_stages, cfg.train_depth, cfg.lr_scale, cfg.min_size, cfg.niter) == (3, 3, 0.1, 120, 1000)
    shapes = pyramid_shapes(cfg, (250, 250))
    assert [s[0] for s in shapes] == [120, 173, 250]


def test_region_smaller_than_min_scale_is_refused():
    with pytest.raises(SynthsegError, match="minimum scale"):
        train_harmonizer(tissue((20, 20)), config=tiny("singan", min_size=24))
    with pytest.raises(SynthsegError, match="minimum scale"):
        train_harmonizer(tissue(), config=tiny("consingan"), roi=(0, 0, 10, 40))


def test_default_region_is_a_square_around_the_lesion():
    shape = (300, 400)
    mask = np.zeros(shape, bool)
    mask[20:30, 380:390] = True  # near the top right corner
    assert select_region(shape, lesion_mask=mask, region_size=128) == (0, 272, 128, 128)
    mask[:] = False
    mask[140:160, 190:210] = True
    r, c, h, w = select_region(shape, lesion_mask=mask, region_size=128)
    assert (h, w) == (128, 128) and (r + h // 2, c + w // 2) == (150, 200)
    assert select_region(shape) == (0, 0, 300, 400)
    big = np.zeros(shape, bool)
    big[10:200, 10:20] = True
    with pytest.raises(SynthsegError, match="larger than"):
        select_region(shape, lesion_mask=big, region_size=128)


def test_3d_and_bad_roi_are_refused():
    with pytest.raises(SynthsegError, match="2D"):
        train_harmonizer(np.zeros((4, 32, 32), np.float32), config=tiny("singan"))
    with pytest.raises(SynthsegError, match="inside"):
        train_harmonizer(tissue(), config=tiny("singan"), roi=(40, 40, 48, 48))


@pytest.mark.parametrize("arch", ["singan", "consingan"])
def test_window_forward_equals_full_forward(arch):
    # Training on crops is only legitimate if a window is computed exactly.
    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny(arch), shapes=((10, 12), (20, 22), (40, 37)))
    if arch == "consingan":
        g = ConSinGAN(cfg)
        noises = [torch.randn(1, 1, 10, 12)] + [torch.randn(1, cfg.nfc, *s) for s in cfg.shapes[1:]]
        full = g(noises, [1.0, 0.3, 0.2])
        windows = {crop: g(noises, [1.0, 0.3, 0.2], crop=crop) for crop in [(0, 0, 16), (24, 21, 16), (7, 3, 20)]}
    else:
        g = SinGAN(cfg)
        prev, noise = torch.randn(1, 1, 40, 37), torch.randn(1, 1, 40, 37)
        full = g.scale_forward(2, noise, prev, 0.3)
        windows = {crop: g.scale_forward(2, noise, prev, 0.3, crop=crop) for crop in [(0, 0, 16), (24, 21, 16), (7, 3, 20)]}
    for (t, l, s), part in windows.items():
        torch.testing.assert_close(part, full[..., t : t + s, l : l + s], atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------
# train, save, load, harmonize
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["singan", "consingan"])
def test_train_save_load_harmonize(trained, arch, tmp_path):
    image, models = trained
    model = models[arch]
    assert len(model.noise_amp) == len(model.config.shapes) == 3
    assert model.noise_amp[0] == 1.0 and all(0 < a < 1 for a in model.noise_amp[1:])
    path = model.save(tmp_path / f"{arch}.safetensors")
    loaded = Harmonizer.load(path)
    assert loaded.config == model.config and loaded.roi == model.roi
    assert loaded.image_sha256 == model.image_sha256 and loaded.noise_amp == pytest.approx(model.noise_amp)

    mask = lesion(image.shape)
    paste = image.copy()
    paste[mask] += 250.0
    margin = 4
    scale = 0 if arch == "consingan" else 1
    outs = harmonize(loaded, paste, mask, scale, n_samples=2, seed=11, blend_margin_px=margin)
    assert len(outs) == 2
    far = ndimage.distance_transform_edt(~mask) >= margin
    for out in outs:
        assert out.dtype == paste.dtype and out.shape == paste.shape
        # bit-identical outside the blend margin
        assert np.array_equal(out[far].view(np.uint32), paste[far].view(np.uint32))
        assert not np.array_equal(out[mask], paste[mask])
        assert np.isfinite(out).all()
    # the in-memory and the reloaded model give the same samples
    again = harmonize(model, paste, mask, scale, n_samples=2, seed=11, blend_margin_px=margin)
    for a, b in zip(outs, again):
        np.testing.assert_allclose(a, b, atol=1e-3)


@pytest.mark.parametrize("arch", ["singan", "consingan"])
def test_harmonize_is_deterministic_per_seed(trained, arch):
    image, models = trained
    mask = lesion(image.shape)
    paste = image.copy()
    paste[mask] -= 200.0
    scale = 0 if arch == "consingan" else 1
    a = harmonize(models[arch], paste, mask, scale, n_samples=2, seed=3, blend_margin_px=3)
    b = harmonize(models[arch], paste, mask, scale, n_samples=2, seed=3, blend_margin_px=3)
    c = harmonize(models[arch], paste, mask, scale, n_samples=1, seed=4, blend_margin_px=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[1])  # samples differ from each other
    assert not np.array_equal(a[0], c[0])  # and across seeds


@pytest.mark.parametrize("arch", ["singan", "consingan"])
def test_add_back_bands_sum_to_the_replacement(trained, arch):
    """coarse (GAN low band + input detail) and detail (input low band + GAN detail) split the
    replacement's change between them: coarse + detail - input == replace, and nothing moves
    beyond the margin."""
    image, models = trained
    mask = lesion(image.shape)
    paste = image.copy()
    paste[mask] += 300.0
    scale = 0 if arch == "consingan" else 1
    kw = dict(n_samples=1, seed=5, blend_margin_px=4)
    (rep,) = harmonize(models[arch], paste, mask, scale, add_back="replace", **kw)
    (default,) = harmonize(models[arch], paste, mask, scale, **kw)
    (coarse,) = harmonize(models[arch], paste, mask, scale, add_back="coarse", **kw)
    (detail,) = harmonize(models[arch], paste, mask, scale, add_back="detail", **kw)
    # ConSinGAN keeps the input's fine detail by default (benchmarked), SinGAN replaces
    assert np.array_equal(default, coarse if arch == "consingan" else rep)
    p64 = paste.astype(np.float64)
    np.testing.assert_allclose(coarse + detail.astype(np.float64) - p64, rep, atol=0.05)
    far = ndimage.distance_transform_edt(~mask) >= 4
    for out in (coarse, detail):
        assert np.array_equal(out[far], paste[far])
        assert not np.array_equal(out[mask], paste[mask])
    with pytest.raises(SynthsegError, match="add-back"):
        harmonize(models[arch], paste, mask, scale, add_back="paste", **kw)


@pytest.mark.parametrize("arch", ["singan", "consingan"])
def test_original_add_back_shows_the_anatomy_behind_the_lesion(trained, arch):
    """NODE21's add-back for radiographs: the GAN's coarse part plus the fine detail of the image
    without the lesion. It differs from ``coarse`` (input detail) by exactly the ramp times the
    difference of the two fine bands, whatever the GAN drew; and where the naive paste wiped the
    texture out, the original's texture comes back through the lesion."""
    from napari_synthseg.harmonize import blend_weights
    from napari_synthseg.harmonize.apply import DETAIL_SIGMA_PX, default_add_back

    image, models = trained
    model = models[arch]
    mask = lesion(image.shape, radius=7)
    paste = image.copy()
    paste[mask] = float(image[mask].mean()) + 300.0  # a flat, textureless naive paste
    scale = 0 if arch == "consingan" else 1
    kw = dict(n_samples=1, seed=5, blend_margin_px=4)
    (orig,) = harmonize(model, paste, mask, scale, add_back="original", original_image=image, **kw)
    (coarse,) = harmonize(model, paste, mask, scale, add_back="coarse", **kw)
    (via_ref,) = harmonize(model, paste, mask, scale, add_back="original", reference_image=image, **kw)
    np.testing.assert_array_equal(orig, via_ref)  # the clean image is the default original

    r, c, h, w = model.roi
    sl = (slice(r, r + h), slice(c, c + w))
    detail = lambda a: a - ndimage.gaussian_filter(a, DETAIL_SIGMA_PX)  # noqa: E731
    weight = blend_weights(mask[sl], 4)
    expected = weight * (detail(image[sl].astype(np.float64)) - detail(paste[sl].astype(np.float64)))
    np.testing.assert_allclose(orig[sl].astype(np.float64) - coarse[sl], expected, atol=0.05)
    far = ndimage.distance_transform_edt(~mask) >= 4
    assert np.array_equal(orig[far], paste[far])

    inner = ndimage.binary_erosion(mask, iterations=2)
    true_texture = detail(image.astype(np.float64))[inner]
    corr = lambda a: np.corrcoef(detail(a.astype(np.float64))[inner], true_texture)[0, 1]  # noqa: E731
    assert corr(orig) > 0.8 > corr(coarse)

    assert default_add_back(model, "CXR") == "original"
    assert default_add_back(model, "CXR", "removal") == default_add_back(model, "MR") != "original"
    assert default_add_back(model, "MR") == ("coarse" if arch == "consingan" else "replace")
    with pytest.raises(SynthsegError, match="image without the lesion"):
        harmonize(model, paste, mask, scale, add_back="original", **kw)
    with pytest.raises(SynthsegError, match="does not match"):
        harmonize(model, paste, mask, scale, add_back="original", original_image=image[:10], **kw)


def test_training_is_deterministic_per_seed():
    image = tissue((40, 40), seed=2)
    cfg = tiny("consingan", niter=2, max_size=40)
    m1 = train_harmonizer(image, config=cfg, seed=5)
    m2 = train_harmonizer(image, config=cfg, seed=5)
    for (k, v1), v2 in zip(m1.module.state_dict().items(), m2.module.state_dict().values()):
        assert torch.equal(v1, v2), k
    assert m1.noise_amp == m2.noise_amp


def test_integer_images_keep_dtype_and_range():
    image = tissue((48, 48), seed=3, dtype=np.uint16)
    model = train_harmonizer(image, config=tiny("singan", niter=2), seed=1)
    mask = lesion(image.shape, center=(24, 24), radius=4)
    paste = image.copy()
    paste[mask] = 3000
    (out,) = harmonize(model, paste, mask, 1, seed=0, blend_margin_px=2)
    assert out.dtype == np.uint16
    far = ndimage.distance_transform_edt(~mask) >= 2
    assert np.array_equal(out[far], paste[far])


# --------------------------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------------------------


def test_config_mismatch_is_refused(trained, tmp_path):
    _, models = trained
    path = models["singan"].save(tmp_path / "m.safetensors")
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    config = json.loads(header["__metadata__"]["config"])
    config["nfc"] = 16  # weights are 8 channels
    header["__metadata__"]["config"] = json.dumps(config)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])
    with pytest.raises(SynthsegError, match="does not match"):
        Harmonizer.load(bad)
    config["nfc"] = 8
    config["dropout"] = 0.5
    header["__metadata__"]["config"] = json.dumps(config)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    bad.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])
    with pytest.raises(SynthsegError, match="dropout"):
        Harmonizer.load(bad)


def test_model_from_another_image_is_refused(trained):
    image, models = trained
    other = tissue(seed=99)
    mask = lesion(image.shape)
    with pytest.raises(SynthsegError, match="another image"):
        harmonize(models["singan"], other, mask, 1)
    with pytest.raises(SynthsegError, match="another image"):
        harmonize(models["consingan"], image, mask, 0, reference_image=other)
    with pytest.raises(SynthsegError, match="trained on a"):
        harmonize(models["consingan"], tissue((64, 64)), lesion((64, 64)), 0)
    # the right clean image passes the exact check
    harmonize(models["consingan"], image, mask, 0, reference_image=image)


def test_bad_lesions_and_scales_are_refused(trained):
    image, models = trained
    border = np.zeros(image.shape, bool)
    border[0:5, 10:15] = True
    with pytest.raises(SynthsegError, match="border"):
        harmonize(models["singan"], image, border, 1)
    with pytest.raises(SynthsegError, match="injection scale 0"):
        harmonize(models["consingan"], image, lesion(image.shape), 1)
    with pytest.raises(SynthsegError, match="0..2"):
        harmonize(models["singan"], image, lesion(image.shape), 3)
    with pytest.raises(SynthsegError, match="empty"):
        harmonize(models["singan"], image, np.zeros(image.shape, bool), 1)


def test_lesion_outside_training_region_is_refused():
    image = tissue((64, 96), seed=4)
    model = train_harmonizer(image, config=tiny("singan", niter=1), roi=(0, 0, 48, 48))
    with pytest.raises(SynthsegError, match="region the model was trained on"):
        harmonize(model, image, lesion(image.shape, center=(30, 70)), 1)


# --------------------------------------------------------------------------------------------
# progress, cancel, preview
# --------------------------------------------------------------------------------------------


def test_progress_preview_and_cancel():
    image = tissue((40, 40), seed=5)
    steps, previews = [], []
    cfg = tiny("consingan", niter=2, max_size=40)
    train_harmonizer(
        image, config=cfg, progress=lambda s, t, m: steps.append((s, t)),
        preview=lambda n, a: previews.append((n, a.shape)),
    )
    total = 2 * 3
    assert steps[-1] == (total, total)
    assert [s for s, _ in steps] == sorted(s for s, _ in steps)
    assert [n for n, _ in previews] == [0, 1, 2]
    assert previews[-1][1] == (40, 40)
    token = CancelToken()

    def cancel_after_first(step, total, message):
        if step >= 1:
            token.cancel()

    with pytest.raises(CancelledError):
        train_harmonizer(image, config=cfg, progress=cancel_after_first, cancel=token)


# --------------------------------------------------------------------------------------------
# removal and model choice
# --------------------------------------------------------------------------------------------


def test_mirror_removal_copies_the_mirrored_tissue(trained):
    image, models = trained
    mask = lesion(image.shape, center=(16, 36), radius=4)
    out = naive_removal(image, mask)
    rows, cols = np.nonzero(mask)
    assert np.array_equal(out[rows, cols], image[image.shape[0] - 1 - rows, cols])
    assert np.array_equal(out[~mask], image[~mask])
    with pytest.raises(SynthsegError, match="mirrored"):
        naive_removal(image, lesion(image.shape, center=(32, 36), radius=4))
    fill = np.full(image.shape, 123.0, np.float32)
    assert np.all(naive_removal(image, mask, fill)[mask] == 123.0)
    (removed,) = remove_lesion(models["consingan"], image, mask, blend_margin_px=3)
    far = ndimage.distance_transform_edt(~mask) >= 3
    assert np.array_equal(removed[far], image[far])


def test_otsu_four_class_model_choice():
    rng = np.random.default_rng(0)
    image = np.zeros((80, 80))
    for k, level in enumerate([100, 300, 600, 1000]):
        image[:, 20 * k : 20 * (k + 1)] = level
    image += rng.normal(0, 5, image.shape)
    assert uses_hypersignal_model(image, (10, 62, 20, 15))        # inside the brightest band
    assert not uses_hypersignal_model(image, (10, 42, 20, 15))    # second brightest
    assert not uses_hypersignal_model(image, (10, 50, 20, 20))    # half and half: no majority
    box_mask = np.zeros(image.shape, bool)
    box_mask[30:40, 65:75] = True
    assert uses_hypersignal_model(image, box_mask)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _write(array, path):
    from napari_synthseg.io import MedicalImage, write_image

    ndim = array.ndim
    image = MedicalImage(array=array, spacing=(0.4,) * ndim, origin=(0.0,) * ndim,
                         direction=tuple(np.eye(ndim).ravel()), modality="CXR" if ndim == 2 else "CT")
    write_image(image, path)


def test_cli_train_and_harmonize_a_scene(tmp_path, capsys):
    from napari_synthseg.cli import main
    from napari_synthseg.io import read_image
    from napari_synthseg.lesions import procedural_cxr_nodule
    from napari_synthseg.lesions.place import place_lesion
    from napari_synthseg.render import render_scene
    from napari_synthseg.scene import Scene

    image_path = tmp_path / "cxr.mha"
    _write(tissue((128, 128), seed=8, dtype=np.uint16), image_path)
    model_path = tmp_path / "h.safetensors"
    args = ["train-harmonizer", str(image_path), "--roi", "14,14,100,100", "--arch", "consingan", "--iterations", "1", "--threads", "1",
            "--out", str(model_path)]
    assert main(args) == 0
    assert main(args) == 2  # refuses to overwrite
    assert "exists" in capsys.readouterr().err

    image = read_image(image_path)
    scene = Scene.create(image, tmp_path / "scene")
    nodule = procedural_cxr_nodule(6.0, "solid", target_spacing=image.scale, seed=1)
    record = place_lesion(scene, nodule, at_xyz=(64, 64), blend="alpha")
    before = render_scene(scene).image
    out_dir = tmp_path / "samples"
    assert main(["harmonize", str(scene.folder), "--lesion", record.id, "--model", str(model_path),
                 "--scale", "0", "--samples", "2", "--margin", "3", "--out-dir", str(out_dir),
                 "--accept", "1", "--threads", "1", "--add-back", "detail"]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["naive.mha", "sample_0.mha", "sample_1.mha"]
    scene = Scene.open(scene.folder)
    stored = scene.lesion(record.id)
    assert stored.params["overlay"]["injection_scale"] == 0 and stored.params["overlay"]["sample"] == 1
    assert stored.params["overlay"]["add_back"] == "detail"
    after = render_scene(scene)
    labels = after.labels == stored.label
    far = ndimage.distance_transform_edt(~labels) >= 3
    assert np.array_equal(after.image[far], before[far])
    assert not np.array_equal(after.image[labels], before[labels])
    np.testing.assert_array_equal(render_scene(scene).image, after.image)  # deterministic re-render
    # What the scene renders on the lesion is the accepted sample, not a re-weighted mix of it.
    accepted = read_image(out_dir / "sample_1.mha").array.astype(np.float32)
    np.testing.assert_allclose(after.image[labels], accepted[labels], atol=0.5)

    # On a radiograph the default add-back is NODE21's: the original image (the scene rendered
    # without this lesion) is added back, and the record says so.
    assert main(["harmonize", str(scene.folder), "--lesion", record.id, "--model", str(model_path),
                 "--scale", "0", "--samples", "1", "--margin", "3", "--accept", "0", "--threads", "1"]) == 0
    stored = Scene.open(scene.folder).lesion(record.id)
    assert stored.params["overlay"]["add_back"] == "original"
    again = render_scene(Scene.open(scene.folder)).image
    assert np.array_equal(again[far], before[far])
    assert not np.array_equal(again[labels], after.image[labels])

    # a model trained on another image is refused with one line
    other = tmp_path / "other.mha"
    _write(tissue((128, 128), seed=9, dtype=np.uint16), other)
    other_model = tmp_path / "o.safetensors"
    assert main(["train-harmonizer", str(other), "--arch", "singan", "--iterations", "1",
                 "--threads", "1", "--out", str(other_model)]) == 0
    capsys.readouterr()
    assert main(["harmonize", str(scene.folder), "--lesion", record.id, "--model", str(other_model),
                 "--scale", "1", "--samples", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "another image" in err and "\n" not in err


def test_cli_refuses_3d_images(tmp_path, capsys):
    from napari_synthseg.cli import main

    path = tmp_path / "vol.mha"
    _write(np.zeros((4, 32, 32), np.int16), path)
    assert main(["train-harmonizer", str(path), "--out", str(tmp_path / "m.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert "2D" in err and "\n" not in err


# --------------------------------------------------------------------------------------------
# NODE21 pipeline end to end on the shared data
# --------------------------------------------------------------------------------------------


def test_node21_pipeline_end_to_end(shared_data, tmp_path):
    """CT nodule patch -> projection -> NODE21 contrast -> paste -> SinGAN -> accept -> render;
    and the Poisson baseline on the same lesion."""
    from napari_synthseg.harmonize import blend_weights
    from napari_synthseg.io import read_image
    from napari_synthseg.lesions import load_ct_patch
    from napari_synthseg.lesions.place import attach_overlay, edit_lesion, place_lesion
    from napari_synthseg.render import SceneRenderer, render_scene
    from napari_synthseg.scene import Scene

    image = read_image(shared_data / "cxr/node21/c3883.mha")
    source = np.asarray(image.array)
    scene = Scene.create(image, tmp_path / "scene")
    nodule = load_ct_patch(shared_data / "ct/nodule_patches/nodule_05_ct.mha")
    assert nodule.units == "HU" and nodule.mask.ndim == 3
    record = place_lesion(scene, nodule, at_xyz=(300, 600), size_mm=12.0, contrast="node21", blend="alpha")
    assert record.blend["contrast_mode"] == "node21" and record.blend["contrast"] >= 0.6

    naive_renderer = SceneRenderer(scene, follow=False, without_overlay={record.id})
    naive = np.array(naive_renderer.image)
    mask = naive_renderer.lesion_mask(record.id)
    labels_naive = naive_renderer.labels.copy()
    assert mask.any() and np.array_equal(labels_naive > 0, mask)
    # The projected CT nodule attenuates: the paste is brighter than the clean CXR on its mask.
    assert naive[mask].mean() > source[mask].mean() + 1.0

    margin = 8
    model = train_harmonizer(
        source, config=preset("singan", "fast", niter=2, region_size=192), lesion_mask=mask, seed=0,
    )
    r, c, h, w = model.roi
    rows, cols = np.nonzero(mask)
    assert (h, w) == (192, 192) and r <= rows.min() and rows.max() < r + h and c <= cols.min() and cols.max() < c + w
    path = model.save(tmp_path / "node21.safetensors")
    model = Harmonizer.load(path)
    scale = model.n_scales - 2
    sample, = harmonize(model, naive, mask, scale, 1, seed=4, blend_margin_px=margin, reference_image=source)

    weight = blend_weights(mask, margin)
    wr, wc = np.nonzero(weight > 0)
    box = (slice(wr.min(), wr.max() + 1), slice(wc.min(), wc.max() + 1))
    attach_overlay(
        scene, record.id, sample[box], np.ones(sample[box].shape, np.float32), [box[0].start, box[1].start],
        provenance={"engine": model.architecture, "model_sha256": model.sha256, "injection_scale": scale,
                    "seed": 4, "sample": 0, "blend_margin_px": margin},
    )
    reopened = Scene.open(scene.folder)
    assert reopened.lesion(record.id).params["overlay"]["model_sha256"] == model.sha256 != ""
    out = render_scene(reopened)
    # issue 15: the label is re-derived from what the harmonized lesion changed (render_scene
    # checks it); it keeps every naive label pixel and stays close to the lesion
    a, b = out.labels > 0, labels_naive > 0
    print("harmonized vs naive label IoU", (a & b).sum() / (a | b).sum(), a.sum(), b.sum())
    assert (a & b).sum() / (a | b).sum() > 0.7
    far = ndimage.distance_transform_edt(~mask) >= margin
    np.testing.assert_array_equal(out.image[far], naive[far])  # nothing changes beyond the margin
    assert not np.array_equal(out.image[mask], naive[mask])
    np.testing.assert_allclose(out.image[mask], sample[mask], atol=1e-3)

    # Poisson baseline, per lesion: re-blending drops the harmonization, labels stay.
    edit_lesion(reopened, record.id, blend={"mode": "poisson"})
    assert "overlay" not in reopened.lesion(record.id).params
    poisson = render_scene(reopened)  # checks label == what changed (issue 15)
    a, b = poisson.labels > 0, labels_naive > 0
    assert (a & b).sum() / (a | b).sum() > 0.7
    assert not np.array_equal(poisson.image[mask], naive[mask])
