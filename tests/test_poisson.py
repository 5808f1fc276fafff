"""Poisson blending against an independent sparse direct solve of the same discrete problem."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

from napari_synthseg.errors import SynthsegError
from napari_synthseg.render import blend_roi, poisson_blend, poisson_blend_region, solve_poisson_dirichlet


# --------------------------------------------------------------------------------------------
# Independent reference: assemble the full problem (unknown f, not a correction) as a sparse
# matrix in float64 and solve it directly.
# --------------------------------------------------------------------------------------------


def _laplacian_matrix(shape, spacing):
    """Dirichlet Laplacian on ``shape`` interior points as a Kronecker sum."""
    mats = []
    for k, n in enumerate(shape):
        d = sp.diags([np.ones(n - 1), -2.0 * np.ones(n), np.ones(n - 1)], [-1, 0, 1]) / spacing[k] ** 2
        parts = [sp.identity(m) for m in shape]
        parts[k] = d
        a = parts[0]
        for p in parts[1:]:
            a = sp.kron(a, p)
        mats.append(a)
    return sp.csc_matrix(sum(mats))


def _reference_dirichlet(rhs, boundary, spacing):
    """f with f = boundary on the border and the weighted Laplacian = rhs inside."""
    nd = rhs.ndim
    inner = (slice(1, -1),) * nd
    b = rhs[inner].astype(np.float64).copy()
    g = boundary.astype(np.float64).copy()
    g[inner] = 0.0
    for k in range(nd):
        for shift in (-1, 1):
            sl = [slice(1, -1)] * nd
            sl[k] = slice(1 + shift, g.shape[k] - 1 + shift)
            b -= g[tuple(sl)] / spacing[k] ** 2
    shape = b.shape
    x = spsolve(_laplacian_matrix(shape, spacing), b.ravel())
    f = boundary.astype(np.float64).copy()
    f[inner] = x.reshape(shape)
    return f


def _reference_blend(target, src_full, mask_full, valid_full, roi, spacing, mixed=False):
    """Blend on ``roi`` with full-size source/mask; ``valid_full`` marks the patch pixels."""
    t = target[roi].astype(np.float64)
    s = src_full[roi].astype(np.float64)
    m = mask_full[roi]
    v = valid_full[roi]
    nd = t.ndim
    div = np.zeros_like(t)
    for k in range(nd):
        a = [slice(None)] * nd
        b = [slice(None)] * nd
        a[k] = slice(0, -1)
        b[k] = slice(1, None)
        a, b = tuple(a), tuple(b)
        sd = s[b] - s[a]
        td = t[b] - t[a]
        use_src = (m[a] | m[b]) & v[a] & v[b]
        if mixed:
            use_src &= np.abs(sd) > np.abs(td)
        g = np.where(use_src, sd, td) / spacing[k] ** 2
        div[a] += g
        div[b] -= g
    return _reference_dirichlet(div, t, spacing)


def _embed(shape, patch, offset, fill=0):
    full = np.full(shape, fill, dtype=patch.dtype)
    sl = tuple(slice(o, o + p) for o, p in zip(offset, patch.shape))
    full[sl] = patch
    return full


def _blob(shape, rng, frac=0.35):
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum(g**2 for g in grids))
    return r < (0.8 + 0.1 * rng.standard_normal()) * (1 - frac) + frac


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mixed", [False, True])
def test_2d_matches_sparse_solve(mixed):
    rng = np.random.default_rng(0)
    target = rng.random((90, 110)).astype(np.float32)
    source = (0.5 + 0.3 * rng.random((37, 41))).astype(np.float32)
    mask = _blob(source.shape, rng)
    offset = (20, 33)
    out = poisson_blend(target, source, mask, offset=offset, mixed=mixed)
    roi = blend_roi(target.shape, mask, offset=offset)
    ref = target.astype(np.float64).copy()
    ref[roi] = _reference_blend(
        target, _embed(target.shape, source, offset), _embed(target.shape, mask, offset),
        _embed(target.shape, np.ones(mask.shape, bool), offset), roi, (1.0, 1.0), mixed,
    )
    assert out.dtype == np.float32
    assert np.abs(out - ref).max() < 1e-4


def test_3d_anisotropic_matches_sparse_solve():
    rng = np.random.default_rng(1)
    spacing = (2.5, 0.7, 0.9)
    target = (rng.standard_normal((20, 40, 36)) * 200 - 600).astype(np.float32)  # lung-ish HU
    source = (rng.standard_normal((9, 15, 13)) * 30 + 40).astype(np.float32)  # soft tissue HU
    mask = _blob(source.shape, rng)
    offset = (5, 11, 9)
    out = poisson_blend(target, source, mask, offset=offset, spacing=spacing)
    roi = blend_roi(target.shape, mask, offset=offset)
    ref = target.astype(np.float64).copy()
    ref[roi] = _reference_blend(
        target, _embed(target.shape, source, offset), _embed(target.shape, mask, offset),
        _embed(target.shape, np.ones(mask.shape, bool), offset), roi, spacing,
    )
    # HU values of ~1000: 1e-4 relative to the intensity scale.
    scale = np.abs(target).max()
    assert np.abs(out - ref).max() / scale < 1e-4
    # The spacing matters: an isotropic solve differs clearly.
    iso = poisson_blend(target, source, mask, offset=offset)
    assert np.abs(iso - ref).max() / scale > 1e-3


def test_low_level_solver_matches_sparse_solve_3d():
    rng = np.random.default_rng(2)
    shape = (7, 12, 10)  # interior lengths 5, 10, 8: not all fast, still exact
    rhs = rng.standard_normal(shape).astype(np.float32)
    boundary = rng.standard_normal(shape).astype(np.float32)
    spacing = (3.0, 0.8, 1.1)
    f = solve_poisson_dirichlet(rhs, boundary, spacing)
    ref = _reference_dirichlet(rhs, boundary, spacing)
    assert np.abs(f - ref).max() < 1e-4
    # Border is the boundary data, untouched.
    border = np.ones(shape, bool)
    border[1:-1, 1:-1, 1:-1] = False
    assert np.array_equal(f[border], boundary[border])


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 1.3)])
def test_zero_source_gradient_gives_harmonic_interpolation(spacing):
    # x^2/hx^2 - y^2/hy^2 has zero discrete (weighted) Laplacian, so it must be reproduced
    # exactly from its values on the ROI border, whatever the target holds inside.
    hy, hx = spacing
    y, x = np.meshgrid(np.arange(60.0), np.arange(70.0), indexing="ij")
    harmonic = (x - 30) ** 2 * hx**2 - (y - 25) ** 2 * hy**2 + 3 * x - 2 * y + 0.05 * x * y
    harmonic = harmonic / np.abs(harmonic).max()
    rng = np.random.default_rng(3)
    target = harmonic.copy()
    target[11:48, 14:57] = rng.random((37, 43))  # garbage inside the ROI
    mask = np.zeros(target.shape, bool)
    mask[11:48, 14:57] = True  # margin 1: the ROI border is the ring around this box
    source = np.full(target.shape, 7.0)
    out = poisson_blend(target, source, mask, spacing=spacing, fast_lengths=False, dtype=np.float64)
    assert blend_roi(target.shape, mask, fast_lengths=False) == (slice(10, 49), slice(13, 58))
    assert np.abs(out - harmonic).max() < 1e-5


def test_pixels_outside_roi_unchanged_and_inputs_untouched():
    rng = np.random.default_rng(4)
    target = rng.random((64, 80)).astype(np.float32)
    source = rng.random((13, 17)).astype(np.float32)
    mask = _blob(source.shape, rng)
    copies = [a.copy() for a in (target, source, mask)]
    out = poisson_blend(target, source, mask, offset=(30, 40), margin=3)
    roi = blend_roi(target.shape, mask, offset=(30, 40), margin=3)
    outside = np.ones(target.shape, bool)
    outside[roi] = False
    assert np.array_equal(out[outside], target[outside])
    assert not np.array_equal(out[roi], target[roi])
    for a, c in zip((target, source, mask), copies):
        assert np.array_equal(a, c)
    assert out is not target


def test_roi_is_grown_to_fast_lengths_and_contains_mask_plus_margin():
    mask = np.ones((255, 3), bool)  # ROI 257 x 5 -> interior 255 (256 fast) and 3 (4 fast)
    roi = blend_roi((600, 600), mask, offset=(100, 200))
    assert roi == (slice(99, 356), slice(199, 204))
    mask = np.ones((256, 9), bool)  # interior 256: 257 is prime -> grown to 269 (270 = 2*3^3*5)
    roi = blend_roi((600, 600), mask, offset=(100, 200))
    n = roi[0].stop - roi[0].start
    assert n == 271 and roi[0].start <= 99 and roi[0].stop >= 357
    # Clipped at the image border, growth goes to the other side.
    roi = blend_roi((600, 600), mask, offset=(1, 0))  # ROI (0, 258) before growth
    assert roi[0] == slice(0, 271)


def test_identity_when_source_equals_target_up_to_a_constant():
    rng = np.random.default_rng(5)
    target = (rng.random((50, 50)) * 3000).astype(np.float32)
    mask = _blob((21, 19), rng)
    source = target[10:31, 20:39] + 250.0  # same gradients, shifted level
    out = poisson_blend(target, source, mask, offset=(10, 20))
    assert np.abs(out - target).max() < 3000 * 1e-6


@pytest.mark.parametrize("shape,patch", [((97, 89), (31, 23)), ((101, 53), (17, 29)), ((13, 7, 11), (5, 3, 7))])
def test_odd_and_prime_sizes(shape, patch):
    rng = np.random.default_rng(6)
    target = rng.random(shape).astype(np.float32)
    source = rng.random(patch).astype(np.float32)
    mask = np.ones(patch, bool)
    offset = tuple((s - p) // 2 for s, p in zip(shape, patch))
    for fast in (True, False):
        out = poisson_blend(target, source, mask, offset=offset, fast_lengths=fast)
        roi = blend_roi(shape, mask, offset=offset, fast_lengths=fast)
        ref = target.astype(np.float64).copy()
        ref[roi] = _reference_blend(
            target, _embed(shape, source, offset), _embed(shape, mask, offset),
            _embed(shape, np.ones(patch, bool), offset), roi, (1.0,) * len(shape),
        )
        assert np.abs(out - ref).max() < 1e-4


def test_mask_touching_patch_edge_and_image_border_is_clipped():
    rng = np.random.default_rng(7)
    target = rng.random((40, 50)).astype(np.float32)
    source = rng.random((20, 20)).astype(np.float32)
    mask = np.ones((20, 20), bool)  # touches every patch edge
    offset = (-5, 35)  # overhangs the top and right image borders
    out = poisson_blend(target, source, mask, offset=offset)
    roi = blend_roi(target.shape, mask, offset=offset)
    assert roi[0].start == 0 and roi[1].stop == 50
    sl_img = (slice(0, 15), slice(35, 50))
    src_full = np.zeros(target.shape, np.float32)
    src_full[sl_img] = source[5:20, 0:15]
    m_full = np.zeros(target.shape, bool)
    m_full[sl_img] = True
    ref = target.astype(np.float64).copy()
    ref[roi] = _reference_blend(target, src_full, m_full, m_full, roi, (1.0, 1.0))
    assert np.abs(out - ref).max() < 1e-4
    # Mask pixels on the image border lie on the ROI border: they keep target values.
    assert np.array_equal(out[0, 35:], target[0, 35:])


def test_native_integer_dtypes_are_kept():
    rng = np.random.default_rng(8)
    ct = rng.integers(-1024, -500, (30, 30), dtype=np.int16)
    lesion = rng.integers(20, 60, (8, 8)).astype(np.int16)
    out = poisson_blend(ct, lesion, np.ones((8, 8), bool), offset=(10, 10))
    assert out.dtype == np.int16
    f = poisson_blend(ct, lesion, np.ones((8, 8), bool), offset=(10, 10), dtype=np.float32)
    assert np.array_equal(out, np.rint(f).astype(np.int16))
    assert out.min() < 0  # negative HU survive
    cxr = rng.integers(0, 65535, (30, 30), dtype=np.uint16)
    out16 = poisson_blend(cxr, cxr[5:15, 5:15] // 2, np.ones((10, 10), bool), offset=(12, 12))
    assert out16.dtype == np.uint16


def test_region_api_matches_full_blend():
    rng = np.random.default_rng(9)
    target = rng.random((64, 64)).astype(np.float32)
    source = rng.random((10, 12)).astype(np.float32)
    mask = _blob(source.shape, rng)
    roi, values = poisson_blend_region(target, source, mask, offset=(20, 20), mixed=True)
    full = poisson_blend(target, source, mask, offset=(20, 20), mixed=True)
    assert np.array_equal(full[roi], values)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(mask=np.zeros((5, 5), bool)), "empty"),
        (dict(offset=(100, 100)), "off the image"),
        (dict(offset=(-10, 0)), "off the image"),
        (dict(source=np.ones((5, 6), np.float32)), "differs from mask shape"),
        (dict(source=np.ones((5, 5, 1)), mask=np.ones((5, 5, 1), bool)), "axes"),
        (dict(offset=None), "pass offset"),
        (dict(offset=(1, 2, 3)), "offset has 3 values"),
        (dict(spacing=(1.0, 0.0)), "positive"),
        (dict(spacing=(1.0,)), "spacing"),
        (dict(margin=0), "margin"),
        (dict(source=np.full((5, 5), np.nan)), "NaN"),
        (dict(target=np.full((30, 30), np.nan)), "NaN"),
        (dict(target=np.zeros((30, 30), complex)), "dtype"),
    ],
)
def test_bad_inputs_raise_synthseg_error(kwargs, match):
    args = dict(target=np.zeros((30, 30), np.float32), source=np.ones((5, 5), np.float32),
                mask=np.ones((5, 5), bool), offset=(10, 10))
    args.update(kwargs)
    target, source, mask = args.pop("target"), args.pop("source"), args.pop("mask")
    with pytest.raises(SynthsegError, match=match) as info:
        poisson_blend(target, source, mask, **args)
    assert "\n" not in str(info.value)


def test_nan_far_from_lesion_is_left_alone():
    target = np.zeros((64, 64), np.float32)
    target[0, 0] = np.nan  # outside the ROI: not read, kept as is
    out = poisson_blend(target, np.ones((5, 5)), np.ones((5, 5), bool), offset=(30, 30))
    assert np.isnan(out[0, 0]) and np.isfinite(out[1:, 1:]).all()


def test_low_level_bad_inputs():
    with pytest.raises(SynthsegError, match="no interior"):
        solve_poisson_dirichlet(np.zeros((2, 5)), np.zeros((2, 5)))
    with pytest.raises(SynthsegError, match="shape"):
        solve_poisson_dirichlet(np.zeros((5, 5)), np.zeros((5, 6)))
