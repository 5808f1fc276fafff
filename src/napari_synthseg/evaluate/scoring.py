"""Scoring a segmenter on real test lesions: Dice, lesion-level sensitivity by size, FROC.

- Dice per test case from ``monai.metrics.DiceMetric`` on the thresholded probability map.
- Lesion-level detection: each connected part of the ground truth is a lesion; it is *detected*
  at threshold t when a connected part of ``prob > t`` overlaps it. Sizes are the table's
  diameter for the case's own lesion (LUNA16's measure) and the equivalent diameter otherwise,
  binned as < 6, 6-10, 10-20 and > 20 mm.
- FROC: candidates are the connected parts of ``prob > candidate_threshold`` scored by their
  maximum probability; a candidate overlapping a lesion is a true positive (the lesion keeps
  its best candidate), every other is a false positive. ``monai.metrics.compute_froc_curve_data``
  turns them into the curve and ``compute_froc_score`` averages the sensitivity at 1/8 ... 8
  false positives per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from .lesion_sets import LesionSample

SIZE_BINS = ((0.0, 6.0, "<6 mm"), (6.0, 10.0, "6-10 mm"), (10.0, 20.0, "10-20 mm"), (20.0, math.inf, ">20 mm"))
FROC_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
DETECTION_THRESHOLD = 0.5
CANDIDATE_THRESHOLD = 0.1


def size_bin(diameter_mm: float) -> str:
    for lo, hi, name in SIZE_BINS:
        if lo <= diameter_mm < hi:
            return name
    return SIZE_BINS[-1][2]


@dataclass
class CaseScore:
    """One test case under one trained model."""

    dice: float
    lesion_diameters: list[float]
    detected: list[bool]
    tp_probs: list[float]  # best candidate score of each lesion (0 when missed at any threshold)
    fp_probs: list[float]
    extra: dict = field(default_factory=dict)


def _structure(ndim: int):
    return ndi.generate_binary_structure(ndim, ndim)


def score_case(prob: np.ndarray, sample: LesionSample, threshold: float = DETECTION_THRESHOLD,
               candidate_threshold: float = CANDIDATE_THRESHOLD) -> CaseScore:
    """Dice, detections and FROC candidates of one probability map against ``sample.mask``."""
    import torch
    from monai.metrics import DiceMetric

    gt = sample.mask.astype(bool)
    pred = prob > threshold
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    dice = float(metric(torch.from_numpy(pred[None, None].astype(np.float32)),
                        torch.from_numpy(gt[None, None].astype(np.float32)))[0, 0])
    structure = _structure(gt.ndim)
    gt_labels, n_gt = ndi.label(gt, structure)
    pred_labels, _ = ndi.label(pred, structure)
    cand_labels, n_cand = ndi.label(prob > candidate_threshold, structure)
    cand_scores = ndi.maximum(prob, cand_labels, index=np.arange(1, n_cand + 1)) if n_cand else np.zeros(0)
    centre = np.array(gt.shape) / 2.0 - 0.5
    diameters, detected, tp_probs = [], [], []
    matched = np.zeros(n_cand + 1, bool)
    voxel = float(np.prod(sample.spacing))
    for k in range(1, n_gt + 1):
        part = gt_labels == k
        coords = np.argwhere(part)
        own = np.linalg.norm(coords.mean(axis=0) - centre) * float(sample.spacing[0]) < 0.25 * gt.shape[0] * float(sample.spacing[0])
        size = float(part.sum()) * voxel
        eq = (6 * size / math.pi) ** (1 / 3) if gt.ndim == 3 else 2 * math.sqrt(size / math.pi)
        # The case's own (centred) lesion carries the table's diameter; neighbours their own size.
        diameters.append(float(sample.diameter_mm) if own and sample.diameter_mm else eq)
        detected.append(bool(pred_labels[part].any()))
        hits = np.unique(cand_labels[part])
        hits = hits[hits > 0]
        matched[hits] = True
        tp_probs.append(float(cand_scores[hits - 1].max()) if hits.size else 0.0)
    fp_probs = [float(cand_scores[j - 1]) for j in range(1, n_cand + 1) if not matched[j]]
    return CaseScore(dice, diameters, detected, tp_probs, fp_probs)


def froc(cases: Sequence[CaseScore], fp_rates: Sequence[float] = FROC_FP_RATES) -> tuple[float, np.ndarray, np.ndarray]:
    """(FROC score, false positives per image, sensitivity) over ``cases`` (MONAI)."""
    from monai.metrics import compute_froc_curve_data, compute_froc_score

    tp = np.array([p for c in cases for p in c.tp_probs if p > 0], dtype=float)
    fp = np.array([p for c in cases for p in c.fp_probs], dtype=float)
    n_targets = sum(len(c.tp_probs) for c in cases)
    if n_targets == 0 or not cases:
        return math.nan, np.zeros(0), np.zeros(0)
    if tp.size == 0:
        return 0.0, np.zeros(1), np.zeros(1)
    fps, sens = compute_froc_curve_data(fp_probs=fp, tp_probs=tp, num_targets=n_targets, num_images=len(cases))
    fps, sens = np.asarray(fps, float), np.asarray(sens, float)
    # MONAI returns the curve from the lowest threshold (most false positives) down and reverses
    # it itself inside compute_froc_score; hand it over as returned, plot it in increasing order.
    score = float(compute_froc_score(fps, sens, eval_thresholds=tuple(fp_rates)))
    return score, fps[::-1], sens[::-1]
