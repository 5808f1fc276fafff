"""Turn an accepted inpainting sample into a lesion record of a scene.

A learned (or classical) fill produces candidate images; the one the user accepts becomes a
record like any placed lesion — rendered deterministically from stored pixels, undoable,
deletable — instead of a new image file:

- ``healthy`` (a real lesion removed): a ``removal`` record holding the fill inside the mask;
  no label.
- ``lesion`` (a lesion drawn into a masked healthy region, LINOP): a ``nodule`` record whose
  mask is the drawn mask (its size and position set the lesion's, as in LINOP), so the label
  is exact by construction.
- ``outpaint`` (everything around a kept lesion regenerated): an ``outpaint`` record holding
  the regenerated pixels outside the lesion's box; its label is the kept lesion's mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..errors import SynthsegError
from ..scene import LesionRecord, Scene

MODES = ("healthy", "lesion", "outpaint")


def accept_fill_sample(
    scene: Scene,
    sample: np.ndarray,
    mask: np.ndarray,
    mode: str,
    provenance: dict[str, Any] | None = None,
    fill_mask: np.ndarray | None = None,
    kind: str | None = None,
) -> LesionRecord:
    """Store ``sample`` (a full-size filled image) in ``scene`` as one record.

    Parameters
    ----------
    mask : ndarray of bool
        healthy/lesion: the filled region. outpaint: the lesion that was kept.
    fill_mask : ndarray of bool, optional
        outpaint only: the regenerated region (default: everything outside ``mask``).
    provenance : dict
        Model file sha256, mode, seed, sample index... stored in the record's source.
    """
    if mode not in MODES:
        raise SynthsegError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    image = scene.load_image()
    sample = np.asarray(sample, np.float32)
    mask = np.asarray(mask).astype(bool)
    if sample.shape != image.shape or mask.shape != image.shape:
        raise SynthsegError(f"the sample {sample.shape} and mask {mask.shape} must match the image {image.shape}")
    if not mask.any():
        raise SynthsegError("the mask is empty")
    if not np.isfinite(sample).all():
        raise SynthsegError("the sample has NaN or infinite values")
    source_values = np.asarray(image.array, np.float32)
    if mode == "outpaint":
        region = ~mask if fill_mask is None else np.asarray(fill_mask).astype(bool)
        if not region.any():
            raise SynthsegError("the regenerated region is empty")
        blend_mask, label_mask = region, mask
    else:
        blend_mask, label_mask = mask, mask
    box = ndi.find_objects((blend_mask | label_mask).astype(np.uint8))[0]
    center = [(s.start + s.stop - 1) / 2.0 for s in box]
    assets = {
        "intensity": scene.assets.put(sample[box] - source_values[box]),
        "absolute": scene.assets.put(sample[box]),
        "mask": scene.assets.put(blend_mask[box]),
    }
    if mode == "outpaint":
        assets["label_mask"] = scene.assets.put(label_mask[box])
    record = LesionRecord(
        kind=kind or {"healthy": "removal", "lesion": "nodule", "outpaint": "outpaint"}[mode],
        source={"type": "inpaint", "mode": mode, **(provenance or {})},
        center_mm=tuple(float(v) for v in image.index_to_physical(np.asarray(center[::-1]))),
        size_mm=0.0,  # stored at the image's own grid: rendered as is, never rescaled
        blend={"mode": "alpha", "feather_mm": 0.0, "contrast": 1.0},
        seed=int((provenance or {}).get("seed", 0)),
        assets=assets,
        params={"patch_spacing": list(image.scale), "units": "HU" if image.modality == "CT" else "image",
                "patch_kind": f"inpaint-{mode}", "min_inside": 0.0, "fixed_grid": True},
    )
    return scene.add_lesion(record, label=f"accept {mode} sample")
