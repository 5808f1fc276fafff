"""Vessel attachments of a transplanted real nodule: removed, or kept as faded stubs, by choice.

A real nodule's mask (LIDC readers' contours) excludes the vessels and pleura it touches, but
the donor patch around it holds them. Transplanted as is, the part of a vessel inside the
lesion's rim (the residual's ``edge_mm`` grow, the alpha feather, Poisson's partial-volume rim)
comes along and is cut off sharply: a stump that belongs to neither scan.

``attachments="remove"`` (the default): every *attached structure* is taken out of the donor
patch before it is placed: its residual is zeroed and its absolute HU set to the donor's lung
background, so the nodule alone replaces the target's parenchyma and outside the nodule the
target's own lung stays. ``attachments="keep"``: the attached structures come along as stubs up
to :data:`STUB_MM` from the mask, faded linearly to nothing at that length (residual and opacity
both), so a kept vessel enters the target softly instead of as a cut-off tube.

An *attached structure* is a connected bright component outside the mask (HU above
:data:`VESSEL_HU`, full connectivity) that starts within :data:`TOUCH_MM` of the mask and reaches
further than :data:`RIM_MM` from it; voxels of such a component within ``RIM_MM`` of the mask
count only where they adjoin its part beyond (the vessel's base), so the nodule's own
partial-volume rim stays with the nodule.

Labels: the label is what changed (``render.truth``), so kept stubs, which change the image by
up to the nodule's contrast, are *labelled with the nodule* where they change it by more than the
tolerance; the record's stored mask (``record_patch(...).mask``) stays the nodule alone, and
``source.patch.attachments`` records what was kept. Remove (the default) is what a nodule
segmentation model expects: LIDC-style labels, nodule only. ``docs/rendering.md`` has the rule.
"""

from __future__ import annotations

from enum import Enum

import numpy as np
from scipy import ndimage as ndi

from ..errors import SynthsegError
from .ct_patch import lung_background_hu
from .item import LesionPatch, bbox_with_margin

#: Bright (vessel, pleura, wall) voxels: above this HU. Lung parenchyma lies at -900..-700 HU;
#: a vessel's partial-volume edge at 1 mm voxels reaches this already.
VESSEL_HU = -500.0
#: A component attaches to the nodule when it comes this close to the mask (mm).
TOUCH_MM = 1.5
#: Within this distance of the mask, bright voxels are the nodule's partial-volume rim unless
#: they adjoin an attached structure's part beyond it (mm).
RIM_MM = 1.0
#: Kept stubs reach this far from the mask, fading linearly to zero there (mm).
STUB_MM = 5.0


class Attachments(str, Enum):
    """What happens to structures attached to a transplanted real nodule."""

    REMOVE = "remove"
    KEEP = "keep"


def attachments_mode(text: str | Attachments) -> Attachments:
    if isinstance(text, Attachments):
        return text
    try:
        return Attachments(str(text))
    except ValueError:
        raise SynthsegError(f"attachments must be 'remove' or 'keep', got {text!r}") from None


def attached_structures(hu: np.ndarray, mask: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """(attached voxels, distance from the mask in mm) of a CT patch (see the module docstring).

    Computed in the mask's box grown by :data:`STUB_MM` (nothing further matters; the distance
    is ``inf`` outside it), so a nodule in a 50 mm donor cube costs a few milliseconds.
    """
    sp = np.asarray(spacing, float)
    box = bbox_with_margin(mask, sp, STUB_MM + float(sp.max()))
    sub_hu, sub_mask = hu[box], mask[box]
    dist = np.full(mask.shape, np.inf, np.float32)
    sub_dist = ndi.distance_transform_edt(~sub_mask, sampling=sp).astype(np.float32)
    dist[box] = sub_dist
    attached = np.zeros(mask.shape, bool)
    bright = (sub_hu > VESSEL_HU) & ~sub_mask
    full = np.ones((3,) * hu.ndim, bool)
    pieces, n = ndi.label(bright, structure=full)
    if n == 0:
        return attached, dist
    # components that start near the mask and reach beyond its rim (sets of labels: no sort)
    near = np.unique(pieces[bright & (sub_dist <= TOUCH_MM)])
    far = np.unique(pieces[bright & (sub_dist > RIM_MM)])
    keep = np.zeros(n + 1, bool)
    keep[np.intersect1d(near, far)] = True
    keep[0] = False
    component = keep[pieces]
    body = component & (sub_dist > RIM_MM)
    base = ndi.binary_dilation(body, structure=full) & component & (sub_dist <= RIM_MM)
    attached[box] = body | base
    return attached, dist


def apply_attachments(patch: LesionPatch, mode: str | Attachments = Attachments.REMOVE) -> LesionPatch:
    """``patch`` with its attached structures removed or kept as faded stubs.

    Only 3D CT patches with their own HU (``absolute``: real nodules, CT patches, library items)
    have attachments; any other patch is returned unchanged. The choice and the number of
    attached voxels are recorded in ``provenance["attachments"]``.
    """
    mode = attachments_mode(mode)
    if patch.ndim != 3 or patch.units != "HU" or patch.absolute is None:
        return patch
    hu = patch.absolute
    mask = patch.mask
    attached, dist = attached_structures(hu, mask, patch.spacing)
    background = float(patch.provenance.get("background_hu", lung_background_hu(hu, mask, patch.spacing)))
    record = {"mode": mode.value, "attached_voxels": int(attached.sum()), "vessel_hu": VESSEL_HU,
              "touch_mm": TOUCH_MM, "rim_mm": RIM_MM}
    if mode is Attachments.REMOVE:
        intensity = np.where(attached, np.float32(0.0), patch.intensity).astype(np.float32)
        absolute = np.where(attached, np.float32(background), hu).astype(np.float32)
        out = patch._derive({"op": "attachments", **record}, intensity=intensity, absolute=absolute, attachment=None)
    else:
        fade = np.clip(1.0 - (dist - RIM_MM) / (STUB_MM - RIM_MM), 0.0, 1.0).astype(np.float32)
        stub = attached & (fade > 0)
        weight = np.where(stub, fade, np.float32(0.0)).astype(np.float32)
        intensity = np.where(stub, (hu - np.float32(background)) * weight, patch.intensity).astype(np.float32)
        record.update({"stub_mm": STUB_MM, "kept_voxels": int(stub.sum())})
        out = patch._derive({"op": "attachments", **record}, intensity=intensity,
                            attachment=weight if stub.any() else None)
    out.provenance["attachments"] = record
    return out
