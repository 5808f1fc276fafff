"""Organ constraints on real data (CT lungs, brain MRI, CXR lung fields) and phantoms."""

from __future__ import annotations

import csv
import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_synthseg.constraints import (
    brain_mask,
    ct_lung_mask,
    cxr_lung_mask,
    organ_constraint,
)
from napari_synthseg.errors import SynthsegError

sitk = pytest.importorskip("SimpleITK")


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


# ------------------------------------------------------------------------------ CT lungs
@pytest.fixture(scope="module")
def ct_case(shared_data):
    folder = shared_data / "ct" / "lung_pet_ct_dx_A0001"
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder / "dicom")))
    img = reader.Execute()
    vol = sitk.GetArrayFromImage(img)
    spacing = tuple(reversed(img.GetSpacing()))  # (z, y, x) mm
    t0 = time.perf_counter()
    mask = ct_lung_mask(vol, spacing)
    seconds = time.perf_counter() - t0
    boxes = []
    with open(folder / "tumor_boxes.csv") as fh:
        for row in csv.DictReader(fh):
            z = img.TransformPhysicalPointToIndex((img.GetOrigin()[0], img.GetOrigin()[1],
                                                   float(row["z_mm"])))[2]
            boxes.append((z, *(int(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))))
    return vol, spacing, mask, seconds, boxes


def test_ct_lungs_volume_and_both_sides(ct_case):
    vol, spacing, mask, seconds, _ = ct_case
    assert mask.shape == vol.shape and mask.dtype == bool
    voxel_l = float(np.prod(spacing)) / 1e6
    total = mask.sum() * voxel_l
    assert 3.0 < total < 8.0  # adult lungs at inspiration: a few litres
    half = vol.shape[2] // 2
    right, left = mask[:, :, :half].sum() * voxel_l, mask[:, :, half:].sum() * voxel_l
    assert right > 1.0 and left > 1.0  # both lungs, not one lung plus airway
    # Lung tissue is air-like: most mask voxels are well below soft tissue.
    assert np.median(vol[mask]) < -700
    assert seconds < 20.0  # a few seconds normally; generous for a shared 2-core machine


def test_ct_lungs_exclude_outside_air_and_trachea(ct_case):
    vol, spacing, mask, _, _ = ct_case
    outside = ndi.binary_dilation(np.zeros(vol.shape[1:], bool), iterations=1)
    outside[:5] = outside[-5:] = True
    outside[:, :5] = outside[:, -5:] = True
    assert not mask[:, outside].any()
    # Above the lung apices (top slices of this series) only the trachea is air inside the
    # neck: find it independently and check it is not in the mask.
    top = vol.shape[0] - 6
    for z in range(top, vol.shape[0]):
        lab, n = ndi.label(vol[z] < -320)
        edge = set(np.unique(np.r_[lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        area_cm2 = np.bincount(lab.ravel()) * spacing[1] * spacing[2] / 100
        inner = [k for k in range(1, n + 1) if k not in edge and 1.0 < area_cm2[k] < 6.0]
        assert inner, "expected the trachea as an inner air blob"
        assert not mask[z][np.isin(lab, inner)].any()


def test_ct_tumour_boxes_at_the_lung_mask(ct_case):
    _, spacing, mask, _, boxes = ct_case
    assert len(boxes) == 20
    near_fracs = []
    for z, x0, y0, x1, y1 in boxes:
        box = (slice(y0, y1 + 1), slice(x0, x1 + 1))
        # The tumour is a solid mass abutting the mediastinum: not aerated lung, but every
        # box must reach into the mask, and most of it must lie within 10 mm of it.
        assert mask[z][box].mean() > 0.1
        dist = ndi.distance_transform_edt(~mask[z], sampling=spacing[1:])
        near_fracs.append((dist[box] <= 10.0).mean())
    assert np.mean(near_fracs) > 0.6


def test_ct_single_slice_matches_volume(ct_case):
    vol, spacing, mask, _, _ = ct_case
    z = vol.shape[0] // 2
    m2 = ct_lung_mask(vol[z], spacing[1:])
    assert m2.shape == vol[z].shape
    half = m2.shape[1] // 2
    px_cm2 = spacing[1] * spacing[2] / 100.0
    assert m2[:, :half].sum() * px_cm2 > 20 and m2[:, half:].sum() * px_cm2 > 20
    assert _dice(m2, mask[z]) > 0.9


def test_ct_phantom_nodule_inside_air_outside():
    shape = (12, 128, 128)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    vol = np.full(shape, -1000.0)
    body = ((yy - 64) / 55.0) ** 2 + ((xx - 64) / 60.0) ** 2 <= 1
    vol[body] = 40.0
    lung_r = ((yy - 64) / 35.0) ** 2 + ((xx - 38) / 18.0) ** 2 <= 1
    lung_l = ((yy - 64) / 35.0) ** 2 + ((xx - 90) / 18.0) ** 2 <= 1
    vol[lung_r | lung_l] = -850.0
    nodule = (yy - 60) ** 2 + (xx - 38) ** 2 <= 36
    vol[nodule] = 30.0
    m = ct_lung_mask(vol, (2.0, 2.0, 2.0))
    truth = lung_r | lung_l
    assert _dice(m, truth) > 0.95
    assert m[nodule].all()  # solid nodule inside lung is part of the constraint
    assert not m[~body].any()


def test_ct_not_hu_is_user_error():
    with pytest.raises(SynthsegError, match="Hounsfield"):
        ct_lung_mask(np.full((4, 64, 64), 500.0), (5.0, 1.0, 1.0))
    with pytest.raises(SynthsegError):
        ct_lung_mask(np.zeros((2, 2, 2, 2)), None)


# ------------------------------------------------------------------------------ brain MRI
@pytest.fixture(scope="module")
def mni(shared_data):
    nib = pytest.importorskip("nibabel")
    d = shared_data / "mri"
    t1 = nib.load(str(d / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))
    gm = np.asanyarray(nib.load(str(d / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")).dataobj)
    wm = np.asanyarray(nib.load(str(d / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")).dataobj)
    tissue = (gm.astype(np.float32) + wm.astype(np.float32)) / 255.0 > 0.5
    mask = brain_mask(np.asanyarray(t1.dataobj), t1.header.get_zooms()[:3])
    return mask, tissue


def test_brain_mni_volume_and_tissue_maps(mni):
    mask, tissue = mni
    litres = mask.sum() / 1e6  # 1 mm isotropic
    # MNI152 space is ~10-15 % larger than an average native brain; GM+WM alone is 1.73 L.
    assert 1.2 < litres < 2.1
    assert (mask & tissue).sum() / tissue.sum() > 0.98
    assert _dice(mask, tissue) > 0.9


def test_brain_low_res_crop(shared_data):
    nib = pytest.importorskip("nibabel")
    img = nib.load(str(shared_data / "mri" / "nibabel_anatomical.nii"))
    data = np.asanyarray(img.dataobj)
    mask = brain_mask(data, img.header.get_zooms()[:3])
    # This 66 x 82 x 50 mm image is a crop through the middle of the brain: nearly all brain.
    assert mask.shape == data.shape
    assert mask.mean() > 0.8


def test_brain_phantom_with_skull_and_scalp():
    zz, yy, xx = np.mgrid[:80, :90, :80].astype(np.float32)
    r = np.sqrt(((zz - 40) / 1.0) ** 2 + ((yy - 45) / 1.1) ** 2 + (xx - 40) ** 2)
    vol = np.zeros(r.shape, np.float32)
    vol[r < 38] = 200.0  # scalp fat (bright in T1)
    vol[r < 33] = 20.0  # skull (dark)
    vol[r < 30] = 140.0  # grey matter
    vol[r < 26] = 190.0  # white matter
    vol[r < 6] = 30.0  # ventricle (CSF, dark)
    vol[(np.abs(yy - 45) < 1.5) & (np.abs(zz - 40) < 1.5) & (xx < 40)] = 180.0  # thin bridge
    vol += np.random.default_rng(0).normal(0, 5, vol.shape).astype(np.float32)
    mask = brain_mask(vol, (1.0, 1.0, 1.0))
    truth = r < 30
    assert _dice(mask, truth) > 0.95
    assert not mask[(r > 34) & (r < 38)].any()  # no scalp
    assert mask[r < 6].all()  # ventricles inside


# ------------------------------------------------------------------------------ CXR lungs
def _png(path):
    from PIL import Image

    return np.array(Image.open(path))


def _overlay(image, mask, path, ref=None):
    from PIL import Image

    lo, hi = np.percentile(image, [1, 99])
    g = (np.clip((image.astype(np.float32) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    rgb = np.stack([g, g, g], -1)
    rgb[mask ^ ndi.binary_erosion(mask, iterations=3)] = (255, 0, 0)
    if ref is not None:
        rgb[ref ^ ndi.binary_erosion(ref, iterations=3)] = (0, 255, 0)
    im = Image.fromarray(rgb)
    im.thumbnail((512, 512))
    im.save(path)


def test_cxr_dice_against_manual_mask(shared_data, artifacts_dir):
    d = shared_data / "cxr" / "with_lung_mask"
    image = _png(d / "16747_3_1.png")
    ref = _png(d / "16747_3_1_lungmask.png") > 127
    mask = cxr_lung_mask(image)
    _overlay(image, mask, artifacts_dir / "cxr_lungs_16747_3_1.png", ref)
    assert mask.shape == image.shape
    assert _dice(mask, ref) > 0.85  # measured 0.876


def test_cxr_scale_offset_and_inversion_invariant(shared_data):
    image = _png(shared_data / "cxr" / "with_lung_mask" / "16747_3_1.png")
    base = cxr_lung_mask(image)
    as16 = (image.astype(np.uint32) * 16 + 300).astype(np.uint16)  # 12-bit detector range
    assert _dice(cxr_lung_mask(as16), base) > 0.99
    signed = image.astype(np.float64) * 3.7 - 2000.0
    assert _dice(cxr_lung_mask(signed), base) > 0.99
    inverted = 4095 - as16.astype(np.int32)  # MONOCHROME1
    assert _dice(cxr_lung_mask(inverted), base) > 0.97


def _plausible_pair(mask):
    lab, n = ndi.label(mask)
    if n != 2:
        return False
    w = mask.shape[1]
    cx = [ndi.center_of_mass(lab == k)[1] / w for k in (1, 2)]
    fr = [(lab == k).mean() for k in (1, 2)]
    return min(cx) < 0.5 < max(cx) and all(0.03 < f < 0.3 for f in fr)


def test_cxr_nih_images_give_two_fields(shared_data, artifacts_dir):
    files = sorted((shared_data / "cxr" / "nih_nodule").glob("*.png"))
    assert len(files) == 20
    good = 0
    for i, f in enumerate(files):
        image = _png(f)
        try:
            mask = cxr_lung_mask(image)
        except SynthsegError:
            continue  # honest refusal is allowed, a wrong mask is not counted as good
        good += _plausible_pair(mask)
        if i % 5 == 0:
            _overlay(image, mask, artifacts_dir / f"cxr_lungs_{f.stem}.png")
    assert good >= 17  # measured: 19 of 20 pass this coarse check (00013499_000 is refused)


def test_cxr_node21_16bit(shared_data, artifacts_dir):
    img = sitk.ReadImage(str(shared_data / "cxr" / "node21" / "c3883.mha"))
    arr = sitk.GetArrayFromImage(img)
    arr = arr[0] if arr.ndim == 3 else arr
    assert arr.dtype == np.uint16
    mask = cxr_lung_mask(arr, img.GetSpacing()[:2])
    _overlay(arr, mask, artifacts_dir / "cxr_lungs_node21_c3883.png")
    assert _plausible_pair(mask)
    assert 0.15 < mask.mean() < 0.45


def test_cxr_dicom_frame_and_no_bowel_gas(shared_data, artifacts_dir):
    files = sorted((shared_data / "cxr" / "dicom").glob("*.dcm"))
    if not files:
        pytest.skip("no CXR DICOM in the shared data")
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(files[0])))
    assert arr.shape[0] == 1  # SimpleITK reads a radiograph as a one-frame volume
    mask = cxr_lung_mask(arr)
    assert mask.shape == arr.shape
    _overlay(arr[0], mask[0], artifacts_dir / "cxr_lungs_rsna_dicom.png")
    assert _plausible_pair(mask[0])
    # In this image the stomach/colon gas under the left hemidiaphragm touches the lung's
    # lateral recess and reaches row ~0.98 of the image; the lung bases are at ~0.72/0.78
    # (judged by eye on the overlay; an earlier version outlined the gas down to 0.98).
    rows = np.nonzero(mask[0].any(axis=1))[0]
    assert rows.max() < 0.85 * mask.shape[1]


def test_cxr_bad_input():
    with pytest.raises(SynthsegError, match="2D"):
        cxr_lung_mask(np.zeros((4, 64, 64)))
    with pytest.raises(SynthsegError, match="constant"):
        cxr_lung_mask(np.full((128, 128), 7, np.uint16))
    rng = np.random.default_rng(0)
    with pytest.raises(SynthsegError, match="lung fields"):
        cxr_lung_mask(rng.normal(size=(128, 128)))


# ------------------------------------------------------------------------------ dispatcher
def test_dispatcher_routes_by_modality():
    vol = np.full((6, 96, 96), -1000.0)
    yy, xx = np.mgrid[:96, :96]
    body = ((yy - 48) / 40) ** 2 + ((xx - 48) / 44) ** 2 <= 1
    lungs = (((yy - 48) / 25) ** 2 + ((xx - 30) / 12) ** 2 <= 1) | (
        ((yy - 48) / 25) ** 2 + ((xx - 66) / 12) ** 2 <= 1)
    vol[:, body] = 30.0
    vol[:, lungs] = -800.0
    m = organ_constraint(vol, (2.0, 2.0, 2.0), "ct")
    assert _dice(m, np.broadcast_to(lungs, vol.shape)) > 0.95
    with pytest.raises(SynthsegError, match="modality"):
        organ_constraint(vol, None, "PET")
