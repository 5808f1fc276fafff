"""Write then read keeps pixels, spacing, origin and direction exactly; the writer protects sources."""

from __future__ import annotations

import numpy as np
import pytest

from napari_synthseg.errors import SynthsegError
from napari_synthseg.io import MedicalImage, read_image, write_image

# An oblique direction (rotation about z) so a writer that drops direction cannot pass.
C, S = np.cos(0.3), np.sin(0.3)
OBLIQUE_3D = (C, -S, 0.0, S, C, 0.0, 0.0, 0.0, 1.0)
OBLIQUE_2D = (C, -S, S, C)


def _volume(dtype=np.int16):
    rng = np.random.default_rng(0)
    array = rng.integers(-1024, 3000, size=(7, 33, 29)).astype(dtype)
    return MedicalImage(
        array=array,
        spacing=(0.7, 0.8, 2.5),
        origin=(-120.5, 33.25, -401.0),
        direction=OBLIQUE_3D,
        modality="CT",
        metadata={"0008|0060": "CT", "0008|103e": "round trip"},
    )


@pytest.mark.parametrize("ext", [".nii", ".nii.gz", ".mha", ".mhd", ".nrrd"])
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint16])
def test_volume_round_trip(tmp_path, ext, dtype):
    image = _volume(dtype)
    path = write_image(image, tmp_path / f"vol{ext}")
    back = read_image(path)
    np.testing.assert_array_equal(back.array, image.array)
    assert back.array.dtype == image.array.dtype
    np.testing.assert_allclose(back.spacing, image.spacing, rtol=1e-6)
    np.testing.assert_allclose(back.origin, image.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, image.direction, atol=1e-6)


@pytest.mark.parametrize("ext", [".mha", ".nrrd"])
def test_metadata_written_back(tmp_path, ext):
    image = _volume()
    back = read_image(write_image(image, tmp_path / f"vol{ext}"))
    assert back.metadata.get("0008|103e") == "round trip"
    assert back.modality == "CT"


@pytest.mark.parametrize("ext", [".png", ".mha", ".nii.gz", ".nrrd"])
def test_16bit_radiograph_round_trip(tmp_path, ext):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 65535, size=(40, 37)).astype(np.uint16)
    image = MedicalImage(array=array, spacing=(0.143, 0.15), origin=(2.0, -3.0), direction=OBLIQUE_2D)
    back = read_image(write_image(image, tmp_path / f"cxr{ext}"))
    np.testing.assert_array_equal(back.array, array)
    assert back.array.dtype == np.uint16
    if ext != ".png":  # PNG keeps no geometry (the reader warns about it)
        np.testing.assert_allclose(back.spacing, image.spacing, rtol=1e-6)
        np.testing.assert_allclose(back.origin, image.origin, atol=1e-6)
        np.testing.assert_allclose(back.direction, image.direction, atol=1e-6)


def test_real_ct_series_to_nifti_and_back(shared_data, tmp_path):
    series = read_image(shared_data / "ct/dicom_series_nodule_00")
    back = read_image(write_image(series, tmp_path / "ct.nii.gz"))
    np.testing.assert_array_equal(back.array, series.array)
    np.testing.assert_allclose(back.origin, series.origin, atol=1e-4)


def test_labels_written_with_source_geometry(tmp_path):
    image = _volume()
    labels = np.zeros(image.shape, np.uint8)
    labels[2, 10:14, 5:9] = 3
    back = read_image(write_image(labels, tmp_path / "labels.nii.gz", like=image))
    np.testing.assert_array_equal(back.array, labels)
    np.testing.assert_allclose(back.direction, image.direction, atol=1e-6)


def test_writer_refuses_to_overwrite_source(tmp_path):
    image = _volume()
    src = write_image(image, tmp_path / "source.mha")
    loaded = read_image(src)
    before = src.read_bytes()
    with pytest.raises(SynthsegError, match="source image"):
        write_image(loaded, src, overwrite=True)
    assert src.read_bytes() == before


def test_writer_refuses_existing_without_overwrite(tmp_path):
    image = _volume()
    path = write_image(image, tmp_path / "a.nrrd")
    with pytest.raises(SynthsegError, match="already exists"):
        write_image(image, path)
    write_image(image, path, overwrite=True)


def test_png_refuses_values_it_cannot_hold(tmp_path):
    image = _volume()
    with pytest.raises(SynthsegError, match="2D"):
        write_image(image, tmp_path / "vol.png")
    ct_slice = MedicalImage(array=image.array[0], spacing=(1, 1), origin=(0, 0), direction=(1, 0, 0, 1))
    with pytest.raises(SynthsegError, match="16-bit PNG cannot hold"):
        write_image(ct_slice, tmp_path / "slice.png")
    assert not list(tmp_path.iterdir())


def test_no_partial_files_left_on_failure(tmp_path):
    image = _volume()
    with pytest.raises(SynthsegError):
        write_image(image, tmp_path / "vol.bmp")
    assert not list(tmp_path.iterdir())
