"""Healthy fill: interface contract, exactness on smooth images, native ranges, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from napari_synthseg.errors import SynthsegError
from napari_synthseg.fill import Filler, available_fillers, get_filler, register_filler

METHODS = ["biharmonic", "telea"]


def _disc(shape, centre, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r * r


def _quadratic(shape, offset=0.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    return offset + 3.0 * xx - 2.0 * yy + 0.01 * xx * yy + 0.005 * yy**2


def test_registry_lists_classical_methods():
    assert {"biharmonic", "telea"} <= set(available_fillers())
    for name in METHODS:
        f = get_filler(name.upper())
        assert isinstance(f, Filler) and f.name == name


def test_unknown_method_is_user_error():
    with pytest.raises(SynthsegError, match="unknown fill method"):
        get_filler("no-such-method")


def test_register_custom_filler_goes_through_shared_driver():
    class MeanFiller(Filler):
        name = "test-mean"

        def fill_region(self, image, mask, spacing, rng):
            out = image.copy()
            out[mask] = image[~mask].mean()
            return out

    register_filler("test-mean", MeanFiller, overwrite=True)
    img = np.full((100, 100), 7.0)
    img[40:60, 40:60] = 100.0
    m = np.zeros_like(img, bool)
    m[40:60, 40:60] = True
    out = get_filler("test-mean").fill(img, m)
    np.testing.assert_allclose(out[m], 7.0)  # crop context is all 7s, lesion replaced
    with pytest.raises(ValueError):
        register_filler("test-mean", MeanFiller)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("offset,dtype", [(0.0, np.float32), (-1000.0, np.int16),
                                          (30000.0, np.uint16), (200.0, np.uint8)])
def test_outside_mask_identical_and_native_range(method, offset, dtype):
    ref = _quadratic((128, 160), offset)
    if dtype == np.uint8:
        ref = np.clip(ref * 0.2 + 60, 0, 255)
    img = np.round(ref).astype(dtype)
    m = _disc(img.shape, (60, 80), 12)
    out = get_filler(method).fill(img, m)
    assert out.dtype == np.float32 and out.shape == img.shape
    assert out is not img
    np.testing.assert_array_equal(out[~m], img.astype(np.float32)[~m])
    # Filled values stay in the native range of the surroundings (no 0..255 rescale).
    ring = _disc(img.shape, (60, 80), 16) & ~m
    lo, hi = img[ring].min(), img[ring].max()
    span = float(hi) - float(lo)
    assert out[m].min() >= lo - 0.1 * span and out[m].max() <= hi + 0.1 * span


def test_biharmonic_recovers_quadratic_exactly():
    ref = _quadratic((200, 220), -1000.0)
    m = _disc(ref.shape, (100, 110), 20) | _disc(ref.shape, (30, 190), 6)
    out = get_filler("biharmonic").fill(ref, m)
    err = np.abs(out[m] - ref[m]).max()
    assert err < 0.05  # values span ~1000; float32 rounding only


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_telea_close_on_linear_ramp_at_any_scale(scale):
    # OpenCV's float Telea alone has an absolute ~1.5-unit error, which ruins 0..1 images.
    yy, xx = np.mgrid[:128, :128].astype(np.float64)
    ref = (30.0 + 4.0 * xx + 1.0 * yy) * scale
    m = _disc(ref.shape, (64, 64), 8)
    out = get_filler("telea").fill(ref, m)
    # Telea averages first-order extrapolations: not exact, but within a few gradient steps.
    assert np.abs(out[m] - ref[m]).mean() < 4 * 4.0 * scale


def test_telea_keeps_constant_image_constant():
    # A constant image must stay constant.
    flat = np.full((64, 64), -700.0)
    out = get_filler("telea").fill(flat, _disc(flat.shape, (32, 32), 10))
    np.testing.assert_allclose(out, -700.0, atol=1e-3)


def test_fill_removes_bright_lesion():
    rng = np.random.default_rng(0)
    img = rng.normal(-850, 20, (256, 256))
    m = _disc(img.shape, (128, 128), 15)
    img[m] = 40.0  # solid nodule in lung parenchyma
    for method in METHODS:
        out = get_filler(method).fill(img, m)
        assert abs(out[m].mean() - (-850)) < 30


def test_small_lesion_in_large_image_touches_only_local_crop():
    img = np.zeros((2048, 2048), np.float32)
    img[::2] = 1.0  # stripes far from the lesion must not influence nor be changed
    m = _disc(img.shape, (1000, 1000), 10)
    out = get_filler("biharmonic").fill(img, m)
    np.testing.assert_array_equal(out[~m], img[~m])


@pytest.mark.parametrize("method", METHODS)
def test_3d_volume(method):
    z, y, x = np.mgrid[:24, :48, :48].astype(np.float64)
    vol = -600.0 + 5.0 * x - 3.0 * y + 2.0 * z
    m = np.zeros(vol.shape, bool)
    m[8:16, 18:30, 20:28] = True
    for spacing in (None, (5.0, 0.8, 0.8)):
        out = get_filler(method).fill(vol.astype(np.int16), m, spacing=spacing)
        np.testing.assert_array_equal(out[~m], vol.astype(np.float32)[~m])
        tol = 0.05 if method == "biharmonic" else 15.0
        assert np.abs(out[m] - vol[m]).max() < tol


def test_two_distant_components_both_filled():
    ref = _quadratic((300, 300), 500.0)
    m = _disc(ref.shape, (20, 20), 5) | _disc(ref.shape, (270, 260), 9)
    img = ref.copy()
    img[m] = 5000.0
    out = get_filler("biharmonic").fill(img, m)
    assert np.abs(out[m] - ref[m]).max() < 0.05


@pytest.mark.parametrize("method", METHODS)
def test_bad_input_raises_one_line_user_errors(method):
    f = get_filler(method)
    img = np.zeros((32, 32), np.float32)
    cases = [
        (img, np.zeros((32, 32), bool), "empty"),
        (img, np.ones((32, 32), bool), "whole image"),
        (img, np.zeros((16, 32), bool), "does not match"),
        (np.where(_disc((32, 32), (3, 3), 2), np.nan, 0.0), _disc((32, 32), (16, 16), 4), "NaN"),
        (np.zeros((4, 32, 32, 3)), np.ones((4, 32, 32, 3), bool), "2D or 3D"),
    ]
    for im, m, msg in cases:
        with pytest.raises(SynthsegError, match=msg) as info:
            f.fill(im, m)
        assert "\n" not in str(info.value)
    with pytest.raises(SynthsegError, match="spacing"):
        f.fill(img, _disc((32, 32), (16, 16), 4), spacing=(1.0,))


@pytest.mark.parametrize("method", METHODS)
def test_mask_touching_image_edge_and_input_untouched(method):
    ref = _quadratic((96, 120), 100.0)
    img = ref.astype(np.float32)
    before = img.copy()
    m = np.zeros(img.shape, bool)
    m[0:10, 50:62] = True  # lesion cut by the top edge
    m[40:50, 110:120] = True  # and one by the right edge
    out = get_filler(method).fill(img, m)
    np.testing.assert_array_equal(img, before)  # the caller's array is not modified
    np.testing.assert_array_equal(out[~m], before[~m])
    # At the image edge there is context on one side only: no method is exact there.
    assert np.abs(out[m] - ref[m]).max() < 0.05 * np.ptp(ref)
    if method == "biharmonic":
        # Cropping must not change the solution: compare with a whole-image solve.
        from skimage.restoration import inpaint_biharmonic

        whole = inpaint_biharmonic(before.astype(np.float64), m)
        np.testing.assert_allclose(out[m], whole[m], atol=1e-2)


def test_slicewise_fill_with_fully_masked_slice_is_user_error():
    vol = np.zeros((5, 16, 16), np.float32)
    m = np.zeros(vol.shape, bool)
    m[2] = True
    with pytest.raises(SynthsegError, match="entirely masked"):
        get_filler("telea").fill(vol, m)
