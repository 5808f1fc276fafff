"""Harmonization keeps the lesion (issue 15): samples that lost contrast or changed sign are
rejected with the reason; samples of one request differ."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_synthseg.harmonize import (
    MIN_CONTRAST_KEPT,
    HarmonizedSample,
    contrast_kept,
    harmonize,
    harmonize_lesion,
    preset,
    train_harmonizer,
)


def tissue(shape=(64, 72), seed=0):
    rng = np.random.default_rng(seed)
    tex = ndimage.gaussian_filter(rng.normal(0, 1, shape), 2.0)
    return (400 + 300 * tex / tex.std() + np.linspace(0, 200, shape[1])[None]).astype(np.float32)


@pytest.fixture(scope="module")
def model_and_image():
    torch.set_num_threads(1)
    image = tissue()
    config = preset("singan", "fast", niter=4, min_size=12, max_size=48, train_crop=16, nfc=8, scale_factor=0.5,
                    max_nfc=8)
    return train_harmonizer(image, config=config, seed=7), image


def test_contrast_kept_and_reasons():
    original = np.zeros((8, 8))
    mask = np.zeros((8, 8), bool)
    mask[3:5, 3:5] = True
    naive = original + 100 * mask
    assert contrast_kept(original, naive, original + 60 * mask, mask) == pytest.approx(0.6)
    assert contrast_kept(original, naive, original - 10 * mask, mask) == pytest.approx(-0.1)
    assert np.isnan(contrast_kept(original, original, naive, mask))
    assert HarmonizedSample(naive, 0.6, MIN_CONTRAST_KEPT).accepted
    lost = HarmonizedSample(naive, 0.2, MIN_CONTRAST_KEPT)
    assert not lost.accepted and "lost too much contrast" in lost.reason
    flipped = HarmonizedSample(naive, -0.1, MIN_CONTRAST_KEPT)
    assert not flipped.accepted and "changed sign" in flipped.reason


def test_harmonize_lesion_checks_every_sample(model_and_image):
    model, image = model_and_image
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    mask = (yy - 30) ** 2 + (xx - 36) ** 2 <= 25
    naive = image + 250.0 * mask
    samples = harmonize_lesion(model, naive, mask, model.n_scales - 2, original_image=image, n_samples=4, seed=1,
                               add_back="original")
    assert len(samples) == 4
    for s in samples:
        assert s.accepted == (s.contrast_kept >= MIN_CONTRAST_KEPT)
        assert s.accepted or s.reason
    # asking for more than any sample can keep rejects them all, each with its reason
    strict = harmonize_lesion(model, naive, mask, model.n_scales - 2, original_image=image, n_samples=2, seed=1,
                              add_back="original", min_contrast_kept=50.0)
    assert not any(s.accepted for s in strict) and all("lost too much" in s.reason for s in strict)


def test_samples_of_one_request_differ(model_and_image):
    model, image = model_and_image
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    mask = (yy - 30) ** 2 + (xx - 36) ** 2 <= 25
    naive = image + 250.0 * mask
    scale = model.n_scales - 1  # the finest scale: the model's own noise there is smallest
    plain = harmonize(model, naive, mask, scale, 2, seed=3, min_injection_noise=0.0)
    noisy = harmonize(model, naive, mask, scale, 2, seed=3)
    spread_plain = float(np.abs(plain[0] - plain[1])[mask].mean())
    spread_noisy = float(np.abs(noisy[0] - noisy[1])[mask].mean())
    assert spread_noisy > spread_plain
    assert spread_noisy > 1.0  # grey levels: a visible difference between samples


# ---- contrast-preserving harmonization (the default for added lesions) ----------------------


def _keeper_case(anchor_gain=0.9, tolerance=0.25, method="blend"):
    from napari_synthseg.harmonize.apply import _ContrastKeeper

    original = tissue((48, 48), seed=3).astype(np.float64)
    yy, xx = np.mgrid[:48, :48]
    mask = (yy - 24) ** 2 + (xx - 24) ** 2 <= 49
    lesion = 200.0 * mask
    naive = original + lesion
    anchor = original + anchor_gain * ndimage.gaussian_filter(lesion, 1.0)
    return _ContrastKeeper(naive, original, anchor, mask, tolerance, method), original, naive, lesion, mask


@pytest.mark.parametrize("method", ["blend", "rescale"])
@pytest.mark.parametrize("gan_gain", [0.1, -0.3, 3.0, 0.9, 1.2])
def test_contrast_keeper_brings_every_sample_within_the_tolerance(gan_gain, method):
    keeper, original, naive, lesion, mask = _keeper_case(method=method)
    rng = np.random.default_rng(0)
    texture = ndimage.gaussian_filter(rng.normal(0, 20, original.shape), 3.0)
    # an erased, a flipped, a tripled and two acceptable lesions, on the GAN's own texture
    out = original + gan_gain * ndimage.gaussian_filter(lesion, 3.0) + texture
    gan_kept = contrast_kept(original, naive, out, mask)
    fixed, reported = keeper(out.copy())
    assert reported == pytest.approx(gan_kept)
    kept = contrast_kept(original, naive, fixed, mask)
    if 0.75 <= gan_kept <= 1.25:
        assert np.array_equal(fixed, out)  # inside the tolerance the GAN's sample is left alone
    else:
        assert kept == pytest.approx(float(np.clip(gan_kept, 0.75, 1.25)), abs=1e-9)
        if method == "blend":
            # the least blend that reaches the bound: part of the GAN's texture is still there
            weight = np.polyfit((keeper.anchor - out).ravel(), (fixed - out).ravel(), 1)[0]
            assert 0 < weight < 1
        elif gan_kept > 1.25:  # the change shrunk towards the image without the lesion
            np.testing.assert_allclose(fixed - original, (1.25 / gan_kept) * (out - original), atol=1e-9)
        else:  # the lesion's coarse band added: the GAN's texture untouched
            step = fixed - out
            np.testing.assert_allclose(step / step.max(), keeper.profile / keeper.profile.max(), atol=1e-9)


@pytest.mark.parametrize("anchor_gain, gan_gain, bound", [(0.6, 0.1, 0.75), (2.0, 3.0, 1.25)])
def test_contrast_keeper_goes_past_an_anchor_that_falls_short(anchor_gain, gan_gain, bound):
    # the no-GAN add-back itself outside the tolerance (a thin lesion's coarse band): the
    # lesion's band is added (or the change shrunk) for the rest
    keeper, original, naive, lesion, mask = _keeper_case(anchor_gain)
    fixed, _ = keeper(original + gan_gain * lesion)
    assert contrast_kept(original, naive, fixed, mask) == pytest.approx(bound, abs=1e-9)


def test_contrast_preserving_harmonize_keeps_every_sample(model_and_image):
    model, image = model_and_image
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    mask = (yy - 30) ** 2 + (xx - 36) ** 2 <= 25
    naive = image + 250.0 * mask
    kwargs = dict(original_image=image, n_samples=4, seed=1, add_back="original")
    # injected at the coarsest scale the GAN redraws the lesion: it loses or exaggerates it
    plain = harmonize_lesion(model, naive, mask, 0, contrast_tolerance=None, **kwargs)
    kept = harmonize_lesion(model, naive, mask, 0, **kwargs)
    assert any(not 0.75 <= s.contrast_kept <= 1.25 for s in plain), "the fixture no longer needs the step"
    outside = ndimage.distance_transform_edt(~mask) >= 8  # the blend margin
    for before, after in zip(plain, kept):
        assert after.accepted and 0.75 - 1e-4 <= after.contrast_kept <= 1.25 + 1e-4
        assert after.gan_contrast_kept == pytest.approx(before.contrast_kept, abs=1e-4)
        assert after.contrast_restored == (not 0.75 <= before.contrast_kept <= 1.25)
        if not after.contrast_restored:
            assert np.array_equal(after.image, before.image)
        assert np.array_equal(after.image[outside], image[outside])
    # samples of one request still differ, with either method
    assert float(np.abs(kept[0].image - kept[1].image)[mask].mean()) > 1.0
    blended = harmonize_lesion(model, naive, mask, 0, contrast_method="blend", **kwargs)
    assert all(0.75 - 1e-4 <= s.contrast_kept <= 1.25 + 1e-4 for s in blended)
    assert float(np.abs(blended[0].image - blended[1].image)[mask].mean()) > 1.0
    with pytest.raises(Exception, match="contrast method"):
        harmonize(model, naive, mask, 0, contrast_tolerance=0.25, original_image=image, contrast_method="magic")
    with pytest.raises(Exception, match="tolerance"):
        harmonize(model, naive, mask, 0, contrast_tolerance=1.5, original_image=image)
    with pytest.raises(Exception, match="image without the lesion"):
        harmonize(model, naive, mask, 0, contrast_tolerance=0.25, add_back="replace")


def test_workflow_default_keeps_the_lesion_and_labels_what_changed(tmp_path, capsys):
    """Workflow, CLI and panel share one default (contrast-preserving); an accepted sample is
    stored with it and the render re-derives its label from what changed."""
    from napari_synthseg.cli import main
    from napari_synthseg.harmonize.apply import CONTRAST_TOLERANCE
    from napari_synthseg.io import MedicalImage, read_image, write_image
    from napari_synthseg.lesions import procedural_cxr_nodule
    from napari_synthseg.lesions.place import place_lesion
    from napari_synthseg.render import render_scene
    from napari_synthseg.scene import Scene
    from napari_synthseg.workflow import harmonize as wf

    assert wf.HarmonizeSettings().contrast_tolerance == CONTRAST_TOLERANCE  # torch-free copy agrees
    with pytest.raises(Exception, match="contrast tolerance"):
        wf.HarmonizeSettings(contrast_tolerance=0.7)
    torch.set_num_threads(1)
    array = np.clip(tissue((96, 96), seed=5) * 10 + 4000, 0, 65535).astype(np.uint16)
    write_image(MedicalImage(array=array, spacing=(0.4, 0.4), origin=(0.0, 0.0), direction=(1.0, 0.0, 0.0, 1.0),
                             modality="CXR"), tmp_path / "cxr.mha")
    image = read_image(tmp_path / "cxr.mha")
    scene = Scene.create(image, tmp_path / "scene")
    record = place_lesion(scene, procedural_cxr_nodule(6.0, "solid", target_spacing=image.scale, seed=1),
                          at_xyz=(48, 48), blend="alpha")
    config = preset("singan", "fast", niter=3, min_size=12, max_size=48, train_crop=16, nfc=8, scale_factor=0.5,
                    max_nfc=8)
    model = train_harmonizer(array, config=config, seed=2)
    settings = wf.HarmonizeSettings(injection_scale=0, samples=3, margin_px=4)
    result = wf.harmonize_lesion(scene, record.id, model, settings)
    assert result.add_back == "original" and len(result.checks) == 3
    assert all(c.accepted and 0.75 - 0.01 <= c.contrast_kept <= 1.25 + 0.01 for c in result.checks)
    assert all(result.describe(k).startswith(f"sample {k}: keeps") for k in range(3))
    wf.save_model_beside_scene(model, scene)
    wf.accept_harmonized(scene, result, 0)
    overlay = Scene.open(scene.folder).lesion(record.id).params["overlay"]
    assert overlay["contrast_tolerance"] == CONTRAST_TOLERANCE
    assert overlay["contrast_kept"] == pytest.approx(result.checks[0].contrast_kept)
    rendered = render_scene(Scene.open(scene.folder))  # raises if the label disagrees with the image
    changed = np.abs(rendered.image.astype(np.float64) - array) > 0
    assert changed.any() and (rendered.labels[changed] == record.label).mean() > 0.5

    # the CLI takes the same default and 'off'; a bad value is one line, exit 2
    model_path = tmp_path / "h.safetensors"
    model.save(model_path)
    common = ["harmonize", str(scene.folder), "--lesion", record.id, "--model", str(model_path), "--scale", "0",
              "--samples", "2", "--margin", "4", "--threads", "1"]
    assert main(common) == 0
    assert main([*common, "--contrast-tolerance", "off"]) == 0
    capsys.readouterr()
    assert main([*common, "--contrast-tolerance", "lots"]) == 2
    err = capsys.readouterr().err.strip()
    assert "contrast-tolerance" in err and "\n" not in err
