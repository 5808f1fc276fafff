"""The label is what changed: derive each lesion's label from the pixels its blend changed, and
check a render (or an export) against that rule.

The rule (``docs/rendering.md``)
--------------------------------
For every lesion, with ``d`` = image after the lesion's blend (and its harmonization overlay)
minus the image before it, and ``C`` = the lesion's *contrast*, the peak ``|d|`` inside its
blend mask:

1. **Coverage.** The label is the blend mask plus every voxel with ``|d| > tolerance * C``
   (``tolerance`` = :data:`LABEL_TOLERANCE`, 5 % by default; ``blend["label_tolerance"]``
   per record). So the soft rim of an additive residual, an alpha feather, the partial-volume
   slices of a nodule on thick CT slices and a harmonization's changes are all labelled, and
   no voxel outside the label changed by more than 5 % of the lesion's contrast.
2. **No detached fragments.** Pieces of the label that touch the rest only diagonally or not at
   all (face connectivity) and are smaller than :data:`MIN_FRAGMENT_VOXELS` voxels
   (``blend["min_fragment_voxels"]``) are *dropped*: their pixels are restored to what they
   were before the lesion, so the image shows nothing there and the label says nothing. The
   largest piece is always kept. A spicule tip cut off by resampling therefore neither shows
   as a speck nor counts as a second lesion in a component-based detector evaluation.
3. **Every label is a visible change.** A lesion whose blend changed nothing (``C == 0``) is an
   error; whether a change is *visible enough* is the QA gate's job (CNR, ``qa.metrics``).

:func:`check_label_truth` verifies 1-3 on a rendered image against its source. It runs at the
end of :func:`~napari_synthseg.render.compose.render_scene` and in the export of every case,
and raises instead of letting a label that disagrees with its image through.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..errors import SynthsegError

#: Voxels changed by more than this fraction of the lesion's contrast are labelled.
LABEL_TOLERANCE = 0.05
#: Detached label pieces smaller than this (voxels / pixels) are dropped from label and image.
MIN_FRAGMENT_VOXELS = 10

Box = tuple[slice, ...]


@dataclass
class DerivedLabel:
    """One lesion's label as derived at composite time (image coordinates)."""

    box: Box  # image box the label array covers
    label: np.ndarray  # bool, shape of the box
    tolerance: float  # |change| allowed outside the label (native units)
    contrast: float  # peak |change| inside the blend mask (native units)
    dropped_voxels: int = 0  # detached fragment voxels restored to the image before the lesion


def _face_structure(ndim: int) -> np.ndarray:
    return ndi.generate_binary_structure(ndim, 1)


def small_fragments(label: np.ndarray, min_fragment: int) -> np.ndarray:
    """Voxels of face-connected pieces of ``label`` smaller than ``min_fragment``, except the
    largest piece (which is kept whatever its size)."""
    pieces, n = ndi.label(label, structure=_face_structure(label.ndim))
    if n <= 1 or min_fragment <= 1:
        return np.zeros(label.shape, bool)
    sizes = np.bincount(pieces.ravel(), minlength=n + 1)
    sizes[0] = 0
    drop = sizes < min_fragment
    drop[0] = False
    drop[int(np.argmax(sizes))] = False
    return drop[pieces]


def derive_label(
    diff: np.ndarray,
    blend_mask: np.ndarray,
    tolerance: float = LABEL_TOLERANCE,
    min_fragment: int = MIN_FRAGMENT_VOXELS,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(label, dropped, tolerance in native units, contrast) for one lesion's change ``diff``.

    ``dropped`` are the voxels of detached small fragments: the caller restores them.
    """
    magnitude = np.abs(diff)
    inside = magnitude[blend_mask] if blend_mask.any() else magnitude.ravel()
    contrast = float(inside.max()) if inside.size else 0.0
    allowed = float(tolerance) * contrast
    label = blend_mask | (magnitude > allowed)
    dropped = small_fragments(label, int(min_fragment))
    if dropped.any():
        label = label & ~dropped
    return label, dropped, allowed, contrast


@dataclass
class LabelTruthReport:
    """What :func:`check_label_truth` found (all counts should be 0)."""

    outside_voxels: int = 0  # voxels outside every label changed by more than allowed
    max_outside_change: float = 0.0  # the largest such change (native units)
    unchanged_labels: list[int] = field(default_factory=list)  # label values whose pixels did not change
    fragments: int = 0  # detached pieces below the size limit
    labels_checked: int = 0

    @property
    def ok(self) -> bool:
        return self.outside_voxels == 0 and not self.unchanged_labels and self.fragments == 0

    def describe(self) -> str:
        parts = []
        if self.outside_voxels:
            parts.append(f"{self.outside_voxels} voxels outside every label changed by up to "
                         f"{self.max_outside_change:.4g} (more than the tolerance)")
        if self.unchanged_labels:
            parts.append(f"label(s) {self.unchanged_labels} mark pixels the render did not change")
        if self.fragments:
            parts.append(f"{self.fragments} detached label fragment(s) below the size limit")
        return "; ".join(parts) or "labels match the changed pixels"

    def raise_if_bad(self, what: str = "render") -> None:
        if not self.ok:
            raise SynthsegError(f"{what}: the label disagrees with the image: {self.describe()}")


def check_label_truth(
    original: np.ndarray,
    image: np.ndarray,
    labels: np.ndarray,
    allowances: list[tuple[Box, float]] | None = None,
    tolerance: float = LABEL_TOLERANCE,
    min_fragment: int = MIN_FRAGMENT_VOXELS,
    exact: float | None = None,
    kept_labels: frozenset[int] | set[int] = frozenset(),
) -> LabelTruthReport:
    """Check rendered ``image``/``labels`` against ``original`` (same shape).

    Parameters
    ----------
    allowances : list of (box, allowed)
        Image boxes where unlabelled voxels may change by up to ``allowed`` (the lesions'
        tolerances, summed where boxes overlap; ``inf`` for healthy fills, which change pixels
        and paint no label).
        Without them, each label's box (grown by one voxel) allows ``tolerance`` times that
        label's peak change.
    exact : float, optional
        Change tolerated where no allowance applies (default: 1e-6 of the source's range, i.e.
        float round-off).
    kept_labels : set of int
        Label values of real lesions kept as they were (an accepted outpainting regenerates
        the surroundings of a real lesion): they need not change.
    """
    original = np.asarray(original, np.float32)
    image = np.asarray(image, np.float32)
    diff = np.abs(image - original)
    report = LabelTruthReport()
    if exact is None:
        span = float(original.max() - original.min()) if original.size else 0.0
        exact = 1e-6 * max(span, 1.0)
    allowed = np.full(diff.shape, exact, dtype=np.float32)
    found = ndi.find_objects(labels)
    values = [v + 1 for v, sl in enumerate(found) if sl is not None]
    report.labels_checked = len(values)
    if allowances is None:
        allowances = []
        for value in values:
            box = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in found[value - 1])
            peak = float(diff[found[value - 1]][labels[found[value - 1]] == value].max())
            allowances.append((box, tolerance * peak))
    # overlapping lesions each change a voxel by up to their own tolerance: the bounds add up
    # (each bound capped so that their sum stays finite in float32)
    cap = float(np.finfo(np.float32).max) / 4
    for box, limit in allowances:
        allowed[box] += np.float32(min(float(limit), cap))
    outside = (labels == 0) & (diff > allowed)
    report.outside_voxels = int(outside.sum())
    if report.outside_voxels:
        report.max_outside_change = float(diff[outside].max())
    for value in values:
        sl = found[value - 1]
        mine = labels[sl] == value
        if value not in kept_labels and not (diff[sl][mine] > exact).any():
            report.unchanged_labels.append(int(value))
        report.fragments += int(ndi.label(small_fragments(mine, min_fragment), structure=_face_structure(mine.ndim))[1])
    return report


@dataclass
class LesionTruth:
    """Independent measurement of one rendered lesion against the rule (tests, benchmarks)."""

    outside_voxels: int  # unlabelled voxels near the lesion changed by > tolerance x its contrast
    contrast: float  # peak |change| inside its label
    changed_in_label: int  # label voxels that changed at all
    fragments: int  # detached label pieces below the size limit


def measure_lesion_truth(
    source: np.ndarray,
    image: np.ndarray,
    labels: np.ndarray,
    value: int,
    region: Box,
    tolerance: float = LABEL_TOLERANCE,
    min_fragment: int = MIN_FRAGMENT_VOXELS,
) -> LesionTruth:
    """Measure lesion ``value`` in ``region`` (which must hold no other lesion's change) from the
    pixels alone: the image before and after, and the label map."""
    diff = np.abs(np.asarray(image[region], np.float32) - np.asarray(source[region], np.float32))
    mine = labels[region] == value
    contrast = float(diff[mine].max()) if mine.any() else 0.0
    outside = int(((labels[region] == 0) & (diff > tolerance * contrast)).sum()) if mine.any() else int((diff > 0).sum())
    fragments = int(ndi.label(small_fragments(mine, min_fragment), structure=_face_structure(mine.ndim))[1])
    return LesionTruth(outside_voxels=outside, contrast=contrast, changed_in_label=int((diff[mine] > 0).sum()),
                       fragments=fragments)
