"""CT lesion → 2D chest X-ray lesion by an attenuation line integral.

HU are converted to linear attenuation ``mu = mu_water * (1 + HU / 1000)`` (air clipped to 0)
and integrated along the anterior-posterior axis (numpy axis 1 of an LPS (z, y, x) volume) in mm.
The lesion's contribution is a *residual*: the projection of the patch minus the projection of
the same patch with the lesion replaced by its lung background (``absolute - intensity``), so
it can be added to a real CXR in the log (attenuation) domain. The mask projects as the maximum
along the same axis.

The result has rows = superior→inferior (row 0 is the most superior, as a CXR is displayed) and
columns = the LPS x axis, patient right → patient left, i.e. the radiological convention
(patient's left on the viewer's right) for a PA or AP film; an AP and a PA projection of a
parallel beam are the same line integral.

Unlike the NODE21 baseline, which zooms the whole CT cube to the target pixel size before
projecting, this projects at the CT's native voxels and resamples only the 2D result, directly
to the target CXR's pixel spacing so the lesion keeps its size in mm.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..errors import SynthsegError
from .item import LesionPatch, _as_spacing, bbox_with_margin, resample_array, resample_mask, resample_mask_smooth

MU_WATER_PER_MM = 0.02  # water at an effective CXR energy of about 60 keV, 1/mm
DEFAULT_BACKGROUND_HU = -850.0


def hu_to_mu(hu: np.ndarray, mu_water: float = MU_WATER_PER_MM) -> np.ndarray:
    """Linear attenuation (1/mm) from HU; air and below clip to 0."""
    mu = np.asarray(hu, dtype=np.float32) * np.float32(mu_water / 1000.0)
    mu += np.float32(mu_water)
    np.maximum(mu, 0.0, out=mu)
    return mu


def project_ct_lesion(
    patch: LesionPatch,
    target_spacing: float | Sequence[float] | None = None,
    *,
    axis: int = 1,
    mu_water: float = MU_WATER_PER_MM,
    superior_up: bool = True,
    margin_mm: float = 2.0,
    order: int = 1,
) -> LesionPatch:
    """Project a 3D CT lesion (HU, LPS (z, y, x)) to a 2D CXR lesion.

    Parameters
    ----------
    patch : LesionPatch
        3D, ``units='HU'``. ``absolute`` (HU with background) is used for the air clip and the
        absolute layer; without it the background is ``provenance['background_hu']`` or -850 HU.
    target_spacing : float or (row, col) mm, optional
        The target CXR's pixel spacing; the 2D result is resampled to it. ``None`` keeps the CT's
        native spacing.
    axis : {1, 2}
        Beam axis: 1 = anterior-posterior (frontal CXR), 2 = left-right (lateral CXR).
    mu_water : float
        Linear attenuation of water in 1/mm.
    superior_up : bool
        Flip so that row 0 is the most superior (axis 0 of LPS runs inferior→superior).
    margin_mm : float
        Crop margin around the lesion's footprint before resampling (speed).
    order : int
        Spline order of the 2D resampling.

    Returns
    -------
    LesionPatch
        2D, ``units='attenuation'``: ``intensity`` = residual line integral ``∫Δmu dl``,
        ``absolute`` = the slab's total line integral over the patch depth.
    """
    if not isinstance(patch, LesionPatch):
        raise SynthsegError(f"project_ct_lesion needs a LesionPatch, got {type(patch).__name__}")
    if patch.ndim != 3:
        raise SynthsegError(f"projection needs a 3D CT lesion (z, y, x), got a {patch.ndim}D one")
    if patch.units != "HU":
        raise SynthsegError(f"projection needs a CT lesion in HU, got units {patch.units!r}")
    if axis not in (1, 2):
        raise SynthsegError(f"projection axis must be 1 (anterior-posterior) or 2 (left-right), got {axis}")
    if not (math.isfinite(mu_water) and mu_water > 0):
        raise SynthsegError(f"mu_water must be a positive attenuation in 1/mm, got {mu_water}")
    other = 2 if axis == 1 else 1
    sp = patch.spacing

    # only the lesion's footprint (plus a margin) matters for the residual: crop the two
    # image axes first so the conversion touches a small slab, not the whole cube
    support = patch.mask | (patch.intensity != 0)
    footprint = support.any(axis=axis)
    rows, cols = bbox_with_margin(footprint, (sp[0], sp[other]), margin_mm)
    crop_axes = [rows, slice(None), slice(None)]
    crop_axes[other] = cols
    sl = tuple(crop_axes)
    resid_hu = patch.intensity[sl]
    if patch.absolute is not None:
        abs_hu = patch.absolute[sl]
    else:
        bg = float(patch.provenance.get("background_hu", DEFAULT_BACKGROUND_HU))
        abs_hu = resid_hu + np.float32(bg)
    mu_abs = hu_to_mu(abs_hu, mu_water)
    mu_bg = hu_to_mu(abs_hu - resid_hu, mu_water)
    dl = np.float32(sp[axis])
    absolute = mu_abs.sum(axis=axis, dtype=np.float32) * dl
    residual = absolute - mu_bg.sum(axis=axis, dtype=np.float32) * dl
    # asarray: numpy's stubs type any(axis=...) as possibly a scalar; a 3D crop gives a 2D array
    mask = np.asarray(patch.mask[sl].any(axis=axis))
    # kept vessel stubs (attachments="keep"): their opacity projects as its maximum along the beam
    attachment = None if patch.attachment is None else np.asarray(patch.attachment[sl].max(axis=axis), np.float32)
    if superior_up:
        absolute, residual, mask = absolute[::-1], residual[::-1], mask[::-1]
        attachment = None if attachment is None else attachment[::-1]
    spacing2d: tuple[float, ...] = (sp[0], sp[other])
    if target_spacing is not None:
        tsp = _as_spacing(target_spacing, 2, "target CXR spacing")
        # Upsampling a 1 mm projection by 3-7x: a cubic B-spline (approximating: smooth, never
        # overshooting) for the values and a smoothed signed distance for the mask, so neither
        # shows the CT voxels' staircase (issue 15: "blocky outlines"). Downsampling keeps the
        # anti-aliased linear resampling.
        upsampling = bool(np.all(np.asarray(tsp) < np.asarray(spacing2d)))
        smooth: dict[str, Any] = dict(order=3, prefilter=False) if upsampling and order == 1 else dict(order=order)
        residual = resample_array(residual, spacing2d, tsp, mode="constant", **smooth)
        absolute = resample_array(absolute, spacing2d, tsp, mode="nearest", **smooth)
        mask = resample_mask_smooth(mask, spacing2d, tsp) if upsampling else resample_mask(mask, spacing2d, tsp)
        if attachment is not None:
            attachment = resample_array(attachment, spacing2d, tsp, mode="constant", **smooth)
        spacing2d = tsp
    op = {"op": "project_ct", "axis": axis, "mu_water_per_mm": float(mu_water), "superior_up": bool(superior_up),
          "target_spacing": None if target_spacing is None else list(spacing2d), "order": order}
    return patch._derive(op, intensity=np.ascontiguousarray(residual), mask=np.ascontiguousarray(mask),
                         spacing=spacing2d, absolute=np.ascontiguousarray(absolute), units="attenuation",
                         attachment=attachment)
