"""Render a scene: the source image with every lesion record composited in order, plus labels.

The shown image is always ``render(source, records)``; nothing is painted into the source.
:class:`SceneRenderer` keeps the result and, after an edit, recomputes only the box the edit
touched: the old and new boxes of the changed lesions, grown until no other lesion's box crosses
its border. Inside that box every lesion that touches it is composited again, in scene order,
from the untouched source, so the incremental result equals a full render exactly.

Blend modes (per record, ``record.blend["mode"]``):

- ``alpha``: ``out = (1 - a) * out + a * lesion`` with ``a`` 0.5 on the mask border, ramping
  over ``feather_mm``; ``lesion`` is the patch's own absolute values when it has them in the
  image's units (CT HU, an extracted lesion), else ``out + residual``.
- ``additive``: ``out += residual`` over the patch (the TUM report's re-insertion; for a CXR the
  residual is attenuation times a gain, i.e. addition in the log domain).
- ``poisson``: gradient-domain blend of the same ``lesion`` values inside the mask
  (:mod:`.poisson`), Dirichlet on the ROI border.

A record may carry an *overlay* (``assets["overlay"]``, ``assets["overlay_weight"]``,
``params["overlay_start"]``): pixels computed from the render with the lesion in place (a
harmonization result), mixed in after the blend as ``out += weight * (overlay - out)``. It is
attached with :func:`napari_synthseg.lesions.place.attach_overlay` and dropped by any edit of
the lesion's geometry or blend, since it was computed for the old one.

Labels: *the label is what changed* (:mod:`.truth`, ``docs/rendering.md``). Each lesion's
label is its blend mask plus every voxel its blend (and overlay) changed by more than 5 % of its
contrast, without detached fragments below the size limit (those pixels are restored); painted
with the record's ``label``; later lesions win where labels overlap; ``removal`` records
(healthy fills) paint no label. :func:`render_scene` checks the result with
:func:`~.truth.check_label_truth` and raises if a label disagrees with the image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import SynthsegError
from ..io import MedicalImage
from ..scene import Change, LesionRecord, Scene
from .placement import SHARED_CACHE, Box, PatchCache, PlacedLesion, place, place_box
from .poisson import poisson_blend_region
from .truth import (
    LABEL_TOLERANCE,
    MIN_FRAGMENT_VOXELS,
    DerivedLabel,
    check_label_truth,
    derive_label,
)

NO_LABEL_KINDS = ("removal",)
LABEL_DTYPE = np.int32


@dataclass
class RenderResult:
    image: np.ndarray  # float32, native units
    labels: np.ndarray  # int32, record.label per lesion
    source: MedicalImage
    derived: dict = dataclasses.field(default_factory=dict)  # lesion id -> DerivedLabel

    def allowances(self) -> list:
        """(box, allowed change) per lesion for :func:`~.truth.check_label_truth`."""
        out = []
        for derived in self.derived.values():
            out.append((derived.box, float("inf") if derived.tolerance is None else derived.tolerance))
        return out


def _intersect(a: Box, b: Box) -> bool:
    return all(x.start < y.stop and y.start < x.stop for x, y in zip(a, b))


def _union(a: Box, b: Box) -> Box:
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def _shift(box: Box, origin) -> Box:
    return tuple(slice(s.start - o, s.stop - o) for s, o in zip(box, origin))


def _patch_in(canvas_box: Box, placed: PlacedLesion):
    """Slices (canvas, patch) of the overlap of a lesion's patch grid with the canvas."""
    canvas_sl, patch_sl = [], []
    for c, o, n in zip(canvas_box, placed.offset, placed.mask.shape):
        lo, hi = max(c.start, o), min(c.stop, o + n)
        if hi <= lo:
            return None
        canvas_sl.append(slice(lo - c.start, hi - c.start))
        patch_sl.append(slice(lo - o, hi - o))
    return tuple(canvas_sl), tuple(patch_sl)


def _clip_to(box: Box, canvas_box: Box) -> Box | None:
    out = []
    for b, c in zip(box, canvas_box):
        lo, hi = max(b.start, c.start), min(b.stop, c.stop)
        if hi <= lo:
            return None
        out.append(slice(lo, hi))
    return tuple(out)


def composite(
    canvas: np.ndarray, labels: np.ndarray | None, canvas_box: Box, placed: PlacedLesion, spacing
) -> DerivedLabel | None:
    """Blend one lesion into ``canvas`` (the image box ``canvas_box``), in place.

    Returns the lesion's label as derived from what its blend changed (:mod:`.truth`), in
    image coordinates; None when the lesion does not reach the canvas.
    """
    overlap = _patch_in(canvas_box, placed)
    if overlap is None:
        return None
    c_sl, p_sl = overlap
    # the box this lesion may change, on the canvas; kept to derive the label from the change
    touched = _clip_to(placed.box, canvas_box)
    if touched is None:
        return None
    t_local = _shift(touched, [c.start for c in canvas_box])
    before = np.array(canvas[t_local], copy=True)
    blend = placed.record.blend or {}
    mode = blend.get("mode", "alpha")
    if mode == "additive":
        canvas[c_sl] += placed.residual[p_sl]
    elif mode == "alpha":
        assert placed.alpha is not None, "place() gives every alpha-mode lesion its opacity"
        alpha = placed.alpha[p_sl]
        region = canvas[c_sl]
        lesion = placed.absolute[p_sl] if placed.absolute is not None else region + placed.residual[p_sl]
        region += alpha * (lesion - region)
    elif mode == "poisson":
        roi_local = _shift(placed.box, [c.start for c in canvas_box])
        target = canvas[roi_local]
        # The source must cover the whole patch grid: outside the canvas it is never used
        # (the solve only reads source differences across mask edges, all inside the ROI).
        full = _patch_in(placed.box, placed)
        t_sl, pp_sl = full
        source = np.zeros(placed.mask.shape, np.float32)
        if placed.absolute is not None:
            source[pp_sl] = placed.absolute[pp_sl]
        else:
            source[pp_sl] = target[t_sl] + placed.residual[pp_sl]
        offset = [o - b.start for o, b in zip(placed.offset, placed.box)]
        roi, values = poisson_blend_region(
            target,
            source,
            placed.mask,
            offset=offset,
            spacing=spacing,
            mixed=bool(blend.get("mixed", False)),
            margin=max(target.shape),  # the ROI is the whole target: placed.box, fixed in image coordinates
            fast_lengths=False,
        )
        target[roi] = values
    else:
        raise SynthsegError(f"unknown blend mode {mode!r}")
    if placed.overlay is not None:
        # Harmonized pixels (SinGAN/ConSinGAN, ...) computed from this very render, mixed in with
        # their weight map; the label stays the lesion's mask.
        obox, values, weight = placed.overlay
        o_local = _shift(obox, [c.start for c in canvas_box])
        region = canvas[o_local]
        region += weight * (values - region)
    blend_mask = np.zeros(before.shape, bool)
    inner = _patch_in(touched, placed)
    if inner is not None:
        blend_mask[inner[0]] = placed.label[inner[1]]
    if placed.record.kind in NO_LABEL_KINDS:
        # a healthy fill changes pixels and paints no label: any change inside its box is allowed
        return DerivedLabel(box=touched, label=blend_mask, tolerance=float("inf"), contrast=0.0)
    if placed.label_mask is not None:
        # an accepted outpainting: the surroundings were regenerated around a kept lesion; the
        # label is that lesion, the regenerated background is not lesion (like a healthy fill)
        if labels is not None:
            labels[t_local][blend_mask] = placed.record.label
        return DerivedLabel(box=touched, label=blend_mask, tolerance=float("inf"), contrast=0.0)
    after = canvas[t_local]
    label, dropped, allowed, contrast = derive_label(
        after - before, blend_mask,
        tolerance=float(blend.get("label_tolerance", LABEL_TOLERANCE)),
        min_fragment=int(blend.get("min_fragment_voxels", MIN_FRAGMENT_VOXELS)),
    )
    if dropped.any():
        after[dropped] = before[dropped]  # a detached speck shows nothing and is labelled nothing
    if labels is not None:
        labels[t_local][label] = placed.record.label
    return DerivedLabel(box=touched, label=label, tolerance=allowed, contrast=contrast,
                        dropped_voxels=int(dropped.sum()))


class SceneRenderer:
    """Keeps ``render(scene)`` up to date as the scene changes.

    Parameters
    ----------
    scene : Scene
    follow : bool
        Subscribe to the scene so every change re-renders its region at once.
    cache : PatchCache, optional
        Transformed patches; default the process-wide shared cache.
    without_overlay : set of str
        Lesion ids rendered without their stored overlay (re-harmonizing starts again from the
        naive placement, not from the last result).
    without_lesions : set of str
        Lesion ids left out of the render (the image "behind" a lesion, for harmonization's
        add-back of the original image).
    """

    def __init__(
        self,
        scene: Scene,
        follow: bool = True,
        cache: PatchCache | None = None,
        without_overlay: frozenset[str] | set[str] = frozenset(),
        without_lesions: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        self.scene = scene
        self.without_lesions = frozenset(without_lesions)
        self.source = scene.load_image()
        self.spacing = self.source.scale
        self.base = np.asarray(self.source.array, dtype=np.float32)
        if self.base is self.source.array:
            self.base = self.base.copy()
        self.base.flags.writeable = False
        self.image = np.array(self.base, copy=True)
        self.labels = np.zeros(self.base.shape, LABEL_DTYPE)
        self.cache = SHARED_CACHE if cache is None else cache
        self.without_overlay = frozenset(without_overlay)
        self._placed: dict[str, tuple[LesionRecord, PlacedLesion]] = {}
        self.derived: dict[str, DerivedLabel] = {}  # lesion id -> label derived at its last composite
        self.last_region: Box | None = None
        self._listeners: list[Callable[[Box], object]] = []
        self.render_all()
        self._unsubscribe = scene.subscribe(self._follow) if follow else None

    def close(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None

    # -- placed-lesion cache ------------------------------------------------------------------

    def placed(self, record: LesionRecord) -> PlacedLesion:
        # The scene replaces a record object on every change (edit, undo, redo), so identity
        # tells whether the cached placement is still valid.
        hit = self._placed.get(record.id)
        if hit is not None and hit[0] is record:
            return hit[1]
        placed = place(self.scene, record, self.source, self.cache)
        if record.id in self.without_overlay and placed.overlay is not None:
            placed = dataclasses.replace(placed, overlay=None, box=place_box(placed, self.source.shape))
        self._placed[record.id] = (record, placed)
        return placed

    def lesion_mask(self, lesion_id: str) -> np.ndarray:
        """Full-image boolean label mask of one lesion as currently rendered (what it changed)."""
        placed = self.placed(self.scene.lesion(lesion_id))
        mask: np.ndarray = np.zeros(self.base.shape, bool)
        derived = self.derived.get(lesion_id)
        if derived is not None and placed.record.kind not in NO_LABEL_KINDS:
            mask[derived.box] = derived.label
            return mask
        overlap = _patch_in(tuple(slice(0, n) for n in mask.shape), placed)
        if overlap is not None:
            mask[overlap[0]] = placed.label[overlap[1]]
        return mask

    # -- rendering ----------------------------------------------------------------------------

    def render_all(self) -> None:
        np.copyto(self.image, self.base)
        self.labels[...] = 0
        full = tuple(slice(0, n) for n in self.base.shape)
        self.derived = {}
        for record in self._rendered():
            self._keep(record.id, composite(self.image, self.labels, full, self.placed(record), self.spacing))
        self.last_region = full

    def _keep(self, lesion_id: str, derived: DerivedLabel | None) -> None:
        if derived is not None:
            self.derived[lesion_id] = derived

    def _rendered(self) -> list[LesionRecord]:
        return [rec for rec in self.scene.lesions if rec.id not in self.without_lesions]

    def render_region(self, region: Box) -> Box:
        """Recompute ``region`` (grown to a closed set of lesion boxes); returns the final box."""
        boxes = [(rec, self.placed(rec)) for rec in self._rendered()]
        grown = True
        while grown:
            grown = False
            for _, placed in boxes:
                if _intersect(placed.box, region):
                    new = _union(region, placed.box)
                    if new != region:
                        region, grown = new, True
        canvas = np.array(self.base[region], copy=True)
        labels = np.zeros(canvas.shape, LABEL_DTYPE)
        for record, placed in boxes:
            if _intersect(placed.box, region):
                self._keep(record.id, composite(canvas, labels, region, placed, self.spacing))
        self.image[region] = canvas
        self.labels[region] = labels
        self.last_region = region
        return region

    def _follow(self, change: Change) -> None:
        # the scene's listeners return nothing; on_change's region is for direct callers
        self.on_change(change)

    def on_change(self, change: Change) -> Box | None:
        region = None
        if change.masks and not change.lesions_before and not change.lesions_after:
            return None  # masks (constraints) do not change pixels
        for before in change.lesions_before:
            if before is not None and before["id"] in self._placed:
                region = self._placed[before["id"]][1].box if region is None else _union(region, self._placed[before["id"]][1].box)
        current = {rec.id: rec for rec in self.scene.lesions}
        for after in change.lesions_after:
            if after is None or after["id"] not in current:
                continue
            placed = self.placed(current[after["id"]])
            region = placed.box if region is None else _union(region, placed.box)
        for lesion_id in list(self._placed):
            if lesion_id not in current:
                del self._placed[lesion_id]
                self.derived.pop(lesion_id, None)
        if region is None:
            return None
        region = self.render_region(region)
        for callback in list(self._listeners):
            callback(region)
        return region

    def subscribe(self, callback: Callable[[Box], object]) -> None:
        """``callback(region)`` after each incremental render (widgets refresh their layers)."""
        self._listeners.append(callback)

    def result(self) -> RenderResult:
        return RenderResult(image=self.image, labels=self.labels, source=self.source, derived=dict(self.derived))

    def check(self, what: str = "render") -> None:
        """Raise if a label disagrees with the image (:func:`~.truth.check_label_truth`)."""
        result = self.result()
        records = {rec.id: rec for rec in self.scene.lesions}
        kept = {records[i].label for i, d in self.derived.items() if i in records and d.tolerance == float("inf")}
        check_label_truth(self.base, self.image, self.labels, result.allowances(), kept_labels=kept).raise_if_bad(what)


def render_without(scene: Scene, lesion_id: str) -> np.ndarray:
    """The scene's image (float32) rendered without lesion ``lesion_id``: what lies behind it."""
    return np.array(SceneRenderer(scene, follow=False, without_lesions={lesion_id}).image)


def render_scene(scene: Scene) -> RenderResult:
    """The scene's image (float32, native units) and label map (int32), rendered from scratch."""
    renderer = SceneRenderer(scene, follow=False)
    renderer.check("render")
    return renderer.result()
