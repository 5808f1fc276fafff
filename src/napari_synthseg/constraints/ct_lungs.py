"""Lung mask of a chest CT in Hounsfield units (classical, no learning).

Pipeline (each step in mm, so it adapts to slice thickness and pixel size):

1. air-like voxels: HU below ``threshold_hu`` (-320 by default);
2. outside-body air: per axial slice, air components touching the slice border are removed
   (slice-wise, because lungs may reach the first/last slice of a scan but never the in-plane
   border; the slice border is also where the table and the air around the patient are);
3. trachea: a chain of small (0.5-12 cm^2), central air blobs over >= 25 mm of consecutive
   slices, starting at the end of the scan that has no lung tissue beside it (the apex end);
   main bronchi: air darker than ``airway_hu`` (-950 HU lumen, darker than parenchyma)
   geodesically connected to the lowest trachea blob within ``bronchus_reach_mm``; both are
   removed;
4. lungs: the largest 3D component, plus the second one if it is at least 10 % of it (the two
   lungs are separate once the airways are gone, or joined at an anterior junction);
5. slice-wise hole filling (vessels, nodules and tumours surrounded by lung are inside) and a
   small 2D closing (``closing_mm``) that pulls in juxta-pleural nodules and the lung edge.

A single 2D slice is handled too (steps 1, 2, 4, 5; the trachea is dropped by step 4).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage as ndi

from ..errors import SynthsegError

_SLICE_STRUCT = np.zeros((3, 3, 3), bool)
_SLICE_STRUCT[1] = ndi.generate_binary_structure(2, 1)


def ct_lung_mask(
    volume_hu: np.ndarray,
    spacing: Optional[Sequence[float]] = None,
    *,
    threshold_hu: float = -320.0,
    airway_hu: float = -950.0,
    bronchus_reach_mm: float = 60.0,
    closing_mm: float = 3.0,
) -> np.ndarray:
    """Boolean lung mask of a CT volume (z, y, x) or single axial slice (y, x), in HU.

    Parameters
    ----------
    volume_hu : ndarray
        CT intensities in Hounsfield units (air ~ -1000 HU), shape (z, y, x) or (y, x).
    spacing : sequence of float, optional
        Voxel spacing in mm in the array's axis order ((z, y, x) or (y, x)). Defaults to
        (5, 0.8, 0.8) / (0.8, 0.8), a typical clinical chest CT.
    threshold_hu : float
        Voxels below this are air-like (lung parenchyma is about -900..-500 HU).
    airway_hu : float
        Airway lumen is darker than this; used to follow the main bronchi from the trachea.
    bronchus_reach_mm : float
        How far (geodesic, mm) below the trachea airway lumen is removed as main bronchi.
    closing_mm : float
        Radius of the final per-slice closing; 0 disables it.

    Returns
    -------
    ndarray of bool
        Same shape as ``volume_hu``; True inside the lungs.

    Raises
    ------
    SynthsegError
        Wrong dimensionality, bad spacing, or no lung-like air found inside the body.
    """
    vol = np.asarray(volume_hu)
    if vol.ndim not in (2, 3):
        raise SynthsegError(f"CT lung mask needs a 2D slice or 3D volume, got shape {vol.shape}")
    squeeze = vol.ndim == 2
    if squeeze:
        vol = vol[None]
    spc = _spacing(spacing, squeeze)
    if float(np.nanmin(vol)) > -500:
        raise SynthsegError("no air below -500 HU in this image; is it a CT in Hounsfield "
                            "units (apply the DICOM rescale slope/intercept)?")

    air = vol < threshold_hu
    inner = _remove_border_air(air)
    if vol.shape[0] >= 3:
        airway = _trachea_and_bronchi(vol, inner, spc, airway_hu, bronchus_reach_mm)
        inner &= ~airway
    lungs = _largest_components(inner, spc)
    if not lungs.any():
        raise SynthsegError("no lung-like air found inside the body; check that this is a "
                            "chest CT in HU with the lungs in the field of view")
    lungs = _fill_and_close(lungs, spc, closing_mm)
    return lungs[0] if squeeze else lungs


# ---------------------------------------------------------------------------- steps
def _spacing(spacing, squeeze: bool) -> Tuple[float, float, float]:
    if spacing is None:
        return (5.0, 0.8, 0.8)
    spc = tuple(float(s) for s in spacing)
    if squeeze and len(spc) == 2:
        spc = (1.0,) + spc
    if len(spc) != 3 or not all(np.isfinite(s) and s > 0 for s in spc):
        raise SynthsegError(f"spacing {tuple(spacing)} must give one positive value (mm) per "
                            "axis, in array order (z, y, x) or (y, x)")
    return spc  # type: ignore[return-value]


def _remove_border_air(air: np.ndarray) -> np.ndarray:
    lab, _ = ndi.label(air, structure=_SLICE_STRUCT)
    edge = np.unique(np.concatenate([lab[:, 0, :].ravel(), lab[:, -1, :].ravel(),
                                     lab[:, :, 0].ravel(), lab[:, :, -1].ravel()]))
    edge = edge[edge > 0]
    return air & ~np.isin(lab, edge)


def _trachea_and_bronchi(vol, inner, spc, airway_hu, reach_mm) -> np.ndarray:
    """Voxels of the trachea and main bronchi (empty if no trachea is recognised)."""
    nz, ny, nx = inner.shape
    px_area_cm2 = spc[1] * spc[2] / 100.0
    body_x = np.nonzero(inner.any(axis=(0, 1)))[0]
    if body_x.size == 0:
        return np.zeros_like(inner)
    # The mediastinum sits midway between the extreme lateral air (the lungs).
    x_mid = 0.5 * (body_x[0] + body_x[-1])
    half_width = 0.5 * (body_x[-1] - body_x[0] + 1)

    lab2, _ = ndi.label(inner, structure=_SLICE_STRUCT)
    cand = np.zeros_like(inner)
    big_lung = np.zeros(nz, bool)  # slices with large lateral air (lung tissue present)
    objs = ndi.find_objects(lab2)
    areas = np.bincount(lab2.ravel())
    for lbl, sl in enumerate(objs, start=1):
        if sl is None:
            continue
        a_cm2 = areas[lbl] * px_area_cm2
        comp = lab2[sl] == lbl
        _, _, cx = ndi.center_of_mass(comp)
        cx += sl[2].start
        h = (sl[1].stop - sl[1].start) * spc[1]
        w = (sl[2].stop - sl[2].start) * spc[2]
        central = abs(cx - x_mid) < 0.2 * half_width
        if 0.5 <= a_cm2 <= 12.0 and central and max(h, w) < 45.0:
            cand[sl] |= comp
        elif a_cm2 > 12.0:
            big_lung[sl[0].start] = True
    if not cand.any():
        return np.zeros_like(inner)

    # The trachea is the longest vertical chain of candidate blobs.
    lab3, n3 = ndi.label(cand, structure=np.ones((3, 3, 3), bool))
    best, best_len = 0, 0.0
    for lbl, sl in enumerate(ndi.find_objects(lab3), start=1):
        length = (sl[0].stop - sl[0].start) * spc[0]
        if length > best_len:
            best, best_len = lbl, length
    if best_len < 25.0:
        return np.zeros_like(inner)
    trachea = lab3 == best
    tz = np.nonzero(trachea.any(axis=(1, 2)))[0]
    # The carina is the chain's end that lies towards the bulk of the lungs.
    lung_z = np.nonzero(big_lung)[0]
    lung_centre = lung_z.mean() if lung_z.size else nz / 2
    low_end = tz[0] if abs(tz[0] - lung_centre) < abs(tz[-1] - lung_centre) else tz[-1]

    # Main bronchi: dark lumen geodesically connected to the carina end of the trachea,
    # grown a limited distance so parenchyma (lighter than the lumen) is never taken in bulk.
    lumen = inner & (vol < airway_hu)
    seed = trachea & (np.arange(nz)[:, None, None] == low_end)
    bronchi = _geodesic_grow(seed, lumen | trachea, spc, reach_mm)
    # The bronchial wall voxels (partial volume, between airway_hu and threshold_hu) would
    # still bridge the lungs: take a ~2 mm in-plane rim of air-like voxels around the lumen.
    rim_px = max(1, int(round(2.0 / min(spc[1], spc[2]))))
    rim = ndi.binary_dilation(bronchi, _SLICE_STRUCT, iterations=rim_px) & inner
    return trachea | bronchi | rim


def _geodesic_grow(seed, allowed, spc, reach_mm) -> np.ndarray:
    """Voxels of ``allowed`` within ``reach_mm`` (city-block steps in mm) of ``seed``."""
    zs, ys, xs = np.nonzero(seed)
    r = [int(np.ceil(reach_mm / s)) + 1 for s in spc]
    lo = [max(0, int(c.min()) - ri) for c, ri in zip((zs, ys, xs), r)]
    hi = [min(n, int(c.max()) + ri + 1) for c, n, ri in zip((zs, ys, xs), seed.shape, r)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    allow = allowed[box]
    front = seed[box] & allow
    dist = np.full(allow.shape, np.inf)
    dist[front] = 0.0
    grown = front.copy()
    # Anisotropic breadth-first growth: one in-plane step per iteration, a z step whenever
    # the accumulated in-plane distance has covered a slice thickness.
    step = min(spc[1], spc[2])
    struct2 = np.zeros((3, 3, 3), bool)
    struct2[1] = ndi.generate_binary_structure(2, 1)
    structz = np.zeros((3, 3, 3), bool)
    structz[:, 1, 1] = True
    d, next_z, idle = 0.0, spc[0], 0
    while d < reach_mm:
        d += step
        new = ndi.binary_dilation(grown, struct2) & allow & ~grown
        if d >= next_z:
            new |= ndi.binary_dilation(grown, structz) & allow & ~grown
            next_z += spc[0]
        idle = 0 if new.any() else idle + 1
        # Stop once neither in-plane nor through-plane steps can add anything.
        if idle * step > spc[0] + step:
            break
        grown |= new
    out = np.zeros_like(seed)
    out[box] = grown
    return out


def _largest_components(inner, spc) -> np.ndarray:
    lab, n = ndi.label(inner)
    if n == 0:
        return np.zeros_like(inner)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    vox_ml = spc[0] * spc[1] * spc[2] / 1000.0
    order = np.argsort(sizes)[::-1]
    first = order[0]
    # Anything under ~20 mL is bowel gas, oesophagus or noise, never a lung.
    if sizes[first] * vox_ml < 20.0 and inner.shape[0] > 1:
        return np.zeros_like(inner)
    keep = [first]
    if n > 1 and sizes[order[1]] >= 0.1 * sizes[first]:
        keep.append(order[1])
    return np.isin(lab, keep)


def _fill_and_close(lungs, spc, closing_mm) -> np.ndarray:
    out = np.empty_like(lungs)
    r = int(round(closing_mm / min(spc[1], spc[2]))) if closing_mm > 0 else 0
    disk = None
    if r > 0:
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        disk = (yy * spc[1]) ** 2 + (xx * spc[2]) ** 2 <= closing_mm ** 2
    for z in range(lungs.shape[0]):
        sl = lungs[z]
        if not sl.any():
            out[z] = sl
            continue
        if disk is not None:
            # Pad so the closing does not erode lung touching the image edge.
            sl = ndi.binary_closing(np.pad(sl, r), disk)[r:-r, r:-r] | sl
        out[z] = ndi.binary_fill_holes(sl)
    return out
