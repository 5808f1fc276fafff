"""Hole shapes for training and for the three uses: strokes, boxes, lesion-like blobs, outpaint.

Every generator returns a boolean (rows, cols) array and takes a ``numpy.random.Generator``;
an optional ``allowed`` mask (an organ constraint such as the lung fields) keeps the hole inside.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
from scipy import ndimage as ndi

from ..errors import SynthsegError


def stroke_mask(shape, rng: np.random.Generator, max_strokes: int = 4,
                max_width_frac: float = 0.08, max_len_frac: float = 0.4) -> np.ndarray:
    """Random free-form brush strokes (as in DeepFill v2's training masks)."""
    h, w = shape
    canvas = np.zeros((h, w), np.uint8)
    size = min(h, w)
    for _ in range(int(rng.integers(1, max_strokes + 1))):
        y, x = float(rng.uniform(0, h)), float(rng.uniform(0, w))
        width = int(max(2, rng.uniform(0.02, max_width_frac) * size))
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(2, 6))):
            angle += rng.normal(0, 0.8)
            length = rng.uniform(0.05, max_len_frac) * size
            y2 = float(np.clip(y + length * np.sin(angle), 0, h - 1))
            x2 = float(np.clip(x + length * np.cos(angle), 0, w - 1))
            cv2.line(canvas, (int(x), int(y)), (int(x2), int(y2)), 1, width)
            y, x = y2, x2
    return canvas.astype(bool)


def box_mask(shape, rng: np.random.Generator, min_frac: float = 0.1,
             max_frac: float = 0.5) -> np.ndarray:
    """One axis-aligned rectangle (the TUM/AOT-GAN central-box setting is a special case)."""
    h, w = shape
    bh = int(max(2, rng.uniform(min_frac, max_frac) * h))
    bw = int(max(2, rng.uniform(min_frac, max_frac) * w))
    y = int(rng.integers(0, max(1, h - bh)))
    x = int(rng.integers(0, max(1, w - bw)))
    m = np.zeros((h, w), bool)
    m[y:y + bh, x:x + bw] = True
    return m


def blob_mask(shape, rng: np.random.Generator, radius: Optional[float] = None,
              centre: Optional[Tuple[float, float]] = None, irregularity: float = 0.25,
              min_radius: float = 3.0, max_radius_frac: float = 0.2) -> np.ndarray:
    """A lesion-shaped blob: a circle with a smooth random radial perturbation (lobulation).

    Parameters
    ----------
    radius : float, optional
        Mean radius in pixels; random in [min_radius, max_radius_frac * min(shape)] otherwise.
    centre : (row, col), optional
        Random (keeping the blob inside the image) otherwise.
    irregularity : float
        Relative amplitude of the radial harmonics (0 = circle).
    """
    h, w = shape
    if radius is None:
        radius = float(rng.uniform(min_radius, max(min_radius + 1, max_radius_frac * min(h, w))))
    if centre is None:
        r = min(radius * 1.3, 0.49 * min(h, w))
        centre = (rng.uniform(r, h - r), rng.uniform(r, w - r))
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    dy, dx = yy - centre[0], xx - centre[1]
    theta = np.arctan2(dy, dx)
    rad = np.ones_like(theta)
    for k in (2, 3, 5):
        rad += irregularity / k * rng.uniform(-1, 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(dy, dx) <= radius * rad


def outpaint_mask(shape, box: Sequence[int], margin: int = 8) -> np.ndarray:
    """Mask of everything outside ``box`` grown by ``margin`` pixels (LINOP outpainting).

    Parameters
    ----------
    box : (row0, col0, row1, col1)
        The lesion's bounding box (end exclusive), pixels.
    """
    h, w = shape
    r0, c0, r1, c1 = (int(v) for v in box)
    if max(r0, 0) >= min(r1, h) or max(c0, 0) >= min(c1, w):
        raise SynthsegError(f"the box {tuple(box)} lies off the {h}x{w} image; "
                            "give a box inside the image")
    r0, c0 = max(0, r0 - margin), max(0, c0 - margin)
    r1, c1 = min(h, r1 + margin), min(w, c1 + margin)
    m = np.ones((h, w), bool)
    m[r0:r1, c0:c1] = False
    return m


def mask_bbox(mask: np.ndarray) -> Tuple[int, int, int, int]:
    """(row0, col0, row1, col1) of a 2D mask's True pixels (end exclusive)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise SynthsegError("the mask is empty; draw the region first")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def random_training_mask(shape, rng: np.random.Generator, allowed: Optional[np.ndarray] = None,
                         kinds: Sequence[str] = ("stroke", "box", "blob"),
                         weights: Sequence[float] = (0.3, 0.2, 0.5),
                         max_tries: int = 10) -> np.ndarray:
    """A training hole of a random kind, kept inside ``allowed`` and never empty or full.

    Falls back to a small blob at an allowed pixel if the constraint clips every try away.
    """
    p = np.asarray(weights, float)
    p /= p.sum()
    n_allowed = None if allowed is None else int(np.count_nonzero(allowed))
    for _ in range(max_tries):
        kind = kinds[int(rng.choice(len(kinds), p=p))]
        if kind == "stroke":
            m = stroke_mask(shape, rng)
        elif kind == "box":
            m = box_mask(shape, rng)
        else:
            m = blob_mask(shape, rng)
        if allowed is not None:
            m &= allowed
        n = int(np.count_nonzero(m))
        if n >= 4 and n < 0.7 * m.size:
            return m
    if allowed is not None and n_allowed:
        ys, xs = np.nonzero(allowed)
        i = int(rng.integers(len(ys)))
        m = blob_mask(shape, rng, radius=max(3.0, 0.05 * min(shape)), centre=(ys[i], xs[i]))
        m &= allowed
        if m.any():
            return m
    return blob_mask(shape, rng, radius=max(3.0, 0.1 * min(shape)))


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Binary dilation by a disc of ``pixels`` radius (0 = unchanged)."""
    if pixels <= 0:
        return mask.copy()
    r = int(pixels)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return ndi.binary_dilation(mask, structure=(yy ** 2 + xx ** 2) <= r * r)
