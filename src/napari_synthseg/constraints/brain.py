"""Brain mask of a T1-weighted MRI (classical skull stripping, no learning).

Pipeline:

1. intensities are clipped to their 0.5-99.5 percentiles (MRI has no absolute unit);
2. foreground: Otsu threshold over all voxels (brain tissue and scalp fat are bright in T1;
   skull, CSF and air are dark);
3. morphological opening with a ball of ``opening_mm`` (via Euclidean distance maps in mm, so
   anisotropic voxels are handled): it cuts the thin bright bridges (meninges, vessels,
   optic nerves) between brain and scalp; the largest remaining 3D component is the brain;
4. closing with ``closing_mm`` and hole filling (3D, then slice-wise) put the ventricles and
   deep CSF, which are dark in T1, inside.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_multiotsu, threshold_otsu

from ..errors import SynthsegError


def brain_mask(
    volume: np.ndarray,
    spacing: Optional[Sequence[float]] = None,
    *,
    opening_mm: float = 5.0,
    closing_mm: float = 4.0,
) -> np.ndarray:
    """Boolean brain mask of a T1 MRI volume.

    Parameters
    ----------
    volume : ndarray
        3D T1-weighted image (any axis order, any intensity scale); a 2D slice also works.
    spacing : sequence of float, optional
        Voxel size in mm in the array's axis order; isotropic 1 mm if omitted.
    opening_mm : float
        Radius (mm) of the opening that detaches the brain from scalp and neck tissue.
    closing_mm : float
        Radius (mm) of the final closing that smooths the surface; 0 disables it.

    Returns
    -------
    ndarray of bool
        Same shape as ``volume``; True inside the brain.

    Raises
    ------
    SynthsegError
        Wrong dimensionality or spacing, a constant image, or nothing brain-like found.
    """
    vol = np.asarray(volume)
    if vol.ndim not in (2, 3):
        raise SynthsegError(f"brain mask needs a 2D or 3D image, got shape {vol.shape}")
    spc = _spacing(spacing, vol.ndim)
    vol = vol.astype(np.float32)
    if not np.isfinite(vol).all():
        vol = np.nan_to_num(vol, nan=float(np.nanmin(vol)))
    lo, hi = np.percentile(vol, [0.5, 99.5])
    if hi <= lo:
        raise SynthsegError("the MRI is (almost) constant; cannot find the brain")
    vol = np.clip(vol, lo, hi)
    # Otsu over all voxels separates background (air, skull, CSF: dark in T1) from tissue;
    # restricting it to "tissue" voxels would split grey from white matter instead.
    fg = vol > threshold_otsu(vol)
    if fg.sum() < 100:
        raise SynthsegError("almost no signal above background; is this a T1 MRI?")
    if _border_fraction(fg) > 0.5:
        # Field of view inside the head (a crop through the brain): there is no background
        # to separate, Otsu split grey from white matter. Separate tissue from CSF instead
        # (lower of three Otsu classes) and skip the opening, which would eat brain cut by
        # the image border.
        fg = vol > threshold_multiotsu(vol, classes=3)[0]
        brain = _largest(fg)
    else:
        brain = _open_largest(fg, spc, opening_mm)
    if closing_mm > 0:
        brain = _close(brain, spc, closing_mm)
    brain = ndi.binary_fill_holes(brain)
    if brain.ndim == 3:
        for z in range(brain.shape[2]):
            brain[:, :, z] = ndi.binary_fill_holes(brain[:, :, z])
    if not brain.any():
        raise SynthsegError("no brain-like region found; is this a T1-weighted head MRI?")
    return brain


def _spacing(spacing, ndim):
    if spacing is None:
        return (1.0,) * ndim
    spc = tuple(float(s) for s in spacing)
    if len(spc) != ndim or not all(np.isfinite(s) and s > 0 for s in spc):
        raise SynthsegError(f"spacing {tuple(spacing)} must give one positive value (mm) per "
                            f"image axis ({ndim})")
    return spc


def _border_fraction(mask: np.ndarray) -> float:
    faces = [np.take(mask, i, axis=ax).ravel() for ax in range(mask.ndim) for i in (0, -1)]
    return float(np.concatenate(faces).mean())


def _open_largest(fg, spc, r_mm):
    """Opening of ``fg`` keeping only the largest core, computed in the foreground's box."""
    pad = [int(np.ceil(r_mm / s)) + 2 for s in spc]
    idx = np.nonzero(fg)
    box = tuple(slice(max(0, int(i.min()) - p), min(n, int(i.max()) + p + 1))
                for i, p, n in zip(idx, pad, fg.shape))
    sub = fg[box]
    core = _largest(ndi.distance_transform_edt(sub, sampling=spc) > r_mm)
    if not core.any():
        # Brain thinner than the opening (tiny or very low-resolution images): no opening.
        core = _largest(sub)
    grown = (ndi.distance_transform_edt(~core, sampling=spc) <= r_mm) & sub
    out = np.zeros_like(fg)
    out[box] = _largest(grown)
    return out


def _largest(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask.copy()
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _close(mask, spc, r_mm):
    """Closing with a ball of ``r_mm`` (mm), computed in the mask's padded bounding box."""
    if not mask.any():
        return mask
    pad = [int(np.ceil(r_mm / s)) + 1 for s in spc]
    idx = np.nonzero(mask)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    m = np.pad(mask[box], [(p, p) for p in pad])
    dil = ndi.distance_transform_edt(~m, sampling=spc) <= r_mm
    closed = ndi.distance_transform_edt(dil, sampling=spc) > r_mm
    inner = tuple(slice(p, -p) for p in pad)
    out = mask.copy()
    out[box] |= closed[inner]
    return out
