"""Pixels to files: lossless formats only, geometry kept, fast PNG for big 2D batches."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk

from ..errors import SynthsegError
from ..io import MedicalImage

LOSSLESS_ENDINGS = (".png", ".nii.gz", ".nii", ".mha", ".nrrd")
DEFAULT_PNG_COMPRESSION = 1  # see docs/benchmarks.md "Export": level 1 is ~4x faster than 6
# zlib's run-length strategy on PNG-filtered radiographs: faster than the default strategy and,
# on the shared CXRs, smaller too (241 vs 318 kB at level 1); label maps are mostly zero runs.
_PNG_STRATEGY = cv2.IMWRITE_PNG_STRATEGY_RLE


def check_ending(ending: str, ndim: int) -> str:
    ending = ending if ending.startswith(".") else "." + ending
    if ending not in LOSSLESS_ENDINGS:
        raise SynthsegError(
            f"file ending {ending} is not a lossless format this export writes; use one of {', '.join(LOSSLESS_ENDINGS)}"
        )
    if ending == ".png" and ndim != 2:
        raise SynthsegError("PNG holds 2D images only; export 3D scenes with --file-ending .nii.gz")
    return ending


def image_pixels(image: np.ndarray, source_dtype: np.dtype, ending: str) -> tuple[np.ndarray, str]:
    """Pixels to store and a note of what was done to them.

    A render is float32 in native units. PNG needs integers: the render is rounded to the
    source's own integer type (uint8/uint16), i.e. onto the grid the source image already
    has; values outside that type's range are clipped and counted in the note. Other
    formats keep float32 unless the values are exactly integral in the source type.
    """
    source_dtype = np.dtype(source_dtype)
    image = np.asarray(image)
    if image.dtype == source_dtype:
        return image, "unchanged"
    if ending == ".png":
        if source_dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
            raise SynthsegError(
                f"the source is {source_dtype}, which a PNG cannot hold; use --file-ending .nii.gz"
            )
        info = np.iinfo(source_dtype)
        rounded = np.rint(image.astype(np.float32, copy=False))
        lo, hi = float(rounded.min()), float(rounded.max())
        clipped = 0
        if lo < info.min or hi > info.max:
            clipped = int(np.count_nonzero((rounded < info.min) | (rounded > info.max)))
            np.clip(rounded, info.min, info.max, out=rounded)
        out = rounded.astype(source_dtype)
        note = f"rounded to {source_dtype}" + (f", {clipped} pixels clipped" if clipped else "")
        return out, note
    if source_dtype.kind in "iu" and image.dtype.kind == "f":
        info = np.iinfo(source_dtype)
        rounded = np.rint(image)
        if np.array_equal(rounded, image) and rounded.min() >= info.min and rounded.max() <= info.max:
            return rounded.astype(source_dtype), f"integral, stored as {source_dtype}"
    return image.astype(np.float32, copy=False), "float32"


def label_pixels(labels: np.ndarray) -> np.ndarray:
    top = int(labels.max()) if labels.size else 0
    if labels.min(initial=0) < 0:
        raise SynthsegError("label maps must not hold negative values")
    return labels.astype(np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.int32, copy=False)


def write_pixels(
    array: np.ndarray,
    path: Path,
    like: MedicalImage,
    png_compression: int = DEFAULT_PNG_COMPRESSION,
) -> None:
    """Write ``array`` with the geometry of ``like`` (PNG keeps no geometry: the sidecar does)."""
    ending = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    if ending == ".png":
        if array.ndim != 2 or array.dtype not in (np.uint8, np.uint16):
            raise SynthsegError(f"{path.name}: PNG needs 2D uint8/uint16 pixels, got {array.ndim}D {array.dtype}")
        params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression), cv2.IMWRITE_PNG_STRATEGY, _PNG_STRATEGY]
        ok = cv2.imwrite(str(path), np.ascontiguousarray(array), params)
        if not ok:
            raise SynthsegError(f"could not write {path}")
        return
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    img.SetSpacing([float(v) for v in like.spacing])
    img.SetOrigin([float(v) for v in like.origin])
    img.SetDirection([float(v) for v in like.direction])
    try:
        sitk.WriteImage(img, str(path), useCompression=ending in (".nii.gz", ".mha", ".nrrd"))
    except RuntimeError as exc:
        raise SynthsegError(f"could not write {path.name}: {str(exc).splitlines()[-1][:200]}") from None
