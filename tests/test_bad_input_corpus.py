"""The bad-input corpus of issue 18, generated here (no corpus files are committed).

More than 300 cases of the kinds the issue lists (truncated and corrupt files of every format,
bombs, NaN/Inf, odd DICOM folders, masks off the image's grid, malformed scenes, hostile model
files, bad rules and arguments, outputs that would clobber files) are run through the real CLI,
each in its own process (``python -m napari_synthseg.cli``), two at a time, each with a timeout
and an address-space limit (``RLIMIT_AS``). The test fails unless every case

* ends with exit status 2 and exactly one line on stderr (besides ``warning:`` lines and
  progress), starting ``synthseg <command>: error:`` or ``<prog>: error:`` -- or, for cases
  marked ``ok``/``either``, with a correct result;
* prints no traceback, does not hang (timeout), and does not run out of memory;
* changes no input or user file (every file under ``inputs/`` and ``user/`` is hashed before
  and after), and leaves no output at a final path it failed to write, nor a hidden staging
  file or folder.

The numbers are printed as a table (``-s``). Kinds and counts are listed in docs/reliability.md.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk

from _dicom import write_series

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MEMORY_LIMIT = 3 * 2**30  # bytes of address space per case (torch alone maps ~1.5 GiB)
TIMEOUT_S = 90
WORKERS = 2
INPAINTER = REPO / "src" / "napari_synthseg" / "inpaint" / "weights" / "cxr_inpainter_small.safetensors"


@dataclass
class Case:
    name: str
    argv: list[str]
    expect: str = "error"  # "error": exit 2 + one line; "ok": exit 0 + check; "either": one of them
    match: str | None = None  # text the error line must contain
    absent: list[Path] = field(default_factory=list)  # must not exist after an error
    check: Callable[[], str | None] | None = None  # for "ok": returns a problem or None


# ---- input generation ------------------------------------------------------------------------


def _smooth(shape, seed=0, dtype=np.uint16, lo=100, hi=3000):
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 1, shape)
    for axis in range(len(shape)):
        base = np.cumsum(base, axis=axis)
    base = (base - base.min()) / (np.ptp(base) or 1)
    return (lo + base * (hi - lo)).astype(dtype)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int, idat_bytes: int = 2000) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (idat_bytes * 50))[:idat_bytes]
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg_claiming(valid: bytes, width: int, height: int) -> bytes:
    data = bytearray(valid)
    i = 2
    while i < len(data) - 9:
        if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2):
            data[i + 5 : i + 7] = struct.pack(">H", height)
            data[i + 7 : i + 9] = struct.pack(">H", width)
            return bytes(data)
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        i += 2 + length
    raise AssertionError("no SOF marker")


def make_valid_inputs(inp: Path) -> dict[str, Path]:
    """One small valid file per format (2D for PNG/JPEG/TIFF/DICOM, 3D for the volume formats)."""
    files = {}
    img2 = sitk.GetImageFromArray(_smooth((48, 40)))
    img2.SetSpacing((0.5, 0.5))
    files["png"] = inp / "valid.png"
    sitk.WriteImage(img2, str(files["png"]))
    files["jpg"] = inp / "valid.jpg"
    sitk.WriteImage(sitk.GetImageFromArray(_smooth((48, 40), dtype=np.uint8, lo=10, hi=240)), str(files["jpg"]))
    files["tif"] = inp / "valid.tif"
    sitk.WriteImage(img2, str(files["tif"]))
    vol = sitk.GetImageFromArray(_smooth((6, 24, 20), seed=1, dtype=np.int16, lo=-900, hi=400))
    vol.SetSpacing((0.8, 0.8, 2.0))
    vol.SetOrigin((-10.0, -20.0, -30.0))
    for ext in ("nii", "nii.gz", "mha", "nrrd"):
        files[ext] = inp / f"valid.{ext}"
        sitk.WriteImage(vol, str(files[ext]), useCompression=False)
    files["mhd"] = inp / "valid.mhd"
    sitk.WriteImage(vol, str(files["mhd"]), useCompression=False)
    series = write_series(inp / "series_src", _smooth((1, 32, 32), seed=2, dtype=np.int16, lo=-900, hi=400),
                          "1.2.826.0.1.3680043.2.1125.901")
    files["dcm"] = inp / "valid.dcm"
    shutil.move(series[0], files["dcm"])
    shutil.rmtree(inp / "series_src")
    return files


def _same_pixels(a: Path, b: Path) -> str | None:
    pa = sitk.GetArrayFromImage(sitk.ReadImage(str(a)))
    pb = sitk.GetArrayFromImage(sitk.ReadImage(str(b)))
    return None if pa.shape == pb.shape and np.array_equal(pa, pb) else "read other pixels than the original"


def _data_file(path: Path) -> Path:
    """The file to damage: the .raw of a .mhd, else the file itself."""
    if path.suffix == ".mhd":
        return path.with_suffix(".raw")
    return path


def _copy_format(src: Path, dst_stem: Path) -> Path:
    """Copy ``src`` (and a .mhd's pixel file, renamed) to ``dst_stem`` + the same extension."""
    ext = "".join(src.suffixes) if src.name.endswith(".nii.gz") else src.suffix
    dst = dst_stem.with_name(dst_stem.name + ext)
    if src.suffix == ".mhd":
        raw = dst.with_suffix(".raw")
        shutil.copy(src.with_suffix(".raw"), raw)
        dst.write_text(src.read_text().replace(src.with_suffix(".raw").name, raw.name))
    else:
        shutil.copy(src, dst)
    return dst


def build_reader_cases(inp: Path, valid: dict[str, Path], out: Path) -> list[Case]:
    cases = []
    for fmt, src in valid.items():
        cases.append(Case(f"valid {fmt}", ["info", str(src)], expect="ok"))
        dst = out / f"converted_{fmt.replace('.', '_')}.nii.gz"

        def converted_equal(src=src, dst=dst):
            a, b = sitk.ReadImage(str(src)), sitk.ReadImage(str(dst))
            if a.GetNumberOfComponentsPerPixel() != 1:
                return None
            if not np.array_equal(sitk.GetArrayViewFromImage(a).squeeze(), sitk.GetArrayViewFromImage(b).squeeze()):
                return "converted pixels differ"
            return None

        cases.append(Case(f"convert valid {fmt}", ["convert", str(src), str(dst)], expect="ok", check=converted_equal))
        damaged_source = _data_file(src)
        size = damaged_source.stat().st_size
        for frac in (0.05, 0.3, 0.5, 0.7, 0.95, None):
            path = _copy_format(src, inp / f"trunc_{int((frac or 1) * 100)}_{fmt.replace('.', '_')}")
            target = _data_file(path)
            keep = size - 1 if frac is None else max(1, int(size * frac))
            target.write_bytes(damaged_source.read_bytes()[:keep])
            if frac is None:
                # one byte short: refused, or (a TIFF's last byte can be padding) read with
                # exactly the original pixels
                cases.append(Case(f"truncated {fmt} to {keep}/{size} B", ["info", str(path)], expect="either",
                                  check=lambda a=path, b=src: _same_pixels(a, b)))
            else:
                cases.append(Case(f"truncated {fmt} to {keep}/{size} B", ["info", str(path)]))
            if frac == 0.5:
                o = out / f"from_trunc_{fmt.replace('.', '_')}.nii"
                cases.append(Case(f"convert truncated {fmt}", ["convert", str(path), str(o)], absent=[o]))
        for seed in range(3):
            path = _copy_format(src, inp / f"flip{seed}_{fmt.replace('.', '_')}")
            data = bytearray(path.read_bytes())
            rng = np.random.default_rng(seed)
            for pos in rng.integers(0, min(len(data), 400), 6):
                data[pos] ^= 0xFF
            path.write_bytes(bytes(data))
            cases.append(Case(f"header bytes flipped {fmt} #{seed}", ["info", str(path)], expect="either"))
        ext = src.name[len("valid"):]
        noise = inp / f"noise{ext}"
        noise.write_bytes(np.random.default_rng(7).bytes(3000))
        cases.append(Case(f"random bytes as {fmt}", ["info", str(noise)]))
        zeros = inp / f"zeros{ext}"
        zeros.write_bytes(b"\x00" * 3000)
        cases.append(Case(f"zeros as {fmt}", ["info", str(zeros)]))
        empty = inp / f"empty{ext}"
        empty.write_bytes(b"")
        cases.append(Case(f"empty {fmt}", ["info", str(empty)], match="empty"))
    return cases


def build_nonfinite_cases(inp: Path) -> list[Case]:
    import nibabel as nib

    cases = []
    for bad_name, bad in (("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf)):
        arr = np.ones((4, 6, 5), np.float32)
        arr[1, 2, 3] = bad
        for ext in ("nii", "nii.gz"):
            path = inp / f"{bad_name}.{ext}"
            nib.save(nib.Nifti1Image(np.transpose(arr), np.eye(4)), path)
            cases.append(Case(f"{bad_name} in {ext}", ["info", str(path)], match="NaN or infinite"))
        for ext in ("mha", "nrrd", "tif"):
            path = inp / f"{bad_name}.{ext}"
            data = arr[1] if ext == "tif" else arr
            sitk.WriteImage(sitk.GetImageFromArray(data), str(path))
            cases.append(Case(f"{bad_name} in {ext}", ["info", str(path)], match="NaN or infinite"))
        path = inp / f"{bad_name}_slope.nii"
        img = nib.Nifti1Image(np.ones((5, 6, 4), np.int16), np.eye(4))
        img.header["scl_slope"] = bad
        img.header["scl_inter"] = 0
        nib.save(img, path)
        raw = bytearray(path.read_bytes())
        raw[112:116] = struct.pack("<f", bad)  # nibabel refuses to write it; the file can still hold it
        path.write_bytes(bytes(raw))
        # the NIfTI standard says a non-finite scl_slope means "no scaling": the stored integers
        cases.append(Case(f"{bad_name} intensity scaling in nii (means no scaling)", ["info", "--json", str(path)],
                          expect="ok"))
    return cases


def build_bomb_cases(inp: Path, valid: dict[str, Path]) -> list[Case]:
    import nibabel as nib
    import pydicom

    cases = []
    for w, h in ((40000, 40000), (30000, 30000), (65535, 1000), (20000, 20000)):
        path = inp / f"bomb_{w}x{h}.png"
        path.write_bytes(png_claiming(w, h))
        cases.append(Case(f"PNG claiming {w}x{h}", ["info", str(path)]))
    jpg = valid["jpg"].read_bytes()
    for w, h in ((65000, 65000), (30000, 30000), (8000, 8000)):
        path = inp / f"bomb_{w}x{h}.jpg"
        path.write_bytes(jpeg_claiming(jpg, w, h))
        cases.append(Case(f"JPEG claiming {w}x{h}", ["info", str(path)]))
    for rows, cols in ((65535, 65535), (30000, 30000), (4096, 4096)):
        ds = pydicom.dcmread(valid["dcm"])
        ds.Rows, ds.Columns = rows, cols
        path = inp / f"bomb_{rows}x{cols}.dcm"
        ds.save_as(path)
        cases.append(Case(f"DICOM claiming {rows}x{cols}", ["info", str(path)]))
    ds = pydicom.dcmread(valid["dcm"])
    ds.PixelData = ds.PixelData[:1000]
    path = inp / "short_pixeldata.dcm"
    ds.save_as(path)
    cases.append(Case("DICOM with 1000-byte PixelData", ["info", str(path)], match="truncated"))
    ds = pydicom.dcmread(valid["dcm"])
    ds.NumberOfFrames = 100000
    path = inp / "bomb_frames.dcm"
    ds.save_as(path)
    cases.append(Case("DICOM claiming 100000 frames", ["info", str(path)]))
    for shape in ((2000, 2000, 2000), (32767, 32767, 2), (1000, 1000, 1000)):
        img = nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4))
        img.header.set_data_shape(shape)
        for ext in ("nii", "nii.gz"):
            path = inp / f"bomb_{'x'.join(map(str, shape))}.{ext}"
            raw = img.header.binaryblock + b"\x00" * 4 + b"\x00" * 64
            path.write_bytes(gzip.compress(raw) if ext == "nii.gz" else raw)
            cases.append(Case(f"NIfTI {ext} claiming {shape}", ["info", str(path)]))
    path = inp / "bomb.mha"
    path.write_bytes(b"ObjectType = Image\nNDims = 2\nDimSize = 100000 100000\nElementType = MET_UCHAR\n"
                     b"ElementDataFile = LOCAL\n" + b"\x00" * 100)
    cases.append(Case("MetaImage claiming 100000^2", ["info", str(path)]))
    path = inp / "bomb_small.mha"
    path.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 900 900 900\nElementType = MET_SHORT\n"
                     b"ElementDataFile = LOCAL\n" + b"\x00" * 100)
    cases.append(Case("MetaImage claiming 900^3 (under budget, truncated)", ["info", str(path)]))
    path = inp / "bomb.nrrd"
    path.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 2\nsizes: 100000 100000\nencoding: raw\n\n" + b"\x00" * 100)
    cases.append(Case("NRRD claiming 100000^2", ["info", str(path)]))
    path = inp / "bomb_gz.nrrd"
    path.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 800 800 800\nencoding: gzip\n\n"
                     + gzip.compress(b"\x00" * 100000))
    cases.append(Case("NRRD gzip claiming 800^3 (under budget, short)", ["info", str(path)]))
    # the budget applies to genuine files too, and says how to raise it
    for fmt in ("png", "nii.gz", "dcm", "mha"):
        cases.append(Case(f"--max-pixels 100 on valid {fmt}", ["--max-pixels", "100", "info", str(valid[fmt])],
                          match="pixel budget"))
    cases.append(Case("--max-pixels 0", ["--max-pixels", "0", "info", str(valid["png"])]))
    return cases


def build_dicom_folder_cases(inp: Path) -> list[Case]:
    import pydicom

    cases = []
    rng = np.random.default_rng(3)

    def series(name, n=6, uid="1.2.826.0.1.3680043.2.1125.77"):
        folder = inp / name
        write_series(folder, rng.integers(-1000, 500, (n, 16, 16)), uid)
        return folder, sorted(folder.iterdir())

    folder, files = series("dcm_ok")
    cases.append(Case("valid DICOM series", ["info", str(folder)], expect="ok"))
    folder, files = series("dcm_trunc_slice")
    files[2].write_bytes(files[2].read_bytes()[:-300])
    cases.append(Case("series with one truncated slice", ["info", str(folder)]))
    folder, files = series("dcm_trunc_slice_half")
    files[3].write_bytes(files[3].read_bytes()[: files[3].stat().st_size // 2])
    cases.append(Case("series with one slice cut in half", ["info", str(folder)]))
    folder, files = series("dcm_short_slice")
    ds = pydicom.dcmread(files[1])
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(files[1])
    cases.append(Case("series with one short PixelData", ["info", str(folder)]))
    folder, files = series("dcm_dup")
    ds = pydicom.dcmread(files[1])
    ds.ImagePositionPatient = pydicom.dcmread(files[2]).ImagePositionPatient
    ds.save_as(files[1])
    cases.append(Case("series with duplicate slice positions", ["info", str(folder)], match="same slice position"))
    folder, files = series("dcm_no_ipp")
    for f in files:
        ds = pydicom.dcmread(f)
        del ds.ImagePositionPatient
        ds.save_as(f)
    cases.append(Case("series without ImagePositionPatient", ["info", str(folder)]))
    folder, files = series("dcm_no_ipp_one")
    ds = pydicom.dcmread(files[4])
    del ds.ImagePositionPatient
    ds.save_as(files[4])
    cases.append(Case("series with one slice without position", ["info", str(folder)]))
    folder, files = series("dcm_sizes")
    other = inp / "dcm_sizes_tmp"
    write_series(other, rng.integers(-1000, 500, (1, 20, 20)), "1.2.826.0.1.3680043.2.1125.77",
                 origin=(-100.0, -120.0, -250.0))
    shutil.move(next(other.iterdir()), folder / "zzz_bigger.dcm")
    shutil.rmtree(other)
    cases.append(Case("series whose slices differ in size", ["info", str(folder)]))
    folder, files = series("dcm_junk")
    (folder / "readme.txt").write_text("notes")
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    cases.append(Case("series with non-DICOM files beside it", ["info", str(folder)], expect="ok"))
    folder = inp / "dcm_empty"
    folder.mkdir()
    cases.append(Case("empty DICOM folder", ["info", str(folder)]))
    folder = inp / "dcm_only_junk"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x00" * 50)
    cases.append(Case("folder of one broken DICOM", ["info", str(folder)]))
    folder, files = series("dcm_bomb_slice", n=3)
    ds = pydicom.dcmread(files[0])
    ds.Rows = ds.Columns = 65535
    ds.save_as(files[0])
    cases.append(Case("series with a slice claiming 65535^2", ["info", str(folder)]))
    return cases


def build_mask_cases(inp: Path, out: Path) -> list[Case]:
    cases = []
    img = sitk.GetImageFromArray(_smooth((64, 64), seed=4))
    img.SetSpacing((0.5, 0.5))
    img.SetOrigin((-16.0, -16.0))
    image = inp / "mask_image.mha"
    sitk.WriteImage(img, str(image))
    small = np.zeros((64, 64), np.uint8)
    small[28:36, 28:36] = 1

    def mask_file(name, array, **geometry):
        m = sitk.GetImageFromArray(array)
        m.SetSpacing(geometry.get("spacing", (0.5, 0.5)))
        m.SetOrigin(geometry.get("origin", (-16.0, -16.0)))
        if "direction" in geometry:
            m.SetDirection(geometry["direction"])
        path = inp / name
        sitk.WriteImage(m, str(path))
        return path

    good = mask_file("mask_good.mha", small)
    variants = {
        "origin 100 km away": mask_file("mask_far.mha", small, origin=(1e5, 0.0)),
        "origin 3 px off": mask_file("mask_shift.mha", small, origin=(-14.5, -16.0)),
        "other spacing": mask_file("mask_spacing.mha", small, spacing=(0.7, 0.7)),
        "flipped direction": mask_file("mask_dir.mha", small, direction=(-1.0, 0.0, 0.0, 1.0)),
        "other shape": mask_file("mask_shape.mha", np.zeros((60, 64), np.uint8)),
        "empty mask": mask_file("mask_empty.mha", np.zeros((64, 64), np.uint8)),
        "whole-image mask": mask_file("mask_whole.mha", np.ones((64, 64), np.uint8)),
        "NaN mask": mask_file("mask_nan.mha", np.where(small > 0, np.nan, 0).astype(np.float32)),
    }
    trunc = inp / "mask_trunc.mha"
    trunc.write_bytes(good.read_bytes()[:-500])
    variants["truncated mask"] = trunc
    variants["missing mask"] = inp / "no_such_mask.mha"
    for what, mask in variants.items():
        o = out / f"removed_{mask.stem}.mha"
        cases.append(Case(f"remove: {what}", ["remove", str(image), "--mask", str(mask), "--out", str(o)], absent=[o]))
        o = out / f"inpainted_{mask.stem}.mha"
        cases.append(Case(f"inpaint: {what}", ["inpaint", str(image), "--mask", str(mask), "--model", "biharmonic",
                                               "--out", str(o)], absent=[o]))
        s = out / f"scene_{mask.stem}"
        cases.append(Case(f"place --constraint: {what}", ["place", str(image), "--out", str(s), "--lesion",
                                                           "procedural:solid", "--size-mm", "5", "--at", "32,32",
                                                           "--constraint", str(mask), "--modality", "CXR"],
                          absent=[s], expect="either" if what in ("whole-image mask",) else "error"))
    o = out / "removed_good.mha"
    cases.append(Case("remove with a good mask", ["remove", str(image), "--mask", str(good), "--out", str(o)],
                      expect="ok", check=lambda o=o: None if o.exists() else "no output"))
    return cases


def make_scene(inp: Path) -> Path:
    from napari_synthseg.cli import main

    img = sitk.GetImageFromArray(_smooth((64, 64), seed=5))
    img.SetSpacing((0.5, 0.5))
    image = inp / "scene_image.mha"
    sitk.WriteImage(img, str(image))
    scene = inp / "base_scene"
    assert main(["place", str(image), "--out", str(scene), "--lesion", "procedural:solid", "--size-mm", "5",
                 "--at", "32,32", "--constraint", "none", "--modality", "CXR"]) == 0
    return scene


def build_scene_cases(inp: Path, out: Path, base: Path) -> list[Case]:
    cases = []
    data = json.loads((base / "scene.json").read_text())
    lesion = data["lesions"][0]

    def variant(name: str, edit=None, text: str | bytes | None = None, remove_assets=False) -> Path:
        folder = inp / f"scene_{name}"
        shutil.copytree(base, folder)
        if edit is not None:
            d = json.loads(json.dumps(data))
            edit(d)
            text = json.dumps(d)
        if text is not None:
            (folder / "scene.json").write_bytes(text if isinstance(text, bytes) else text.encode())
        if remove_assets:
            for f in (folder / "assets").iterdir():
                f.unlink()
        return folder

    def set_lesion(key, value):
        return lambda d: d["lesions"][0].__setitem__(key, value)

    bad = {
        "missing source": lambda d: d.pop("source"),
        "lesions [123]": lambda d: d.__setitem__("lesions", [123]),
        "lesions not a list": lambda d: d.__setitem__("lesions", {"a": 1}),
        "revision abc": lambda d: d.__setitem__("revision", "abc"),
        "revision -4": lambda d: d.__setitem__("revision", -4),
        "NaN centre": None,
        "size_mm 1e7": set_lesion("size_mm", 1e7),
        "size_mm -5": set_lesion("size_mm", -5),
        "size_mm string": set_lesion("size_mm", "big"),
        "status maybe": set_lesion("status", "maybe"),
        "blend mode x": set_lesion("blend", {"mode": "x"}),
        "centre of 5 numbers": set_lesion("center_mm", [1, 2, 3, 4, 5]),
        "centre 1e300": set_lesion("center_mm", [1e300, 0]),
        "seed -1": set_lesion("seed", -1),
        "label -3": set_lesion("label", -3),
        "unknown lesion field": set_lesion("colour", "red"),
        "asset key traversal": lambda d: d["lesions"][0]["assets"].__setitem__("mask", "../../outside/x"),
        "absolute asset key": lambda d: d["lesions"][0]["assets"].__setitem__("mask", "/etc/passwd"),
        "mask key traversal": lambda d: d["masks"].__setitem__("constraint", "../../../x"),
        "schema version 99": lambda d: d.__setitem__("schema_version", 99),
        "source paths empty": lambda d: d["source"].__setitem__("paths", []),
        "shape [0, 64]": lambda d: d["source"]["geometry"].__setitem__("shape", [0, 64]),
        "shape of PiB": lambda d: d["source"]["geometry"].__setitem__("shape", [10**7, 10**7, 10**7]),
        "negative spacing": lambda d: d["source"]["geometry"].__setitem__("spacing", [-1, 0.5]),
        "sha256 not hex": lambda d: d["source"].__setitem__("sha256", "zz"),
        "duplicate lesion ids": lambda d: d["lesions"].append(dict(d["lesions"][0])),
        "rotation NaN": None,
    }
    for name, edit in bad.items():
        if name == "NaN centre":
            folder = variant("nan_centre", text=json.dumps(data).replace(
                json.dumps(lesion["center_mm"]), "[NaN, 1.0]"))
        elif name == "rotation NaN":
            d = json.loads(json.dumps(data))
            d["lesions"][0]["rotation_deg"] = "__NAN__"
            folder = variant("rotation_nan", text=json.dumps(d).replace('"__NAN__"', "NaN"))
        else:
            folder = variant(name.replace(" ", "_").replace("/", "_"), edit)
        cases.append(Case(f"scene: {name} (render)", ["render", str(folder), str(out / f"render_{folder.name}")],
                          absent=[out / f"render_{folder.name}" / "image.mha"]))
        cases.append(Case(f"scene: {name} (place)", ["place", str(folder), "--lesion", "procedural:solid",
                                                     "--size-mm", "4", "--at", "10,10", "--constraint", "none"]))
    texts = {
        "not JSON": "{not json",
        "JSON list": "[1, 2, 3]",
        "deeply nested": "[" * 100000 + "]" * 100000,
        "non-UTF-8": b"\xff\xfe\x00{",
        "empty": "",
    }
    for name, text in texts.items():
        folder = variant(name.replace(" ", "_"), text=text)
        cases.append(Case(f"scene.json {name}", ["render", str(folder), str(out / f"render_{folder.name}")],
                          absent=[out / f"render_{folder.name}" / "image.mha"]))
    folder = variant("missing_assets", remove_assets=True)
    cases.append(Case("scene with missing assets", ["render", str(folder), str(out / "render_missing")],
                      absent=[out / "render_missing" / "image.mha"], match="missing"))
    cases.append(Case("valid scene renders", ["render", str(base), str(out / "render_base")], expect="ok",
                      check=lambda: None if (out / "render_base" / "labels.mha").exists() else "no labels"))
    return cases


def _safetensors(header: dict, payload: bytes) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(raw)) + raw + payload


def build_model_cases(inp: Path, out: Path, image: Path, mask: Path) -> list[Case]:
    cases = []
    blob = INPAINTER.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    payload = blob[8 + n :]

    def model(name: str, data: bytes) -> Path:
        path = inp / f"model_{name}.safetensors"
        path.write_bytes(data)
        return path

    def with_meta(**changes) -> bytes:
        h = json.loads(json.dumps(header))
        h["__metadata__"].update(changes)
        return _safetensors(h, payload)

    config = json.loads(header["__metadata__"]["config"])
    variants = {
        "deep nesting": struct.pack("<Q", 200001) + b"[" * 100000 + b"]" * 100000 + b" ",
        "non-JSON config": with_meta(config="{not json"),
        "config a list": with_meta(config="[1,2]"),
        "60000 channels": with_meta(config=json.dumps({**config, "base_channels": 60000})),
        "negative channels": with_meta(config=json.dumps({**config, "base_channels": -4})),
        "unknown setting": with_meta(config=json.dumps({**config, "colour": 1})),
        "format_version x": with_meta(format_version="x"),
        "newer format": with_meta(format_version="99"),
        "no format tag": with_meta(format="other"),
        "unknown architecture": with_meta(architecture="nope"),
        "pickle": b"\x80\x04\x95" + os.urandom(200),
        "zip": b"PK\x03\x04" + os.urandom(200),
        "empty": b"",
        "random bytes": np.random.default_rng(9).bytes(4000),
        "header longer than file": struct.pack("<Q", 10**12) + b"{}",
        "header a list": _safetensors([], b""),  # type: ignore[arg-type]
        "offsets past the end": _safetensors(
            {k: ({**v, "data_offsets": [v["data_offsets"][0], v["data_offsets"][1] + 10**9]}
                 if k != "__metadata__" else v) for k, v in header.items()}, payload),
        "metadata not strings": _safetensors({**header, "__metadata__": {"format": 1}}, payload),
    }
    for frac in (0.001, 0.1, 0.5, 0.9, 0.999):
        variants[f"truncated to {frac:.1%}"] = blob[: max(9, int(len(blob) * frac))]
    for name, data in variants.items():
        path = model(name.replace(" ", "_").replace("%", "pct"), data)
        o = out / f"inpaint_{path.stem}.mha"
        cases.append(Case(f"model: {name}", ["inpaint", str(image), "--mask", str(mask), "--model", str(path),
                                             "--out", str(o)], absent=[o]))
    return cases


def build_rules_cases(inp: Path, scene_parent: Path) -> list[Case]:
    cases = []
    texts: dict[str, bytes] = {
        "non-number lt": b"rules:\n  - name: a\n    when: {cnr: {lt: abc}}\n    status: rejected\n",
        "eq a word": b"rules:\n  - name: a\n    when: {cnr: {eq: abc}}\n    status: rejected\n",
        "between one value": b"rules:\n  - name: a\n    when: {cnr: {between: [1]}}\n    status: rejected\n",
        "ring_mm word": b"ring_mm: wide\nrules: []\n",
        "non-UTF-8": b"rules:\n  - name: \xff\xfe\n    when: {cnr: {lt: 1}}\n    status: rejected\n",
        "not a mapping": b"- 1\n- 2\n",
        "unknown metric": b"rules:\n  - name: a\n    when: {size_in_furlongs: {lt: 1}}\n    status: rejected\n",
        "unknown operator": b"rules:\n  - name: a\n    when: {cnr: {approx: 1}}\n    status: rejected\n",
        "status maybe": b"rules:\n  - name: a\n    when: {cnr: {lt: 1}}\n    status: maybe\n",
        "YAML syntax": b"rules: [\n  {name: a\n",
        "deeply nested": b"rules: " + b"[" * 5000 + b"]" * 5000 + b"\n",
        "binary": np.random.default_rng(11).bytes(500),
        "empty": b"",
        "rules not a list": b"rules: 5\n",
        "default maybe": b"rules: []\ndefault: maybe\n",
    }
    for name, text in texts.items():
        path = inp / f"rules_{name.replace(' ', '_')}.yaml"
        path.write_bytes(text)
        cases.append(Case(f"rules: {name}", ["review", str(scene_parent), "--rules", str(path)]))
    cases.append(Case("rules: missing file", ["review", str(scene_parent), "--rules", str(inp / "nope.yaml")]))
    return cases


def build_argument_cases(inp: Path, out: Path, valid: dict[str, Path], scene: Path, image: Path,
                         mask_image: Path, mask: Path, model: Path) -> list[Case]:
    cases = []
    png = str(valid["png"])
    place_into = ["place", str(image), "--lesion", "procedural:solid", "--size-mm", "5", "--constraint", "none",
                  "--modality", "CXR"]

    def placed(name, *extra, expect="error", match=None):
        s = out / f"argscene_{len(cases)}"
        cases.append(Case(name, [*place_into, "--out", str(s), *extra], expect=expect, match=match,
                          absent=[] if expect != "error" else [s],
                          check=(lambda s=s: None if (s / "scene.json").exists() else "no scene") if expect == "ok" else None))

    placed("--at-mm 1e308", "--at-mm", "1e308,1")
    placed("--at-mm inf", "--at-mm", "inf,1")
    placed("--at-mm nan", "--at-mm", "nan,1")
    placed("--at 1e20", "--at", "1e20,1")
    placed("--at letters", "--at", "a,b")
    placed("--at 4 numbers", "--at", "1,2,3,4")
    placed("--at off image (negative, no '=')", "--at", "-1,5", match="outside the image")
    placed("--at-mm negative inside image, no '='", "--at-mm", "-0.0,0.5", expect="either")
    placed("--at-mm negative triple, no '='", "--at-mm", "-77.5,-155.2,224")
    placed("--seed -1", "--at", "5,5", "--seed", "-1")
    placed("--seed 2**70", "--at", "5,5", "--seed", str(2**70))
    placed("--size-mm 1e7", "--at", "5,5", "--size-mm", "1e7")
    placed("--size-mm -5", "--at", "5,5", "--size-mm", "-5")
    placed("--size-mm nan", "--at", "5,5", "--size-mm", "nan")
    placed("--rotation nan", "--at", "5,5", "--rotation", "nan")
    placed("--rotation 2 values", "--at", "5,5", "--rotation", "1,2")
    placed("--contrast abc", "--at", "5,5", "--contrast", "abc")
    placed("--contrast inf", "--at", "5,5", "--contrast", "inf")
    placed("--feather-mm inf", "--at", "5,5", "--feather-mm", "inf")
    placed("--lobulation 7", "--at", "5,5", "--lobulation", "7")
    placed("--spacing nan", "--at", "5,5", "--spacing", "nan")
    placed("--spacing -1,2 (no '=')", "--at", "5,5", "--spacing", "-1,2")
    placed("--spacing 0", "--at", "5,5", "--spacing", "0")
    placed("--lesion procedural:unknown", "--at", "5,5", "--lesion", "procedural:banana")
    placed("--lesion missing file", "--at", "5,5", "--lesion", str(inp / "nope.mha"))
    placed("valid place", "--at", "10,12", expect="ok")
    inpaint = ["inpaint", str(mask_image), "--mask", str(mask), "--model", "biharmonic"]
    for name, extra in {
        "--samples 100000": ["--samples", "100000", "--out", str(out / "s_{i}.mha")],
        "--samples 0": ["--samples", "0", "--out", str(out / "s0_{i}.mha")],
        "--samples -2 (no '=')": ["--samples", "-2", "--out", str(out / "sm_{i}.mha")],
        "--threads -3": ["--threads", "-3", "--out", str(out / "t.mha")],
        "--seed -1": ["--seed", "-1", "--out", str(out / "seed.mha")],
        "--out {j}": ["--samples", "2", "--out", str(out / "x_{j}.mha")],
        "--out {": ["--samples", "2", "--out", str(out / "x_{.mha")],
        "--out {0}": ["--samples", "2", "--out", str(out / "x_{0}.mha")],
        "--out {i:q}": ["--samples", "2", "--out", str(out / "x_{i:q}.mha")],
        "--out without {i}": ["--samples", "2", "--out", str(out / "same.mha")],
        "--out bad extension": ["--out", str(out / "x.jpg2")],
        "--out missing folder": ["--out", str(out / "no" / "x.mha")],
        "--margin -1": ["--margin", "-1", "--out", str(out / "m.mha")],
        "--mode lesion with biharmonic": ["--mode", "lesion", "--out", str(out / "l.mha")],
        "--texture nan": ["--texture", "nan", "--out", str(out / "tx.mha")],
    }.items():
        cases.append(Case(f"inpaint {name}", [*inpaint, *extra]))
    streamed = [out / f"stream_{i}.mha" for i in range(3)]
    cases.append(Case("inpaint 3 samples (streamed)", [*inpaint, "--samples", "3", "--out", str(out / "stream_{i}.mha")],
                      expect="ok", check=lambda: None if all(p.exists() for p in streamed) else "missing samples"))
    cases.append(Case("harmonize --accept 5 --samples 1", ["harmonize", str(scene), "--lesion", "L0001", "--model",
                                                           str(model), "--scale", "0", "--samples", "1", "--accept", "5",
                                                           "--out-dir", str(out / "harm")],
                      absent=[out / "harm"]))
    cases.append(Case("harmonize --samples 100000", ["harmonize", str(scene), "--lesion", "L0001", "--model", str(model),
                                                     "--scale", "0", "--samples", "100000"]))
    cases.append(Case("generate --per-image 100000", ["generate", png, "--out", str(out / "gen_many"),
                                                      "--per-image", "100000"], absent=[out / "gen_many"]))
    cases.append(Case("generate --per-image -3", ["generate", png, "--out", str(out / "gen_neg"),
                                                  "--per-image", "-3"], absent=[out / "gen_neg"]))
    cases.append(Case("generate --workers -1", ["generate", png, "--out", str(out / "gen_w"), "--workers", "-1"],
                      absent=[out / "gen_w"]))
    cases.append(Case("generate absolute glob", ["generate", str(inp / "nothing_*.png"), "--out", str(out / "gen_glob")],
                      absent=[out / "gen_glob"]))
    cases.append(Case("library --n 0", ["library", "procedural", "--library", str(out / "lib0" / "x"), "--n", "0"],
                      absent=[out / "lib0"]))
    cases.append(Case("library --n 10**9", ["library", "procedural", "--library", str(out / "lib1"), "--n", "1000000000"],
                      absent=[out / "lib1"]))
    cases.append(Case("library --project -3", ["library", "procedural", "--library", str(out / "lib2" / "y"),
                                               "--project", "-3"], absent=[out / "lib2"]))
    cases.append(Case("library add bad patch", ["library", "add", str(valid["nii"]), "--library", str(out / "lib3" / "z")],
                      absent=[out / "lib3"]))
    cases.append(Case("library --size-mm inf", ["library", "procedural", "--library", str(out / "lib4"), "--size-mm", "inf"],
                      absent=[out / "lib4"]))
    cases.append(Case("export --split -1,5 (no '=')", ["export", str(scene), "--format", "coco", "--out",
                                                       str(out / "exp_split"), "--split", "-1,5"], absent=[out / "exp_split"]))
    cases.append(Case("export --dataset-id 5000", ["export", str(scene), "--format", "nnunet", "--out",
                                                   str(out / "exp_id"), "--dataset-id", "5000"], absent=[out / "exp_id"]))
    cases.append(Case("train-harmonizer --roi -1,5,10,10 (no '=')", ["train-harmonizer", png, "--roi", "-1,5,10,10",
                                                                     "--out", str(out / "h.safetensors")],
                      absent=[out / "h.safetensors"]))
    cases.append(Case("train-harmonizer --roi nan", ["train-harmonizer", png, "--roi", "nan,0,10,10",
                                                     "--out", str(out / "h2.safetensors")], absent=[out / "h2.safetensors"]))
    cases.append(Case("info --series-uid on a file", ["info", png, "--series-uid", "1.2.3"], expect="either"))
    cases.append(Case("unknown command", ["frobnicate"]))
    cases.append(Case("unknown option", ["info", png, "--colour"]))
    cases.append(Case("info on a folder of junk", ["info", str(inp)], expect="error"))
    return cases


def build_output_cases(inp: Path, out: Path, user: Path, valid: dict[str, Path], scene: Path) -> list[Case]:
    cases = []
    src = str(valid["mha"])
    (user / "b.zraw").write_bytes(b"another image's pixels")
    (user / "taken.nii.gz").write_bytes(b"the user's file")
    (user / "notes.txt").write_text("keep me")
    (user / "rendered").mkdir()
    (user / "rendered" / "image.nii.gz").write_bytes(b"an earlier render the user keeps")
    project = user / "project"
    shutil.copytree(scene, project / "scene")
    (project / "keep.csv").write_text("1,2\n")
    cases += [
        Case("convert onto an existing file", ["convert", src, str(user / "taken.nii.gz")], match="already exists"),
        Case("convert b.mhd beside another b.zraw", ["convert", src, str(user / "b.mhd")], absent=[user / "b.mhd"]),
        Case("convert onto its source with --force", ["convert", src, src, "--force"], match="source"),
        Case("convert into a missing folder", ["convert", src, str(user / "no" / "x.mha")]),
        Case("convert to an unsupported extension", ["convert", src, str(user / "x.docx")], absent=[user / "x.docx"]),
        Case("convert onto a folder", ["convert", src, str(project)]),
        Case("convert 3D to PNG", ["convert", src, str(user / "vol.png")], absent=[user / "vol.png"]),
        Case("place --out parent of the scene --force", ["place", str(project / "scene"), "--out", str(project),
                                                         "--force", "--lesion", "procedural:solid", "--size-mm", "4",
                                                         "--at", "10,10", "--constraint", "none"]),
        Case("place --out a user folder --force", ["place", str(valid["png"]), "--out", str(user), "--force",
                                                   "--lesion", "procedural:solid", "--size-mm", "4", "--at", "10,10",
                                                   "--constraint", "none", "--modality", "CXR"]),
        Case("place --out inside the input scene", ["place", str(project / "scene"), "--out",
                                                    str(project / "scene" / "sub"), "--lesion", "procedural:solid",
                                                    "--size-mm", "4", "--at", "10,10", "--constraint", "none"]),
        Case("render onto existing files without --force", ["render", str(scene), str(user / "rendered"),
                                                             "--format", ".nii.gz"], match="already exists"),
        Case("remove --out onto a user file", ["remove", src, "--mask", src, "--out", str(user / "taken.nii.gz")],
             match="already exists"),
        Case("constraint --out onto a user file", ["constraint", src, "--out", str(user / "taken.nii.gz")],
             match="already exists"),
    ]
    return cases


def build_corpus(root: Path) -> tuple[list[Case], list[Path]]:
    inp, out, user = root / "inputs", root / "outputs", root / "user"
    for folder in (inp, out, user):
        folder.mkdir(parents=True)
    valid = make_valid_inputs(inp)
    cases = build_reader_cases(inp, valid, out)
    cases += build_nonfinite_cases(inp)
    cases += build_bomb_cases(inp, valid)
    cases += build_dicom_folder_cases(inp)
    cases += build_mask_cases(inp, out)
    scene = make_scene(inp)
    cases += build_scene_cases(inp, out, scene)
    image, mask = inp / "mask_image.mha", inp / "mask_good.mha"
    cases += build_model_cases(inp, out, image, mask)
    scenes_parent = inp / "review_scenes"
    scenes_parent.mkdir()
    shutil.copytree(scene, scenes_parent / "s1")
    cases += build_rules_cases(inp, scenes_parent)
    cases += build_argument_cases(inp, out, valid, scene, inp / "scene_image.mha", image, mask, INPAINTER)
    cases += build_output_cases(inp, out, user, valid, scene)
    return cases, [inp, user]


# ---- running ---------------------------------------------------------------------------------


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _digest(folders: list[Path]) -> dict[str, str]:
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif p.is_dir():
                out[str(p)] = "<dir>"
    return out


def _error_lines(stderr: str) -> list[str]:
    keep = []
    for line in stderr.splitlines():
        if not line.strip() or line.startswith(("warning:", "[")):
            continue
        keep.append(line)
    return keep


def evaluate(case: Case, rc: int | None, err: str, seconds: float) -> dict:
    """The problem with one case's outcome, or None."""
    problem = None
    lines = _error_lines(err)
    if rc is None:
        problem = "hang (timeout)"
    elif "Traceback" in err:
        problem = "traceback: " + err.strip().splitlines()[-1][:160]
    elif rc < 0:
        problem = f"killed by signal {-rc}"
    elif "not enough memory" in err or "MemoryError" in err:
        problem = "ran over the memory limit"
    elif rc == 0:
        if case.expect == "error":
            problem = "wrong success (exit 0)"
        elif case.check is not None:
            problem = case.check()
    elif rc == 2:
        if case.expect == "ok":
            problem = "failed: " + (lines[-1] if lines else err.strip())[:160]
        elif len(lines) != 1:
            problem = f"{len(lines)} stderr lines: {' | '.join(lines)[:200]}"
        elif ": error:" not in lines[0]:
            problem = f"not an error line: {lines[0][:160]}"
        elif case.match and case.match.lower() not in lines[0].lower():
            problem = f"message lacks {case.match!r}: {lines[0][:160]}"
        else:
            for path in case.absent:
                if path.exists():
                    problem = f"partial output left at {path}"
    else:
        problem = f"exit status {rc}: {(lines[-1] if lines else '')[:160]}"
    log = os.environ.get("SYNTHSEG_CORPUS_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{seconds:6.1f}s rc={rc} {case.name} :: {problem or ''} :: {(lines[0] if lines else '')[:150]}\n")
    return {"case": case, "problem": problem, "seconds": seconds, "rc": rc, "line": lines[0] if lines else ""}


def run_subprocess(case: Case, env: dict[str, str], cwd: Path) -> dict:
    """One case through a fresh interpreter: ``python -m napari_synthseg.cli ...``."""
    started = time.perf_counter()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "napari_synthseg.cli", *case.argv], capture_output=True, text=True,
            encoding="utf-8", errors="replace", env=env, cwd=cwd, timeout=TIMEOUT_S, preexec_fn=_limit_memory,
        )
    except subprocess.TimeoutExpired:
        return evaluate(case, None, "", TIMEOUT_S)
    return evaluate(case, result.returncode, result.stderr, time.perf_counter() - started)


def run_forked(cases: list[Case], env: dict[str, str], cwd: Path, logs: Path) -> list[dict]:
    """Many cases, each in a process forked from one that imported the CLI (see _cli_forkserver)."""
    logs.mkdir()
    jobs = [{"id": i, "argv": c.argv, "cwd": str(cwd), "stdout": str(logs / f"{i}.out"),
             "stderr": str(logs / f"{i}.err"), "timeout": TIMEOUT_S, "memory": MEMORY_LIMIT}
            for i, c in enumerate(cases)]
    server = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("_cli_forkserver.py")), str(WORKERS)],
        input="\n".join(json.dumps(j) for j in jobs), capture_output=True, text=True, env=env, cwd=cwd,
        timeout=TIMEOUT_S * len(cases),
    )
    assert server.returncode == 0, server.stderr[-2000:]
    results = {}
    for line in server.stdout.splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            results[item["id"]] = item
    out = []
    for i, case in enumerate(cases):
        item = results[i]
        err = (logs / f"{i}.err").read_text(encoding="utf-8", errors="replace")
        out.append(evaluate(case, None if item["timed_out"] else item["rc"], err, item["seconds"]))
    return out


def test_bad_input_corpus(tmp_path):
    cases, protected = build_corpus(tmp_path)
    assert len(cases) >= 300, len(cases)
    before = _digest(protected)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), *sys.path]),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("SYNTHSEG_MAX_PIXELS", None)
    started = time.perf_counter()
    # A sample of cases (every 25th) runs through a fresh `python -m napari_synthseg.cli`, the
    # rest through processes forked from one import of the CLI (same code path, ~1 s less each).
    fresh = [c for i, c in enumerate(cases) if i % 25 == 0]
    forked = [c for i, c in enumerate(cases) if i % 25 != 0]
    with ThreadPoolExecutor(1) as pool:
        fresh_results = pool.submit(lambda: [run_subprocess(c, env, tmp_path) for c in fresh])
        results = run_forked(forked, env, tmp_path, tmp_path / "logs")
        results += fresh_results.result()
    wall = time.perf_counter() - started
    after = _digest(protected)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    leftovers = [str(p) for p in (tmp_path / "outputs").rglob(".*") if ".part" in p.name or ".partial-" in p.name]
    leftovers += [str(p) for p in (tmp_path / "user").rglob(".*") if ".part" in p.name or ".partial-" in p.name]
    failures = [r for r in results if r["problem"]]
    counts = {"error (exit 2, one line)": 0, "ok": 0}
    for r in results:
        if not r["problem"]:
            counts["ok" if r.get("rc") == 0 else "error (exit 2, one line)"] += 1
    print(f"\nbad-input corpus: {len(cases)} cases in {wall:.0f} s ({WORKERS} forked workers + 1 fresh "
          f"interpreter for {len(fresh)} cases), "
          f"memory limit {MEMORY_LIMIT / 2**30:.0f} GiB, timeout {TIMEOUT_S} s")
    print(f"{'outcome':34s} {'cases':>6s}")
    for outcome, n in counts.items():
        print(f"{outcome:34s} {n:6d}")
    print(f"{'failures':34s} {len(failures):6d}")
    print(f"{'input/user files changed':34s} {len(changed):6d}")
    print(f"{'staging leftovers':34s} {len(leftovers):6d}")
    slowest = sorted(results, key=lambda r: -r["seconds"])[:3]
    print("slowest: " + ", ".join(f"{r['case'].name} {r['seconds']:.1f}s" for r in slowest))
    report = [f"{r['case'].name}: {r['problem']}  [{' '.join(r['case'].argv)[:120]}]" for r in failures]
    report += [f"changed: {path}" for path in changed[:20]]
    assert not failures and not changed, "\n".join(report)
    assert not leftovers, leftovers[:20]
