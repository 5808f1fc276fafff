"""Gradient-domain (Poisson) blending of a lesion patch into a 2D image or a 3D volume.

The problem is the one OpenCV's ``seamlessClone`` solves (Pérez et al. 2003), posed in native
intensities (float, 16-bit, negative HU) and in n dimensions with anisotropic spacing:

* The region of interest (ROI) is the bounding box of the mask plus ``margin`` pixels
  (clipped to the image), then grown into the target so that every transform length is fast
  (see :func:`blend_roi`).
* The guidance field lives on the edges between neighbouring pixels. An edge takes the
  *source* difference when at least one of its two pixels is in the mask and both lie in the
  patch; every other edge takes the *target* difference. With ``mixed=True`` a mask edge
  takes whichever of the two differences is larger in magnitude (Pérez' mixed gradients).
* The pixels on the ROI border keep their target values (Dirichlet boundary); the interior
  solves ``sum_k (f[p+e_k] - 2 f[p] + f[p-e_k]) / h_k**2 = div v`` with ``h_k`` the spacing
  along axis ``k`` (mm).

Because target differences are used outside the mask, the solution is written as the target
plus a correction ``u`` that is zero on the ROI border and whose right-hand side is non-zero
only around the mask. ``u`` is found exactly (up to float32 round-off) by the discrete sine
transform (DST-I), which diagonalises the Dirichlet Laplacian of a box. Everything is float32.

OpenCV's ``seamlessClone`` only takes 8-bit 3-channel images; it is used solely as the
benchmark reference (``benchmarks/bench_poisson.py``), never here.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import numpy as np
from scipy import fft as sfft

from ..errors import SynthsegError

__all__ = ["poisson_blend", "poisson_blend_region", "blend_roi", "solve_poisson_dirichlet"]

# Transforms smaller than this run faster on one thread than with the pool's overhead
# (measured on 2 cores: 256x256 float32 DST-I is ~equal, smaller is slower threaded).
_THREAD_MIN_ELEMENTS = 60_000


# --------------------------------------------------------------------------------------------
# Low-level solver
# --------------------------------------------------------------------------------------------


def _fast_dst_length(n: int) -> int:
    """Smallest ``m >= n`` whose DST-I is fast (pocketfft runs DST-I of length m as a real FFT
    of length 2(m+1), so m+1 must be 5-smooth)."""
    return int(sfft.next_fast_len(n + 1, real=True)) - 1


@functools.lru_cache(maxsize=16)
def _inverse_eigenvalues(shape: tuple[int, ...], spacing: tuple[float, ...]) -> np.ndarray:
    """1 / eigenvalues of the Dirichlet Laplacian on ``shape`` interior points, with the
    normalisation of two unnormalised DST-I folded in (float32, read-only, cached per shape)."""
    lam = np.zeros(shape, dtype=np.float64)
    scale = 1.0
    for k, (n, h) in enumerate(zip(shape, spacing)):
        j = np.arange(1, n + 1, dtype=np.float64)
        lam_k = (2.0 * np.cos(np.pi * j / (n + 1)) - 2.0) / (h * h)
        lam += lam_k.reshape((n,) + (1,) * (len(shape) - k - 1))
        scale *= 2.0 * (n + 1)  # DST-I applied twice multiplies by 2(n+1) per axis
    inv = (1.0 / (lam * scale)).astype(np.float32)
    inv.setflags(write=False)
    return inv


def _workers(size: int, workers: Optional[int]) -> int:
    if workers is not None:
        return workers
    return -1 if size >= _THREAD_MIN_ELEMENTS else 1


def _solve_zero_dirichlet(rhs: np.ndarray, spacing: tuple[float, ...], workers: Optional[int]) -> np.ndarray:
    """Solve ``L u = rhs`` on the interior points ``rhs`` (float32, C-contiguous, consumed)
    with ``u = 0`` just outside them. Returns ``u`` (float32, same shape)."""
    w = _workers(rhs.size, workers)
    coef = sfft.dstn(rhs, type=1, workers=w, overwrite_x=True)
    coef *= _inverse_eigenvalues(rhs.shape, spacing)
    return sfft.dstn(coef, type=1, workers=w, overwrite_x=True)


def _check_spacing(spacing: Optional[Sequence[float]], ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    try:
        sp = tuple(float(s) for s in spacing)
    except TypeError:
        raise SynthsegError(f"spacing must be a sequence of {ndim} positive numbers (mm), got {spacing!r}") from None
    if len(sp) != ndim:
        raise SynthsegError(f"spacing has {len(sp)} values but the image has {ndim} axes; give one spacing (mm) per axis")
    if not all(np.isfinite(s) and s > 0 for s in sp):
        raise SynthsegError(f"spacing must be positive and finite (mm), got {sp}")
    return sp


def solve_poisson_dirichlet(
    rhs: np.ndarray,
    boundary: np.ndarray,
    spacing: Optional[Sequence[float]] = None,
    *,
    workers: Optional[int] = None,
) -> np.ndarray:
    """Solve the discrete Poisson equation on a box with Dirichlet boundary values.

    Finds ``f`` with ``f = boundary`` on the outermost layer of the array and, at every
    interior point ``p``, ``sum_k (f[p+e_k] - 2 f[p] + f[p-e_k]) / spacing[k]**2 = rhs[p]``.
    Solved exactly by DST-I in float32.

    Parameters
    ----------
    rhs : ndarray, shape (n_0, ..., n_{d-1})
        Right-hand side (the discrete Laplacian the solution must have), in intensity units
        per mm^2. Values on the outermost layer are ignored. Every ``n_k >= 3``.
    boundary : ndarray, same shape as ``rhs``
        Boundary values (intensity, e.g. HU); only the outermost layer is read.
    spacing : sequence of float, optional
        Pixel spacing per axis in mm, numpy axis order. Default 1 for every axis.
    workers : int, optional
        Threads for ``scipy.fft``; default picks one thread for small problems, all otherwise.

    Returns
    -------
    ndarray of float32, the same shape as ``rhs``.

    Notes
    -----
    Interior lengths ``n_k - 2`` with ``n_k - 1`` not 5-smooth are slow (a prime costs several
    times more); :func:`poisson_blend` avoids them by growing its ROI, this function does not.
    """
    rhs = np.asarray(rhs)
    boundary = np.asarray(boundary)
    if rhs.shape != boundary.shape:
        raise SynthsegError(f"rhs shape {rhs.shape} differs from boundary shape {boundary.shape}; give arrays of one shape")
    if rhs.ndim == 0 or min(rhs.shape) < 3:
        raise SynthsegError(f"the box {rhs.shape} has no interior; every axis needs at least 3 points")
    sp = _check_spacing(spacing, rhs.ndim)
    inner = (slice(1, -1),) * rhs.ndim
    f = np.array(boundary, dtype=np.float32, copy=True)
    b = np.array(rhs[inner], dtype=np.float32, copy=True)
    if not (np.isfinite(b).all() and np.isfinite(f).all()):
        raise SynthsegError("rhs or boundary contains NaN or infinite values; fill them before solving")
    # Move the known border values to the right-hand side.
    f[inner] = 0.0
    for k in range(f.ndim):
        lo = [slice(1, -1)] * f.ndim
        hi = [slice(1, -1)] * f.ndim
        lo[k] = slice(0, -2)
        hi[k] = slice(2, None)
        b -= (f[tuple(lo)] + f[tuple(hi)]) * np.float32(1.0 / (sp[k] * sp[k]))
    f[inner] = _solve_zero_dirichlet(b, sp, workers)
    return f


# --------------------------------------------------------------------------------------------
# Region of interest
# --------------------------------------------------------------------------------------------


def _grow_axis(lo: int, hi: int, size: int, fast: bool) -> tuple[int, int]:
    """Grow [lo, hi) inside [0, size) so that its interior length hi-lo-2 is a fast DST-I
    length; leave it as it is when the image is too small for that."""
    n = hi - lo
    if not fast or n < 3:
        return lo, hi
    want = _fast_dst_length(n - 2) + 2
    if want > size:
        return lo, hi
    extra = want - n
    lo2 = lo - extra // 2
    hi2 = hi + (extra - extra // 2)
    if lo2 < 0:
        hi2 -= lo2
        lo2 = 0
    if hi2 > size:
        lo2 -= hi2 - size
        hi2 = size
    return lo2, hi2


def _placement(target_shape, patch_shape, offset):
    """Clip the patch placed at ``offset`` to the image: (image slices, patch slices)."""
    img, pat = [], []
    for o, p, s in zip(offset, patch_shape, target_shape):
        a, b = max(o, 0), min(o + p, s)
        if b <= a:
            return None
        img.append(slice(a, b))
        pat.append(slice(a - o, b - o))
    return tuple(img), tuple(pat)


def _mask_bbox(mask: np.ndarray) -> Optional[tuple[tuple[int, int], ...]]:
    if not mask.any():
        return None
    box = []
    for k in range(mask.ndim):
        other = tuple(i for i in range(mask.ndim) if i != k)
        nz = np.flatnonzero(mask.any(axis=other) if other else mask)
        box.append((int(nz[0]), int(nz[-1]) + 1))
    return tuple(box)


def blend_roi(
    target_shape: Sequence[int],
    mask: np.ndarray,
    *,
    offset: Optional[Sequence[int]] = None,
    margin: int = 1,
    fast_lengths: bool = True,
) -> tuple[slice, ...]:
    """The box of the target that :func:`poisson_blend` solves on.

    The bounding box of the mask (placed at ``offset`` and clipped to the image) plus
    ``margin`` pixels, clipped to the image. With ``fast_lengths`` every axis is then grown
    into the target by a few pixels (about 5 % at most for lengths above 100) so that its
    interior length ``n - 2`` has ``n - 1`` 5-smooth, the fast case of DST-I; a prime length
    would cost several times more. The blend depends (slightly) on the ROI, so a reference
    solve must use this same box; growth stops at the image border.

    Returns
    -------
    tuple of slice, one per axis, numpy order (indices into the target).
    """
    target_shape = tuple(int(s) for s in target_shape)
    mask = np.asarray(mask)
    offset = _check_offset(offset, mask.shape, target_shape)
    _check_margin(margin)
    placed = _placement(target_shape, mask.shape, offset)
    if placed is None:
        raise SynthsegError(f"the mask at offset {offset} lies entirely off the image {target_shape}; move the lesion inside")
    img_sl, pat_sl = placed
    bbox = _mask_bbox(mask[pat_sl].astype(bool, copy=False))
    if bbox is None:
        raise SynthsegError("the part of the mask inside the image is empty; draw a lesion mask or move it inside the image")
    roi = []
    for (a, b), sl, size in zip(bbox, img_sl, target_shape):
        lo = max(sl.start + a - margin, 0)
        hi = min(sl.start + b + margin, size)
        roi.append(slice(*_grow_axis(lo, hi, size, fast_lengths)))
    return tuple(roi)


def _check_margin(margin) -> None:
    if not isinstance(margin, (int, np.integer)) or margin < 1:
        raise SynthsegError(f"margin must be an integer >= 1 pixel, got {margin!r}")


def _check_offset(offset, patch_shape, target_shape) -> tuple[int, ...]:
    if len(patch_shape) != len(target_shape):
        raise SynthsegError(
            f"the lesion patch has {len(patch_shape)} axes but the target has {len(target_shape)}; "
            "give a patch with the target's dimensionality"
        )
    if offset is None:
        if tuple(patch_shape) != tuple(target_shape):
            raise SynthsegError(
                f"patch shape {tuple(patch_shape)} differs from target shape {tuple(target_shape)}; "
                "pass offset= (patch corner in the target) or full-size source and mask"
            )
        return (0,) * len(target_shape)
    try:
        off = tuple(int(o) for o in offset)
    except (TypeError, ValueError):
        raise SynthsegError(f"offset must be a sequence of {len(target_shape)} integers, got {offset!r}") from None
    if len(off) != len(target_shape):
        raise SynthsegError(f"offset has {len(off)} values but the target has {len(target_shape)} axes; give one per axis")
    return off


# --------------------------------------------------------------------------------------------
# Blending
# --------------------------------------------------------------------------------------------


def poisson_blend_region(
    target: np.ndarray,
    source: np.ndarray,
    mask: np.ndarray,
    *,
    offset: Optional[Sequence[int]] = None,
    spacing: Optional[Sequence[float]] = None,
    mixed: bool = False,
    margin: int = 1,
    fast_lengths: bool = True,
    workers: Optional[int] = None,
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Blend and return only the changed box: ``(roi, values)`` with ``values`` float32 of the
    ROI's shape, to be written as ``out[roi] = values``. Same parameters as
    :func:`poisson_blend`; avoids copying the whole image (useful for big volumes and for
    placing many lesions into one array)."""
    target = np.asarray(target)
    source = np.asarray(source)
    mask = np.asarray(mask)
    if target.ndim == 0:
        raise SynthsegError("the target is a scalar; give a 2D image or a 3D volume")
    for name, arr in (("target", target), ("source", source)):
        if arr.dtype.kind not in "iuf":
            raise SynthsegError(f"{name} has dtype {arr.dtype}; give real-valued intensities (float or integer)")
    if source.shape != mask.shape:
        raise SynthsegError(f"source shape {source.shape} differs from mask shape {mask.shape}; give a mask for every source pixel")
    sp = _check_spacing(spacing, target.ndim)
    roi = blend_roi(target.shape, mask, offset=offset, margin=margin, fast_lengths=fast_lengths)
    off = _check_offset(offset, mask.shape, target.shape)
    img_sl, pat_sl = _placement(target.shape, mask.shape, off)
    if any(r.stop - r.start < 3 for r in roi):
        raise SynthsegError(
            f"the blending box {tuple(r.stop - r.start for r in roi)} is thinner than 3 pixels along an axis "
            "(image too small there); use a larger image or a 2D blend"
        )

    t_roi = np.array(target[roi], dtype=np.float32, copy=True)
    if not np.isfinite(t_roi).all():
        raise SynthsegError("the target has NaN or infinite values around the lesion; fill them before blending")

    # Box Q: mask bounding box +1 (every edge touching the mask), inside the patch and image.
    m_clip = mask[pat_sl].astype(bool, copy=False)
    bbox = _mask_bbox(m_clip)
    assert bbox is not None, "blend_roi refuses a mask with nothing inside the image"
    q_pat_axes: list[slice] = []
    q_roi_axes: list[slice] = []
    for (a, b), ps, isl, r in zip(bbox, pat_sl, img_sl, roi):
        qa = max(a - 1, 0)
        qb = min(b + 1, ps.stop - ps.start)
        q_pat_axes.append(slice(ps.start + qa, ps.start + qb))
        q_roi_axes.append(slice(isl.start + qa - r.start, isl.start + qb - r.start))
    q_pat, q_roi = tuple(q_pat_axes), tuple(q_roi_axes)

    s_q = np.asarray(source[q_pat], dtype=np.float32)
    if not np.isfinite(s_q).all():
        raise SynthsegError("the source has NaN or infinite values near the mask; fill them before blending")
    m_q = np.asarray(mask[q_pat]).astype(bool, copy=False)
    t_q = t_roi[q_roi]

    # Divergence of (guidance - target gradient), on the ROI; non-zero only around the mask.
    rhs = np.zeros(t_roi.shape, dtype=np.float32)
    rhs_q = rhs[q_roi]
    for k in range(target.ndim):
        if s_q.shape[k] < 2:
            continue
        sd = np.diff(s_q, axis=k)
        td = np.diff(t_q, axis=k)
        lo_axes = [slice(None)] * target.ndim
        hi_axes = [slice(None)] * target.ndim
        lo_axes[k] = slice(0, -1)
        hi_axes[k] = slice(1, None)
        lo, hi = tuple(lo_axes), tuple(hi_axes)
        edge = m_q[lo] | m_q[hi]
        if mixed:
            edge &= np.abs(sd) > np.abs(td)
        d = sd
        d -= td
        d *= np.float32(1.0 / (sp[k] * sp[k]))
        d[~edge] = 0.0
        rhs_q[lo] += d
        rhs_q[hi] -= d

    inner = (slice(1, -1),) * target.ndim
    u = _solve_zero_dirichlet(np.ascontiguousarray(rhs[inner]), sp, workers)
    t_roi[inner] += u
    return roi, t_roi


def _cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float32 -> ``dtype``; integers are rounded and clipped to the dtype's range."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    return values.astype(dtype, copy=False)


def poisson_blend(
    target: np.ndarray,
    source: np.ndarray,
    mask: np.ndarray,
    *,
    offset: Optional[Sequence[int]] = None,
    spacing: Optional[Sequence[float]] = None,
    mixed: bool = False,
    margin: int = 1,
    fast_lengths: bool = True,
    dtype=None,
    workers: Optional[int] = None,
) -> np.ndarray:
    """Paste ``source`` into ``target`` under ``mask`` by gradient-domain (Poisson) blending.

    Works on 2D images (CXR) and 3D volumes (CT in HU, MRI) alike, in native intensities.
    Inputs are never modified.

    Parameters
    ----------
    target : ndarray, shape (n_0, ..., n_{d-1})
        Image or volume receiving the lesion (float, 16-bit, negative HU, ...).
    source : ndarray
        Lesion patch, in the target's intensity units (e.g. HU). Same shape as ``mask``.
    mask : ndarray of bool
        Lesion pixels within the patch. Parts outside the image are clipped away.
    offset : sequence of int, optional
        Index in the target of the patch's first pixel (``patch[0, 0, ...]``), numpy axis
        order; may be negative or overhang the image (clipped). ``None``: ``source`` and
        ``mask`` have the target's shape.
    spacing : sequence of float, optional
        Pixel spacing in mm per axis, numpy order (e.g. ``(2.5, 0.7, 0.7)`` for z, y, x).
        The Laplacian weights axis ``k`` by ``1 / spacing[k]**2``. Default isotropic.
    mixed : bool
        Mixed gradients: on mask edges keep the stronger of the source and target
        differences, which preserves target texture (vessels, ribs) through the lesion.
    margin : int
        Pixels (>= 1) added around the mask's bounding box to form the ROI.
    fast_lengths : bool
        Grow the ROI into the target to fast transform lengths (see :func:`blend_roi`).
    dtype : numpy dtype, optional
        Output dtype; default the target's. Integer outputs are rounded and clipped to the
        dtype's range; ask for ``np.float32`` to keep out-of-range values.
    workers : int, optional
        Threads for ``scipy.fft``; default: one for small ROIs, all for large ones.

    Returns
    -------
    ndarray
        A new array: ``target`` with the ROI (:func:`blend_roi`) replaced by the blend.
        Pixels outside the ROI are bit-identical to the target's. Pixels on the mask that lie
        on the ROI border (a mask touching the image border) keep target values.

    Raises
    ------
    SynthsegError
        Empty mask, mask off the image, shape or dimensionality mismatch, NaN/inf near the
        lesion, bad spacing, offset or margin.
    """
    target = np.asarray(target)
    out_dtype = target.dtype if dtype is None else np.dtype(dtype)
    if out_dtype.kind not in "iuf":
        raise SynthsegError(f"cannot return dtype {out_dtype}; ask for a float or integer dtype")
    roi, values = poisson_blend_region(
        target, source, mask, offset=offset, spacing=spacing, mixed=mixed,
        margin=margin, fast_lengths=fast_lengths, workers=workers,
    )
    out = np.array(target, dtype=out_dtype, copy=True)
    out[roi] = _cast_like(values, out_dtype)
    return out
