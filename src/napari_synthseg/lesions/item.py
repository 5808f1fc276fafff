"""The lesion library item: what every lesion source produces and the renderer consumes.

Intensity convention
--------------------
A :class:`LesionPatch` carries two layers on the same grid:

``intensity`` (always present)
    The lesion's **residual / contrast**: the value to *add* to the healthy background of a
    target image at the same physical position, in the target's physical ``units``. Zero (or
    close to it) where the lesion has no influence. This is what the TUM report extracts
    (original minus healthy fill) and what NODE21 pastes (a projected CT nodule whose
    surroundings were removed), and it is the layer for additive blending.

    * CT (``units="HU"``): HU difference to the local background (lung parenchyma), e.g. a
      solid nodule in lung is about +850 HU inside.
    * CXR from CT projection (``units="attenuation"``): residual attenuation line integral
      ``∫ (mu_lesion - mu_background) dl`` (dimensionless, ``-ln`` of the transmission
      ratio). A renderer maps it to image grey values with a gain (log-domain addition).
    * Extracted (``units="image"`` unless told otherwise): original minus healthy fill, in the
      grey values of the image it came from.

``absolute`` (optional)
    The lesion *with* its own background in absolute units (HU for CT; the projected total
    attenuation of the source slab for CXR; the original pixels for an extracted lesion), for
    alpha compositing or Poisson (gradient-domain) blending. ``absolute - intensity`` is the
    background the lesion was recorded on (:attr:`LesionPatch.background`).

``attachment`` (optional)
    Opacity (0..1) of structures that come along with the lesion *outside* its mask: the vessel
    stubs of a transplanted real nodule kept with ``attachments="keep"``
    (:func:`~napari_synthseg.lesions.attachments.apply_attachments`). The renderer blends
    them like the lesion (alpha at least this opacity; Poisson takes them in); ``intensity``
    and ``absolute`` hold their values. None: nothing outside the mask comes along.

``mask`` is the exact lesion mask (bool, same shape). ``spacing`` is in mm per pixel in numpy
axis order ((y, x) for 2D, (z, y, x) for 3D). 3D patches from CT are in LPS orientation:
axis 0 runs inferior→superior, axis 1 anterior→posterior, axis 2 right→left (SimpleITK /
DICOM convention after ``DICOMOrient(..., "LPS")``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import ndimage as ndi

from ..errors import SynthsegError

KINDS = ("solid", "part-solid", "ground-glass", "ct-nodule", "extracted")


def _as_spacing(spacing: float | Sequence[float], ndim: int, what: str = "spacing") -> tuple[float, ...]:
    # through numpy on both branches: np.isscalar narrows only its true branch for mypy, and a
    # spacing may come as a numpy array (not a Sequence)
    if np.isscalar(spacing):
        spacing = (float(np.asarray(spacing, dtype=float)),) * ndim
    else:
        spacing = tuple(float(s) for s in np.asarray(spacing, dtype=float))
    if len(spacing) != ndim:
        raise SynthsegError(
            f"{what} has {len(spacing)} values but the lesion is {ndim}D; give one value per axis in mm"
        )
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise SynthsegError(f"{what} {spacing} must be positive finite mm values")
    return spacing


@dataclass(eq=False)  # arrays make field-wise == ambiguous; compare arrays explicitly
class LesionPatch:
    """A lesion on its own small grid (see the module docstring for the conventions).

    Parameters
    ----------
    intensity : ndarray of float32, (y, x) or (z, y, x)
        Residual / contrast to add to a background, in ``units``.
    mask : ndarray of bool, same shape
        Exact lesion mask.
    spacing : tuple of float
        mm per pixel in numpy axis order.
    kind : str
        'solid', 'part-solid', 'ground-glass', 'ct-nodule', 'extracted' or a custom tag.
    provenance : dict
        Source file, sha256, diameter_mm, seed, parameters, and a ``history`` of operations.
    absolute : ndarray of float32 or None
        The lesion with its recorded background in absolute ``units`` (HU, attenuation, ...).
    units : str
        'HU', 'attenuation' or 'image'.
    attachment : ndarray of float32 or None
        Opacity (0..1) of kept attached structures outside the mask (vessel stubs), or None.
    """

    intensity: np.ndarray
    mask: np.ndarray
    spacing: tuple
    kind: str = "extracted"
    provenance: dict = field(default_factory=dict)
    absolute: np.ndarray | None = None
    units: str = "HU"
    attachment: np.ndarray | None = None

    def __post_init__(self) -> None:
        intensity = np.asarray(self.intensity)
        if intensity.ndim not in (2, 3):
            raise SynthsegError(
                f"lesion intensity must be 2D (y, x) or 3D (z, y, x), got shape {intensity.shape}"
            )
        if not np.issubdtype(intensity.dtype, np.number) or np.iscomplexobj(intensity):
            raise SynthsegError(f"lesion intensity must be real numbers, got dtype {intensity.dtype}")
        intensity = np.ascontiguousarray(intensity, dtype=np.float32)
        if not np.isfinite(intensity).all():
            raise SynthsegError("lesion intensity contains NaN or infinite values; clean the source image first")
        mask = np.asarray(self.mask)
        if mask.shape != intensity.shape:
            raise SynthsegError(
                f"lesion mask shape {mask.shape} does not match intensity shape {intensity.shape}"
            )
        if mask.dtype != bool:
            if not np.isfinite(mask).all():
                raise SynthsegError("lesion mask contains NaN values; give a 0/1 label image")
            mask = mask > 0
        if not mask.any():
            raise SynthsegError("lesion mask is empty; draw or load a mask with at least one lesion pixel")
        self.intensity = intensity
        self.mask = np.ascontiguousarray(mask)
        self.spacing = _as_spacing(self.spacing, intensity.ndim)
        if self.absolute is not None:
            absolute = np.ascontiguousarray(self.absolute, dtype=np.float32)
            if absolute.shape != intensity.shape:
                raise SynthsegError(
                    f"lesion absolute patch shape {absolute.shape} does not match intensity shape {intensity.shape}"
                )
            if not np.isfinite(absolute).all():
                raise SynthsegError("lesion absolute patch contains NaN or infinite values")
            self.absolute = absolute
        if self.attachment is not None:
            attachment = np.ascontiguousarray(self.attachment, dtype=np.float32)
            if attachment.shape != intensity.shape:
                raise SynthsegError(
                    f"lesion attachment shape {attachment.shape} does not match intensity shape {intensity.shape}"
                )
            if not np.isfinite(attachment).all():
                raise SynthsegError("lesion attachment contains NaN or infinite values")
            self.attachment = np.clip(attachment, 0.0, 1.0)
        self.kind = str(self.kind)
        self.units = str(self.units)
        self.provenance = dict(self.provenance or {})

    # ------------------------------------------------------------------ properties
    @property
    def ndim(self) -> int:
        return self.intensity.ndim

    @property
    def shape(self) -> tuple:
        return self.intensity.shape

    @property
    def extent_mm(self) -> tuple:
        """Physical size of the patch grid in mm per axis."""
        return tuple(n * s for n, s in zip(self.shape, self.spacing))

    @property
    def background(self) -> np.ndarray | None:
        """The background the lesion was recorded on (``absolute - intensity``), or None."""
        if self.absolute is None:
            return None
        return self.absolute - self.intensity

    # ------------------------------------------------------------------ measurements
    def diameter_mm(self, method: str = "equivalent") -> float:
        """Lesion diameter in mm from the mask.

        Parameters
        ----------
        method : {'equivalent', 'extent'}
            'equivalent': diameter of the sphere (3D) or circle (2D) with the mask's volume or
            area. 'extent': largest bounding-box side in mm (what NODE21's ``get_nodule_diameter``
            measures on the projected mask).
        """
        return mask_diameter_mm(self.mask, self.spacing, method)

    def bbox(self) -> tuple:
        """Slices of the mask's bounding box."""
        return ndi.find_objects(self.mask.astype(np.uint8))[0]

    # ------------------------------------------------------------------ derivation
    def _derive(self, op: dict, **changes: Any) -> LesionPatch:
        provenance = copy.deepcopy(self.provenance)
        provenance.setdefault("history", []).append(op)
        fields: dict[str, Any] = dict(
            intensity=self.intensity,
            mask=self.mask,
            spacing=self.spacing,
            kind=self.kind,
            provenance=provenance,
            absolute=self.absolute,
            units=self.units,
            attachment=self.attachment,
        )
        fields.update(changes)
        return LesionPatch(**fields)

    def resample_to(self, spacing: float | Sequence[float], order: int = 1) -> LesionPatch:
        """Resample to a new pixel spacing (mm) keeping the physical size.

        Intensity uses spline ``order`` (1: linear) with Gaussian anti-aliasing when shrinking;
        the mask uses thresholded linear interpolation (>= 0.5), which keeps its size in mm
        better than nearest neighbour.
        """
        spacing = _as_spacing(spacing, self.ndim, "target spacing")
        if spacing == self.spacing:
            return self._derive({"op": "resample_to", "spacing": list(spacing)})
        intensity = resample_array(self.intensity, self.spacing, spacing, order=order, mode="constant")
        absolute = None
        if self.absolute is not None:
            absolute = resample_array(self.absolute, self.spacing, spacing, order=order, mode="nearest")
        mask = resample_mask(self.mask, self.spacing, spacing)
        attachment = None
        if self.attachment is not None:
            attachment = resample_array(self.attachment, self.spacing, spacing, order=1, mode="constant")
        return self._derive(
            {"op": "resample_to", "spacing": list(spacing), "order": order},
            intensity=intensity,
            mask=mask,
            spacing=spacing,
            absolute=absolute,
            attachment=attachment,
        )

    def transform(
        self,
        scale: float = 1.0,
        rotation_deg: float | Sequence[float] = 0.0,
        axes: tuple[int, int] = (-2, -1),
        order: int = 1,
        spacing: float | Sequence[float] | None = None,
    ) -> LesionPatch:
        """Scale (physical size) and rotate about the patch centre, optionally onto a new spacing.

        Parameters
        ----------
        scale : float
            Size factor (> 0): 1.5 makes the lesion 50 % larger in mm.
        rotation_deg : float or sequence of 3 floats
            2D: angle in degrees (counter-clockwise as displayed with row 0 at the top).
            3D: a float rotates in the plane of ``axes``; three floats rotate about the z, y and
            x axes in that order (each in the plane of the two other axes).
        axes : pair of int
            Plane of a single-angle rotation (default the last two axes: in-plane for 2D,
            axial for 3D).
        order : int
            Spline order for intensities; the mask is thresholded linear.
        spacing : float or sequence, optional
            Output pixel spacing (mm). Giving it here instead of calling :meth:`resample_to`
            afterwards interpolates (and thresholds the mask) once instead of twice, which keeps
            a resized 3D lesion sharper. Shrinking is anti-aliased as in :meth:`resample_to`.
        """
        if not (math.isfinite(scale) and scale > 0):
            raise SynthsegError(f"scale must be a positive number, got {scale}")
        rot = rotation_matrix(self.ndim, rotation_deg, axes)
        forward = rot * float(scale)  # physical (mm) coordinates about the centre
        sp = np.asarray(self.spacing)
        sp_out = sp if spacing is None else np.asarray(_as_spacing(spacing, self.ndim, "target spacing"))
        shape_in = np.asarray(self.shape)
        half_in = shape_in * sp / 2.0
        # the output grid covers the transformed corners of the input box
        corners = np.array(np.meshgrid(*[[-h, h] for h in half_in], indexing="ij")).reshape(self.ndim, -1)
        half_out = np.abs(forward @ corners).max(axis=1)
        shape_out = np.maximum(1, np.ceil(2 * half_out / sp_out - 1e-6)).astype(int)
        half_out = shape_out * sp_out / 2.0
        inverse = np.linalg.inv(forward)
        # index_in = (inv @ ((o + .5) * sp_out - half_out) + half_in) / sp - .5
        matrix = np.diag(1.0 / sp) @ inverse @ np.diag(sp_out)
        offset = (inverse @ (0.5 * sp_out - half_out) + half_in) / sp - 0.5
        kw = dict(matrix=matrix, offset=offset, output_shape=tuple(shape_out))
        # One output pixel spans |matrix[i, j]| input pixels along input axis i: blur the input
        # to that footprint before sampling it more coarsely (same rule as resample_array).
        sigma = np.maximum(0.0, (np.abs(matrix).max(axis=1) - 1.0) / 2.0)
        smooth = bool(sigma.any())

        def sample(values: np.ndarray, mode: str) -> np.ndarray:
            src = ndi.gaussian_filter(values, sigma, mode=mode) if smooth else values
            return ndi.affine_transform(src, order=order, mode=mode, cval=0.0, **kw)

        intensity = sample(self.intensity, "constant")
        absolute = None if self.absolute is None else sample(self.absolute, "nearest")
        mask_f = ndi.affine_transform(self.mask.astype(np.float32), order=1, mode="constant", cval=0.0, **kw)
        mask = _threshold_mask(mask_f)
        op = {"op": "transform", "scale": float(scale), "rotation_deg": np.atleast_1d(rotation_deg).tolist(),
              "axes": list(axes)}
        attachment = None if self.attachment is None else sample(self.attachment, "constant")
        changes: dict[str, Any] = dict(intensity=intensity.astype(np.float32), mask=mask, absolute=absolute,
                                       attachment=attachment)
        if spacing is not None:
            op["spacing"] = sp_out.tolist()
            changes["spacing"] = tuple(float(v) for v in sp_out)
        return self._derive(op, **changes)

    def support(self) -> np.ndarray:
        """Where the lesion can change an image: its mask, non-zero residual and attachments."""
        support = self.mask | (self.intensity != 0)
        if self.attachment is not None:
            support |= self.attachment > 0
        return support

    def crop_to_mask(self, margin_mm: float = 2.0, support: bool = False) -> LesionPatch:
        """Crop to the mask's bounding box plus ``margin_mm`` on every side.

        ``support=True`` crops around :meth:`support` instead (mask, residual, attachments).
        """
        slices = bbox_with_margin(self.support() if support else self.mask, self.spacing, margin_mm)
        return self._derive(
            {"op": "crop_to_mask", "margin_mm": float(margin_mm)},
            intensity=self.intensity[slices],
            mask=self.mask[slices],
            absolute=None if self.absolute is None else self.absolute[slices],
            attachment=None if self.attachment is None else self.attachment[slices],
        )

    def metadata(self) -> dict:
        """JSON-serialisable description (without the arrays)."""
        return {
            "kind": self.kind,
            "units": self.units,
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "ndim": self.ndim,
            "diameter_mm": round(self.diameter_mm(), 4),
            "extent_diameter_mm": round(self.diameter_mm("extent"), 4),
            "has_absolute": self.absolute is not None,
            "has_attachment": self.attachment is not None,
            "provenance": self.provenance,
        }


# ---------------------------------------------------------------------- helpers
def mask_diameter_mm(mask: np.ndarray, spacing: Sequence[float], method: str = "equivalent") -> float:
    """Diameter in mm of a 2D/3D mask: equivalent circle/sphere or largest bbox side."""
    mask = np.asarray(mask, dtype=bool)
    spacing_mm = np.asarray(spacing, dtype=float)
    if not mask.any():
        raise SynthsegError("cannot measure the diameter of an empty mask")
    if method == "equivalent":
        size = float(mask.sum()) * float(np.prod(spacing_mm))
        if mask.ndim == 2:
            return 2.0 * math.sqrt(size / math.pi)
        if mask.ndim == 3:
            return (6.0 * size / math.pi) ** (1.0 / 3.0)
        raise SynthsegError(f"diameter needs a 2D or 3D mask, got {mask.ndim}D")
    if method == "extent":
        sl = ndi.find_objects(mask.astype(np.uint8))[0]
        return float(max((s.stop - s.start) * sp for s, sp in zip(sl, spacing_mm)))
    raise SynthsegError(f"unknown diameter method {method!r}; use 'equivalent' or 'extent'")


def rotation_matrix(ndim: int, rotation_deg: float | Sequence[float], axes: tuple[int, int] = (-2, -1)) -> np.ndarray:
    """Rotation matrix acting on physical coordinates in numpy axis order."""
    angles = np.atleast_1d(np.asarray(rotation_deg, dtype=float))
    if not np.isfinite(angles).all():
        raise SynthsegError(f"rotation angles must be finite, got {rotation_deg}")

    def plane(a0: int, a1: int, deg: float) -> np.ndarray:
        m = np.eye(ndim)
        t = math.radians(deg)
        c, s = math.cos(t), math.sin(t)
        # counter-clockwise on screen (row 0 at top): axis a1 is x (right), axis a0 is y (down)
        m[a1, a1], m[a1, a0] = c, s
        m[a0, a1], m[a0, a0] = -s, c
        return m

    if angles.size == 1:
        a0, a1 = (ax % ndim for ax in axes)
        if a0 == a1:
            raise SynthsegError(f"rotation axes {axes} must be two different axes")
        return plane(a0, a1, float(angles[0]))
    if ndim == 3 and angles.size == 3:
        # about z (plane y,x), about y (plane z,x), about x (plane z,y)
        return plane(0, 1, angles[2]) @ plane(0, 2, angles[1]) @ plane(1, 2, angles[0])
    raise SynthsegError(
        f"rotation_deg must be one angle, or three angles (about z, y, x) for 3D; got {angles.size} for {ndim}D"
    )


def resample_array(
    array: np.ndarray,
    spacing_in: Sequence[float],
    spacing_out: Sequence[float],
    order: int = 1,
    mode: str = "constant",
    antialias: bool = True,
    prefilter: bool | None = None,
) -> np.ndarray:
    """Resample ``array`` from ``spacing_in`` to exactly ``spacing_out`` (mm), pixel-area grid.

    The first output pixel's outer edge lies on the input's outer edge; the output covers the
    input extent (rounded up to whole pixels). A diagonal affine map keeps the spacing exact,
    which ``zoom`` (integer output shape, implied spacing) does not. ``prefilter`` (default: for
    orders above 1) makes a spline interpolate; without it a cubic B-spline *approximates*:
    smooth, and never overshooting a step (its weights are all positive).
    """
    s_in = np.asarray(spacing_in, dtype=float)
    s_out = np.asarray(spacing_out, dtype=float)
    ratio = s_out / s_in
    shape_out = tuple(int(v) for v in np.maximum(1, np.ceil(np.asarray(array.shape) / ratio - 1e-6)))
    src = np.asarray(array, dtype=np.float32)
    if antialias and (ratio > 1).any():
        sigma = np.maximum(0.0, (ratio - 1.0) / 2.0)
        src = ndi.gaussian_filter(src, sigma, mode="nearest" if mode == "nearest" else "constant")
    out = ndi.affine_transform(
        src, ratio, offset=0.5 * ratio - 0.5, output_shape=shape_out, order=order, mode=mode, cval=0.0,
        prefilter=(order > 1) if prefilter is None else bool(prefilter),
    )
    return out.astype(np.float32, copy=False)


def _threshold_mask(mask_f: np.ndarray) -> np.ndarray:
    mask = mask_f >= 0.5
    if not mask.any():
        # a lesion smaller than half a target pixel keeps its single most covered pixel
        mask = np.zeros(mask_f.shape, bool)
        mask[np.unravel_index(int(np.argmax(mask_f)), mask_f.shape)] = True
    return mask


def resample_mask(mask: np.ndarray, spacing_in: Sequence[float], spacing_out: Sequence[float]) -> np.ndarray:
    """Thresholded-linear resampling of a bool mask (>= 0.5 coverage)."""
    f = resample_array(mask.astype(np.float32), spacing_in, spacing_out, order=1, mode="constant", antialias=False)
    return _threshold_mask(f)


#: Smoothing (input pixels) of a mask's signed distance before it is upsampled: rounds a
#: voxel staircase into the outline it samples, while moving a straight edge by nothing.
SMOOTH_OUTLINE_PX = 0.7


def resample_mask_smooth(mask: np.ndarray, spacing_in: Sequence[float], spacing_out: Sequence[float],
                         smooth_px: float = SMOOTH_OUTLINE_PX) -> np.ndarray:
    """Resample a bool mask through its smoothed signed distance (the outline is not a staircase).

    Thresholded-linear upsampling of a coarse mask keeps its voxel steps (a 1 mm CT nodule
    projected into a 0.14 mm radiograph came out as 7 px stairs). Here the signed distance to
    the border (mm, positive inside, zero half-way between an inside and an outside pixel) is
    smoothed by ``smooth_px`` input pixels, interpolated linearly and cut at zero: the outline
    follows the sampled shape, and a mask that is not upsampled is barely changed.
    """
    mask = np.asarray(mask, bool)
    sp_in = np.asarray(spacing_in, float)
    pad = int(np.ceil(3 * smooth_px)) + 2
    padded = np.pad(mask, pad)
    signed = (ndi.distance_transform_edt(padded, sampling=sp_in) - ndi.distance_transform_edt(~padded, sampling=sp_in))
    # the edt counts to pixel centres: inside border pixels read +1 px, outside ones -1 px; shift
    # by half a pixel each side so zero lies on the pixel edge
    signed = np.where(padded, signed - 0.5 * sp_in.min(), signed + 0.5 * sp_in.min()).astype(np.float32)
    if smooth_px > 0:
        signed = ndi.gaussian_filter(signed, smooth_px, mode="nearest")
    signed = signed[tuple(slice(pad, pad + n) for n in mask.shape)]
    f = resample_array(signed, spacing_in, spacing_out, order=1, mode="nearest", antialias=False)
    out = f > 0
    if not out.any():  # a lesion smaller than a target pixel keeps its most inside pixel
        out[np.unravel_index(int(np.argmax(f)), f.shape)] = True
    return out


def bbox_with_margin(mask: np.ndarray, spacing: Sequence[float] | np.ndarray, margin_mm: float) -> tuple[slice, ...]:
    """Bounding-box slices of ``mask`` grown by ``margin_mm`` and clipped to the array."""
    if not (math.isfinite(margin_mm) and margin_mm >= 0):
        raise SynthsegError(f"margin_mm must be >= 0, got {margin_mm}")
    found = ndi.find_objects(np.asarray(mask, dtype=np.uint8))
    if not found or found[0] is None:
        raise SynthsegError("lesion mask is empty; draw or load a mask with at least one lesion pixel")
    out = []
    for sl, sp, n in zip(found[0], spacing, mask.shape):
        pad = int(math.ceil(margin_mm / sp - 1e-9))
        out.append(slice(max(0, sl.start - pad), min(n, sl.stop + pad)))
    return tuple(out)
