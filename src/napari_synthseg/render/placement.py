"""From a lesion record to pixels: the lesion's patch, transformed, resampled and positioned.

A :class:`PlacedLesion` is everything the compositor needs for one record: the patch values on
the image's pixel grid, its exact mask, where it goes (``offset``) and the box of the image it
may change (``box``). Building one costs a resample of a small patch; moving a lesion only
changes ``offset``, so the transformed patch is cached by what it depends on.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..errors import SynthsegError
from ..io import MedicalImage
from ..lesions.item import LesionPatch, _threshold_mask, rotation_matrix
from ..scene import LesionRecord, Scene
from .poisson import blend_roi

Box = tuple[slice, ...]

# Width of a CXR's display window, in attenuation units (-ln transmission). Between a lung field
# (~2.3: 200 mm of chest, half of it aerated lung) and the mediastinum (~4.0) lie ~1.7 units,
# which take about 60 % of a percentile window; so a window spans ~3 units. A lesion's residual
# attenuation is turned into grey values with gain = window width / 3 (times the contrast).
ATTENUATION_PER_WINDOW = 3.0
#: Poisson blending takes in voxels the lesion covers at least this much (partial volume).
POISSON_MIN_COVERAGE = 0.2


@dataclass
class PlacedLesion:
    """One record resolved on the image grid (numpy axis order throughout)."""

    record: LesionRecord
    residual: np.ndarray  # float32, in image units, to add (already times gain and contrast)
    absolute: np.ndarray | None  # float32 lesion with its own background, in image units
    mask: np.ndarray  # bool, exact label
    offset: tuple[int, ...]  # image index of patch[0, 0(, 0)]
    box: Box  # image box this lesion may change (clipped to the image)
    alpha: np.ndarray | None = None  # feathered opacity for alpha blending (patch grid)
    overlay: tuple[Box, np.ndarray, np.ndarray] | None = None  # (image box, values, weight)
    label_mask: np.ndarray | None = None  # what the label paints, if not the blend mask
    spacing: tuple[float, ...] = ()  # image spacing (numpy order) the lesion is placed on

    @property
    def label(self) -> np.ndarray:
        return self.mask if self.label_mask is None else self.label_mask

    @property
    def patch_box(self) -> Box:
        return tuple(slice(o, o + n) for o, n in zip(self.offset, self.mask.shape))


def _key(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def record_patch(scene: Scene, record: LesionRecord) -> LesionPatch:
    """The stored (untransformed) patch of a record."""
    assets = record.assets
    if "intensity" not in assets or "mask" not in assets:
        raise SynthsegError(f"lesion {record.id} has no stored patch (assets 'intensity' and 'mask')")
    absolute = scene.assets.get(assets["absolute"]) if "absolute" in assets else None
    attachment = scene.assets.get(assets["attachment"]) if "attachment" in assets else None
    return LesionPatch(
        intensity=scene.assets.get(assets["intensity"]),
        mask=scene.assets.get(assets["mask"]),
        spacing=tuple(record.params["patch_spacing"]),
        kind=record.params.get("patch_kind", record.kind),
        absolute=absolute,
        units=record.params.get("units", "image"),
        attachment=attachment,
    )


def center_index(image: MedicalImage, center_mm) -> np.ndarray:
    """Continuous numpy-order index of a physical point."""
    return image.physical_to_index(center_mm)[::-1]


#: How a record's centre relates to its mask. ``"centroid"`` (every lesion placed since issue 15):
#: the centre is the mask's centroid (its partial-volume coverage's centre of mass), so a lesion
#: with a tail sits where it was asked, not 19 px off. ``"box"``: the centre of the mask's
#: bounding box, kept for records without ``params["anchor"]`` (scenes saved before, healthy
#: fills and accepted samples stored on the image's own grid, and lesions generated in their
#: site's context, which must land on the voxels they were made for).
ANCHORS = ("centroid", "box")


def _mask_center(mask: np.ndarray, coverage: np.ndarray | None = None, anchor: str = "box") -> np.ndarray:
    if anchor == "centroid":
        weights = mask.astype(np.float32) if coverage is None else coverage
        if float(weights.sum()) > 0:
            return np.asarray(ndi.center_of_mass(weights), dtype=float)
    box = ndi.find_objects(mask.astype(np.uint8))[0]
    return np.array([(s.start + s.stop - 1) / 2.0 for s in box])


def _clip_box(offset, shape, image_shape) -> Box | None:
    box = []
    for o, n, size in zip(offset, shape, image_shape):
        lo, hi = max(o, 0), min(o + n, size)
        if hi <= lo:
            return None
        box.append(slice(lo, hi))
    return tuple(box)


def feather_alpha(mask: np.ndarray, spacing, feather_mm: float) -> np.ndarray:
    """Opacity that is 0.5 on the mask border and ramps to 0/1 over ``feather_mm``.

    Centring the ramp on the border keeps the label honest: the lesion dominates exactly where
    the label says it is.
    """
    if feather_mm <= 0:
        return mask.astype(np.float32)
    inside = ndi.distance_transform_edt(mask, sampling=spacing)
    outside = ndi.distance_transform_edt(~mask, sampling=spacing)
    signed = np.where(mask, inside - 0.5 * min(spacing), -(outside - 0.5 * min(spacing)))
    return np.clip(0.5 + signed / feather_mm, 0.0, 1.0).astype(np.float32)


def box_kernel(width: float) -> np.ndarray:
    """Weights of a box of ``width`` input pixels centred on a pixel centre (sums to 1).

    Each tap is the overlap of that input pixel ([x - 1/2, x + 1/2]) with the box
    [-width/2, width/2]: exact integration of piecewise-constant voxels over a slab.
    """
    half = width / 2.0
    n = int(np.ceil(half - 0.5))
    x = np.arange(-n, n + 1, dtype=float)
    w = np.clip(np.minimum(x + 0.5, half) - np.maximum(x - 0.5, -half), 0.0, None)
    return (w / w.sum()).astype(np.float32)


def slab_integrate(values: np.ndarray, widths, mode: str = "constant") -> np.ndarray:
    """Average ``values`` over a box of ``widths[i]`` input pixels along each axis (> 1 only)."""
    out = np.asarray(values, np.float32)
    for axis, width in enumerate(widths):
        if width > 1.0 + 1e-6:
            out = ndi.convolve1d(out, box_kernel(float(width)), axis=axis, mode=mode, cval=0.0)
    return out


#: Lung kept around a lesion's support when its patch is cropped before scaling, in mm on the
#: image grid (plus the feather and three output voxels): what the feather, the partial-volume
#: rim and a matched blur can reach.
GRID_MARGIN_MM = 2.0


def to_image_grid(
    patch: LesionPatch, scale: float, rotation_deg, spacing: tuple[float, ...], margin_mm: float | None = None
) -> tuple[LesionPatch, np.ndarray]:
    """The patch scaled, rotated and resampled onto ``spacing``, and its partial-volume coverage.

    Unlike a point sample (or a Gaussian anti-alias) at each output voxel's centre, every output
    voxel here holds the *average of the lesion over its own footprint*: a 5 mm CT slice gets the
    nodule integrated over its 5 mm slab, as the scanner would have measured it. ``coverage`` is
    the fraction of each output voxel the lesion mask occupies (the same integration of the
    mask); the blend mask is coverage >= 0.5, and the slices with smaller partial volumes get
    labelled where their change exceeds the label tolerance (:mod:`.truth`).

    ``margin_mm`` (image-grid mm): the patch is first cropped to its support (mask, residual,
    attachments) plus this much lung *scaled back to the patch* and one output footprint, so a
    small donor scaled far above its size does not scale its whole cube of lung (a 5 mm LIDC
    nodule at 37 mm scaled the whole 50 mm patch to 370 mm and used more than 3 GB). Only voxels
    no blend reads are dropped: alpha reads the patch where its opacity is non-zero (mask,
    feather, coverage, attachments), additive its residual, Poisson its mask and partial-volume
    rim.
    """
    ndim = patch.ndim
    forward = rotation_matrix(ndim, rotation_deg, (-2, -1)) * float(scale)
    sp = np.asarray(patch.spacing, float)
    sp_out = np.asarray(spacing, float)
    if margin_mm is not None:
        inverse = np.linalg.inv(forward)
        footprint = np.abs(np.diag(1.0 / sp) @ inverse @ np.diag(sp_out)).max(axis=1)  # input px per output px
        need_mm = float(margin_mm) / float(scale) + float(np.max(footprint * sp)) + float(np.max(sp))
        patch = patch.crop_to_mask(need_mm, support=True)
    shape_in = np.asarray(patch.shape)
    half_in = shape_in * sp / 2.0
    corners = np.array(np.meshgrid(*[[-h, h] for h in half_in], indexing="ij")).reshape(ndim, -1)
    half_out = np.abs(forward @ corners).max(axis=1)
    shape_out = np.maximum(1, np.ceil(2 * half_out / sp_out - 1e-6)).astype(int)
    half_out = shape_out * sp_out / 2.0
    inverse = np.linalg.inv(forward)
    matrix = np.diag(1.0 / sp) @ inverse @ np.diag(sp_out)
    offset = (inverse @ (0.5 * sp_out - half_out) + half_in) / sp - 0.5
    kw = dict(matrix=matrix, offset=offset, output_shape=tuple(int(v) for v in shape_out), order=1, cval=0.0)
    # footprint of one output voxel along each input axis, in input pixels
    widths = np.abs(matrix).max(axis=1)

    def sample(values: np.ndarray, mode: str) -> np.ndarray:
        return ndi.affine_transform(slab_integrate(values, widths, mode), mode=mode, **kw).astype(np.float32)

    intensity = sample(patch.intensity, "constant")
    absolute = None if patch.absolute is None else sample(patch.absolute, "nearest")
    coverage = np.clip(sample(patch.mask.astype(np.float32), "constant"), 0.0, 1.0)
    attachment = None if patch.attachment is None else np.clip(sample(patch.attachment, "constant"), 0.0, 1.0)
    mask = _threshold_mask(coverage)
    op = {"op": "to_image_grid", "scale": float(scale), "rotation_deg": np.atleast_1d(rotation_deg).tolist(),
          "spacing": sp_out.tolist(), "integration": "slab"}
    out = patch._derive(op, intensity=intensity, mask=mask, absolute=absolute, attachment=attachment,
                        spacing=tuple(float(v) for v in sp_out))
    return out, coverage


class PatchCache:
    """Transformed + resampled patches by (assets, size, rotation, spacing); small LRU.

    Asset keys are content hashes, so one cache can serve every scene (validation and rendering
    share :data:`SHARED_CACHE` and a move never re-transforms the patch).
    """

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[LesionPatch, np.ndarray]] = OrderedDict()
        # QA prepares neighbouring scenes and exports in worker threads that share this cache
        self._lock = threading.Lock()

    def get(self, scene: Scene, record: LesionRecord, spacing: tuple[float, ...]) -> LesionPatch:
        return self.get_with_coverage(scene, record, spacing)[0]

    def get_with_coverage(
        self, scene: Scene, record: LesionRecord, spacing: tuple[float, ...]
    ) -> tuple[LesionPatch, np.ndarray]:
        """The record's patch on the image grid and its partial-volume coverage (0..1)."""
        margin = float((record.blend or {}).get("feather_mm", 0.0)) + 3.0 * max(spacing) + GRID_MARGIN_MM
        key = _key(record.assets, record.params.get("patch_spacing"), record.size_mm, record.rotation_deg, spacing,
                   round(margin, 6))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        patch = record_patch(scene, record)
        scale = record.size_mm / patch.diameter_mm() if record.size_mm > 0 else 1.0
        rotation = record.rotation_deg
        if abs(scale - 1.0) > 1e-6 or np.any(np.asarray(rotation, dtype=float) != 0) or (
            tuple(patch.spacing) != tuple(spacing)
        ):
            # one interpolation onto the image's spacing, integrating over each voxel's footprint
            # (slab integration on thick slices); resampling twice would blur the patch and
            # quantise its mask a second time
            entry = to_image_grid(patch, scale, rotation, tuple(spacing), margin_mm=margin)
        else:
            entry = (patch, patch.mask.astype(np.float32))
        with self._lock:  # the transform above runs unlocked: two threads may both compute it
            self._items[key] = entry
            if len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return entry


SHARED_CACHE = PatchCache()


def place(
    scene: Scene, record: LesionRecord, image: MedicalImage, cache: PatchCache | None = None
) -> PlacedLesion:
    """Resolve ``record`` on ``image``'s grid."""
    spacing = image.scale
    if record.params.get("fixed_grid") and (
        record.size_mm > 0 or np.any(np.asarray(record.rotation_deg, dtype=float) != 0)
    ):
        raise SynthsegError(
            f"lesion {record.id} holds pixels on the image's own grid (an accepted fill); it can be moved "
            "or deleted but not resized or rotated"
        )
    patch, coverage = (cache or SHARED_CACHE).get_with_coverage(scene, record, spacing)
    if patch.ndim != image.ndim:
        raise SynthsegError(
            f"lesion {record.id} is {patch.ndim}D but the image is {image.ndim}D"
        )
    center = center_index(image, record.center_mm)
    anchor = str(record.params.get("anchor", "box"))
    offset = tuple(int(v) for v in np.rint(center - _mask_center(patch.mask, coverage, anchor)))
    blend = record.blend or {}
    factor = float(blend.get("gain", 1.0)) * float(blend.get("contrast", 1.0))
    residual = patch.intensity * np.float32(factor)
    absolute = None
    if patch.absolute is not None and patch.units in ("HU", "image"):
        # The lesion with its own recorded background; contrast scales only the lesion part.
        absolute = patch.absolute - patch.intensity + residual
    mode = blend.get("mode", "alpha")
    attachment = patch.attachment
    blend_mask = patch.mask
    alpha = None
    if mode == "alpha":
        # the feathered opacity, and at least the partial-volume coverage: a slab that holds a
        # third of the nodule takes a third of it (the label follows from what that changes);
        # kept vessel stubs come in with their own (fading) opacity
        alpha = np.maximum(feather_alpha(patch.mask, spacing, float(blend.get("feather_mm", 0.0))), coverage)
        if attachment is not None:
            alpha = np.maximum(alpha, attachment)
    psf = blend.get("psf") or {}
    sigma_px = float(psf.get("sigma_px", 0.0))
    if sigma_px > 0:
        # the target scan is softer than the lesion: blur the lesion's contribution in-plane to
        # the target's edge width (:func:`.noise.match_sharpness`), before its matched noise
        from .noise import blur_contribution

        pad = int(np.ceil(3.0 * sigma_px)) + 1
        widths = [(0, 0)] * (patch.ndim - 2) + [(pad, pad)] * 2
        offset = tuple(o - w[0] for o, w in zip(offset, widths))
        residual, absolute, alpha, coverage, blend_mask, attachment = blur_contribution(
            mode, sigma_px, widths, residual, absolute, alpha, coverage, blend_mask, attachment)
    noise = blend.get("noise") or {}
    if mode in ("alpha", "poisson") and float(noise.get("sigma", 0.0)) > 0:
        # the target scan's noise, missing from a smooth or differently noisy lesion (.noise);
        # seeded by the record, so re-rendering is exact
        from .noise import matched_noise

        field = matched_noise(residual.shape, float(noise["sigma"]), float(noise.get("blur_px", 0.0)),
                              int(record.seed)) * coverage
        residual = residual + field
        if absolute is not None:
            absolute = absolute + field
    if mode == "poisson":
        # gradient-domain blending changes pixels only inside its mask: take in the partial-volume
        # voxels too (a nodule centred on a 5 mm slice fills part of its neighbours), so the thick
        # slices show the slab-integrated lesion and get labelled where that changes them
        blend_mask = blend_mask | (coverage >= POISSON_MIN_COVERAGE)
        if attachment is not None:
            blend_mask = blend_mask | (attachment >= POISSON_MIN_COVERAGE)
    box = _blend_box(mode, blend, blend_mask, offset, spacing, image.shape, alpha)
    if box is None:
        raise SynthsegError(f"lesion {record.id} lies entirely outside the image")
    overlay = None
    if "overlay" in record.assets:
        values = scene.assets.get(record.assets["overlay"])
        weight = scene.assets.get(record.assets["overlay_weight"])
        start = record.params["overlay_start"]
        obox = tuple(slice(a, a + n) for a, n in zip(start, values.shape))
        if any(b.start < 0 or b.stop > n for b, n in zip(obox, image.shape)):
            raise SynthsegError(f"lesion {record.id}: its harmonized pixels lie outside the image")
        overlay = (obox, values, weight)
        box = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(box, obox))
    label_mask = None
    if "label_mask" in record.assets:
        label_mask = np.asarray(scene.assets.get(record.assets["label_mask"]), bool)
        if label_mask.shape != blend_mask.shape:
            raise SynthsegError(f"lesion {record.id}: its label mask does not match its patch")
    return PlacedLesion(record=record, residual=residual, absolute=absolute, mask=blend_mask, offset=offset,
                        box=box, alpha=alpha, overlay=overlay, label_mask=label_mask, spacing=tuple(spacing))


def _blend_box(mode: str, blend: dict, mask: np.ndarray, offset, spacing, image_shape,
               alpha: np.ndarray | None = None) -> Box | None:
    """The image box a lesion's blend may change (before any overlay)."""
    if mode == "poisson":
        return blend_roi(image_shape, mask, offset=offset, margin=1)
    if mode == "alpha" and alpha is not None:
        # exactly where the opacity is non-zero (feather and partial-volume coverage, which can
        # reach past the mask where a thin part of the lesion fell below half a voxel)
        found = ndi.find_objects((alpha > 0).astype(np.uint8))
        if not found or found[0] is None:
            return None
        return _clip_box([o + s.start for o, s in zip(offset, found[0])], [s.stop - s.start for s in found[0]], image_shape)
    if mode == "alpha":
        feather_px = float(blend.get("feather_mm", 0.0)) / min(spacing)
        # one voxel more than the feather: the partial-volume coverage reaches one voxel past the mask
        grown = ndi.binary_dilation(mask, iterations=int(np.ceil(feather_px / 2)) + 1)
        found = ndi.find_objects(grown.astype(np.uint8))[0]
        return _clip_box([o + s.start for o, s in zip(offset, found)], [s.stop - s.start for s in found], image_shape)
    return _clip_box(offset, mask.shape, image_shape)


def place_box(placed: PlacedLesion, image_shape) -> Box:
    """The blend box of a placed lesion, without its overlay."""
    blend = placed.record.blend or {}
    box = _blend_box(blend.get("mode", "alpha"), blend, placed.mask, placed.offset, placed.spacing, image_shape,
                     placed.alpha)
    if box is None:
        # place() already refused such a lesion; kept explicit for a hand-built PlacedLesion
        raise SynthsegError(f"lesion {placed.record.id} lies entirely outside the image")
    return box


def footprint_check(
    placed: PlacedLesion, image_shape, constraint: np.ndarray | None = None, min_inside: float = 1.0
) -> None:
    """Refuse lesions whose mask leaves the image or the organ constraint."""
    mask = placed.mask
    coords = np.argwhere(mask) + np.asarray(placed.offset)
    inside = np.all((coords >= 0) & (coords < np.asarray(image_shape)), axis=1)
    if not inside.all():
        extent = np.ptp(np.argwhere(mask), axis=0) + 1
        if np.any(extent > np.asarray(image_shape)):
            raise SynthsegError(
                f"the lesion ({'x'.join(map(str, extent[::-1]))} px) is larger than the image; choose a smaller size"
            )
        raise SynthsegError(
            f"the lesion reaches outside the image ({int((~inside).sum())} of {len(coords)} mask pixels); "
            "move it further inside"
        )
    if constraint is not None:
        hit = constraint[tuple(coords.T)]
        fraction = float(hit.mean())
        if fraction + 1e-9 < min_inside:
            raise SynthsegError(
                f"the lesion lies {100 * (1 - fraction):.0f}% outside the allowed region (organ constraint); "
                "place it inside, or edit the constraint"
            )
