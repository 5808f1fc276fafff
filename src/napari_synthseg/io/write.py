"""Write images and label maps with the geometry of their source.

Formats: NIfTI (.nii, .nii.gz), MetaImage (.mha, .mhd), NRRD (.nrrd) and 16-bit PNG (2D only).
The writer never overwrites the source image (nor its pixel file, for a ``.mhd`` source), never
replaces any existing file without ``overwrite`` (every file it creates counts: ``b.mhd`` and its
``b.zraw``), never leaves a half-written file (temporary folder, fsync, then rename) and checks
what it wrote by reading it back: ITK's NIfTI writer ignores a short write on a full disk, and a
truncated output that then reads as valid would be silent data corruption. It copies spacing,
origin, direction and, where the format keeps it, metadata.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import SynthsegError
from ..utils.atomic import fsync_dir, fsync_file
from .image import MedicalImage
from .read import check_complete, file_extension, quiet_c_libraries

WRITE_EXTENSIONS = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".png")
_KEEPS_METADATA = (".mha", ".mhd", ".nrrd")


def _same_file(a: Path, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == Path(b).resolve()


def _data_file_of_header(path: Path) -> Path | None:
    """The separate pixel file a ``.mhd``/``.nhdr`` header names (``None``: pixels inside)."""
    ext = file_extension(path)
    if ext not in (".mhd", ".nhdr"):
        return None
    try:
        with open(path, "rb") as fh:
            text = fh.read(65536).decode("latin-1")
    except OSError:
        return None
    key = "elementdatafile" if ext == ".mhd" else "data file"
    for line in text.splitlines():
        name, sep, value = line.partition("=" if ext == ".mhd" else ":")
        if sep and name.strip().lower() == key:
            value = value.strip()
            if value and value.upper() not in ("LOCAL", "LIST") and "%" not in value:
                return path.parent / value
    return None


def _protected_files(ref: MedicalImage) -> list[str]:
    """The source's files, including the pixel file of a ``.mhd`` source."""
    protected = list(ref.source_paths)
    for src in ref.source_paths:
        data_file = _data_file_of_header(Path(src))
        if data_file is not None:
            protected.append(str(data_file))
    return protected


def _disk_full_hint(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    return f" ({free / 2**20:.1f} MiB free on that disk)"


def _png_ready(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim != 2:
        raise SynthsegError(f"PNG holds 2D images only; {name} is {array.ndim}D, use .nii.gz or .mha")
    if array.dtype in (np.uint8, np.uint16):
        return array
    if array.dtype == bool:
        return array.astype(np.uint8)
    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    integral = array.dtype.kind in "iu" or bool(np.all(np.equal(np.mod(array, 1), 0)))
    if not integral or lo < 0 or hi > 65535:
        raise SynthsegError(
            f"{name} has values {lo:g}..{hi:g} that a 16-bit PNG cannot hold losslessly; "
            "write .nii.gz, .mha or .nrrd instead"
        )
    return array.astype(np.uint8 if hi <= 255 else np.uint16)


def write_image(
    data: MedicalImage | np.ndarray,
    path: str | os.PathLike,
    like: MedicalImage | None = None,
    overwrite: bool = False,
    compress: bool = True,
) -> Path:
    """Write ``data`` to ``path`` with the geometry of ``like`` (or of ``data`` itself).

    Parameters
    ----------
    data : MedicalImage or ndarray
        Pixels to write (an image, a render, a label map).
    like : MedicalImage, optional
        Source of spacing/origin/direction/metadata when ``data`` is a bare array.
    overwrite : bool
        Replace an existing file (never the source image itself).
    """
    path = Path(path)
    ext = file_extension(path)
    if ext not in WRITE_EXTENSIONS:
        raise SynthsegError(f"cannot write {path.name}: use one of {', '.join(WRITE_EXTENSIONS)}")
    if isinstance(data, MedicalImage):
        ref, array = data, data.array
    else:
        if like is None:
            raise ValueError("writing a bare array needs like=MedicalImage for its geometry")
        ref, array = like, np.asarray(data)
        if array.shape != like.shape:
            raise SynthsegError(f"array shape {array.shape} does not match the image {like.shape}")
    protected = _protected_files(ref)
    for src in protected:
        if path.exists() and _same_file(path, src):
            raise SynthsegError(f"refusing to overwrite the source image {path.name}; choose another name")
    if path.exists() and not overwrite:
        raise SynthsegError(f"{path} already exists; pass --force (overwrite=True) to replace it")
    folder = path.parent
    if not folder.is_dir():
        raise SynthsegError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise SynthsegError(f"output folder is not writable: {folder}")

    if ext == ".png":
        array = _png_ready(array, path.name)
    elif array.dtype == bool:
        array = array.astype(np.uint8)
    img = ref.to_sitk(array)
    if ext in _KEEPS_METADATA:
        for key, value in ref.metadata.items():
            img.SetMetaData(key, value)

    # Write under the final name inside a private temporary folder, then move into place, so a
    # crash leaves no half file and .mhd headers still name their data file correctly.
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.part-", dir=folder))
    except OSError as exc:
        raise SynthsegError(f"could not write {path.name}: {exc.strerror}{_disk_full_hint(folder)}") from None
    try:
        staged = tmpdir / path.name
        try:
            with quiet_c_libraries():
                sitk.WriteImage(img, str(staged), useCompression=compress and ext != ".png")
        except RuntimeError as exc:
            raise SynthsegError(
                f"could not write {path.name}: {str(exc).strip().splitlines()[-1][:200]}{_disk_full_hint(folder)}"
            ) from None
        produced = sorted(tmpdir.iterdir(), key=lambda p: p.name == path.name)  # header last
        # Every file the writer made counts: b.mhd must not silently replace another image's
        # b.zraw, nor the source's own pixel file.
        for item in produced:
            final = folder / item.name
            if final.exists():
                if any(_same_file(final, src) for src in protected):
                    raise SynthsegError(
                        f"refusing to overwrite {item.name}, a file of the source image; choose another name"
                    )
                if not overwrite:
                    raise SynthsegError(
                        f"{final} already exists (writing {path.name} creates it); pass --force to replace it"
                    )
        for item in produced:
            fsync_file(item)
        _verify_written(staged, img, path.name, folder)
        for item in produced:
            os.replace(item, folder / item.name)
        fsync_dir(folder)
    except OSError as exc:
        raise SynthsegError(f"could not write {path.name}: {exc.strerror or exc}{_disk_full_hint(folder)}") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path


def _verify_written(staged: Path, img: sitk.Image, name: str, folder: Path) -> None:
    """Read the staged file back and compare pixels: a full disk must be an error, not 'wrote'."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(staged))
    try:
        with quiet_c_libraries():
            reader.ReadImageInformation()
            check_complete(staged, reader)
            back = reader.Execute()
    except (RuntimeError, SynthsegError):
        raise SynthsegError(
            f"could not write {name}: the file written is incomplete{_disk_full_hint(folder)}"
        ) from None
    if back.GetSize() != img.GetSize() or not np.array_equal(
        sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(img)
    ):
        raise SynthsegError(f"could not write {name}: the file read back differs from what was written"
                            f"{_disk_full_hint(folder)}")
