"""Every image in ../shared/data opens through the reader and `synthseg info`, with the shapes and
spacings that ../shared/data/README.md documents."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_synthseg.cli import main
from napari_synthseg.io import read_image

NIH = [
    "00002361_008", "00003285_001", "00004132_006", "00004520_000", "00005448_022",
    "00006558_000", "00006829_010", "00009604_000", "00009671_001", "00010277_000",
    "00011811_000", "00012604_002", "00012924_000", "00013499_000", "00014397_014",
    "00014663_017", "00014826_000", "00015112_000", "00015792_008", "00016117_000",
]

# (relative path, numpy shape, dtype, spacing in numpy axis order or None where the README says
# the file stores none, modality)
EXPECTED = [
    *[(f"cxr/nih_nodule/{n}.png", (1024, 1024), "uint8", None, "CXR") for n in NIH],
    ("cxr/nih_other/00000001_000.png", (512, 512), "uint8", None, "CXR"),
    ("cxr/nih_other/00027426_000.png", (512, 512), "uint8", None, "CXR"),
    ("cxr/dicom/rsna_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm", (1024, 1024), "uint8", (0.168, 0.168), "CXR"),
    ("cxr/node21/c3883.mha", (1024, 1024), "uint16", (0.1268, 0.1268), "CXR"),
    ("cxr/node21/c3883_16bit.png", (1024, 1024), "uint16", None, "CXR"),
    ("cxr/with_lung_mask/16747_3_1.png", (885, 1036), "uint8", None, "CXR"),
    ("cxr/with_lung_mask/16747_3_1_lungmask.png", (885, 1036), "uint8", None, "CXR"),
    *[(f"ct/nodule_patches/nodule_{i:02d}_ct.mha", (50, 50, 50), "int16", (1.0, 1.0, 1.0), "CT") for i in range(20)],
    *[(f"ct/nodule_patches/nodule_{i:02d}_seg.mha", (50, 50, 50), "int32", (1.0, 1.0, 1.0), None) for i in range(20)],
    ("ct/dicom_series_nodule_00", (50, 50, 50), "int16", (1.0, 1.0, 1.0), "CT"),
    ("ct/CT_small.dcm", (128, 128), None, None, "CT"),
    ("ct/lung_pet_ct_dx_A0001/dicom", (64, 512, 512), "int16", (5.0, 0.841796875, 0.841796875), "CT"),
    # nibabel reports NIfTI as (x, y, z); numpy order reverses it.
    ("mri/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", (189, 233, 197), "uint8", (1.0, 1.0, 1.0), "MR"),
    ("mri/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz", (189, 233, 197), "uint8", (1.0, 1.0, 1.0), None),
    ("mri/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz", (189, 233, 197), "uint8", (1.0, 1.0, 1.0), None),
    ("mri/nibabel_anatomical.nii", (25, 41, 33), "int16", (2.0, 2.0, 2.0), "MR"),
]


@pytest.mark.parametrize("rel,shape,dtype,spacing,modality", EXPECTED, ids=[e[0] for e in EXPECTED])
def test_reader_matches_readme(shared_data, rel, shape, dtype, spacing, modality):
    image = read_image(shared_data / rel)
    assert image.shape == shape
    if dtype is not None:
        assert str(image.array.dtype) == dtype
    if spacing is not None:
        np.testing.assert_allclose(image.scale, spacing, rtol=1e-3)
    else:
        assert any("stores no pixel spacing" in w for w in image.warnings) or rel.endswith(".dcm")
    if modality is not None:
        assert image.modality == modality
    assert len(image.direction) == image.ndim**2


def test_ct_series_is_sorted_by_position_and_keeps_hu(shared_data):
    image = read_image(shared_data / "ct/lung_pet_ct_dx_A0001/dicom")
    assert len(image.source_paths) == 64
    assert image.array.min() == -1024 and image.array.max() == 2976
    # Slices ordered by z: the README puts the tumour boxes at z -234..-184 mm, inside the volume.
    z = image.origin[2] + image.spacing[2] * np.arange(image.shape[0])
    assert z[0] < -234 and z[-1] > -184


def test_dicom_series_copy_equals_mha(shared_data):
    series = read_image(shared_data / "ct/dicom_series_nodule_00")
    mha = read_image(shared_data / "ct/nodule_patches/nodule_00_ct.mha")
    np.testing.assert_array_equal(series.array, mha.array)
    np.testing.assert_allclose(series.spacing, mha.spacing)
    assert series.array.min() == -1011 and series.array.max() == 1204


def test_nodule_masks_have_documented_voxel_counts(shared_data):
    # Counts from ../shared/data/README.md for a few masks.
    for index, count in {0: 134, 2: 3997, 8: 69, 15: 68}.items():
        mask = read_image(shared_data / f"ct/nodule_patches/nodule_{index:02d}_seg.mha")
        assert int(np.count_nonzero(mask.array)) == count


@pytest.mark.parametrize("rel,shape,dtype,spacing,modality", EXPECTED[::4], ids=[e[0] for e in EXPECTED[::4]])
def test_cli_info_matches_readme(shared_data, capsys, rel, shape, dtype, spacing, modality):
    assert main(["info", str(shared_data / rel), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert tuple(info["shape"]) == shape
    if spacing is not None:
        np.testing.assert_allclose(info["spacing_mm"][::-1], spacing, rtol=1e-3)


def test_cli_info_lists_series(shared_data, capsys):
    assert main(["info", str(shared_data / "ct/lung_pet_ct_dx_A0001/dicom")]) == 0
    out = capsys.readouterr().out
    assert "64 x 512 x 512" in out and "series:" in out and "HU" in out
