"""Per-lesion annotations from a label map: boxes (pixels and mm), areas and COCO RLE."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage as ndi


def instances(labels: np.ndarray, spacing_np: Sequence[float], rle: bool = False) -> list[dict]:
    """One entry per non-zero label value: label, bbox, area (pixels and mm), optional RLE.

    ``bbox_px`` is COCO/NODE21 style ``[x, y, width, height]`` of the pixel extent (2D; for 3D
    ``[x, y, z, width, height, depth]``); ``bbox_mm`` is the same box in mm from the image
    corner (pixel edges, i.e. x_mm = x * spacing_x).
    """
    labels = np.asarray(labels)
    if not labels.any():
        return []
    boxes = ndi.find_objects(labels)
    voxel = float(np.prod(spacing_np))
    out = []
    for value, box in enumerate(boxes, start=1):
        if box is None:
            continue
        crop = labels[box] == value
        n = int(crop.sum())
        start = [s.start for s in box][::-1]  # x, y[, z]
        size = [s.stop - s.start for s in box][::-1]
        sp = list(spacing_np)[::-1]
        entry = {
            "label": value,
            "bbox_px": [int(v) for v in start + size],
            "bbox_mm": [round(float(v * s), 4) for v, s in zip(start + size, sp + sp)],
            "area_px": n,
            ("area_mm2" if labels.ndim == 2 else "volume_mm3"): round(n * voxel, 4),
        }
        if rle and labels.ndim == 2:
            full = np.zeros(labels.shape, dtype=np.uint8, order="F")
            full[box] = crop
            code = mask_utils.encode(full)
            code["counts"] = code["counts"].decode("ascii")
            entry["rle"] = code
        out.append(entry)
    return out
