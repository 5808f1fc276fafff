"""Organ constraints: boolean masks of where lesions may be placed.

:func:`organ_constraint` dispatches on modality: lungs in CT (HU) and chest X-ray, brain in
T1 MRI. All methods are classical (thresholds, morphology, connected components); their
measured quality is in docs/constraints.md.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..errors import SynthsegError
from .brain import brain_mask
from .ct_lungs import ct_lung_mask
from .cxr_lungs import cxr_lung_mask

__all__ = ["organ_constraint", "ct_lung_mask", "cxr_lung_mask", "brain_mask"]


def organ_constraint(
    image_array: np.ndarray,
    spacing: Optional[Sequence[float]] = None,
    modality: str = "CT",
) -> np.ndarray:
    """Boolean mask of the organ lesions may go into.

    Parameters
    ----------
    image_array : ndarray
        CT in HU (z, y, x) or one slice; CXR (rows, cols) in native values; MR T1 volume.
    spacing : sequence of float, optional
        Pixel/voxel size in mm in array axis order.
    modality : {'CT', 'CXR', 'MR'}
        Case-insensitive; 'MRI', 'DX', 'CR' are accepted aliases.

    Returns
    -------
    ndarray of bool
        Same shape as ``image_array``.
    """
    key = str(modality).strip().upper()
    if key == "CT":
        return ct_lung_mask(image_array, spacing)
    if key in ("CXR", "DX", "CR", "XR"):
        return cxr_lung_mask(image_array, spacing)
    if key in ("MR", "MRI"):
        return brain_mask(image_array, spacing)
    raise SynthsegError(f"no organ constraint for modality {modality!r}; use 'CT', 'CXR' or 'MR'")
