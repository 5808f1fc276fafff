"""Classical (non-learned) healthy fill: biharmonic and Telea fast marching.

Both keep native intensities (HU, 12/16-bit detector values, negative values) in float32; no
8-bit quantisation happens anywhere. OpenCV's ``cv2.inpaint`` accepts single-channel float32
directly (checked with OpenCV 4.x/5.0: uint8, uint16 and float32 work; int16 and float64 are
rejected), so the Telea path stays in float32. But OpenCV's float Telea adds an *absolute*
error of up to ~1.5 intensity units (a normalised-gradient term in its update, independent of
the data's scale: a constant image of -700 comes back with -701.4..-698.5 inside the hole, and
an image scaled to 0..1 is ruined). The crop is therefore shifted and scaled so its unmasked
values span 0..65535 before the call and mapped back after, which shrinks that error to
~2e-5 of the local intensity range; a constant crop maps to 0 and is filled exactly.
"""

from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np
from skimage.restoration import inpaint_biharmonic

from .base import Filler, register_filler


class BiharmonicFiller(Filler):
    """Smooth fill that solves the biharmonic equation inside the mask (scikit-image).

    Recovers any image that is locally a polynomial of degree <= 3 (linear, quadratic
    gradients) and gives a smooth, texture-free patch elsewhere.

    Parameters
    ----------
    max_anisotropy : float
        A 3D volume is solved as one 3D problem when its largest/smallest spacing ratio is at
        most this (the stencil ignores spacing, so strongly anisotropic voxels, e.g. 5 mm CT
        slices at 0.8 mm in-plane, are filled slice-wise instead). Without spacing, 3D is used.
    """

    name = "biharmonic"
    supports_3d = True
    # The biharmonic stencil reaches 2 pixels, so a little more context is enough.
    min_context_px = 4
    context_fraction = 0.25

    def __init__(self, max_anisotropy: float = 2.0) -> None:
        self.max_anisotropy = float(max_anisotropy)

    def _use_3d(self, spacing: Optional[Tuple[float, ...]]) -> bool:
        if spacing is None:
            return True
        return max(spacing) / min(spacing) <= self.max_anisotropy

    def fill_region(self, image, mask, spacing, rng):
        return inpaint_biharmonic(image.astype(np.float64), mask)


class TeleaFiller(Filler):
    """Fast-marching inpainting (Telea 2004) via OpenCV, on float32, 2D only (3D slice-wise).

    Parameters
    ----------
    radius : float
        Neighbourhood radius in pixels used to estimate each filled pixel.
    """

    name = "telea"
    supports_3d = False

    def __init__(self, radius: float = 5.0) -> None:
        self.radius = float(radius)

    #: unmasked values are mapped to 0.._SPAN before cv2.inpaint (see module docstring)
    _SPAN = 65535.0

    def fill_region(self, image, mask, spacing, rng):
        known = image[~mask].astype(np.float64)
        lo, hi = float(known.min()), float(known.max())
        scale = self._SPAN / (hi - lo) if hi > lo else 1.0
        src = np.ascontiguousarray((image.astype(np.float64) - lo) * scale, dtype=np.float32)
        src[mask] = 0.0  # hole values are ignored by Telea; keep them finite and in range
        m8 = np.ascontiguousarray(mask, dtype=np.uint8)
        res = cv2.inpaint(src, m8, self.radius, cv2.INPAINT_TELEA)
        return res.astype(np.float64) / scale + lo


register_filler("biharmonic", BiharmonicFiller, overwrite=True)
register_filler("telea", TeleaFiller, overwrite=True)
