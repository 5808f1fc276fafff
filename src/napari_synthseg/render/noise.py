"""Give an inserted CT lesion the target scan's noise.

A procedural nodule is smooth, and a real nodule carries the noise of the scan it came from;
alpha and Poisson blending *replace* the target's pixels, so without help the lesion is a
noise-free (or differently noisy) disc on a noisy B70f scan, which a detector learns to spot.

At placement, :func:`noise_at` measures the target's noise in the lung around the site: the
in-plane high-pass (value minus a 1-pixel Gaussian blur) of lung voxels (-1000 < HU < -400),
its robust standard deviation (1.4826 x MAD) and its lag-1 in-plane correlation (texture: a
sharp kernel has little, a soft one more). The same numbers are measured on the lesion as it
lands on the image grid; the missing part, ``sqrt(max(target^2 - lesion^2, 0))``, is added as
Gaussian noise blurred in-plane to the target's correlation, inside the lesion (weighted by its
partial-volume coverage). The parameters and the record's seed are stored in
``blend["noise"]``, so a re-render is exact. Additive blending keeps the target's own noise and
gets none.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

LUNG_HU = (-1000.0, -400.0)
NOISE_RADIUS_MM = 30.0
_BLURS = (0.0, 0.3, 0.45, 0.6, 0.8, 1.0, 1.3, 1.7, 2.2)


def _highpass(values: np.ndarray) -> np.ndarray:
    sigma = (0.0,) * (values.ndim - 2) + (1.0, 1.0)
    values = np.asarray(values, np.float32)
    return values - ndi.gaussian_filter(values, sigma)


def _stats(hp: np.ndarray, where: np.ndarray) -> tuple[float, float]:
    """(robust sigma, lag-1 correlation along the last axis) of ``hp`` over ``where``."""
    values = hp[where]
    if values.size < 50:
        return float("nan"), float("nan")
    centre = float(np.median(values))
    sigma = 1.4826 * float(np.median(np.abs(values - centre)))
    pair = where[..., :-1] & where[..., 1:]
    a, b = hp[..., :-1][pair], hp[..., 1:][pair]
    rho = float(np.corrcoef(a, b)[0, 1]) if a.size > 50 and a.std() > 0 and b.std() > 0 else float("nan")
    return sigma, rho


def noise_at(volume: np.ndarray, center_index, spacing, radius_mm: float = NOISE_RADIUS_MM,
             exclude: tuple | None = None) -> tuple[float, float]:
    """(sigma, lag-1 correlation) of the CT noise in lung around ``center_index`` (numpy order).

    ``exclude``: an image box (a lesion's) left out of the estimate.
    """
    box = tuple(slice(max(0, int(c - radius_mm / s)), min(n, int(c + radius_mm / s) + 1))
                for c, s, n in zip(center_index, spacing, volume.shape))
    region = np.asarray(volume[box], np.float32)
    lung = (region > LUNG_HU[0]) & (region < LUNG_HU[1])
    # away from vessel and wall edges, where the high-pass holds anatomy, not noise
    lung = ndi.binary_erosion(lung, structure=np.ones((1,) * (region.ndim - 2) + (3, 3), bool))
    if exclude is not None:
        local = tuple(slice(max(0, e.start - b.start), max(0, e.stop - b.start)) for e, b in zip(exclude, box))
        lung[local] = False
    return _stats(_highpass(region), lung)


def lesion_noise(absolute: np.ndarray, mask: np.ndarray) -> float:
    """Robust sigma of the high-pass inside the lesion's core (its own noise)."""
    core = ndi.binary_erosion(mask, structure=np.ones((1,) * (mask.ndim - 2) + (3, 3), bool))
    sigma, _ = _stats(_highpass(absolute), core if core.sum() >= 50 else mask)
    return 0.0 if not math.isfinite(sigma) else sigma


def choose_blur(rho: float, seed: int = 0) -> float:
    """In-plane blur (pixels) whose filtered white noise has lag-1 correlation closest to ``rho``."""
    if not math.isfinite(rho):
        return 0.0
    field = np.random.default_rng(seed).standard_normal((4, 64, 64)).astype(np.float32)
    best, best_err = 0.0, float("inf")
    for blur in _BLURS:
        n = ndi.gaussian_filter(field, (0, blur, blur)) if blur else field
        _, r = _stats(_highpass(n), np.ones(n.shape, bool))
        if abs(r - rho) < best_err:
            best, best_err = blur, abs(r - rho)
    return best


def matched_noise(shape, sigma: float, blur_px: float, seed: int) -> np.ndarray:
    """Seeded Gaussian noise, blurred in-plane by ``blur_px``, scaled so :func:`_stats` measures
    ``sigma`` on it (the same estimator as the target's)."""
    field = np.random.default_rng(seed).standard_normal(tuple(shape)).astype(np.float32)
    if blur_px > 0:
        field = ndi.gaussian_filter(field, (0.0,) * (field.ndim - 2) + (blur_px, blur_px))
    measured, _ = _stats(_highpass(field), np.ones(field.shape, bool))
    if not (math.isfinite(measured) and measured > 0):
        return np.zeros(field.shape, np.float32)
    return (field * np.float32(sigma / measured)).astype(np.float32)
