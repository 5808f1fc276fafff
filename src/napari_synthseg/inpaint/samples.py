"""Several seeded fills of one mask: the inpainting entry point of the CLI, widgets and workflow.

It lives apart from :mod:`.infer` (the network wrapper) and :mod:`.filler` (the fill
interface), which it both uses, so neither of those imports the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from ..errors import SynthsegError
from ..fill import get_filler
from ..utils.progress import CancelToken, ProgressCallback, report
from .filler import LearnedFiller
from .infer import CLASSICAL, Inpainter


def _outpaint_mask_for(mask: np.ndarray, margin: int) -> np.ndarray:
    from .masks import mask_bbox, outpaint_mask

    if mask.ndim != 2:
        raise SynthsegError("outpainting works on 2D images; pick one slice of the volume")
    return outpaint_mask(mask.shape, mask_bbox(mask), margin)


def inpaint_samples(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    model: Union[str, Path, Inpainter] = "builtin",
    mode: str = "healthy",
    n_samples: int = 1,
    seed: int = 0,
    margin: int = 8,
    spacing: Optional[Sequence[float]] = None,
    device: Optional[str] = None,
    texture: float = 0.0,
    threads: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> List[np.ndarray]:
    """``n_samples`` filled copies of ``image`` (float32), sample ``i`` seeded with ``seed + i``.

    Parameters
    ----------
    image : ndarray
        2D image, or a 3D volume (z, y, x) filled slice by slice (healthy/lesion modes).
    mask : ndarray of bool
        Healthy/lesion: the pixels to fill. Outpaint: the lesion to *keep*; everything outside
        its bounding box grown by ``margin`` pixels is regenerated.
    model : str or Path or Inpainter
        A model file, ``builtin`` (the shipped model for ``mode``), ``builtin:NAME``, a loaded
        :class:`Inpainter`, or ``biharmonic``/``telea`` (deterministic: every sample is the
        same; healthy mode only).
    texture : float
        Seeded grain added to learned fills (see :func:`texture_noise`); 0 keeps the
        smooth, best-PSNR fill (use 0 for lesion extraction, where grain would end up in the
        extracted lesion).
    threads : int, optional
        CPU threads for learned models (see :class:`Inpainter`).
    """
    if n_samples < 1:
        raise SynthsegError(f"the number of samples must be at least 1, got {n_samples}")
    img = np.asarray(image)
    msk = np.asarray(mask)
    if msk.shape != img.shape:
        raise SynthsegError(f"mask shape {msk.shape} does not match image shape {img.shape}; "
                            "the mask lies (partly) off the image - use a mask drawn on this image")
    msk = msk.astype(bool)
    if not msk.any():
        raise SynthsegError("the mask is empty; draw the region first")
    key = str(model).strip().lower() if isinstance(model, (str, Path)) else ""
    if key in CLASSICAL:
        if mode != "healthy":
            raise SynthsegError(f"{key} can only do healthy fill; pick a learned model for {mode}")
        filler = get_filler(key)
    else:
        filler = LearnedFiller(model, mode=mode, device=device, texture=texture, threads=threads)
    fill_mask = _outpaint_mask_for(msk, margin) if mode == "outpaint" else msk
    out = []
    for i in range(n_samples):
        if cancel is not None:
            cancel.raise_if_cancelled()
        report(progress, i, n_samples, f"sample {i + 1}/{n_samples}")
        out.append(filler.fill(img, fill_mask, spacing=spacing, seed=seed + i, cancel=cancel))
    report(progress, n_samples, n_samples, "done")
    return out
