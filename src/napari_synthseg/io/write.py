"""Write images and label maps with the geometry of their source.

Formats: NIfTI (.nii, .nii.gz), MetaImage (.mha, .mhd), NRRD (.nrrd) and 16-bit PNG (2D only).
The writer never overwrites the source image, never leaves a half-written file (temporary name,
then rename) and copies spacing, origin, direction and, where the format keeps it, metadata.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import SynthsegError
from .image import MedicalImage
from .read import file_extension

WRITE_EXTENSIONS = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".png")
_KEEPS_METADATA = (".mha", ".mhd", ".nrrd")


def _same_file(a: Path, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == Path(b).resolve()


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
    for src in ref.source_paths:
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
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.part-", dir=folder))
    try:
        sitk.WriteImage(img, str(tmpdir / path.name), useCompression=compress and ext != ".png")
        produced = sorted(tmpdir.iterdir(), key=lambda p: p.name == path.name)  # header last
        for item in produced:
            os.replace(item, folder / item.name)
    except RuntimeError as exc:
        raise SynthsegError(f"could not write {path.name}: {str(exc).splitlines()[-1][:200]}") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path
