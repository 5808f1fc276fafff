"""Per-image intensity normalisation from robust percentiles of the *known* pixels.

Native values (HU, 8/12/16-bit detector counts) are mapped so that the ``lo`` and ``hi``
percentiles of the unmasked context become -1 and 1. Using only the context means the hole's
content (a lesion to remove, garbage) never influences the scale, and training and inference
see the same statistics for the same crop.

With ``norm_scale="image"`` (:class:`~.network.InpainterConfig`) the scale is instead the whole
image's percentile range (:func:`image_half_range`) and only the centre comes from the crop:
every crop of an image then keeps its true contrast, so the network can tell a faint vessel
from noise, which per-crop scaling hides (docs/model_cards/cxr_inpainter_small.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Normalizer:
    """Affine map native -> normalised: ``(x - centre) / half_range``."""

    centre: float
    half_range: float

    @classmethod
    def from_context(cls, image: np.ndarray, mask: np.ndarray | None,
                     percentiles=(1.0, 99.0), half_range: float | None = None) -> Normalizer:
        """Centre (and, unless ``half_range`` is given, scale) from the known pixels' percentiles."""
        known = image[~mask] if mask is not None and mask.any() else image.ravel()
        if known.size == 0:
            known = image.ravel()
        if known.size > 200_000:  # percentiles of a strided subsample are as robust and 10x faster
            known = known[:: known.size // 200_000 + 1]
        lo, hi = np.percentile(known.astype(np.float64), percentiles)
        if not hi > lo:
            spread = float(np.std(known)) if known.size else 0.0
            lo, hi = float(lo) - max(spread, 1.0), float(hi) + max(spread, 1.0)
        if half_range is not None and half_range > 0:
            return cls(centre=0.5 * (float(lo) + float(hi)), half_range=float(half_range))
        return cls(centre=0.5 * (float(lo) + float(hi)), half_range=0.5 * (float(hi) - float(lo)))

    def forward(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.centre) / self.half_range).astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return (np.asarray(y, np.float64) * self.half_range + self.centre).astype(np.float32)


def image_half_range(image: np.ndarray, percentiles=(1.0, 99.0)) -> float:
    """Half the distance between two percentiles of a whole image (a strided subsample)."""
    flat = np.asarray(image).ravel()
    if flat.size > 1_000_000:
        flat = flat[:: flat.size // 1_000_000 + 1]
    lo, hi = np.percentile(flat.astype(np.float64), percentiles)
    if not hi > lo:
        return max(float(np.std(flat)), 1.0)
    return 0.5 * (float(hi) - float(lo))
