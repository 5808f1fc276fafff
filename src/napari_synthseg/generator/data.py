"""Training examples for the lesion generator, cut from a table of real CT nodule patches.

Every real nodule gives one *nodule example*: a cube of ``patch + 2 * jitter`` voxels on the
nodule's grid (:meth:`LesionGeneratorConfig.grid_spacing`), centred on the mask's box, in
network units, with its mask, class and mean HU. Nodules of up to 16 mm get 1 mm voxels; larger
ones a coarser grid, so the cube always holds the nodule and about half a diameter around it.

It also gives (when it can) one *healthy example* for the ``empty`` class: a ``patch``-voxel
cube at 1 mm cut away from the centre, with a nodule-shaped region placed on lung at least
3 mm from the real nodule. The target inside that region is real lung, so the model learns
healthy fill with the same weights (removal, in-and-out painting).

Everything is cut once at load time (a few hundred small cubes, float16): a training step then
costs only a random crop, flips and a rot90.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..errors import CancelledError, SynthsegError
from ..io.lesion_index import LesionEntry
from ..utils.progress import CancelToken, ProgressCallback, report
from .classes import GENERATOR_CLASSES, classify_nodule
from .network import LesionGeneratorConfig

log = logging.getLogger(__name__)
JITTER = 3  # voxels of random shift around the nodule centre
HEALTHY_GAP_MM = 3.0
HEALTHY_MAX_DIAMETER_MM = 16.0


@dataclass
class Example:
    """One training cube (network units) and its region."""

    image: np.ndarray  # float16 (N, N, N)
    mask: np.ndarray  # bool (N, N, N): the lesion (or healthy region) mask
    class_index: int
    mean_hu: float
    diameter_mm: float
    spacing_mm: float
    group: str


def read_patch(entry: LesionEntry) -> tuple[np.ndarray, np.ndarray, tuple]:
    """(HU float32, mask bool, spacing (z, y, x) mm) of one table row."""
    try:
        image = sitk.ReadImage(str(entry.image_path))
        mask_image = sitk.ReadImage(str(entry.mask_path))
    except RuntimeError as exc:
        raise SynthsegError(f"cannot read {entry.image_path.name}: {str(exc).strip().splitlines()[-1][:120]}") from None
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    mask = sitk.GetArrayFromImage(mask_image) > 0
    if hu.ndim != 3 or mask.shape != hu.shape:
        raise SynthsegError(f"{entry.image_path.name}: a 3D CT patch and a mask of the same shape are needed")
    return hu, mask, tuple(float(s) for s in reversed(image.GetSpacing()))


def mask_center(mask: np.ndarray) -> np.ndarray:
    """Centre (continuous index) of the mask's bounding box: the renderer places patches by it."""
    box = ndi.find_objects(mask.astype(np.uint8))[0]
    return np.array([(s.start + s.stop - 1) / 2.0 for s in box])


def resample_cube(volume: np.ndarray, spacing, center_index, size: int, grid_mm: float,
                  order: int = 1, mode: str = "nearest") -> np.ndarray:
    """``size``-voxel cube at ``grid_mm`` spacing centred on ``center_index`` of ``volume``.

    Coarser grids are anti-aliased (Gaussian of the footprint) first.
    """
    sp = np.asarray(spacing, float)
    step = grid_mm / sp  # input voxels per output voxel, per axis
    src = np.asarray(volume, np.float32)
    sigma = np.maximum(0.0, (step - 1.0) / 2.0)
    if order > 0 and sigma.any():
        src = ndi.gaussian_filter(src, sigma, mode="nearest")
    offs = (np.arange(size) - (size - 1) / 2.0)
    coords = [np.asarray(center_index, float)[a] + offs * step[a] for a in range(3)]
    grid = np.meshgrid(*coords, indexing="ij")
    return ndi.map_coordinates(src, grid, order=order, mode=mode, prefilter=False).astype(np.float32)


def _healthy_example(hu: np.ndarray, mask: np.ndarray, spacing, config: LesionGeneratorConfig,
                     rng: np.random.Generator, group: str) -> Optional[Example]:
    """A 1 mm cube away from the nodule with the nodule's own shape placed on lung."""
    p = config.patch
    if not np.allclose(spacing, config.spacing_mm, atol=0.05) or min(hu.shape) < p:
        return None
    box = ndi.find_objects(mask.astype(np.uint8))[0]
    shape_mask = mask[box]
    if max(shape_mask.shape) * config.spacing_mm > HEALTHY_MAX_DIAMETER_MM or max(shape_mask.shape) > p - 8:
        # a big nodule's shape would not fit in lung beside it: use a 7 mm ball instead
        r = 3.5
        zz, yy, xx = np.mgrid[-4:5, -4:5, -4:5]
        shape_mask = zz ** 2 + yy ** 2 + xx ** 2 <= r * r
    near = ndi.distance_transform_edt(~mask, sampling=spacing) < HEALTHY_GAP_MM
    sz = np.asarray(shape_mask.shape)
    for _ in range(40):
        start = np.array([rng.integers(0, n - p + 1) for n in hu.shape])
        inner = np.array([rng.integers(4, p - 4 - s + 1) if p - 8 - s >= 0 else 4 for s in sz])
        at = start + inner
        sl = tuple(slice(a, a + s) for a, s in zip(at, sz))
        if any(a + s > n for a, s, n in zip(at, sz, hu.shape)):
            continue
        region = np.zeros(hu.shape, bool)
        region[sl] = shape_mask
        if (region & near).any():
            continue
        values = hu[region]
        if np.mean(values < -500) < 0.7:
            continue  # keep healthy examples on aerated lung, where nodules are inserted
        crop = tuple(slice(a, a + p) for a in start)
        return Example(image=config.normalise(hu[crop]).astype(np.float16), mask=region[crop],
                       class_index=0, mean_hu=float(values.mean()),
                       diameter_mm=float((6 * region.sum() / math.pi) ** (1 / 3)),
                       spacing_mm=float(config.spacing_mm), group=group)
    return None


def load_examples(entries: Sequence[LesionEntry], config: LesionGeneratorConfig, *, seed: int = 0,
                  healthy: bool = True, progress: Optional[ProgressCallback] = None,
                  cancel: Optional[CancelToken] = None) -> tuple[list[Example], list[Example]]:
    """(nodule examples, healthy examples) of ``entries`` (give only the train side)."""
    rng = np.random.default_rng(seed)
    nodules: list[Example] = []
    healthy_examples: list[Example] = []
    size = config.patch + 2 * JITTER
    for i, entry in enumerate(entries):
        if cancel is not None and cancel.cancelled:
            raise CancelledError("cancelled by the user")
        hu, mask, spacing = read_patch(entry)
        if not mask.any():
            log.warning("%s has an empty mask; skipped", entry.mask_path.name)
            continue
        volume_mm3 = float(mask.sum()) * float(np.prod(spacing))
        diameter = (6 * volume_mm3 / math.pi) ** (1 / 3)
        grid = config.grid_spacing(diameter)
        center = mask_center(mask)
        cube = resample_cube(hu, spacing, center, size, grid, order=1)
        cube_mask = resample_cube(mask.astype(np.float32), spacing, center, size, grid, order=1, mode="constant") >= 0.5
        if not cube_mask.any():
            continue
        name = classify_nodule(hu, mask)
        nodules.append(Example(image=config.normalise(cube).astype(np.float16), mask=cube_mask,
                               class_index=GENERATOR_CLASSES.index(name), mean_hu=float(hu[mask].mean()),
                               diameter_mm=diameter, spacing_mm=grid, group=entry.group))
        if healthy:
            example = _healthy_example(hu, mask, spacing, config, rng, entry.group)
            if example is not None:
                healthy_examples.append(example)
        report(progress, i + 1, len(entries), "loading nodules")
    if not nodules:
        raise SynthsegError("no usable nodule (image + non-empty mask) in the library")
    return nodules, healthy_examples


class BatchSampler:
    """Random augmented batches: (x0, region, mask, class, mean HU) as numpy arrays.

    Classes are drawn with weights proportional to the square root of their frequency (rare
    ground-glass nodules are seen more often than their share, without being repeated to
    exhaustion); ``healthy_prob`` of the samples are healthy examples.
    """

    def __init__(self, nodules: list[Example], healthy: list[Example], config: LesionGeneratorConfig,
                 healthy_prob: float = 0.2, seed: int = 0, crop: int = 0) -> None:
        self.nodules, self.healthy, self.config = nodules, healthy, config
        self.crop = int(crop) if crop and crop < config.patch else config.patch
        self.healthy_prob = healthy_prob if healthy else 0.0
        self.rng = np.random.default_rng(seed)
        counts = np.bincount([e.class_index for e in nodules], minlength=len(GENERATOR_CLASSES)).astype(float)
        per_class = np.sqrt(counts) / np.maximum(counts, 1)
        weights = np.array([per_class[e.class_index] for e in nodules])
        self.weights = weights / weights.sum()

    def _augment(self, *cubes):
        rng = self.rng
        flips = [a for a in range(3) if rng.random() < 0.5]
        k = int(rng.integers(0, 4))
        out = []
        for c in cubes:
            if flips:
                c = np.flip(c, axis=flips)
            out.append(np.ascontiguousarray(np.rot90(c, k, axes=(1, 2))))
        return out

    def example(self) -> tuple[np.ndarray, np.ndarray, int, float]:
        p = self.config.patch
        if self.healthy_prob and self.rng.random() < self.healthy_prob:
            ex = self.healthy[int(self.rng.integers(len(self.healthy)))]
            image, mask = ex.image, ex.mask
        else:
            ex = self.nodules[int(self.rng.choice(len(self.nodules), p=self.weights))]
            o = self.rng.integers(0, 2 * JITTER + 1, size=3)
            sl = tuple(slice(a, a + p) for a in o)
            image, mask = ex.image[sl], ex.mask[sl]
        if self.crop < p:
            image, mask = self._subcrop(image, mask)
        image, mask = self._augment(image.astype(np.float32), mask)
        return image, mask, ex.class_index, ex.mean_hu

    def _subcrop(self, image: np.ndarray, mask: np.ndarray):
        """A ``crop``-voxel window holding the whole region where it fits (centred otherwise).

        The network is convolutional (plus one global attention in its middle block), so it
        trains on smaller windows than it samples on: on a shared CPU this buys ~2.4 times the
        samples per hour for 24^3 windows of 32^3 cubes.
        """
        c, p = self.crop, self.config.patch
        box = ndi.find_objects(mask.astype(np.uint8))[0]
        starts = []
        for s in box:
            lo, hi = max(0, s.stop - c), min(p - c, s.start)
            if lo > hi:
                starts.append(int(np.clip(round((s.start + s.stop - c) / 2), 0, p - c)))
            else:
                starts.append(int(self.rng.integers(lo, hi + 1)))
        sl = tuple(slice(a, a + c) for a in starts)
        return image[sl], mask[sl]

    def batch(self, n: int):
        items = [self.example() for _ in range(n)]
        x0 = np.stack([it[0] for it in items])[:, None]
        mask = np.stack([it[1] for it in items])[:, None]
        classes = np.array([it[2] for it in items], np.int64)
        mean_hu = np.array([it[3] for it in items], np.float32)
        return x0, mask, classes, mean_hu


def class_statistics(nodules: list[Example], healthy: list[Example]) -> tuple:
    """Per class (mean, std) of the examples' mean HU, for :attr:`LesionGeneratorConfig.class_mean_hu`."""
    stats = []
    for index in range(len(GENERATOR_CLASSES)):
        values = [e.mean_hu for e in (healthy if index == 0 else nodules) if e.class_index == index]
        if len(values) >= 2:
            stats.append((round(float(np.mean(values)), 1), round(float(np.std(values)), 1)))
        else:
            stats.append(tuple(LesionGeneratorConfig().class_mean_hu[index]))
    return tuple(stats)
