"""Extract a reusable lesion from a real image: original minus its healthy fill (TUM report).

The fill (inpainting, classical or learned) comes from :mod:`napari_synthseg.fill`; this module
only takes arrays, so any fill method works.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import SynthsegError
from .item import LesionPatch, _as_spacing, bbox_with_margin


def extract_residual(
    original: np.ndarray,
    filled: np.ndarray,
    mask: np.ndarray,
    spacing: float | Sequence[float],
    margin_mm: float = 2.0,
    *,
    kind: str = "extracted",
    units: str = "image",
    provenance: dict | None = None,
) -> LesionPatch:
    """The lesion layer ``original - filled``, cropped to the mask's box plus ``margin_mm``.

    Parameters
    ----------
    original : ndarray, 2D (y, x) or 3D (z, y, x)
        Image with the lesion (grey values or HU).
    filled : ndarray, same shape
        The same image with the lesion replaced by healthy tissue.
    mask : ndarray, same shape
        The lesion mask (non-zero = lesion).
    spacing : float or sequence
        mm per pixel in numpy axis order.
    margin_mm : float
        Context kept around the mask's bounding box, mm.
    kind, units : str
        Tags for the item; ``units`` are those of ``original`` ('image', 'HU', ...).
    provenance : dict, optional
        Where the image and fill came from (file, sha256, fill method); stored with the item.

    Returns
    -------
    LesionPatch
        ``intensity`` = ``original - filled`` (float32), ``absolute`` = ``original``, both
        cropped; ``mask`` cropped.
    """
    arrays = []
    for name, arr in (("original", original), ("filled", filled), ("mask", mask)):
        arr = np.asarray(arr)
        if arr.ndim not in (2, 3):
            raise SynthsegError(f"{name} must be 2D or 3D, got shape {arr.shape}")
        arrays.append(arr)
    original, filled, mask = arrays
    if filled.shape != original.shape or mask.shape != original.shape:
        raise SynthsegError(
            f"original {original.shape}, filled {filled.shape} and mask {mask.shape} must have the same shape"
        )
    for name, arr in (("original", original), ("filled", filled), ("mask", mask)):
        if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
            raise SynthsegError(f"{name} must be numeric, got dtype {arr.dtype}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise SynthsegError(f"{name} contains NaN or infinite values; clean it before extracting")
    sp = _as_spacing(spacing, original.ndim)
    mask = mask > 0
    if not mask.any():
        raise SynthsegError("lesion mask is empty; mark the lesion before extracting it")
    box = bbox_with_margin(mask, sp, margin_mm)
    orig = original[box].astype(np.float32)
    residual = orig - filled[box].astype(np.float32)
    prov = {"source": "extract_residual", "margin_mm": float(margin_mm),
            "crop_start": [int(s.start) for s in box], "crop_stop": [int(s.stop) for s in box]}
    prov.update(provenance or {})
    item = LesionPatch(intensity=residual, mask=mask[box], spacing=sp, kind=kind, provenance=prov,
                       absolute=orig, units=units)
    item.provenance.setdefault("diameter_mm", round(item.diameter_mm(), 3))
    return item
