"""Lesion sources and the library item: masks, orientation, size in mm, seeds, library, extraction."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from napari_synthseg.errors import SynthsegError
from napari_synthseg.lesions import (
    LesionLibrary,
    LesionPatch,
    ct_lesion_from_arrays,
    extract_residual,
    load_ct_patch,
    procedural_cxr_nodule,
    procedural_nodule,
    project_ct_lesion,
)

MU_W = 0.02


def _disc(shape, centre, radius):
    yy, xx = np.indices(shape)
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def _ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)):
    """Voxels whose centres lie inside a sphere (radius and centre in mm)."""
    zz, yy, xx = [(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)]
    return ((zz[:, None, None] - centre[0]) ** 2 + (yy[None, :, None] - centre[1]) ** 2
            + (xx[None, None, :] - centre[2]) ** 2) <= radius ** 2


def _one_line(exc: pytest.ExceptionInfo) -> None:
    msg = str(exc.value)
    assert msg and "\n" not in msg


# ----------------------------------------------------------------------------- item
def test_bad_input_raises_one_line_errors():
    m = _disc((20, 20), (10, 10), 4)
    with pytest.raises(SynthsegError) as e:
        LesionPatch(np.zeros((20, 20)), np.zeros((20, 20), bool), 1.0)
    _one_line(e)
    with pytest.raises(SynthsegError) as e:
        LesionPatch(np.zeros((20, 20)), m[:19], 1.0)
    _one_line(e)
    bad = np.zeros((20, 20))
    bad[3, 3] = np.nan
    with pytest.raises(SynthsegError) as e:
        LesionPatch(bad, m, 1.0)
    _one_line(e)
    with pytest.raises(SynthsegError) as e:
        LesionPatch(np.zeros((20, 20)), m, (1.0, 1.0, 1.0))
    _one_line(e)
    with pytest.raises(SynthsegError) as e:
        LesionPatch(np.zeros(20), np.ones(20, bool), 1.0)
    _one_line(e)
    with pytest.raises(SynthsegError) as e:
        LesionPatch(np.zeros((20, 20)), m, 1.0, absolute=np.zeros((21, 20)))
    _one_line(e)


def test_diameter_mm_equivalent_and_extent():
    spacing = (0.5, 0.5)
    m = _disc((80, 80), (40, 40), 20)  # radius 20 px = 10 mm
    item = LesionPatch(m * 1.0, m, spacing)
    assert item.diameter_mm() == pytest.approx(20.0, rel=0.02)
    assert item.diameter_mm("extent") == pytest.approx(20.5, abs=0.6)
    ball = _ball((30, 30, 30), (15, 15, 15), 6.0)
    item3 = LesionPatch(ball * 1.0, ball, (1, 1, 1))
    assert item3.diameter_mm() == pytest.approx(12.0, rel=0.03)


def test_resample_keeps_size_in_mm_and_integral():
    ball = _ball((30, 30, 30), (15, 15, 15), 7.0)
    item = LesionPatch(ball * 100.0, ball, (1.0, 1.0, 1.0), absolute=ball * 100.0 - 850)
    fine = item.resample_to(0.5)
    assert fine.spacing == (0.5, 0.5, 0.5)
    assert fine.shape == (60, 60, 60)
    assert fine.mask.dtype == bool
    assert fine.diameter_mm() == pytest.approx(14.0, rel=0.04)
    # integral of the residual (HU * mm^3) is preserved by linear interpolation
    assert fine.intensity.sum() * 0.125 == pytest.approx(item.intensity.sum(), rel=0.02)
    coarse = item.resample_to((2.0, 2.0, 2.0))
    assert coarse.diameter_mm() == pytest.approx(14.0, rel=0.1)
    assert fine.provenance["history"][-1]["op"] == "resample_to"


def test_transform_rotates_and_scales_2d():
    m = np.zeros((41, 41), bool)
    m[18:23, 5:36] = True  # long along x (cols)
    item = LesionPatch(m * 1.0, m, (0.5, 0.5))
    rot = item.transform(rotation_deg=90)
    rows = np.nonzero(rot.mask.any(axis=1))[0]
    cols = np.nonzero(rot.mask.any(axis=0))[0]
    assert np.ptp(rows) > 25 and np.ptp(cols) < 8  # now long along y
    assert rot.diameter_mm() == pytest.approx(item.diameter_mm(), rel=0.05)
    big = item.transform(scale=2.0)
    assert big.diameter_mm() == pytest.approx(2 * item.diameter_mm(), rel=0.05)
    # counter-clockwise on screen: a blob right of centre ends up above centre
    b = _disc((41, 41), (20, 32), 3)
    up = LesionPatch(b * 1.0, b, 1.0).transform(rotation_deg=90)
    cy, cx = np.argwhere(up.mask).mean(axis=0)
    h, w = up.shape
    assert cy < h / 2 - 8 and abs(cx - (w - 1) / 2) < 1.5


def test_transform_rotates_3d_about_z():
    m = np.zeros((11, 31, 31), bool)
    m[4:7, 14:17, 3:28] = True  # long along x
    item = LesionPatch(m * 1.0, m, (1, 1, 1))
    rot = item.transform(rotation_deg=(90, 0, 0))  # about z: x -> y
    ext = [np.ptp(ix) for ix in np.nonzero(rot.mask)]
    assert ext[1] > 20 and ext[2] < 5 and ext[0] < 5
    rot_y = item.transform(rotation_deg=(0, 90, 0))  # about y: x -> z
    ext = [np.ptp(ix) for ix in np.nonzero(rot_y.mask)]
    assert ext[0] > 20 and ext[2] < 5



def _smooth_ball(shape, spacing, radius_mm, width_mm=1.0):
    """A ball with a smooth edge, sampled analytically at pixel centres of a centred grid."""
    grids = np.meshgrid(*[(np.arange(n) + 0.5 - n / 2.0) * s for n, s in zip(shape, spacing)],
                        indexing="ij", sparse=True)
    r = np.sqrt(sum(g * g for g in grids))
    return (0.5 - 0.5 * np.tanh((r - radius_mm) / width_mm)).astype(np.float32)


def test_transform_onto_a_new_spacing_interpolates_once():
    """Resize + respacing in one call beats transform-then-resample against the exact lesion."""
    src_sp, dst_sp, scale = (2.5, 0.7, 0.7), (1.25, 0.9, 0.9), 1.6
    ball = _smooth_ball((14, 40, 40), src_sp, 6.0)
    item = LesionPatch(ball * 100.0, ball >= 0.5, src_sp)
    once = item.transform(scale=scale, rotation_deg=(30, 0, 0), spacing=dst_sp)
    twice = item.transform(scale=scale, rotation_deg=(30, 0, 0)).resample_to(dst_sp)
    assert once.spacing == dst_sp and once.provenance["history"][-1]["spacing"] == list(dst_sp)
    exact = 100.0 * _smooth_ball(once.shape, dst_sp, 6.0 * scale, 1.0 * scale)
    err_once = np.abs(once.intensity - exact).mean()
    # the two-step result lies on an edge-aligned grid: compare it to its own exact lesion
    exact2 = np.zeros(twice.shape, np.float32)
    grids = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(twice.shape, dst_sp)],
                        indexing="ij", sparse=True)
    centre = [n * s / 2.0 for n, s in zip(item.transform(scale=scale, rotation_deg=(30, 0, 0)).shape, src_sp)]
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre)))
    exact2 = 100.0 * (0.5 - 0.5 * np.tanh((r - 6.0 * scale) / scale))
    err_twice = np.abs(twice.intensity - exact2).mean()
    assert err_once < 0.9 * err_twice, (err_once, err_twice)  # measured 0.157 vs 0.197
    # and the mask is thresholded once: closer to the exact ball (measured 484 vs 558 voxels off)
    assert (once.mask != (exact >= 50)).sum() < 0.95 * (twice.mask != (exact2 >= 50)).sum()
    assert once.diameter_mm() == pytest.approx(12.0 * scale, rel=0.03)
    # shrinking onto a coarser grid is anti-aliased: no ringing, integral kept
    small = item.transform(scale=0.5, spacing=(5.0, 2.0, 2.0))
    assert small.intensity.min() >= -1e-3
    assert small.intensity.sum() * 20.0 == pytest.approx(item.intensity.sum() * np.prod(src_sp) / 8, rel=0.05)

# ----------------------------------------------------------------------------- library
def test_library_round_trip(tmp_path):
    lib = LesionLibrary(tmp_path / "lib")
    items = []
    for r, kind in ((3, "solid"), (6, "ground-glass"), (10, "solid")):
        m = _disc((30, 30), (15, 15), r)
        items.append(LesionPatch(m * 0.5, m, (0.4, 0.4), kind=kind, units="attenuation",
                                 absolute=m * 0.5 + 1.0, provenance={"seed": r, "source_file": "x.mha"}))
    ids = [lib.add(it) for it in items]
    assert len(set(ids)) == 3
    assert lib.add(items[0]) == ids[0]  # content-addressed
    for f in ids:
        assert (tmp_path / "lib" / f"{f}.safetensors").exists()
        assert json.loads((tmp_path / "lib" / f"{f}.json").read_text())["kind"] in ("solid", "ground-glass")
    again = LesionLibrary(tmp_path / "lib")  # fresh instance reads the files
    assert len(again) == 3 and {r["id"] for r in again.list()} == set(ids)
    for f, it in zip(ids, items):
        back = again.get(f)
        np.testing.assert_array_equal(back.intensity, it.intensity)
        np.testing.assert_array_equal(back.mask, it.mask)
        np.testing.assert_array_equal(back.absolute, it.absolute)
        assert back.spacing == it.spacing and back.kind == it.kind and back.units == it.units
        assert back.provenance == it.provenance
    # nearest by diameter: disc radius 6 px at 0.4 mm = 4.8 mm (+ discretisation)
    d = [it.diameter_mm() for it in items]
    assert again.find(diameter_mm=d[1] + 0.1, k=1) == [ids[1]]
    near = sorted((abs(d[i] - (d[1] + 0.1)), ids[i]) for i in (0, 2))
    assert again.find(diameter_mm=d[1] + 0.1, kind="solid") == [near[0][1], near[1][1]]
    assert again.find(kind="ground-glass") == [ids[1]]
    assert again.find(diameter_mm=100, kind="solid", k=1) == [ids[2]]
    assert again.pick(d[2], rng=0, tolerance=0.05) == ids[2]
    (tmp_path / "lib" / "index.json").unlink()
    assert len(LesionLibrary(tmp_path / "lib")) == 3  # index rebuilt from item files
    again.remove(ids[0])
    assert ids[0] not in again and len(again) == 2
    with pytest.raises(SynthsegError) as e:
        again.get(ids[0])
    _one_line(e)
    with pytest.raises(SynthsegError):
        again.get("../etc/passwd")


# ----------------------------------------------------------------------------- projection
def _asym_cube():
    """Lung cube with a lesion: an 'L' whose long bar is superior and whose foot points left."""
    hu = np.full((40, 40, 40), -850.0, np.float32)  # (z: inf->sup, y: ant->post, x: right->left)
    m = np.zeros(hu.shape, bool)
    m[28:34, 15:25, 10:30] = True  # superior bar, spans x
    m[10:34, 15:25, 26:30] = True  # vertical bar on the patient's left (high x), down to inferior
    hu[m] = 40.0
    return hu, m


def test_projection_orientation_superior_up_left_on_right():
    hu, m = _asym_cube()
    item = ct_lesion_from_arrays(hu, m, (1.0, 1.0, 1.0), background_hu=-850.0, edge_mm=0.0)
    proj = project_ct_lesion(item, None, margin_mm=0.0)
    assert proj.ndim == 2 and proj.units == "attenuation"
    # crop is the footprint: rows z 10..33 (flipped), cols x 10..29
    assert proj.shape == (24, 20)
    # reference built independently: superior bar (z 28..33) must be at the top rows
    expected = np.zeros((40, 40), bool)  # (z, x)
    expected[28:34, 10:30] = True
    expected[10:34, 26:30] = True
    expected = expected[10:34, 10:30][::-1]
    np.testing.assert_array_equal(proj.mask, expected)
    top, bottom = proj.mask[:3], proj.mask[-3:]
    assert top.sum() > bottom.sum()  # the bar is superior -> up
    assert proj.mask[-1, -1] and not proj.mask[-1, 0]  # the foot is on the patient's left -> image right
    # residual = mu_w * (HU_lesion - HU_bg) / 1000 * thickness (10 mm along y)
    expect = MU_W * (40 + 850) / 1000 * 10
    assert proj.intensity[proj.mask].max() == pytest.approx(expect, rel=1e-4)
    assert np.abs(proj.intensity[~proj.mask]).max() < 1e-6


def test_projection_residual_subtracts_background_with_air_clip():
    hu = np.full((20, 20, 20), -1000.0, np.float32)
    hu[:, 12:, :] = -2000.0  # below air: must clip to mu 0, not negative
    m = np.zeros(hu.shape, bool)
    m[8:12, 4:8, 8:12] = True
    hu[m] = 0.0
    item = ct_lesion_from_arrays(hu, m, (1, 1, 1), background_hu=-1000.0, edge_mm=0.0)
    proj = project_ct_lesion(item, margin_mm=0.0)
    assert proj.intensity.max() == pytest.approx(MU_W * 4, rel=1e-4)  # water, 4 mm thick
    assert proj.absolute.max() == pytest.approx(MU_W * 4, rel=1e-4)  # air and below contribute 0


@pytest.mark.parametrize("target", [0.4, 0.143])
def test_projected_sphere_has_right_size_in_pixels(target):
    d = 20.0
    m = _ball((40, 40, 40), (20, 20, 20), d / 2)
    hu = np.where(m, 40.0, -850.0).astype(np.float32)
    item = ct_lesion_from_arrays(hu, m, (1, 1, 1), background_hu=-850.0, edge_mm=0.0)
    proj = project_ct_lesion(item, target)
    assert proj.spacing == (target, target)
    diam_px = 2 * math.sqrt(proj.mask.sum() / math.pi)
    assert diam_px == pytest.approx(d / target, rel=0.04)
    ext_px = np.ptp(np.nonzero(proj.mask.any(axis=1))[0]) + 1
    assert ext_px == pytest.approx(d / target, rel=0.06)
    # the peak residual is the chord through the centre: mu_w*(890/1000)*~20 mm
    assert proj.intensity.max() == pytest.approx(MU_W * 0.89 * d, rel=0.08)


def test_projection_rejects_2d_and_non_hu():
    m = _disc((20, 20), (10, 10), 4)
    with pytest.raises(SynthsegError) as e:
        project_ct_lesion(LesionPatch(m * 1.0, m, 1.0), 0.4)
    _one_line(e)
    b = _ball((10, 10, 10), (5, 5, 5), 3)
    with pytest.raises(SynthsegError):
        project_ct_lesion(LesionPatch(b * 1.0, b, 1.0, units="image"), 0.4)


# ----------------------------------------------------------------------------- CT patches
def test_load_all_shared_nodule_patches(shared_data):
    folder = shared_data / "ct" / "nodule_patches"
    rows = list(csv.DictReader(open(folder / "nodules.csv")))
    assert len(rows) == 20
    for row in rows:
        item = load_ct_patch(folder / row["ct_file"])
        assert item.ndim == 3 and item.spacing == (1.0, 1.0, 1.0) and item.units == "HU"
        raw = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / row["ct_file"])))
        seg = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / row["seg_file"]))) > 0
        np.testing.assert_array_equal(item.mask, seg)  # exact mask
        np.testing.assert_array_equal(item.absolute, raw.astype(np.float32))
        bg = item.provenance["background_hu"]
        assert -1000 < bg < -400
        np.testing.assert_allclose(item.intensity[seg], raw[seg] - bg, atol=1e-3)
        assert item.intensity[~seg].size and np.count_nonzero(item.intensity) <= 3 * seg.sum() + 200
        csv_d = float(row["diameter_mm"])
        # NODE21's measure (largest side of the AP-projected mask box) reproduces the CSV
        proj = seg.any(axis=1)
        zs, xs = np.nonzero(proj)
        assert max(np.ptp(zs), np.ptp(xs)) + 1 == pytest.approx(csv_d, abs=1.0)
        # equivalent-sphere diameter of an irregular nodule is below the largest extent
        assert 0.5 * csv_d <= item.diameter_mm() <= 1.05 * csv_d
        assert len(item.provenance["sha256"]) == 64
        cxr = project_ct_lesion(item, 0.4)
        assert 0.5 * csv_d <= cxr.diameter_mm() <= 1.1 * csv_d


def test_ct_patch_bad_files(tmp_path, shared_data):
    folder = shared_data / "ct" / "nodule_patches"
    img2d = sitk.GetImageFromArray(np.zeros((20, 20), np.int16))
    sitk.WriteImage(img2d, str(tmp_path / "flat_ct.mha"))
    sitk.WriteImage(img2d, str(tmp_path / "flat_seg.mha"))
    with pytest.raises(SynthsegError) as e:
        load_ct_patch(tmp_path / "flat_ct.mha")
    _one_line(e)
    small = sitk.GetImageFromArray(np.ones((10, 10, 10), np.uint8))
    sitk.WriteImage(small, str(tmp_path / "small_seg.mha"))
    with pytest.raises(SynthsegError) as e:
        load_ct_patch(folder / "nodule_00_ct.mha", tmp_path / "small_seg.mha")
    _one_line(e)
    empty = sitk.GetImageFromArray(np.zeros((50, 50, 50), np.uint8))
    empty.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(empty, str(tmp_path / "empty_seg.mha"))
    with pytest.raises(SynthsegError) as e:
        load_ct_patch(folder / "nodule_00_ct.mha", tmp_path / "empty_seg.mha")
    _one_line(e)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8, 8), np.int16)), str(tmp_path / "lonely.mha"))
    with pytest.raises(SynthsegError) as e:
        load_ct_patch(tmp_path / "lonely.mha")
    _one_line(e)
    with pytest.raises(SynthsegError):
        load_ct_patch(tmp_path / "missing_ct.mha")
    nan = np.zeros((10, 10, 10), np.float32)
    nan[1, 1, 1] = np.nan
    with pytest.raises(SynthsegError) as e:
        ct_lesion_from_arrays(nan, np.ones((10, 10, 10), bool), (1, 1, 1))
    _one_line(e)


def test_ct_patch_from_dicom_series(shared_data):
    folder = shared_data / "ct"
    a = load_ct_patch(folder / "dicom_series_nodule_00", folder / "nodule_patches" / "nodule_00_seg.mha")
    b = load_ct_patch(folder / "nodule_patches" / "nodule_00_ct.mha")
    np.testing.assert_array_equal(a.absolute, b.absolute)


# ----------------------------------------------------------------------------- procedural
@pytest.mark.parametrize("kind", ["solid", "part-solid", "ground-glass"])
def test_procedural_deterministic_and_plausible(kind):
    kw = dict(lobulation=0.6, spiculation=0.5, seed=1234)
    a = procedural_nodule(12.0, kind, **kw)
    b = procedural_nodule(12.0, kind, **kw)
    np.testing.assert_array_equal(a.intensity, b.intensity)
    np.testing.assert_array_equal(a.mask, b.mask)
    c = procedural_nodule(12.0, kind, lobulation=0.6, spiculation=0.5, seed=1235)
    assert not np.array_equal(a.intensity, c.intensity)
    assert a.provenance["seed"] == 1234 and a.kind == kind
    assert a.diameter_mm() == pytest.approx(12.0, rel=0.12)
    hu = a.absolute[a.mask]
    core = a.absolute[ndi_erode(a.mask, 2)]
    bg = a.absolute[0, 0, 0]
    assert bg == pytest.approx(-850.0)
    if kind == "solid":
        assert 0 < np.median(core) < 90
    elif kind == "ground-glass":
        assert -650 < np.median(core) < -250 and hu.max() < -100
    else:
        assert core.max() > -50 and np.percentile(hu, 25) < -250  # solid core within ground glass
    cxr = procedural_cxr_nodule(12.0, kind, 0.4, **kw)
    cxr2 = procedural_cxr_nodule(12.0, kind, 0.4, **kw)
    np.testing.assert_array_equal(cxr.intensity, cxr2.intensity)
    assert cxr.spacing == (0.4, 0.4) and cxr.units == "attenuation"
    assert cxr.diameter_mm() == pytest.approx(12.0, rel=0.2)
    assert cxr.intensity.max() > 0


def ndi_erode(mask, it):
    from scipy import ndimage as ndi

    return ndi.binary_erosion(mask, iterations=it)


def test_procedural_spicules_and_lobes_change_shape():
    plain = procedural_nodule(16.0, "solid", seed=7)
    spiky = procedural_nodule(16.0, "solid", spiculation=1.0, seed=7)
    lobed = procedural_nodule(16.0, "solid", lobulation=1.0, seed=7)
    # spicules reach beyond the body: the lesion footprint (non-zero residual) grows
    assert np.count_nonzero(spiky.intensity > 100) > np.count_nonzero(plain.intensity > 100)
    assert spiky.diameter_mm("extent") > plain.diameter_mm("extent") + 2
    # lobulation keeps the volume (equivalent diameter) but roughens the surface
    assert lobed.diameter_mm() == pytest.approx(plain.diameter_mm(), rel=0.08)
    assert not np.array_equal(lobed.mask, plain.mask)
    with pytest.raises(SynthsegError) as e:
        procedural_nodule(10, "weird")
    _one_line(e)
    with pytest.raises(SynthsegError):
        procedural_nodule(float("nan"))


# ----------------------------------------------------------------------------- extraction
@pytest.mark.parametrize("ndim", [2, 3])
def test_extract_residual_is_original_minus_fill(ndim):
    rng = np.random.default_rng(0)
    shape = (60, 70) if ndim == 2 else (20, 60, 70)
    original = rng.normal(100, 10, shape).astype(np.float32)
    mask = np.zeros(shape, bool)
    sl = (slice(20, 30), slice(30, 42)) if ndim == 2 else (slice(8, 12), slice(20, 30), slice(30, 42))
    mask[sl] = True
    filled = original.copy()
    filled[mask] = 95.0
    spacing = (0.5, 0.5) if ndim == 2 else (2.0, 0.5, 0.5)
    item = extract_residual(original, filled, mask, spacing, margin_mm=2.0)
    # crop: mask box + ceil(2 mm / spacing) pixels each side
    pads = [math.ceil(2.0 / s) for s in spacing]
    expect_shape = tuple((s.stop - s.start) + 2 * p for s, p in zip(sl, pads))
    assert item.shape == expect_shape
    box = tuple(slice(s.start - p, s.stop + p) for s, p in zip(sl, pads))
    np.testing.assert_array_equal(item.mask, mask[box])
    np.testing.assert_allclose(item.intensity[item.mask], (original - 95.0)[mask], atol=1e-5)
    assert np.all(item.intensity[~item.mask] == 0)
    np.testing.assert_array_equal(item.absolute, original[box])
    assert item.provenance["crop_start"] == [b.start for b in box]


def test_extract_residual_bad_input():
    a = np.zeros((10, 10))
    m = np.zeros((10, 10), bool)
    with pytest.raises(SynthsegError) as e:
        extract_residual(a, a, m, 1.0)  # empty mask
    _one_line(e)
    m[4, 4] = True
    with pytest.raises(SynthsegError) as e:
        extract_residual(a, np.zeros((10, 11)), m, 1.0)
    _one_line(e)
    nan = a.copy()
    nan[0, 0] = np.nan
    with pytest.raises(SynthsegError) as e:
        extract_residual(nan, a, m, 1.0)
    _one_line(e)


def test_library_sees_items_added_by_another_instance(tmp_path):
    a, b = LesionLibrary(tmp_path / "lib"), LesionLibrary(tmp_path / "lib")
    m = _disc((20, 20), (10, 10), 5)
    id1 = a.add(LesionPatch(m * 1.0, m, 0.5, kind="solid"))
    id2 = b.add(LesionPatch(m * 2.0, m, 0.5, kind="solid"))
    assert {r["id"] for r in a.list()} == {id1, id2}
    # a stale index (a writer that lost the race) is healed from the item files
    (tmp_path / "lib" / "index.json").write_text(json.dumps({"version": 1, "items": {}}))
    assert set(a.find(kind="solid")) == {id1, id2}


def test_projection_anisotropic_ct_keeps_mm():
    sp = (1.25, 0.7, 0.7)
    shape = (32, 56, 56)
    m = _ball(shape, (20.0, 19.6, 19.6), 8.0, sp)
    hu = np.where(m, 40.0, -850.0).astype(np.float32)
    proj = project_ct_lesion(ct_lesion_from_arrays(hu, m, sp, background_hu=-850.0, edge_mm=0.0), (0.3, 0.3))
    assert 2 * math.sqrt(proj.mask.sum() / math.pi) * 0.3 == pytest.approx(16.0, rel=0.05)
    assert proj.intensity.max() == pytest.approx(MU_W * 0.89 * 16.0, rel=0.08)


def test_loader_reorients_to_lps(tmp_path):
    # an 'RAS'-stored volume (x and y axes reversed) must come back in LPS numpy order
    hu = np.full((12, 14, 16), -850, np.int16)
    seg = np.zeros(hu.shape, np.uint8)
    seg[3:6, 2:5, 10:14] = 1  # in stored order: low y, high x
    hu[seg > 0] = 30
    for arr, name in ((hu, "p_ct.mha"), (seg, "p_seg.mha")):
        img = sitk.GetImageFromArray(arr)
        img.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
        sitk.WriteImage(img, str(tmp_path / name))
    item = load_ct_patch(tmp_path / "p_ct.mha")
    np.testing.assert_array_equal(item.mask, (seg > 0)[:, ::-1, ::-1])
    np.testing.assert_array_equal(item.absolute, hu[:, ::-1, ::-1].astype(np.float32))
