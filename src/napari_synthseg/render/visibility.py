"""Is a placed lesion visible? Contrast-to-noise against its local background, at placement.

The number is QA's ``cnr`` (:mod:`napari_synthseg.qa.metrics`) against a *detrended* local
background: ``|mean(S in L) - mean(P in L)| / std(S - P in R)`` with ``S`` the image with the
lesion, ``L`` its label (what it changed, :mod:`.truth`), ``R`` a ring 1 px to 4 mm outside it
and ``P`` the plane fitted to ``S`` on the ring (see :func:`lesion_cnr` for why). QA's default
rules reject lesions below CNR 1 as "too faint to see"; the same threshold, :data:`MIN_CNR`,
gates placement:

* batch generation refuses a lesion below it and draws another (``place_lesion(min_cnr=...)``);
* the editor and ``synthseg place`` keep it but flag it (``params["visibility"]["visible"]``
  is False and a warning is logged and shown);
* ``synthseg review --accept-all`` accepts only lesions at or above it unless
  ``--no-visibility-rule``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from ..io import MedicalImage
from ..scene import LesionRecord, Scene

#: Lesions below this contrast-to-noise ratio count as not visible (QA's "too faint" rule).
MIN_CNR = 1.0
RING_MM = 4.0


def lesion_cnr(synthetic: np.ndarray, mask: np.ndarray, spacing, ring_mm: float = RING_MM,
               gap_mm: float | None = None, detrend: bool = True) -> tuple[float, float, float]:
    """(cnr, contrast, noise) of a lesion ``mask`` in ``synthetic``.

    ``detrend=False`` is QA's definition (ring mean and std). With ``detrend`` (the default for
    visibility) the local background is a plane fitted to the ring (least squares): the contrast
    is the lesion's mean minus the plane's mean over the lesion, the noise the ring's residual
    std. A radiograph's ring spans a steep large-scale gradient (lung edge, mediastinum) that a
    reader does not mistake for the lesion; counting it as noise made every second real LIDC
    nodule projected with NODE21's contrast "invisible" (docs/benchmarks.md, issue 15).
    """
    spacing = tuple(float(s) for s in spacing)
    gap_mm = min(spacing) if gap_mm is None else gap_mm
    mask = np.asarray(mask, bool)
    dist_out = ndi.distance_transform_edt(~mask, sampling=spacing)
    ring = (dist_out > gap_mm) & (dist_out <= gap_mm + ring_mm)
    s = np.asarray(synthetic, np.float32)
    if not mask.any() or ring.sum() < 2 + (s.ndim + 1) * detrend:
        return float("nan"), float("nan"), float("nan")
    if detrend:
        coords = np.indices(s.shape, dtype=np.float64).reshape(s.ndim, -1).T
        design = np.hstack([np.ones((coords.shape[0], 1)), coords])
        ring_flat, mask_flat = ring.ravel(), mask.ravel()
        values = s.ravel().astype(np.float64)
        coef, *_ = np.linalg.lstsq(design[ring_flat], values[ring_flat], rcond=None)
        background = design @ coef
        contrast = float(values[mask_flat].mean() - background[mask_flat].mean())
        noise = float((values[ring_flat] - background[ring_flat]).std())
    else:
        contrast = float(s[mask].mean() - s[ring].mean())
        noise = float(s[ring].std())
    cnr = abs(contrast) / noise if noise > 0 else (math.inf if contrast else 0.0)
    return cnr, contrast, noise


def placement_visibility(scene: Scene, record: LesionRecord, image: MedicalImage) -> dict:
    """CNR of ``record`` rendered alone on the source image (a crop around it)."""
    from .compose import composite
    from .placement import place

    placed = place(scene, record, image)
    spacing = image.scale
    margin = [math.ceil((RING_MM + 2 * min(spacing)) / s) + 2 for s in spacing]
    box = tuple(slice(max(0, b.start - m), min(n, b.stop + m)) for b, m, n in zip(placed.box, margin, image.shape))
    canvas = np.array(image.array[box], dtype=np.float32)
    derived = composite(canvas, None, box, placed, spacing)
    label = np.zeros(canvas.shape, bool)
    if derived is not None:
        local = tuple(slice(d.start - b.start, d.stop - b.start) for d, b in zip(derived.box, box))
        label[local] = derived.label
    cnr, contrast, noise = lesion_cnr(canvas, label, spacing)
    return {"cnr": round(cnr, 4) if math.isfinite(cnr) else None, "contrast": round(contrast, 4),
            "noise": round(noise, 4), "min_cnr": MIN_CNR, "visible": bool(math.isfinite(cnr) and cnr >= MIN_CNR)
            or cnr == math.inf}
