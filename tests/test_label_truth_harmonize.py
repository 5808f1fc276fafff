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
