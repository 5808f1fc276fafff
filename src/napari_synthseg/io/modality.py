"""Guess the modality of an image: DICOM tags first, then what the pixel values say.

Why guess at all: window presets, organ constraints and lesion sources differ per modality, and
most PNG/NIfTI files carry no modality. The guess is shown to the user (``synthseg info``, layer
metadata) and can be overridden everywhere.
"""

from __future__ import annotations

import numpy as np

_DICOM_MODALITY = {
    "CT": "CT",
    "MR": "MR",
    "CR": "CXR",
    "DX": "CXR",
    "DR": "CXR",
    "RG": "CXR",
    "PX": "CXR",
}


def guess_modality(array: np.ndarray, metadata: dict[str, str] | None = None) -> str:
    """Return ``"CT"``, ``"CXR"``, ``"MR"`` or ``"unknown"``.

    Rules, in order: the DICOM Modality tag (0008|0060); 2D images are radiographs; 3D images whose
    darkest values sit near air in HU (-500 to -3100: air in lung patches, or the -1024/-2048
    padding scanners write) and whose brightest stay below 16000 (metal at most) are CT; other
    3D images are MR.
    """
    tag = (metadata or {}).get("0008|0060", "").strip().upper()
    if tag in _DICOM_MODALITY:
        return _DICOM_MODALITY[tag]
    if array.size == 0:
        return "unknown"
    if array.ndim == 2:
        return "CXR"
    if array.ndim == 3:
        lo, hi = float(np.min(array)), float(np.max(array))
        return "CT" if -3100 <= lo <= -500 and hi < 16000 else "MR"
    return "unknown"
