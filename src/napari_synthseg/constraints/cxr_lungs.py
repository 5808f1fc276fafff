"""Lung fields of a frontal chest radiograph, classical method (no network).

No lung-segmentation network with a usable licence can be downloaded here, so this is an
honest image-processing baseline. Steps (on a copy resized to ``work_size`` rows):

1. contrast normalisation: native values (8-bit, 12/16-bit, any offset) are clipped to their
   1-99 percentiles and mapped to 0..1; an inverted image (MONOCHROME1: air bright) is
   detected by comparing the mediastinum with the lateral thorax and flipped;
2. the lungs are the large dark regions inside the body: a sweep of thresholds (quantiles of
   the thorax region) each gives dark components (after a small opening); components touching
   the image border (air outside the body, neck, axillae) are opened again with a wide disk
   (1/32 of the height) to cut the soft-tissue necks through which a lung joins the outside
   air, and only the pieces that then no longer touch the border are kept; at each threshold
   the largest component left and right of the midline, centred above the lowest 15 %, plus
   large fragments of the same lung (a mass can split it into upper and lower parts) are the
   candidates; the threshold with the largest total area whose pair is plausible wins (each
   within its half, 1.5-30 % of the image, taller than 20 % of it, reaching the upper 35 %
   (apex: this rejects stomach and bowel gas), area ratio >= 0.3); each lung is then grown to
   the strongest surrounding edge by a marker watershed on the gradient (markers: the dark
   core; background: the brightest 20 %, the image border and the mediastinal strip between
   the lungs), at most 8 % of the image height from the core;
3. each lung is closed, hole-filled and replaced by its convex hull blended with itself
   (``hull_weight``): the dense lower lung, the hila and lesions are brighter than the
   threshold and would otherwise be cut out, while a full hull would swallow the heart
   border; the result is smoothed and resized back.

Works on 2D arrays of any real dtype; values are never assumed to be 0-255.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import sobel
from skimage.morphology import convex_hull_image, disk
from skimage.segmentation import watershed

from ..errors import SynthsegError


def cxr_lung_mask(
    image: np.ndarray,
    spacing: Optional[Sequence[float]] = None,
    *,
    invert: Optional[bool] = None,
    work_size: int = 256,
    hull_weight: float = 0.6,
    grow: bool = True,
) -> np.ndarray:
    """Boolean mask of both lung fields in a frontal (PA/AP) chest radiograph.

    Parameters
    ----------
    image : ndarray
        2D radiograph (rows, cols), any real dtype, native values (air dark unless inverted).
        An RGB(A) image (rows, cols, 3|4) is converted to grey; a one-frame volume
        (1, rows, cols), as SimpleITK reads a DICOM radiograph, is accepted.
    spacing : sequence of float, optional
        Pixel size in mm; not needed by this method (it works in image fractions), accepted
        for a uniform constraint API.
    invert : bool, optional
        True if air is bright (MONOCHROME1); None detects it.
    work_size : int
        Rows of the internal working copy (speed vs. detail).
    hull_weight : float
        0..1: below 0.5 keeps the thresholded lung shape, from 0.5 up the convex hull wins
        more and more (after the final smoothing), 1 is each lung's convex hull.
    grow : bool
        Grow the dark lung cores to the strongest surrounding edge (watershed); False
        keeps the threshold cores (smaller, Dice 0.815 instead of 0.876 on the manual mask).

    Returns
    -------
    ndarray of bool
        Same shape as ``image`` (without the colour axis); True inside the lung fields.

    Raises
    ------
    SynthsegError
        Not a 2D image, constant image, or no plausible pair of lung fields found.
    """
    in_shape = np.shape(image)
    img = _to_grey(image)
    rows, cols = img.shape
    if min(rows, cols) < 32:
        raise SynthsegError(f"radiograph too small ({rows}x{cols}); need at least 32x32 px")
    scale = work_size / rows
    small = cv2.resize(img, (max(32, int(round(cols * scale))), work_size),
                       interpolation=cv2.INTER_AREA)
    norm = _normalise(small)
    if invert is None:
        invert = _looks_inverted(norm)
    if invert:
        norm = 1.0 - norm
    norm = cv2.GaussianBlur(norm, (0, 0), sigmaX=work_size / 256.0 * 1.5)

    lungs = _find_lungs(norm)
    if lungs is None:
        raise SynthsegError("no plausible pair of lung fields found; is this a frontal chest "
                            "X-ray (try invert=True if air is bright)?")
    if grow:
        lungs = _grow(norm, lungs)
    soft: np.ndarray = np.zeros(norm.shape, np.float32)
    for lung in lungs:
        soft += _shape_lung(lung, hull_weight)
    soft = cv2.GaussianBlur(np.clip(soft, 0, 1), (0, 0), sigmaX=work_size / 256.0 * 2.0)
    big = cv2.resize(soft, (cols, rows), interpolation=cv2.INTER_LINEAR)
    mask = big >= 0.5
    # A DICOM radiograph read as a one-frame volume (1, rows, cols) gets its mask back in
    # the same shape, so callers can overlay it without reshaping.
    return mask.reshape(in_shape) if len(in_shape) == 3 and in_shape[0] == 1 else mask


# ------------------------------------------------------------------------------ helpers
def _to_grey(image) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        img = img[..., :3].astype(np.float32).mean(axis=-1)
    if img.ndim != 2:
        raise SynthsegError(f"CXR lung mask needs a 2D radiograph, got shape {img.shape}")
    if not np.issubdtype(img.dtype, np.number) and img.dtype != bool:
        raise SynthsegError(f"CXR lung mask needs a numeric image, got dtype {img.dtype}")
    img = img.astype(np.float32)
    if not np.isfinite(img).all():
        img = np.nan_to_num(img, nan=float(np.nanmedian(img)), posinf=0.0, neginf=0.0)
    return img


def _normalise(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img, [1.0, 99.0])
    if hi <= lo:
        raise SynthsegError("the radiograph is (almost) constant; cannot find lung fields")
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _looks_inverted(norm: np.ndarray) -> bool:
    """True if the mediastinum is darker than the lateral thorax (air shown bright)."""
    h, w = norm.shape
    band = norm[int(0.3 * h):int(0.6 * h)]
    centre = np.median(band[:, int(0.45 * w):int(0.55 * w)])
    lateral = np.median(np.concatenate([band[:, int(0.2 * w):int(0.35 * w)],
                                        band[:, int(0.65 * w):int(0.8 * w)]], axis=1))
    return bool(centre < lateral)


def _find_lungs(norm: np.ndarray) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    h, w = norm.shape
    thorax = norm[int(0.1 * h):int(0.85 * h), int(0.1 * w):int(0.9 * w)]
    se = disk(max(1, int(round(h / 128)))).astype(np.uint8)
    big_se = disk(max(2, int(round(h / 32)))).astype(np.uint8)
    best, best_area = None, 0
    for q in np.arange(0.10, 0.62, 0.02):
        t = np.quantile(thorax, q)
        dark = _open(norm < t, se)
        lab, n = ndi.label(dark)
        if n == 0:
            continue
        edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        edge = edge[edge > 0]
        n_plain = n
        if edge.size:
            # A lung often joins the outside air through the axilla's soft tissue at higher
            # thresholds; a wider opening cuts such necks so the lung is not thrown away.
            cut = _open(np.isin(lab, edge), big_se)
            lab2, n2 = ndi.label(cut)
            if n2:
                lab = np.where(lab2 > 0, lab2 + n, np.where(np.isin(lab, edge), 0, lab))
                n += n2
                edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        sizes[edge] = 0
        sizes[0] = 0
        objs = ndi.find_objects(lab)
        left = right = None  # image left / image right
        for lbl in np.argsort(sizes)[::-1]:
            if sizes[lbl] == 0:
                break
            sl = objs[lbl - 1]
            cy = 0.5 * (sl[0].start + sl[0].stop)
            cx = 0.5 * (sl[1].start + sl[1].stop)
            if cy > 0.85 * h:
                continue
            side = "l" if cx < 0.5 * w else "r"
            if side == "l" and left is None:
                left = lbl
            elif side == "r" and right is None:
                right = lbl
            if left is not None and right is not None:
                break
        if left is None or right is None:
            continue
        groups = [_fragments(sizes, objs, main, h, w, n_plain) for main in (left, right)]
        ok = True
        for main, group, side in ((left, groups[0], "l"), (right, groups[1], "r")):
            sl = objs[main - 1]
            frac = sizes[main] / (h * w)
            crosses = sl[1].stop > 0.6 * w if side == "l" else sl[1].start < 0.4 * w
            tall = (sl[0].stop - sl[0].start) > 0.2 * h
            # Every lung reaches the upper third (apex); a group of dark regions that starts
            # lower is bowel or stomach gas (or only the base of a diseased lung).
            apex = min(objs[g - 1][0].start for g in group) < 0.35 * h
            if crosses or not tall or not apex or not (0.015 <= frac <= 0.30):
                ok = False
        if not ok:
            continue
        a_left, a_right = (int(sizes[g].sum()) for g in groups)
        # Strongly unequal lungs mean one side leaked or is missed; prefer balanced pairs.
        ratio = min(a_left, a_right) / max(a_left, a_right)
        if ratio < 0.3:
            continue
        if a_left + a_right > best_area:
            best_area = a_left + a_right
            best = (lab, groups)
    if best is None:
        return None
    lab, groups = best
    neck = disk(max(2, int(round(h / 40)))).astype(np.uint8)
    full = [np.isin(lab, g) for g in groups]
    kept = [_cut_necks(lab, g, neck) for g in groups]
    # Only what hangs below the other lung's base is gas under the diaphragm; a piece cut off
    # higher up (a lung narrowed by a device or an opacity) is given back.
    bottoms = [int(np.nonzero(k.any(axis=1))[0].max()) if k.any() else h for k in kept]
    out = []
    for i in (0, 1):
        dropped, n = ndi.label(full[i] & ~kept[i])
        keep = kept[i].copy()
        for j, sl in enumerate(ndi.find_objects(dropped), start=1):
            cy = ndi.center_of_mass(dropped[sl] == j)[0] + sl[0].start
            if cy < bottoms[1 - i]:
                keep |= dropped == j
        out.append(keep)
    return out[0], out[1]


def _cut_necks(lab, group, kernel) -> np.ndarray:
    """Union of the group's components, each without what hangs on it by a narrow neck.

    At generous thresholds a lung base can join stomach or colon gas through the thin lateral
    costophrenic recess (seen on the RSNA sample). Each component is opened with ``kernel``; only its largest opened
    piece is kept, and the detail the opening shaved off is given back within the kernel's
    radius of that piece (not across the neck).
    """
    out = np.zeros(lab.shape, bool)
    for lbl in group:
        comp = lab == lbl
        pieces, n = ndi.label(_open(comp, kernel))
        if n == 0:
            out |= comp
            continue
        sizes = np.bincount(pieces.ravel())
        sizes[0] = 0
        core = pieces == int(np.argmax(sizes))
        grown = cv2.dilate(core.astype(np.uint8), kernel).astype(bool)
        out |= comp & grown
    return out


def _open(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Binary opening (OpenCV: ~20x faster than scipy for these kernel sizes)."""
    out = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel,
                           borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return out.astype(bool)


def _fragments(sizes, objs, main, h, w, max_label) -> list:
    """Labels of the main dark component plus large fragments of the same lung.

    A mass, effusion or consolidation splits a lung's dark area into an upper and a lower
    part; pieces at least a quarter of the main one, on the same side, overlapping it in
    columns and close to it vertically, belong to the same lung field. Pieces cut off the
    outside air (labels above ``max_label``) are never fragments: they are mostly shoulder
    and axilla.
    """
    msl = objs[main - 1]
    keep = [int(main)]
    side_left = 0.5 * (msl[1].start + msl[1].stop) < 0.5 * w
    for lbl in np.nonzero(sizes >= 0.25 * sizes[main])[0]:
        if lbl == main or lbl == 0 or lbl > max_label:
            continue
        sl = objs[lbl - 1]
        cx = 0.5 * (sl[1].start + sl[1].stop)
        cy = 0.5 * (sl[0].start + sl[0].stop)
        if (cx < 0.5 * w) != side_left or cy > 0.85 * h:
            continue
        overlap_x = min(sl[1].stop, msl[1].stop) - max(sl[1].start, msl[1].start)
        gap_y = max(sl[0].start - msl[0].stop, msl[0].start - sl[0].stop)
        if overlap_x > 0 and gap_y < 0.15 * h:
            keep.append(int(lbl))
    return keep


def _grow(norm, lungs):
    """Extend the dark lung cores to the strongest surrounding edge (marker watershed)."""
    h, w = norm.shape
    left, right = lungs
    markers = np.zeros(norm.shape, np.int32)
    er = disk(max(1, int(round(h / 64))))
    markers[ndi.binary_erosion(left, er)] = 1
    markers[ndi.binary_erosion(right, er)] = 2
    bright = norm > np.quantile(norm, 0.80)
    band = np.zeros_like(left)
    b = max(2, int(round(h / 50)))
    band[:b] = band[-b:] = True
    band[:, :b] = band[:, -b:] = True
    # Mediastinum: columns between the two cores at mid height are never lung.
    lx = np.nonzero(left.any(axis=0))[0].max()
    rx = np.nonzero(right.any(axis=0))[0].min()
    mid = np.zeros_like(left)
    if rx - lx > 4:
        mid[:, lx + (rx - lx) // 3: rx - (rx - lx) // 3] = True
    bg = (bright | band | mid) & (markers == 0)
    markers[bg] = 3
    grad = sobel(norm)
    lab = watershed(grad, markers)
    out = []
    for k, core in ((1, left), (2, right)):
        # A weak edge lets the flood run into the shoulder or abdomen; growth beyond ~8 % of
        # the image height from the dark core is never lung.
        near = ndi.distance_transform_edt(~core) <= 0.08 * h
        grown = (lab == k) & near
        # Keep only grown pieces attached to the lung's own core (or fragments of it).
        out.append(ndi.binary_propagation(core & grown, mask=grown) | core)
    return tuple(out)


def _shape_lung(lung: np.ndarray, hull_weight: float) -> np.ndarray:
    h = lung.shape[0]
    r = max(1, int(round(h / 64)))
    closed = ndi.binary_closing(np.pad(lung, r), disk(r))[r:-r, r:-r] | lung
    filled = ndi.binary_fill_holes(closed)
    if hull_weight <= 0:
        return filled.astype(np.float32)
    hull = convex_hull_image(filled)
    return (hull_weight * hull + (1.0 - hull_weight) * filled).astype(np.float32)
