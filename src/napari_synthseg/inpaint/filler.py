"""The learned inpainter behind the fill interface: ``get_filler("learned", model_path=..., mode=...)``.

The shared driver (:meth:`napari_synthseg.fill.Filler.fill`) validates the input, cuts each mask
component's bounding box plus context out of the image and pastes the result back, so this
class only turns a crop into a filled crop. Volumes are filled slice by slice; a model trained
with ``context_slices = k`` also gets the k slices above and below each slice as input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..fill.base import Filler, _component_boxes, _validate, register_filler
from ..utils.progress import CancelToken, ProgressCallback, report
from .infer import Inpainter, resolve_model_path
from .normalize import image_half_range


class LearnedFiller(Filler):
    """Fill with a trained :class:`~napari_synthseg.inpaint.InpaintNet`.

    Parameters
    ----------
    model_path : path, ``builtin``, ``builtin:NAME`` or Inpainter
        The model (default ``builtin``: the shipped CXR model for ``mode``).
    mode : str
        ``healthy`` (remove a lesion), ``lesion`` (draw a lesion where the mask is; needs a model
        trained with lesion masks) or ``outpaint`` (the mask is everything to regenerate).
    device : str, optional
        ``auto``, ``cpu``, ``cuda``...
    tile, overlap : int
        Tiling of crops larger than ``tile`` pixels.
    threads : int, optional
        CPU threads for the forward pass (None: torch's setting).
    texture : float
        Seeded grain strength (:func:`~napari_synthseg.inpaint.infer.texture_noise`); 0 keeps
        the smooth best-PSNR fill.
    """

    name = "learned"
    supports_3d = False
    # the network was trained on 128-pixel crops: give small holes that much surrounding
    min_context_px = 32
    context_fraction = 1.0

    def __init__(self, model_path: Union[str, Path, Inpainter] = "builtin",
                 mode: str = "healthy", device: Optional[str] = None, tile: int = 512,
                 overlap: int = 64, texture: float = 0.0, threads: Optional[int] = None) -> None:
        self.inpainter = (model_path if isinstance(model_path, Inpainter)
                          else Inpainter(resolve_model_path(model_path, mode), device=device, tile=tile,
                                         overlap=overlap, threads=threads))
        self.mode = str(mode).strip().lower()
        self.texture = float(texture)
        self.inpainter.check_mode(self.mode)
        self._cancel: Optional[CancelToken] = None
        self._image_half_range: Optional[float] = None

    def fill_region(self, image, mask, spacing, rng):
        return self.inpainter.predict(image, mask, self.mode, rng=rng, cancel=self._cancel,
                                      texture=self.texture, image_half_range=self._image_half_range)

    def fill(self, image, mask, *, spacing: Optional[Sequence[float]] = None,
             seed: Optional[int] = None, progress: Optional[ProgressCallback] = None,
             cancel: Optional[CancelToken] = None) -> np.ndarray:
        self._cancel = cancel
        cfg = self.inpainter.config
        if cfg.norm_scale == "image":
            # the scale of the whole image (or volume), as in training, not of the filled crop
            self._image_half_range = image_half_range(np.asarray(image, np.float32), cfg.norm_percentiles)
        try:
            k = self.inpainter.config.context_slices
            if np.ndim(image) == 3 and k:
                return self._fill_volume_with_neighbours(image, mask, spacing, seed, progress, cancel)
            return super().fill(image, mask, spacing=spacing, seed=seed, progress=progress,
                                cancel=cancel)
        finally:
            self._cancel = None
            self._image_half_range = None

    def _fill_volume_with_neighbours(self, image, mask, spacing, seed, progress, cancel):
        img, msk, _ = _validate(image, mask, spacing)
        k = self.inpainter.config.context_slices
        out = img.copy()
        rng = np.random.default_rng(seed)
        zs = [int(z) for z in np.flatnonzero(msk.any(axis=(1, 2)))]
        nz = img.shape[0]
        for i, z in enumerate(zs):
            if cancel is not None:
                cancel.raise_if_cancelled()
            report(progress, i, len(zs), f"learned: slice {z}")
            idx = [min(max(z + d, 0), nz - 1) for d in list(range(-k, 0)) + list(range(1, k + 1))]
            for box in _component_boxes(msk[z], self.min_context_px, self.context_fraction, False):
                sub_m = msk[z][box]
                if sub_m.all():
                    from ..errors import SynthsegError

                    raise SynthsegError(f"slice {z} is entirely masked; leave some context")
                nb = np.stack([img[j][box] for j in idx])
                res = self.inpainter.predict(img[z][box], sub_m, self.mode, rng=rng,
                                             neighbours=nb, cancel=cancel,
                                             texture=self.texture,
                                             image_half_range=self._image_half_range)
                region = out[z][box]
                region[sub_m] = res[sub_m]
        report(progress, len(zs), len(zs), "learned: done")
        return out


register_filler("learned", LearnedFiller, overwrite=True)
