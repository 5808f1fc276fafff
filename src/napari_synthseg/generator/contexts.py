"""Neutral lung contexts: real train-side lung cubes with their (small) nodule removed.

A nodule for a radiograph is generated in 3D and projected (:mod:`napari_synthseg.lesions.projection`).
The generator needs lung around the site, and a radiograph has none in 3D, so it gets a
*neutral* context: a real train-side LIDC cube around a small nodule (<= 6 mm) whose nodule was
removed by biharmonic fill, kept only where the cube is almost all aerated lung. A few of them
travel inside the generator file, so sampling for radiographs needs no training data.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from ..io.lesion_index import LesionEntry
from .network import LesionGeneratorConfig

MAX_NODULE_MM = 6.0
MIN_LUNG_FRACTION = 0.85
N_CONTEXTS = 6


def neutral_contexts(entries: Sequence[LesionEntry], config: LesionGeneratorConfig,
                     n: int = N_CONTEXTS) -> np.ndarray:
    """(k, patch, patch, patch) HU cubes at ``config.spacing_mm`` (k <= n, may be 0)."""
    from ..fill import get_filler
    from .data import mask_center, read_patch, resample_cube

    p = config.patch
    found = []
    filler = get_filler("biharmonic")
    small = [e for e in sorted(entries, key=lambda e: e.name)
             if e.diameter_mm is not None and e.diameter_mm <= MAX_NODULE_MM]
    for entry in small:
        hu, mask, spacing = read_patch(entry)
        if not mask.any():
            continue
        center = mask_center(mask)
        cube = resample_cube(hu, spacing, center, p, config.spacing_mm)
        cube_mask = resample_cube(mask.astype(np.float32), spacing, center, p, config.spacing_mm,
                                  mode="constant") >= 0.5
        if not cube_mask.any():
            continue
        hole = ndi.binary_dilation(cube_mask, iterations=2)
        filled = np.asarray(filler.fill(cube, hole, spacing=(config.spacing_mm,) * 3), np.float32)
        if np.mean(filled < -600) >= MIN_LUNG_FRACTION:
            found.append(filled)
        if len(found) >= n:
            break
    return np.stack(found) if found else np.zeros((0, p, p, p), np.float32)
