"""Put lesions into a scene, edit them, and take real lesions out, with every check up front.

These functions are what the widgets, the CLI and batch jobs call. Each validates against the
image and the organ constraint *before* touching the scene, so a refused edit changes nothing.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import SynthsegError
from ..io import MedicalImage, window_limits
from ..render.placement import ANCHORS, ATTENUATION_PER_WINDOW, footprint_check, place
from ..scene import BLEND_MODES, LesionRecord, Scene
from .item import LesionPatch
from .projection import project_ct_lesion

CONSTRAINT = "constraint"


def attenuation_gain(image: MedicalImage) -> float:
    """Grey values per attenuation unit for a radiograph (see ``ATTENUATION_PER_WINDOW``)."""
    lo, hi = window_limits(image.array, "cxr-auto", "CXR")
    gain = (hi - lo) / ATTENUATION_PER_WINDOW
    if image.metadata.get("0028|0004", "").strip().upper() == "MONOCHROME1":
        gain = -gain  # bright = low values: more attenuation must lower the value
    return float(gain)


def _check_units(patch: LesionPatch, image: MedicalImage) -> None:
    if patch.units == "HU" and image.modality not in ("CT", "unknown"):
        raise SynthsegError(f"a CT lesion (HU) cannot go into a {image.modality} image without projection")
    if patch.units == "attenuation" and image.ndim != 2:
        raise SynthsegError("a projected (attenuation) lesion only goes into a 2D radiograph")


def prepare_patch(patch: LesionPatch, image: MedicalImage, project: bool = True) -> LesionPatch:
    """Make ``patch`` fit ``image``'s dimensionality (projecting a CT lesion into a CXR)."""
    if patch.ndim == image.ndim:
        return patch
    if patch.ndim == 3 and image.ndim == 2:
        if not project or patch.units != "HU":
            raise SynthsegError(
                "a 3D lesion cannot go into a 2D image without projection; use a CT (HU) lesion with projection on"
            )
        return project_ct_lesion(patch, target_spacing=image.scale)
    raise SynthsegError(f"a {patch.ndim}D lesion cannot go into a {image.ndim}D image")


def center_from(image: MedicalImage, at_xyz: Sequence[float] | None, at_mm: Sequence[float] | None) -> tuple[float, ...]:
    """Physical centre from a pixel/voxel index (x first) or a physical point."""
    if (at_xyz is None) == (at_mm is None):
        raise SynthsegError("give the lesion position either as a pixel index (x,y[,z]) or in mm, not both or neither")
    point = at_xyz if at_xyz is not None else at_mm
    assert point is not None, "exactly one of at_xyz and at_mm is given (checked above)"
    if len(point) != image.ndim:
        raise SynthsegError(f"the position needs {image.ndim} values (x,y[,z]) for this {image.ndim}D image, got {len(point)}")
    if not np.all(np.isfinite(np.asarray(point, dtype=float))):
        raise SynthsegError("the position must be finite numbers")
    if at_xyz is not None:
        idx = np.asarray(at_xyz, dtype=float)
        if np.any(idx < 0) or np.any(idx > np.asarray(image.shape[::-1]) - 1):
            raise SynthsegError(
                f"position {tuple(at_xyz)} is outside the image (x,y[,z] up to {tuple(n - 1 for n in image.shape[::-1])})"
            )
        return tuple(float(v) for v in image.index_to_physical(idx))
    return tuple(float(v) for v in point)  # the physical point at_mm


def _validate(scene: Scene, record: LesionRecord, image: MedicalImage, min_inside: float) -> None:
    placed = place(scene, record, image)
    constraint = scene.mask(CONSTRAINT)
    footprint_check(placed, image.shape, constraint, min_inside)


def place_lesion(
    scene: Scene,
    patch: LesionPatch,
    *,
    at_xyz: Sequence[float] | None = None,
    at_mm: Sequence[float] | None = None,
    size_mm: float | None = None,
    rotation_deg: float | Sequence[float] = 0.0,
    blend: str = "alpha",
    contrast: float | str = 1.0,
    feather_mm: float = 1.0,
    mixed: bool = False,
    seed: int = 0,
    kind: str = "nodule",
    source: dict[str, Any] | None = None,
    project: bool = True,
    min_inside: float = 1.0,
    min_cnr: float | None = None,
    match_noise: bool = True,
    match_sharpness: bool = True,
    anchor: str | None = None,
) -> LesionRecord:
    """Place ``patch`` into ``scene`` and return the stored record.

    Parameters
    ----------
    at_xyz, at_mm : sequence of float
        Lesion centre as a pixel/voxel index (x first) or a physical LPS point in mm.
    size_mm : float, optional
        Diameter to render at (equivalent circle/sphere); default the patch's own.
    blend : {'alpha', 'additive', 'poisson'}
    contrast : float or 'node21'
        Multiplies the lesion's residual (1: as recorded). ``'node21'`` computes the factor
        with NODE21's contrast matching at the chosen place (radiographs; see
        :mod:`.contrast`) and stores it, so re-rendering stays exact.
    feather_mm : float
        Alpha ramp width across the mask border.
    min_inside : float
        Fraction of the lesion mask that must lie inside the organ constraint (if the scene
        has one).
    min_cnr : float, optional
        Refuse the lesion (:class:`SynthsegError`) if its contrast-to-noise ratio against the
        local background is below this (batch generation passes
        :data:`~napari_synthseg.render.visibility.MIN_CNR`). Either way the record keeps its
        ``params["visibility"]`` (cnr, contrast, noise, visible) and a lesion below
        ``MIN_CNR`` logs a warning: it is flagged, not silently labelled.
    match_noise : bool
        CT, alpha and Poisson blends: give the lesion the target's noise level and texture
        measured in the lung around the site (:mod:`napari_synthseg.render.noise`).
    match_sharpness : bool
        CT: when the lesion's edges are sharper than the target's around the site, blur it
        in-plane to the target's edge width (``blend["psf"]`` records both estimates and the
        blur; :func:`napari_synthseg.render.noise.edge_sigma_px`).
    anchor : {'centroid', 'box'}, optional
        What the centre means: the mask's centroid (default), or its bounding box's centre
        (default for lesions made in their site's context, e.g. the lesion generator's, which
        must land on the voxels they were made for).
    """
    if blend not in BLEND_MODES:
        raise SynthsegError(f"blend must be one of {', '.join(BLEND_MODES)}, got {blend!r}")
    contrast_mode = "node21" if contrast == "node21" else "manual"
    if contrast_mode == "manual" and not (isinstance(contrast, (int, float)) and np.isfinite(contrast)):
        raise SynthsegError(f"contrast must be a finite number or 'node21', got {contrast!r}")
    if not (np.isfinite(feather_mm) and feather_mm >= 0):
        raise SynthsegError("feather_mm must be a finite number >= 0")
    image = scene.load_image()
    patch = prepare_patch(patch, image, project)
    _check_units(patch, image)
    if size_mm is not None and not (np.isfinite(size_mm) and size_mm > 0):
        raise SynthsegError(f"size must be a positive number of mm, got {size_mm}")
    if anchor is None:
        anchor = "box" if str((source or {}).get("type")) in SITE_REGENERATORS else "centroid"
    if anchor not in ANCHORS:
        raise SynthsegError(f"anchor must be one of {', '.join(ANCHORS)}, got {anchor!r}")
    settings: dict[str, Any] = {"mode": blend, "contrast": 1.0 if contrast_mode == "node21" else float(contrast),
                                "feather_mm": float(feather_mm)}
    if mixed:
        settings["mixed"] = True
    if patch.units == "attenuation":
        settings["gain"] = attenuation_gain(image)
    assets = {"intensity": scene.assets.put(patch.intensity), "mask": scene.assets.put(patch.mask)}
    if patch.absolute is not None:
        assets["absolute"] = scene.assets.put(patch.absolute)
    if patch.attachment is not None:
        assets["attachment"] = scene.assets.put(patch.attachment)
    provenance = {k: v for k, v in patch.provenance.items() if k != "history"}
    # one angle stays a number, several a tuple (as EditSession.rotate stores them)
    angles = tuple(float(v) for v in np.atleast_1d(np.asarray(rotation_deg, dtype=float)))
    rotation: float | tuple[float, ...] = angles[0] if np.isscalar(rotation_deg) else angles
    record = LesionRecord(
        kind=kind,
        source=dict(source or {"type": provenance.get("source", patch.kind)}, patch=provenance),
        center_mm=center_from(image, at_xyz, at_mm),
        size_mm=float(size_mm if size_mm is not None else patch.diameter_mm()),
        rotation_deg=rotation,
        blend=settings,
        seed=int(seed),
        assets=assets,
        params={"patch_spacing": list(patch.spacing), "units": patch.units, "patch_kind": patch.kind,
                "min_inside": float(min_inside), "anchor": anchor},
    )
    record.validate()
    if contrast_mode == "node21":
        record = _with_node21_contrast(scene, record, image)
    _validate(scene, record, image, min_inside)
    if match_sharpness:
        record = _with_matched_sharpness(scene, record, image)
    if match_noise:
        record = _with_matched_noise(scene, record, image)
    record = _with_visibility(scene, record, image, min_cnr)
    return scene.add_lesion(record, label=f"place {kind}")


def _with_matched_noise(scene: Scene, record: LesionRecord, image: MedicalImage) -> LesionRecord:
    import math

    from ..render.noise import choose_blur, lesion_noise, noise_at

    if image.ndim != 3 or image.modality != "CT" or record.params.get("units") != "HU":
        return record
    if record.blend.get("mode") not in ("alpha", "poisson"):
        return record  # additive keeps the target's own noise
    placed = place(scene, record, image)
    center = [(b.start + b.stop) / 2.0 for b in placed.box]
    target_sigma, rho = noise_at(np.asarray(image.array), center, image.scale, exclude=placed.box)
    if not math.isfinite(target_sigma) or target_sigma <= 0:
        return record  # no lung around the site to learn from
    values = placed.absolute if placed.absolute is not None else placed.residual
    own = lesion_noise(values, placed.mask)
    needed = math.sqrt(max(target_sigma ** 2 - own ** 2, 0.0))
    noise = {"sigma": round(needed, 3), "blur_px": choose_blur(rho), "target_sigma": round(target_sigma, 3),
             "target_rho": round(rho, 4) if math.isfinite(rho) else None, "lesion_sigma": round(own, 3)}
    return record.copy(blend=dict(record.blend, noise=noise))


def _with_matched_sharpness(scene: Scene, record: LesionRecord, image: MedicalImage) -> LesionRecord:
    import math

    from ..render.noise import lesion_sharpness, matched_blur_px, sharpness_at

    if image.ndim != 3 or image.modality != "CT" or record.params.get("units") != "HU":
        return record
    if str((record.source or {}).get("type")) in SITE_REGENERATORS:
        return record  # made in the target's own context at this site: already its sharpness
    placed = place(scene, record, image)
    center = [(b.start + b.stop) / 2.0 for b in placed.box]
    target = sharpness_at(np.asarray(image.array), center, image.scale, exclude=placed.box)
    values = placed.absolute if placed.absolute is not None else placed.residual
    contrast = float(np.abs(placed.residual[placed.mask]).max()) if placed.mask.any() else 0.0
    own = lesion_sharpness(values, placed.mask, contrast) if contrast > 0 else float("nan")
    blur = matched_blur_px(target, own)
    psf = {"sigma_px": round(blur, 3), "target_sigma_px": round(target, 3) if math.isfinite(target) else None,
           "lesion_sigma_px": round(own, 3) if math.isfinite(own) else None, "method": "edge-width"}
    return record.copy(blend=dict(record.blend, psf=psf))


def _with_visibility(scene: Scene, record: LesionRecord, image: MedicalImage, min_cnr: float | None) -> LesionRecord:
    import logging

    from ..render.visibility import placement_visibility

    visibility = placement_visibility(scene, record, image)
    cnr = visibility["cnr"]
    if min_cnr is not None and (cnr is None or cnr < min_cnr):
        raise SynthsegError(f"the lesion would be too faint to see here (CNR {cnr} < {min_cnr}); "
                            "raise its contrast or choose another place")
    if not visibility["visible"]:
        logging.getLogger(__name__).warning(
            "lesion at %s is hardly visible (CNR %s < %s against its local background); it is flagged",
            record.center_mm, cnr, visibility["min_cnr"])
    return record.copy(params=dict(record.params, visibility=visibility))


def _with_node21_contrast(scene: Scene, record: LesionRecord, image: MedicalImage) -> LesionRecord:
    from .contrast import node21_contrast, otsu4_thresholds

    if image.ndim != 2:
        raise SynthsegError("NODE21 contrast matching is defined for radiographs (2D) only")
    placed = place(scene, record, image)
    footprint_check(placed, image.shape)
    box = placed.patch_box
    values = np.asarray(image.array[box], np.float32)
    factor, hyper = node21_contrast(values, placed.residual, placed.mask, otsu4_thresholds(image.array))
    blend = dict(record.blend, contrast=float(factor), contrast_mode="node21", hypersignal=hyper)
    return record.copy(blend=blend)


def edit_lesion(scene: Scene, lesion_id: str, *, at_xyz=None, at_mm=None, label: str | None = None, **changes: Any) -> LesionRecord:
    """Move (``at_xyz``/``at_mm``), resize (``size_mm``), rotate, re-contrast or re-blend a lesion.

    ``blend`` changes are merged into the record's blend settings (``{"mode": "poisson"}``
    keeps its contrast and gain).
    """
    record = scene.lesion(lesion_id)
    image = scene.load_image()
    if at_xyz is not None or at_mm is not None:
        changes["center_mm"] = center_from(image, at_xyz, at_mm)
    if "blend" in changes:
        merged = dict(record.blend)
        merged.update(changes["blend"])
        changes["blend"] = merged
    if "size_mm" in changes and not (np.isfinite(changes["size_mm"]) and changes["size_mm"] > 0):
        raise SynthsegError(f"size must be a positive number of mm, got {changes['size_mm']}")
    what = label or ("move lesion" if "center_mm" in changes and len(changes) == 1 else "edit lesion")
    regenerate = SITE_REGENERATORS.get(str((record.source or {}).get("type")))
    if regenerate is not None and {"center_mm", "size_mm"} & set(changes):
        # a lesion made in its target's context (the learned generator) is remade at the new
        # site/size from the same seed, instead of carrying its old surroundings along
        changes.update(regenerate(scene, record, image, dict(changes)))
    if "overlay" in record.assets and set(changes) & _OVERLAY_INVALIDATING:
        # Harmonized pixels were computed for the old geometry/blend: drop them (re-harmonize).
        changes["assets"] = {k: v for k, v in record.assets.items() if k not in ("overlay", "overlay_weight")}
        changes["params"] = {k: v for k, v in record.params.items() if k not in ("overlay_start", "overlay")}
    candidate = record.copy(**changes)
    candidate.validate()
    _validate(scene, candidate, image, float(record.params.get("min_inside", 1.0)))
    return scene.update_lesion(lesion_id, label=what, **changes)


#: ``source["type"]`` -> ``f(scene, record, image, changes) -> more changes``. Engines above this
#: layer (the lesion generator) register how their lesions are remade when moved or resized;
#: this module never imports them.
SITE_REGENERATORS: dict[str, Any] = {}


def register_site_regenerator(source_type: str, function: Any) -> None:
    """Make :func:`edit_lesion` call ``function`` when a lesion of ``source_type`` moves or resizes."""
    SITE_REGENERATORS[str(source_type)] = function


_OVERLAY_INVALIDATING = {"center_mm", "size_mm", "rotation_deg", "blend"}


def attach_overlay(
    scene: Scene,
    lesion_id: str,
    values: np.ndarray,
    weight: np.ndarray,
    start: Sequence[int],
    provenance: dict[str, Any],
    label: str = "harmonize lesion",
) -> LesionRecord:
    """Store pixels computed for a placed lesion (e.g. a harmonization) in its record.

    Parameters
    ----------
    values : ndarray
        Replacement values for the image box starting at ``start`` (numpy order), image units.
    weight : ndarray
        Same shape, in [0, 1]: how much of ``values`` replaces the render there (0 outside the
        lesion's blend margin keeps everything else exact).
    provenance : dict
        What made them (model sha256, injection scale, seed ...), kept in ``params["overlay"]``.
    """
    image = scene.load_image()
    values = np.asarray(values, np.float32)
    weight = np.asarray(weight, np.float32)
    if values.shape != weight.shape or values.ndim != image.ndim:
        raise SynthsegError("overlay values and weight must have the same shape and the image's dimensionality")
    if not (np.isfinite(values).all() and np.isfinite(weight).all()):
        raise SynthsegError("overlay values contain NaN or infinite numbers")
    if weight.min() < 0 or weight.max() > 1:
        raise SynthsegError("overlay weight must lie in [0, 1]")
    start = [int(v) for v in start]
    if any(a < 0 or a + n > size for a, n, size in zip(start, values.shape, image.shape)):
        raise SynthsegError("the overlay box reaches outside the image")
    record = scene.lesion(lesion_id)
    assets = dict(record.assets, overlay=scene.assets.put(values), overlay_weight=scene.assets.put(weight))
    params = dict(record.params, overlay_start=start, overlay=dict(provenance))
    return scene.update_lesion(lesion_id, label=label, assets=assets, params=params)


def remove_real_lesion(
    scene: Scene, mask: np.ndarray, method: str = "biharmonic", feather_mm: float = 0.0, seed: int = 0
) -> LesionRecord:
    """Replace a real lesion (``mask`` on the source image) by healthy tissue, as a record.

    The fill is computed once from the source and stored as the record's absolute patch, so
    re-rendering is exact and the removal can be undone, moved back or deleted like any lesion.
    """
    from ..fill import get_filler

    image = scene.load_image()
    mask = np.asarray(mask).astype(bool)
    if mask.shape != image.shape:
        raise SynthsegError(f"the mask has shape {mask.shape}, the image {image.shape}")
    if not mask.any():
        raise SynthsegError("the mask is empty; outline the lesion to remove")
    fill_method = get_filler(method)
    filled = fill_method.fill(image.array, mask, spacing=image.scale, seed=seed)
    patch = _crop_patch(np.asarray(filled, np.float32), np.asarray(image.array, np.float32), mask, image)
    assert patch.absolute is not None, "_crop_patch keeps the filled pixels as the absolute patch"
    center_idx = [(s.start + s.stop - 1) / 2.0 for s in _bbox(mask)]
    record = LesionRecord(
        kind="removal",
        # a learned filler names its model file and hash (``Filler.provenance``)
        source={"type": "fill", "method": method, **dict(getattr(fill_method, "provenance", None) or {})},
        center_mm=tuple(float(v) for v in image.index_to_physical(np.asarray(center_idx[::-1]))),
        size_mm=0.0,
        blend={"mode": "alpha", "feather_mm": float(feather_mm), "contrast": 1.0},
        seed=int(seed),
        assets={"intensity": scene.assets.put(patch.intensity), "mask": scene.assets.put(patch.mask),
                "absolute": scene.assets.put(patch.absolute)},
        params={"patch_spacing": list(image.scale), "units": "image" if image.modality != "CT" else "HU",
                "patch_kind": "removal", "min_inside": 0.0},
    )
    return scene.add_lesion(record, label=f"remove lesion ({method})")


def _bbox(mask: np.ndarray):
    from scipy import ndimage as ndi

    return ndi.find_objects(mask.astype(np.uint8))[0]


def _crop_patch(filled: np.ndarray, original: np.ndarray, mask: np.ndarray, image: MedicalImage) -> LesionPatch:
    # Crop so that the mask's bounding-box centre is the patch centre (the renderer places by it).
    box = _bbox(mask)
    return LesionPatch(
        intensity=filled[box] - original[box],
        mask=mask[box],
        spacing=image.scale,
        kind="removal",
        absolute=filled[box],
        units="image",
    )
