"""Histogram (texture) control: the intensity distribution of real train-side nodules.

LeFusion (ICLR 2025) controls a generated lesion's texture with the intensity histogram of a
real lesion. This is the post-hoc form of that control for the small model: the generator file
carries, for every train-side nodule, the 33 quantiles of its HU inside the mask (on the
generation grid), with its class, diameter and mean HU. A generated nodule's voxels inside the
mask are mapped rank for rank onto the quantiles of a *donor*: one of the five train-side
nodules of the same class closest in diameter and mean HU, chosen by the sample's seed, the
quantiles shifted so the mean is the requested mean HU. The spatial structure (which voxel is
brighter than which: the texture's layout, the core, the partial-volume rim) is the model's;
the distribution of values is a real nodule's. Only voxels inside the mask change, so the label
is untouched; the seed picks the donor, so a render is deterministic.

Why: the analysis of what still gives the small model's nodules away on held-out series
(docs/benchmarks.md, "Lesion generator", third pass) found the in-mask value distribution
(spread, 10th/90th percentiles, grey-level co-occurrence homogeneity) to be the top give-aways
after the mean correction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import torch

#: Quantile levels of a nodule's in-mask HU distribution (the table's columns).
QUANTILES = np.linspace(0.0, 1.0, 33)
#: Donors considered per request (the seed picks one): several, so seeds differ.
DONOR_POOL = 5
#: Scales of the donor distance: log-diameter ratio and mean HU.
DIAMETER_LOG_SCALE = 0.25
MEAN_HU_SCALE = 100.0


@dataclass
class HistogramTable:
    """In-mask HU quantiles of real train-side nodules, with their class, diameter and mean HU."""

    quantiles: np.ndarray  # (N, len(QUANTILES)) float32, HU
    classes: np.ndarray  # (N,) int: index into the generator's class names
    diameters_mm: np.ndarray  # (N,) float32
    means_hu: np.ndarray  # (N,) float32

    def __len__(self) -> int:
        return int(len(self.classes))

    def to_tensors(self) -> Dict[str, torch.Tensor]:
        return {"hist/quantiles": torch.from_numpy(np.asarray(self.quantiles, np.float32)),
                "hist/class": torch.from_numpy(np.asarray(self.classes, np.int64)),
                "hist/diameter": torch.from_numpy(np.asarray(self.diameters_mm, np.float32)),
                "hist/mean": torch.from_numpy(np.asarray(self.means_hu, np.float32))}

    @classmethod
    def from_tensors(cls, tensors: Dict[str, torch.Tensor]) -> Optional[HistogramTable]:
        if "hist/quantiles" not in tensors:
            return None
        return cls(tensors["hist/quantiles"].numpy().astype(np.float32), tensors["hist/class"].numpy().astype(int),
                   tensors["hist/diameter"].numpy().astype(np.float32), tensors["hist/mean"].numpy().astype(np.float32))

    def nearest(self, class_index: int, diameter_mm: float, count: int, mean_hu: Optional[float] = None) -> np.ndarray:
        """Rows of the ``count`` nodules of the class nearest in diameter (and mean HU, if given)."""
        rows = np.flatnonzero(self.classes == int(class_index))
        dist = np.abs(np.log(np.maximum(self.diameters_mm[rows], 0.5) / max(float(diameter_mm), 0.5))) / DIAMETER_LOG_SCALE
        if mean_hu is not None:
            dist = dist + np.abs(self.means_hu[rows] - float(mean_hu)) / MEAN_HU_SCALE
        return rows[np.argsort(dist, kind="stable")[:count]]

    def donor(self, class_index: int, diameter_mm: float, mean_hu: float, seed: int) -> Optional[int]:
        """Row of the donor for a request: one of the :data:`DONOR_POOL` nearest of the class."""
        nearest = self.nearest(class_index, diameter_mm, DONOR_POOL, mean_hu)
        if nearest.size == 0:
            return None
        # its own stream, so the donor does not change the flow's noise (drawn from the seed too)
        return int(nearest[np.random.default_rng([int(seed), 7919]).integers(len(nearest))])

    def target(self, row: int, mean_hu: float) -> np.ndarray:
        """The donor's quantiles shifted so their mean (over the quantile levels) is ``mean_hu``."""
        q = self.quantiles[row].astype(np.float64)
        return q + (float(mean_hu) - float(np.trapezoid(q, QUANTILES)))


def fit_histogram_table(examples: Sequence, denormalise) -> HistogramTable:
    """The table of training nodule examples (:class:`~napari_synthseg.generator.data.Example`).

    ``denormalise`` turns network units back into HU (the config's ``denormalise``).
    """
    quantiles, classes, diameters, means = [], [], [], []
    for ex in examples:
        mask = np.asarray(ex.mask, bool)
        if mask.sum() < 4:
            continue
        values = np.asarray(denormalise(np.asarray(ex.image, np.float32)[mask]), np.float64)
        quantiles.append(np.quantile(values, QUANTILES))
        classes.append(int(ex.class_index))
        diameters.append(float(ex.diameter_mm))
        means.append(float(values.mean()))
    return HistogramTable(np.asarray(quantiles, np.float32).reshape(-1, len(QUANTILES)), np.asarray(classes, int),
                          np.asarray(diameters, np.float32), np.asarray(means, np.float32))


def match_histogram(cube: np.ndarray, mask: np.ndarray, target_quantiles: np.ndarray) -> np.ndarray:
    """``cube`` with its values inside ``mask`` mapped rank for rank onto ``target_quantiles``."""
    out = np.array(cube, np.float32, copy=True)
    mask = np.asarray(mask, bool)
    values = out[mask]
    if values.size < 2:
        return out
    ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable") / (values.size - 1)
    out[mask] = np.interp(ranks, QUANTILES, np.asarray(target_quantiles, np.float64)).astype(np.float32)
    return out


__all__ = ["DONOR_POOL", "HistogramTable", "QUANTILES", "fit_histogram_table", "match_histogram"]
