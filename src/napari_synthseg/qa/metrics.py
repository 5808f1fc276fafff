"""Numbers that help judge one synthetic lesion: contrast, seams, size and intensity range.

All numbers are computed on a crop around the lesion (its bounding box grown by the ring), so
a lesion in a 512³ CT costs about as much as one in a radiograph.

Definitions (``S`` synthetic image, ``O`` original, ``M`` the lesion mask, ``R`` the ring of
background around ``M``: pixels within ``ring_mm`` of the mask but outside it, excluding a
``gap_mm`` band right at the edge so partial-volume pixels do not count as background):

``contrast``
    mean(S in M) - mean(S in R), native units (HU for CT). Signed: a dark lesion is negative.
``cnr``
    |contrast| / std(S in R): contrast in units of local background variation. The faint
    lesions the seeds' authors dropped by eye have CNR well below 1.
``added``
    mean(S - O in M): how much the render changed the lesion's pixels (native units).
``gradient_ratio``
    mean |grad S| on the mask boundary band / mean |grad S| in R. About 1 when the lesion
    edge is no sharper than the surrounding anatomy; large for cut-out, pasted-looking edges.
``ring_gradient_change``
    mean |grad S| in R / mean |grad O| in R. About 1 when the surroundings kept their
    texture; above 1 for seams (a step at the paste border), below 1 for smoothed halos.
``area_mm2`` / ``volume_mm3``, ``equivalent_diameter_mm``
    Mask size from the pixel spacing.
``out_of_range_fraction`` / ``range_ok``
    Fraction of pixels in M ∪ R whose synthetic value lies outside the source image's
    [min, max] (beyond a tolerance of 0.5 % of that range): values a real scan of this
    kind cannot hold (clipped detectors, impossible HU).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage as ndi

from ..scene import LesionRecord

METRIC_NAMES = (
    "contrast",
    "cnr",
    "added",
    "gradient_ratio",
    "ring_gradient_change",
    "area_mm2",
    "volume_mm3",
    "equivalent_diameter_mm",
    "pixels",
    "out_of_range_fraction",
    "range_ok",
    "ring_pixels",
)


@dataclass
class LesionMetrics:
    """QA numbers for one lesion (see the module docstring for definitions and units)."""

    contrast: float
    cnr: float
    added: float
    gradient_ratio: float
    ring_gradient_change: float
    area_mm2: float | None
    volume_mm3: float | None
    equivalent_diameter_mm: float
    pixels: int
    out_of_range_fraction: float
    range_ok: bool
    ring_pixels: int

    def to_dict(self) -> dict:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None  # JSON has no NaN/inf
        return out

    def summary(self) -> str:
        """One line for captions and the widget: ``CNR 2.1  Δ+34  grad 1.3  12.5 mm²``."""
        size = f"{self.area_mm2:.1f} mm²" if self.area_mm2 is not None else f"{self.volume_mm3:.0f} mm³"
        rng = "" if self.range_ok else "  RANGE!"
        return f"CNR {self.cnr:.2f}  C {self.contrast:+.3g}  grad {self.gradient_ratio:.2f}  {size}{rng}"


def _crop(mask: np.ndarray, margin: Sequence[int]) -> tuple[slice, ...] | None:
    found = ndi.find_objects(mask.astype(np.uint8, copy=False))
    if not found or found[0] is None:
        return None
    return tuple(
        slice(max(0, s.start - m), min(n, s.stop + m)) for s, m, n in zip(found[0], margin, mask.shape)
    )


def _grad_mag(a: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    if min(a.shape) < 2:
        return np.zeros_like(a, dtype=np.float32)
    grads = np.gradient(a.astype(np.float32, copy=False), *spacing)
    return np.sqrt(sum(g * g for g in grads)).astype(np.float32)


def _mean(a: np.ndarray) -> float:
    return float(a.mean()) if a.size else float("nan")


def lesion_metrics(
    original: np.ndarray,
    synthetic: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float],
    source_range: tuple[float, float] | None = None,
    ring_mm: float = 4.0,
    gap_mm: float | None = None,
    bbox: tuple[slice, ...] | None = None,
) -> LesionMetrics:
    """QA numbers of one lesion.

    Parameters
    ----------
    original, synthetic : ndarray
        Source and rendered pixels in native units, same shape ((y, x) or (z, y, x)).
    mask : ndarray of bool
        The lesion's mask on the same grid.
    spacing : sequence of float
        Pixel size in mm, numpy axis order.
    source_range : (float, float), optional
        Allowed intensity range; default the original's min and max.
    ring_mm : float
        Width of the background ring around the mask, mm.
    gap_mm : float, optional
        Band right outside the mask left out of the ring, mm (default one pixel).
    bbox : tuple of slice, optional
        The mask's bounding box if already known (saves a search).
    """
    spacing = tuple(float(s) for s in spacing)
    ndim = mask.ndim
    if len(spacing) != ndim:
        raise ValueError(f"spacing {spacing} does not match a {ndim}D mask")
    if gap_mm is None:
        gap_mm = min(spacing)
    margin = [int(math.ceil((ring_mm + gap_mm) / s)) + 2 for s in spacing]
    if bbox is None:
        crop = _crop(mask, margin)
    else:
        crop = tuple(slice(max(0, b.start - m), min(n, b.stop + m)) for b, m, n in zip(bbox, margin, mask.shape))
    voxel = float(np.prod(spacing))
    if crop is None:
        nan = float("nan")
        return LesionMetrics(nan, nan, nan, nan, nan, 0.0 if ndim == 2 else None, None if ndim == 2 else 0.0,
                             0.0, 0, 0.0, True, 0)
    m = np.asarray(mask[crop], dtype=bool)
    s = np.asarray(synthetic[crop], dtype=np.float32)
    o = np.asarray(original[crop], dtype=np.float32)

    # Distance outside the mask in mm (0 inside); the ring is a shell at gap..gap+ring mm.
    dist_out = ndi.distance_transform_edt(~m, sampling=spacing)
    ring = (dist_out > gap_mm) & (dist_out <= gap_mm + ring_mm)
    eroded = ndi.binary_erosion(m, border_value=1)
    band = (m & ~eroded) | ((dist_out > 0) & (dist_out <= gap_mm * 1.01))

    s_in, s_ring = s[m], s[ring]
    contrast = _mean(s_in) - _mean(s_ring)
    noise = float(s_ring.std()) if s_ring.size > 1 else float("nan")
    cnr = abs(contrast) / noise if noise and noise > 0 else (float("inf") if abs(contrast) > 0 else 0.0)
    added = _mean(s_in - o[m])

    gs, go = _grad_mag(s, spacing), _grad_mag(o, spacing)
    g_ring = _mean(gs[ring])
    gradient_ratio = _mean(gs[band]) / g_ring if g_ring > 0 else float("nan")
    go_ring = _mean(go[ring])
    ring_gradient_change = g_ring / go_ring if go_ring > 0 else float("nan")

    n = int(m.sum())
    size = n * voxel
    if ndim == 2:
        area, volume = size, None
        diameter = 2.0 * math.sqrt(size / math.pi)
    else:
        area, volume = None, size
        diameter = (6.0 * size / math.pi) ** (1.0 / 3.0)

    if source_range is None:
        source_range = (float(np.min(original)), float(np.max(original)))
    lo, hi = source_range
    tol = 0.005 * max(hi - lo, 1e-12)
    region = s[m | ring]
    outside = (region < lo - tol) | (region > hi + tol)
    frac = float(outside.mean()) if region.size else 0.0
    return LesionMetrics(
        contrast=float(contrast),
        cnr=float(cnr),
        added=float(added),
        gradient_ratio=float(gradient_ratio),
        ring_gradient_change=float(ring_gradient_change),
        area_mm2=area,
        volume_mm3=volume,
        equivalent_diameter_mm=float(diameter),
        pixels=n,
        out_of_range_fraction=frac,
        range_ok=frac == 0.0,
        ring_pixels=int(ring.sum()),
    )


def scene_metrics(
    original: np.ndarray,
    synthetic: np.ndarray,
    labels: np.ndarray,
    records: Iterable[LesionRecord],
    spacing: Sequence[float],
    source_range: tuple[float, float] | None = None,
    ring_mm: float = 4.0,
) -> dict[str, LesionMetrics]:
    """:func:`lesion_metrics` for every record, keyed by lesion id (label ``rec.label``)."""
    labels = np.asarray(labels)
    if source_range is None:
        source_range = (float(np.min(original)), float(np.max(original)))
    boxes = ndi.find_objects(labels) if labels.any() else []
    out: dict[str, LesionMetrics] = {}
    for rec in records:
        box = boxes[rec.label - 1] if 0 < rec.label <= len(boxes) else None
        if box is None:
            # Not drawn (off the image, or an empty mask): NaN numbers, zero size.
            empty = np.zeros((1,) * labels.ndim, bool)
            out[rec.id] = lesion_metrics(empty, empty, empty, spacing, source_range, ring_mm)
            continue
        out[rec.id] = _metrics_cropped(original, synthetic, labels, rec.label, box, spacing, source_range, ring_mm)
    return out


def _metrics_cropped(original, synthetic, labels, value, box, spacing, source_range, ring_mm) -> LesionMetrics:
    # Compare labels to the value only inside the grown box: cheap even on big volumes.
    margin = [int(math.ceil((ring_mm + min(spacing)) / s)) + 2 for s in spacing]
    crop = tuple(slice(max(0, b.start - m), min(n, b.stop + m)) for b, m, n in zip(box, margin, labels.shape))
    return lesion_metrics(
        original[crop], synthetic[crop], labels[crop] == value, spacing, source_range, ring_mm
    )
