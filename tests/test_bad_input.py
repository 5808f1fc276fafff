"""Bad input gets a one-line message (exit 2 in the CLI) and leaves everything on disk as it was."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from _dicom import write_series
from napari_synthseg.cli import main
from napari_synthseg.errors import SynthsegError
from napari_synthseg.io import MedicalImage, list_dicom_series, read_image, write_image


def snapshot(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def run_cli_expect_error(args, capsys, match: str) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1, err
    assert match.lower() in lines[0].lower(), lines[0]
    return lines[0]


@pytest.fixture
def nodule_file(shared_data, tmp_path):
    path = tmp_path / "nodule.mha"
    shutil.copy(shared_data / "ct/nodule_patches/nodule_03_ct.mha", path)
    return path


def test_truncated_file(nodule_file, capsys):
    data = nodule_file.read_bytes()
    nodule_file.write_bytes(data[: len(data) // 2])
    before = snapshot(nodule_file.parent)
    with pytest.raises(SynthsegError, match="corrupt or truncated"):
        read_image(nodule_file)
    run_cli_expect_error(["info", str(nodule_file)], capsys, "corrupt or truncated")
    assert snapshot(nodule_file.parent) == before


@pytest.mark.parametrize("name", ["noise.png", "noise.nii.gz", "noise.dcm", "noise.nrrd", "noise.jpg"])
def test_corrupt_file(tmp_path, capsys, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    run_cli_expect_error(["info", str(path)], capsys, f"cannot read {name}")


def test_empty_file(tmp_path, capsys):
    (tmp_path / "empty.nii").write_bytes(b"")
    run_cli_expect_error(["info", str(tmp_path / "empty.nii")], capsys, "empty file")


def test_unsupported_extension(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    run_cli_expect_error(["info", str(path)], capsys, "unsupported file type")


def test_wrong_extension_is_read_by_content(shared_data, tmp_path):
    # ITK probes file content, so a PNG saved as .nii still opens with the right pixels.
    path = tmp_path / "actually_png.nii"
    shutil.copy(shared_data / "cxr/nih_other/00000001_000.png", path)
    assert read_image(path).shape == (512, 512)


def test_missing_path(tmp_path, capsys):
    run_cli_expect_error(["info", str(tmp_path / "nope.mha")], capsys, "no such file")


def test_empty_dicom_folder(tmp_path, capsys):
    folder = tmp_path / "empty_dicom"
    folder.mkdir()
    run_cli_expect_error(["info", str(folder)], capsys, "no DICOM series")
    (folder / "readme.txt").write_text("no images here")
    run_cli_expect_error(["info", str(folder)], capsys, "no DICOM series")


def test_folder_mixing_series_loads_largest_and_says_so(tmp_path, capsys):
    folder = tmp_path / "mixed"
    rng = np.random.default_rng(0)
    write_series(folder, rng.integers(-1000, 500, (6, 16, 16)), "1.2.826.0.1.3680043.2.1125.11", prefix="a")
    small = rng.integers(-1000, 500, (3, 16, 16))
    write_series(folder, small, "1.2.826.0.1.3680043.2.1125.22", prefix="b")
    series = list_dicom_series(folder)
    assert [s.n_files for s in series] == [6, 3]
    image = read_image(folder)
    assert image.shape == (6, 16, 16) and image.series_uid.endswith(".11")
    assert any("holds 2 DICOM series" in w for w in image.warnings)
    picked = read_image(folder, series_uid="1.2.826.0.1.3680043.2.1125.22")
    np.testing.assert_array_equal(picked.array, small)
    assert main(["info", str(folder), "--series-uid", "1.2.826.0.1.3680043.2.1125.22"]) == 0
    out = capsys.readouterr()
    assert "3 x 16 x 16" in out.out
    run_cli_expect_error(["info", str(folder), "--series-uid", "9.9"], capsys, "series 9.9 is not in")


def test_series_sorted_by_position(tmp_path):
    folder = tmp_path / "series"
    volume = np.arange(5)[:, None, None] * np.ones((5, 8, 8)) * 100 - 500
    write_series(folder, volume, "1.2.826.0.1.3680043.2.1125.33")
    image = read_image(folder)
    np.testing.assert_array_equal(image.array[:, 0, 0], [-500, -400, -300, -200, -100])
    np.testing.assert_allclose(image.spacing, (0.8, 0.8, 2.0))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels(tmp_path, capsys, bad):
    array = np.zeros((4, 8, 8), np.float32)
    array[1, 2, 3] = bad
    path = tmp_path / "nan.mha"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    run_cli_expect_error(["info", str(path)], capsys, "NaN or infinite")


def test_4d_volume(tmp_path, capsys):
    path = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 3), np.int16), np.eye(4)), path)
    run_cli_expect_error(["info", str(path)], capsys, "4D image")


def test_4d_with_single_volume_is_3d(tmp_path):
    path = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 1), np.int16), np.eye(4)), path)
    assert read_image(path).shape == (6, 5, 4)


def test_zero_size_image(tmp_path, capsys):
    path = tmp_path / "zero.mha"
    path.write_text("ObjectType = Image\nNDims = 2\nDimSize = 0 0\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n")
    run_cli_expect_error(["info", str(path)], capsys, "empty")


def test_rgb_png_becomes_gray_with_warning(tmp_path):
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    path = tmp_path / "rgb.png"
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(path))
    image = read_image(path)
    assert image.shape == (10, 12) and image.array.dtype == np.uint8
    assert int(image.array[0, 0]) == round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)
    assert any("converted to grayscale" in w for w in image.warnings)


def test_non_ascii_paths(tmp_path, capsys):
    folder = tmp_path / "Röntgen_ü" / "胸部"
    folder.mkdir(parents=True)
    image = MedicalImage(array=np.arange(12, dtype=np.uint16).reshape(3, 4), spacing=(0.2, 0.3), origin=(0, 0), direction=(1, 0, 0, 1))
    src = write_image(image, folder / "bild_é.mha")
    np.testing.assert_array_equal(read_image(src).array, image.array)
    assert main(["convert", str(src), str(folder / "ausgabe_ß.nii.gz")]) == 0
    np.testing.assert_array_equal(read_image(folder / "ausgabe_ß.nii.gz").array, image.array)
    series = tmp_path / "séries_DICOM"
    write_series(series, np.zeros((3, 8, 8)), "1.2.826.0.1.3680043.2.1125.44")
    assert read_image(series).shape == (3, 8, 8)


def test_convert_refuses_existing_and_source(nodule_file, capsys):
    before = snapshot(nodule_file.parent)
    run_cli_expect_error(["convert", str(nodule_file), str(nodule_file), "--force"], capsys, "source image")
    out = nodule_file.parent / "copy.nii.gz"
    assert main(["convert", str(nodule_file), str(out)]) == 0
    capsys.readouterr()
    run_cli_expect_error(["convert", str(nodule_file), str(out)], capsys, "already exists")
    assert snapshot(nodule_file.parent)["nodule.mha"] == before["nodule.mha"]


def test_convert_into_missing_folder(nodule_file, capsys):
    run_cli_expect_error(["convert", str(nodule_file), str(nodule_file.parent / "no" / "x.mha")], capsys, "does not exist")


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
def test_read_only_output_folder(shared_data):
    """Run the CLI as an unprivileged user (root ignores permission bits)."""
    import tempfile

    # Not tmp_path: pytest makes it 0700, which the unprivileged user cannot enter.
    base = Path(tempfile.mkdtemp(prefix="synthseg_ro_"))
    shutil.copy(shared_data / "ct/nodule_patches/nodule_03_ct.mha", base / "in.mha")
    out_dir = base / "readonly"
    out_dir.mkdir()
    for p in (base, base / "in.mha"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    out_dir.chmod(0o555)
    cmd = [sys.executable, "-m", "napari_synthseg.cli", "convert", str(base / "in.mha"), str(out_dir / "out.nii.gz")]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv")
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + cmd
    env = {**os.environ, "HOME": str(base)}
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 2, result.stderr
        assert "not writable" in result.stderr and "Traceback" not in result.stderr
        assert list(out_dir.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)
