"""Issue 18: bad input gets one clear line and loses nothing.

Each data-loss case the 358-case corpus found has a test here that fails on the code before the
fix: ``place --out PARENT --force`` deleting the user's folder, ``b.mhd`` replacing another
image's ``b.zraw``, a short write reported as "wrote", private 0600 outputs, and asset keys in
``scene.json`` used as paths outside the scene.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_synthseg.cli import main
from napari_synthseg.errors import SynthsegError
from napari_synthseg.io import MedicalImage, read_image, write_image
from napari_synthseg.scene import Scene
from napari_synthseg.utils.atomic import atomic_directory, atomic_write_text


def tree_digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (folders as '<dir>')."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def one_error_line(capsys, match: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if not line.startswith(("warning:", "["))]  # not progress
    assert len(lines) == 1, err
    assert match.lower() in lines[0].lower(), lines[0]
    return lines[0]


@pytest.fixture
def cxr(tmp_path) -> Path:
    """A small 2D radiograph-like image that stores its spacing."""
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.normal(1000, 50, (96, 96)).astype(np.uint16))
    image.SetSpacing((0.5, 0.5))
    path = tmp_path / "in" / "cxr.mha"
    path.parent.mkdir()
    sitk.WriteImage(image, str(path))
    return path


PLACE = ["--lesion", "procedural:solid", "--size-mm", "8", "--constraint", "none", "--modality", "CXR"]


def place(*args: str) -> int:
    return main(["place", *args, *PLACE])


# ---- place --force ---------------------------------------------------------------------------


def test_place_force_never_deletes_the_folder_holding_the_input_scene(cxr, tmp_path, capsys):
    project = tmp_path / "project"
    project.mkdir()
    scene = project / "scene"
    assert place(str(cxr), "--out", str(scene), "--at", "48,48") == 0
    (project / "notes.txt").write_text("the user's own file")
    before = tree_digest(tmp_path)
    capsys.readouterr()
    # Before the fix: rmtree(project), then copytree failed: scene and notes gone.
    assert place(str(scene), "--out", str(project), "--force", "--at", "20,20") == 2
    one_error_line(capsys, "holds the input")
    assert tree_digest(tmp_path) == before


def test_place_force_replaces_only_a_scene(cxr, tmp_path, capsys):
    user = tmp_path / "results"
    user.mkdir()
    (user / "keep.csv").write_text("a,b\n1,2\n")
    before = tree_digest(tmp_path)
    assert place(str(cxr), "--out", str(user), "--force", "--at", "48,48") == 2
    one_error_line(capsys, "not a scene")
    assert tree_digest(tmp_path) == before
    # a previous scene is replaced by --force, and only then
    scene = tmp_path / "scene"
    assert place(str(cxr), "--out", str(scene), "--at", "48,48") == 0
    assert place(str(cxr), "--out", str(scene), "--at", "30,30") == 2
    assert place(str(cxr), "--out", str(scene), "--force", "--at", "30,30") == 0
    reopened = Scene.open(scene)
    assert len(reopened.lesions) == 1 and reopened.lesions[0].center_mm == (15.0, 15.0)


def test_place_copy_into_its_own_subfolder_is_refused(cxr, tmp_path, capsys):
    scene = tmp_path / "scene"
    assert place(str(cxr), "--out", str(scene), "--at", "48,48") == 0
    before = tree_digest(tmp_path)
    capsys.readouterr()
    assert place(str(scene), "--out", str(scene / "copy"), "--at", "20,20") == 2
    one_error_line(capsys, "inside the input scene")
    assert tree_digest(tmp_path) == before


def test_failed_place_leaves_nothing_and_rerun_needs_no_force(cxr, tmp_path, capsys):
    scene = tmp_path / "new" / "scene"
    assert place(str(cxr), "--out", str(scene), "--at", "4800,48") == 2
    one_error_line(capsys, "outside the image")
    assert sorted(os.listdir(tmp_path)) == ["in"]  # not even the missing parent folder
    assert place(str(cxr), "--out", str(scene), "--at", "48,48") == 0


def test_failed_place_into_a_scene_leaves_it_unchanged(cxr, tmp_path, capsys):
    scene = tmp_path / "scene"
    assert place(str(cxr), "--out", str(scene), "--at", "48,48") == 0
    before = (scene / "scene.json").read_bytes()
    capsys.readouterr()
    lungs = sitk.GetImageFromArray(np.ones((96, 96), np.uint8))
    lungs.CopyInformation(sitk.ReadImage(str(cxr)))
    sitk.WriteImage(lungs, str(tmp_path / "lungs.mha"))
    # the constraint is set first, then the lesion fails: both must be rolled back
    assert main(["place", str(scene), "--lesion", "procedural:solid", "--size-mm", "8", "--at", "900,9",
                 "--constraint", str(tmp_path / "lungs.mha")]) == 2
    assert (scene / "scene.json").read_bytes() == before


# ---- every file a writer creates counts ----------------------------------------------------


def test_mhd_does_not_replace_another_images_pixel_file(cxr, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    other = out / "b.zraw"
    other.write_bytes(b"pixels of another image")
    before = tree_digest(out)
    # Before the fix: exit 0, b.zraw replaced.
    assert main(["convert", str(cxr), str(out / "b.mhd")]) == 2
    one_error_line(capsys, "b.zraw already exists")
    assert tree_digest(out) == before
    assert main(["convert", str(cxr), str(out / "b.mhd"), "--force"]) == 0
    np.testing.assert_array_equal(read_image(out / "b.mhd").array, read_image(cxr).array)


def test_mhd_never_replaces_the_sources_pixel_file(tmp_path):
    image = MedicalImage(array=np.arange(64, dtype=np.int16).reshape(8, 8), spacing=(1.0, 1.0),
                         origin=(0.0, 0.0), direction=(1.0, 0.0, 0.0, 1.0))
    write_image(image, tmp_path / "a.mhd", compress=False)
    # a header whose pixel file has another stem (as scanners and ITK scripts write them)
    (tmp_path / "a.raw").rename(tmp_path / "b.raw")
    header = (tmp_path / "a.mhd").read_text().replace("a.raw", "b.raw")
    (tmp_path / "a.mhd").write_text(header)
    source = read_image(tmp_path / "a.mhd")
    before = tree_digest(tmp_path)
    # b.mhd writes b.raw: the source's pixels. Refused even with overwrite.
    with pytest.raises(SynthsegError, match="file of the source image"):
        write_image(source, tmp_path / "b.mhd", overwrite=True, compress=False)
    assert tree_digest(tmp_path) == before


# ---- short writes and full disks -------------------------------------------------------------


def _truncating_writer(real):
    def write(image, path, *args, **kwargs):
        real(image, path, *args, **kwargs)
        # what ITK's NIfTI writer leaves on a full disk: the file, cut short, and no error
        size = os.path.getsize(path)
        with open(path, "rb+") as fh:
            fh.truncate(size // 2)

    return write


@pytest.mark.parametrize("name", ["out.nii", "out.nii.gz", "out.mha", "out.nrrd", "out.png"])
def test_short_write_is_an_error_not_wrote(cxr, tmp_path, capsys, monkeypatch, name):
    monkeypatch.setattr(sitk, "WriteImage", _truncating_writer(sitk.WriteImage))
    out = tmp_path / "out"
    out.mkdir()
    # Before the fix: exit 0 and "wrote", a half file at the final path.
    assert main(["convert", str(cxr), str(out / name)]) == 2
    one_error_line(capsys, "incomplete")
    assert os.listdir(out) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 512 KiB tmpfs (root only); skips where mounting is not permitted."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()[:80]}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_full_disk_nifti_is_an_error_and_leaves_nothing(tmp_path, tiny_disk, capsys):
    big = tmp_path / "big.mha"
    rng = np.random.default_rng(1)
    sitk.WriteImage(sitk.GetImageFromArray(rng.integers(0, 30000, (16, 128, 256)).astype(np.int16)), str(big))
    assert main(["convert", str(big), str(tiny_disk / "big.nii")]) == 2
    one_error_line(capsys, "could not write big.nii")
    assert os.listdir(tiny_disk) == []


def test_full_disk_scene_assets_give_one_line(tmp_path, tiny_disk, capsys):
    rng = np.random.default_rng(2)
    image = sitk.GetImageFromArray(rng.integers(0, 4000, (800, 800)).astype(np.uint16))
    image.SetSpacing((0.5, 0.5))
    src = tmp_path / "cxr.mha"
    sitk.WriteImage(image, str(src))
    mask = sitk.GetImageFromArray(np.ones((800, 800), np.uint8))
    mask.CopyInformation(image)
    sitk.WriteImage(mask, str(tmp_path / "lungs.mha"))
    # the constraint mask is a 640 KB asset on a 512 KiB disk
    assert main(["place", str(src), "--out", str(tiny_disk / "scene"), "--at", "200,200", *PLACE[:4],
                 "--constraint", str(tmp_path / "lungs.mha")]) == 2
    line = one_error_line(capsys, "synthseg place: error:")
    assert "space" in line.lower() or "could not write" in line.lower() or "cannot write" in line.lower()
    assert not (tiny_disk / "scene").exists()


# ---- permissions -----------------------------------------------------------------------------


def test_outputs_honour_the_umask(cxr, tmp_path):
    old = os.umask(0o022)
    try:
        text = atomic_write_text(tmp_path / "a.json", "{}")
        with atomic_directory(tmp_path / "folder") as staging:
            (staging / "x").write_text("1")
        write_image(read_image(cxr), tmp_path / "img.nii.gz")
        assert place(str(cxr), "--out", str(tmp_path / "scene"), "--at", "48,48") == 0
    finally:
        os.umask(old)
    assert text.stat().st_mode & 0o777 == 0o644  # was 0600 (tempfile's private mode)
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "img.nii.gz").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "scene" / "scene.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "scene").stat().st_mode & 0o777 == 0o755


# ---- asset keys are not paths ----------------------------------------------------------------


def _edit_scene(folder: Path, edit) -> None:
    path = folder / "scene.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("target", ["mask", "lesion"])
def test_asset_keys_with_paths_are_refused(cxr, tmp_path, capsys, target):
    scene = tmp_path / "scene"
    assert place(str(cxr), "--out", str(scene), "--at", "48,48") == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    key = next((scene / "assets").iterdir())
    shutil.copy(key, outside / "x.safetensors")
    traversal = "../../outside/x"

    def edit(data):
        if target == "mask":
            data["masks"]["constraint"] = traversal
        else:
            data["lesions"][0]["assets"]["mask"] = traversal

    _edit_scene(scene, edit)
    capsys.readouterr()
    with pytest.raises(SynthsegError, match="invalid key"):
        Scene.open(scene)
    assert main(["render", str(scene), str(tmp_path / "render")]) == 2
    one_error_line(capsys, "invalid key")
    assert not (tmp_path / "render").exists()


def test_missing_asset_is_refused_at_open(cxr, tmp_path):
    scene = tmp_path / "scene"
    assert place(str(cxr), "--out", str(scene), "--at", "48,48") == 0
    for asset in (scene / "assets").iterdir():
        asset.unlink()
    with pytest.raises(SynthsegError, match="missing from its assets"):
        Scene.open(scene)


def test_asset_file_under_another_keys_name_is_refused(cxr, tmp_path):
    from napari_synthseg.scene import AssetStore

    store = AssetStore(tmp_path)
    a = store.put(np.zeros((4, 4), np.float32))
    b = store.put(np.ones((4, 4), np.float32))
    shutil.copy(tmp_path / "assets" / f"{b}.safetensors", tmp_path / "assets" / f"{a}.safetensors")
    with pytest.raises(SynthsegError, match="corrupt"):
        AssetStore(tmp_path).get(a)
    with pytest.raises(SynthsegError, match="invalid asset key"):
        AssetStore(tmp_path).get("../" + uuid.uuid4().hex)


def test_cli_subprocess_prints_no_c_library_lines(tmp_path):
    # libpng prints "libpng error/warning" straight to fd 2 before our message.
    png = tmp_path / "bad.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((32, 32), np.uint8)), str(png))
    data = bytearray(png.read_bytes())
    data[40:60] = b"\x00" * 20  # corrupt the IHDR/IDAT but keep the end chunk
    png.write_bytes(bytes(data))
    result = subprocess.run([sys.executable, "-m", "napari_synthseg.cli", "info", str(png)],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith("synthseg info: error:")


# ---- asset compaction ------------------------------------------------------------------------


def test_asset_store_compaction_bounds_unreferenced_files(cxr, tmp_path, monkeypatch):
    import napari_synthseg.scene.scene as scene_module
    from napari_synthseg.scene.assets import COMPACT_SLACK_FILES

    # Every save compacts; here no asset counts as "in flight" (see the next test for those).
    monkeypatch.setattr(scene_module, "RECENT_ASSET_S", 0.0)

    scene = Scene.create(read_image(cxr), tmp_path / "scene")
    rng = np.random.default_rng(0)
    # set a mask, undo it, set another: the redo step (and its asset) is dropped each time
    for _ in range(COMPACT_SLACK_FILES + 40):
        scene.set_mask("constraint", rng.random((96, 96)) > 0.5)
        scene.undo()
        scene.assets.maybe_compact(scene.referenced_assets)
    referenced = scene.referenced_assets()
    files = scene.assets.file_count()
    assert files - len(referenced) <= COMPACT_SLACK_FILES
    assert files < COMPACT_SLACK_FILES + 40
    # nothing the scene or its history needs was removed
    reopened = Scene.open(tmp_path / "scene")
    for key in reopened.referenced_assets():
        reopened.assets.get(key)


# ---- arguments -------------------------------------------------------------------------------


def test_negative_number_lists_need_no_equals_sign(tmp_path, capsys):
    from napari_synthseg.cli._common import join_negative_values

    assert join_negative_values(["place", "S", "--at", "-1,5", "--at-mm", "-77.5,-155.2,224", "--force"],
                                {"--at", "--at-mm"}) == ["place", "S", "--at=-1,5", "--at-mm=-77.5,-155.2,224", "--force"]
    # a value that is not a number list stays a separate token (argparse then reports it)
    assert join_negative_values(["--at", "-x"], {"--at"}) == ["--at", "-x"]
    image = sitk.GetImageFromArray(np.full((64, 64), 1000, np.uint16))
    image.SetSpacing((0.5, 0.5))
    image.SetOrigin((-20.0, -20.0))
    src = tmp_path / "neg.mha"
    sitk.WriteImage(image, str(src))
    # before: "argument --at-mm: expected one argument"
    assert main(["place", str(src), "--out", str(tmp_path / "s"), "--at-mm", "-5.5,-4", *PLACE]) == 0
    placed = Scene.open(tmp_path / "s").lesions[0]
    assert placed.center_mm == pytest.approx((-5.5, -4.0), abs=0.5)
    assert main(["info", str(src), "--spacing", "-1,2"]) == 2
    one_error_line(capsys, "positive")


@pytest.mark.parametrize("argv, match", [
    (["place", "x", "--lesion", "procedural:solid", "--at", "1,1", "--seed", "-1"], "--seed: -1 is out of range"),
    (["inpaint", "x", "--mask", "y", "--out", "z.mha", "--threads", "-3"], "--threads: -3 is out of range"),
    (["inpaint", "x", "--mask", "y", "--out", "z.mha", "--samples", "100000"], "--samples: 100000 is out of range"),
    (["place", "x", "--lesion", "procedural:solid", "--at", "1,1", "--size-mm", "nan"], "finite"),
    (["place", "x", "--lesion", "procedural:solid", "--at-mm", "1e308,1", "--out", "o"], "finite numbers within"),
    (["library", "procedural", "--library", "L", "--n", "1000000000"], "--n"),
])
def test_arguments_are_bounded_in_the_parser(tmp_path, capsys, monkeypatch, argv, match):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    one_error_line(capsys, match)
    assert os.listdir(tmp_path) == []


def test_pixel_budget_option_and_environment(cxr, capsys, monkeypatch):
    assert main(["--max-pixels", "100", "info", str(cxr)]) == 2
    one_error_line(capsys, "pixel budget")
    assert "SYNTHSEG_MAX_PIXELS" not in os.environ  # the option does not leak past the command
    monkeypatch.setenv("SYNTHSEG_MAX_PIXELS", "50")
    with pytest.raises(SynthsegError, match="pixel budget"):
        read_image(cxr)


# ---- readers ---------------------------------------------------------------------------------


def test_nifti_truncated_or_non_finite_is_refused(tmp_path):
    import nibabel as nib

    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    for ext in (".nii", ".nii.gz"):
        path = tmp_path / f"a{ext}"
        nib.save(nib.Nifti1Image(data, np.eye(4)), path)
        raw = path.read_bytes()
        cut = tmp_path / f"cut{ext}"
        cut.write_bytes(raw[: len(raw) // 2])
        with pytest.raises(SynthsegError, match="truncated|corrupt"):
            read_image(cut)
        bad = data.copy()
        bad[1, 2, 3] = np.nan
        nib.save(nib.Nifti1Image(bad, np.eye(4)), path)
        # ITK reads the NaN as 0 without a word; we refuse it like MHA and TIFF
        with pytest.raises(SynthsegError, match="NaN or infinite"):
            read_image(path)


def test_cut_jpeg_and_short_dicom_pixel_data_are_refused(tmp_path):
    import pydicom

    from _dicom import write_series

    jpg = tmp_path / "a.jpg"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8)), str(jpg))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpg.read_bytes()[: jpg.stat().st_size * 3 // 10])
    with pytest.raises(SynthsegError, match="truncated"):
        read_image(cut)
    (dcm,) = write_series(tmp_path / "one", np.zeros((1, 32, 32)), "1.2.826.0.1.3680043.2.1125.5")
    dataset = pydicom.dcmread(dcm)
    dataset.PixelData = dataset.PixelData[:1000]
    dataset.save_as(tmp_path / "short.dcm")
    with pytest.raises(SynthsegError, match="PixelData is short"):
        read_image(tmp_path / "short.dcm")
    dataset = pydicom.dcmread(dcm)
    dataset.Rows = dataset.Columns = 65535
    dataset.save_as(tmp_path / "bomb.dcm")
    with pytest.raises(SynthsegError, match="pixel budget"):
        read_image(tmp_path / "bomb.dcm")


def test_dicom_series_problems_are_refused(tmp_path):
    import pydicom

    from _dicom import write_series

    rng = np.random.default_rng(0)
    folder = tmp_path / "dup"
    files = sorted(write_series(folder, rng.integers(-1000, 500, (5, 8, 8)), "1.2.826.0.1.3680043.2.1125.6"))
    dataset = pydicom.dcmread(files[1])
    dataset.ImagePositionPatient = pydicom.dcmread(files[2]).ImagePositionPatient
    dataset.save_as(files[1])
    with pytest.raises(SynthsegError, match="same slice position"):
        read_image(folder)
    folder = tmp_path / "cut"
    files = sorted(write_series(folder, rng.integers(-1000, 500, (5, 8, 8)), "1.2.826.0.1.3680043.2.1125.7"))
    files[2].write_bytes(files[2].read_bytes()[:-64])
    with pytest.raises(SynthsegError, match="truncated|corrupt"):
        read_image(folder)
    folder = tmp_path / "noipp"
    for f in write_series(folder, rng.integers(-1000, 500, (3, 8, 8)), "1.2.826.0.1.3680043.2.1125.8"):
        dataset = pydicom.dcmread(f)
        del dataset.ImagePositionPatient
        dataset.save_as(f)
    with pytest.raises(SynthsegError, match="ImagePositionPatient"):
        read_image(folder)


def test_mask_from_another_scan_is_refused(cxr, tmp_path, capsys):
    mask = sitk.GetImageFromArray((np.arange(96 * 96).reshape(96, 96) % 97 == 0).astype(np.uint8))
    mask.SetSpacing((0.5, 0.5))
    mask.SetOrigin((1e5, 0.0))  # 100 km away, same matrix size
    sitk.WriteImage(mask, str(tmp_path / "far.mha"))
    out = tmp_path / "out.mha"
    assert main(["remove", str(cxr), "--mask", str(tmp_path / "far.mha"), "--out", str(out)]) == 2
    one_error_line(capsys, "origin is")
    assert not out.exists()


def test_export_does_not_serve_a_missing_asset_from_another_scene(cxr, tmp_path, capsys):
    scenes = tmp_path / "scenes"
    for name in ("a", "b"):  # the same procedural lesion: the same asset keys in both scenes
        assert place(str(cxr), "--out", str(scenes / name), "--at", "48,48") == 0
    keys_a = {p.name for p in (scenes / "a" / "assets").iterdir()}
    assert keys_a == {p.name for p in (scenes / "b" / "assets").iterdir()}
    for asset in (scenes / "b" / "assets").iterdir():
        asset.unlink()
    capsys.readouterr()
    # before: scene b rendered with scene a's cached patch, and the export succeeded
    assert main(["review", str(scenes), "--accept-all"]) == 2
    one_error_line(capsys, "missing")
    assert main(["export", str(scenes), "--format", "csv", "--out", str(tmp_path / "dataset")]) == 2
    one_error_line(capsys, "missing")
    assert not (tmp_path / "dataset").exists()


# ---- no process outlives a killed parent -------------------------------------------------------


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text(errors="replace").lower()
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
def test_killed_generate_leaves_no_worker_alive(tmp_path):
    import signal
    import time

    images = tmp_path / "images"
    images.mkdir()
    for i in range(30):
        image = sitk.GetImageFromArray(np.random.default_rng(i).normal(1000, 50, (512, 512)).astype(np.uint16))
        image.SetSpacing((0.6, 0.6))
        sitk.WriteImage(image, str(images / f"img{i:02d}.mha"))
    cmd = [sys.executable, "-m", "napari_synthseg.cli", "generate", str(images), "--out", str(tmp_path / "out"),
           "--per-image", "3", "--blend", "poisson", "--constraint", "none", "--modality", "CXR", "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    workers: set[int] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        workers = _descendants(proc.pid)
        if len(workers) >= 2 and (tmp_path / "out" / "scenes").exists():
            break
        time.sleep(0.2)
    if proc.poll() is not None:
        pytest.skip("generate finished before it could be killed")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    alive = workers
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if _running(p)}
        time.sleep(0.5)
    assert not alive, f"{len(alive)} process(es) outlived the killed generate"


def test_compaction_keeps_an_asset_another_writer_has_not_saved_yet(cxr, tmp_path):
    """An asset put in the store moments before the scene.json naming it is saved survives."""
    from napari_synthseg.scene.assets import COMPACT_SLACK_FILES

    scene = Scene.create(read_image(cxr), tmp_path / "scene")
    other = Scene.open(tmp_path / "scene")  # another program on the same folder
    in_flight = other.assets.put(np.full((7, 7), 3.0, np.float32))
    rng = np.random.default_rng(1)
    for _ in range(COMPACT_SLACK_FILES + 10):  # enough churn for the first program to compact
        scene.set_mask("constraint", rng.random((96, 96)) > 0.5)
        scene.undo()
    np.testing.assert_array_equal(other.assets.get(in_flight), np.full((7, 7), 3.0, np.float32))
