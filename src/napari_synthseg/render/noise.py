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


# ---------------------------------------------------------------------------- sharpness (PSF)
#
# A lesion keeps the sharpness of where it was made: a procedural nodule is a nearly ideal step
# and a real one carries its donor scan's kernel. Placed into a softer scan (a B30f kernel, a
# thick-slice reformat) it stands out as a cut-out. The in-plane point spread is estimated from
# *edges*: for a step of height H blurred by a Gaussian of sigma s (pixels), the steepest
# gradient is H / (sqrt(2 pi) s), so s = 1 / (sqrt(2 pi) q) with q = |gradient| / local step
# height at the edge's centre line. Measured the same way on the target around the site (its
# vessels, fissures and walls) and on the lesion as it lands on the grid, the blur that makes
# them match is sqrt(target^2 - lesion^2) (Gaussians add in quadrature; the pixel grid's own
# floor, about 0.8 px for an ideal step, is in both and cancels). Hand-written: scikit-image's
# blur-effect metric (Crete et al.) ranks blur but gives no width in pixels to match.

#: Local steps (max - min in an 11 x 11 in-plane window) smaller than this do not count as edges:
#: CT in HU (vessel or wall against lung is 600-900 HU; noise is tens).
MIN_EDGE_STEP_HU = 300.0
#: The estimate is the sharpness of the sharpest edges: this percentile of q over edge pixels
#: (thin vessels read softer than the scan is; the sharp percentile follows real steps).
EDGE_PERCENTILE = 75.0
#: Window (pixels) of the local step height: wide enough to hold a step blurred by 2.5 px
#: (95 % of it), narrow enough not to reach the next structure.
_EDGE_WINDOW = 11
#: Widest edge measured (pixels): a gradient ridge shallower than a step blurred this much is
#: noise near an edge, not the edge (without this, noise ridges beside a sharp edge, which see
#: the edge's step in their window, outnumber it).
MAX_EDGE_SIGMA_PX = 5.0


def _across_edge_maximum(grad: np.ndarray, gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
    """Pixels where the gradient peaks *across* the edge (Canny's non-maximum suppression, with
    the direction quantised to 0/45/90/135 degrees): the edge's centre line."""
    angle = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
    sector = (((angle + 22.5) // 45.0).astype(np.int8)) % 4
    ridge = np.zeros(grad.shape, bool)
    padded = np.pad(grad, [(0, 0)] * (grad.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    ny, nx = grad.shape[-2:]
    for k, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        ahead = padded[..., 1 + dy:1 + dy + ny, 1 + dx:1 + dx + nx]
        behind = padded[..., 1 - dy:1 - dy + ny, 1 - dx:1 - dx + nx]
        ridge |= (sector == k) & (grad >= ahead) & (grad >= behind)
    return ridge


def edge_sigma_px(values: np.ndarray, where: np.ndarray | None = None, min_step: float = MIN_EDGE_STEP_HU,
                  min_edges: int = 30) -> float:
    """In-plane edge width (Gaussian sigma, pixels) of ``values`` (2D, or 3D slice by slice).

    ``where`` restricts the edge pixels counted (e.g. lung around a site, or a lesion's border).
    NaN when fewer than ``min_edges`` edge pixels are found.
    """
    values = np.asarray(values, np.float32)
    lead = (1,) * (values.ndim - 2)
    gy, gx = np.gradient(values, axis=(-2, -1))
    grad = np.hypot(gy, gx)
    size = lead + (_EDGE_WINDOW, _EDGE_WINDOW)
    step = ndi.maximum_filter(values, size=size) - ndi.minimum_filter(values, size=size)
    ridge = _across_edge_maximum(grad, gy, gx)
    edges = ridge & (step >= float(min_step)) & (grad > 0)
    # the window must lie inside the region: a structure cut by the region's border is no edge
    rim = _EDGE_WINDOW // 2
    edges[..., :rim, :] = edges[..., -rim:, :] = False
    edges[..., :, :rim] = edges[..., :, -rim:] = False
    if where is not None:
        edges &= np.asarray(where, bool)
    if int(edges.sum()) < min_edges:
        return float("nan")
    q = grad[edges] / step[edges]
    q = q[q >= 1.0 / (math.sqrt(2.0 * math.pi) * MAX_EDGE_SIGMA_PX)]
    if q.size < min_edges:
        return float("nan")
    sharp = float(np.percentile(q, EDGE_PERCENTILE))
    return 1.0 / (math.sqrt(2.0 * math.pi) * sharp) if sharp > 0 else float("nan")


def sharpness_at(volume: np.ndarray, center_index, spacing, radius_mm: float = NOISE_RADIUS_MM,
                 exclude: tuple | None = None) -> float:
    """The target's in-plane edge width (sigma, pixels) around ``center_index`` (numpy order),
    from edges within ``radius_mm`` outside the ``exclude`` box; NaN if there are too few."""
    box = tuple(slice(max(0, int(c - radius_mm / s)), min(n, int(c + radius_mm / s) + 1))
                for c, s, n in zip(center_index, spacing, volume.shape))
    region = np.asarray(volume[box], np.float32)
    where = np.ones(region.shape, bool)
    if exclude is not None:
        local = tuple(slice(max(0, e.start - b.start), max(0, e.stop - b.start)) for e, b in zip(exclude, box))
        where[local] = False
    return edge_sigma_px(region, where)


def lesion_sharpness(values: np.ndarray, mask: np.ndarray, contrast: float) -> float:
    """Edge width (sigma, pixels) of a lesion on the image grid, along its own border.

    ``contrast``: the lesion's peak step against its background; edges of at least half of it
    count (a ground-glass nodule's 250 HU step is its edge, though below the target's
    :data:`MIN_EDGE_STEP_HU`).
    """
    structure = np.ones((1,) * (mask.ndim - 2) + (3, 3), bool)
    band = ndi.binary_dilation(mask, structure, iterations=2) & ~ndi.binary_erosion(mask, structure, iterations=2)
    return edge_sigma_px(values, band, min_step=0.5 * abs(float(contrast)), min_edges=10)


def matched_blur_px(target_sigma: float, lesion_sigma: float) -> float:
    """In-plane Gaussian blur (pixels) that brings a lesion of edge width ``lesion_sigma`` to
    ``target_sigma``; 0 when the lesion is already as soft or softer (never sharpen)."""
    if not (math.isfinite(target_sigma) and math.isfinite(lesion_sigma)):
        return 0.0
    return math.sqrt(max(target_sigma ** 2 - lesion_sigma ** 2, 0.0))


def blur_contribution(mode: str, sigma_px: float, widths, residual, absolute, alpha, coverage, mask, attachment):
    """Blur a placed lesion's contribution in-plane by ``sigma_px`` (after padding by ``widths``).

    Alpha: the opacity and the premultiplied lesion are blurred together (``a' = G*a``,
    ``L' = G*(a L) / a'``), so over a flat background the result is the sharp composite blurred.
    Additive: the residual is blurred. Poisson: the source values are blurred. The mask (the
    lesion's exact label base) is only padded.
    """
    sigma = (0.0,) * (residual.ndim - 2) + (float(sigma_px),) * 2

    def pad(a, mode_="constant"):
        return None if a is None else np.pad(a, widths, mode=mode_)

    residual, coverage, mask, attachment = pad(residual), pad(coverage), pad(mask), pad(attachment)
    absolute = pad(absolute, "edge")
    if mode == "alpha":
        alpha = pad(alpha)
        blurred = ndi.gaussian_filter(alpha, sigma, truncate=3.0)
        blurred[blurred < 1e-3] = 0.0
        safe = np.where(blurred > 0, blurred, 1.0)
        residual = np.where(blurred > 0, ndi.gaussian_filter(alpha * residual, sigma, truncate=3.0) / safe, 0.0)
        if absolute is not None:
            absolute = np.where(blurred > 0, ndi.gaussian_filter(alpha * absolute, sigma, truncate=3.0) / safe,
                                absolute)
        alpha = blurred
    else:
        residual = ndi.gaussian_filter(residual, sigma, truncate=3.0)
        if absolute is not None:
            absolute = ndi.gaussian_filter(absolute, sigma, mode="nearest", truncate=3.0)
    coverage = ndi.gaussian_filter(coverage, sigma, truncate=3.0)
    return _f32(residual), _f32(absolute), _f32(alpha), _f32(coverage), mask, attachment


def _f32(values):
    return None if values is None else np.asarray(values, np.float32)
