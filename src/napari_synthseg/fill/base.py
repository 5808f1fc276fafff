"""The one interface every healthy-tissue filler implements (classical now, learned later).

A filler replaces the pixels under a boolean mask (a lesion, a device) by plausible healthy
tissue and leaves every other pixel untouched. :class:`Filler` does the parts all fillers share,
so a new method only writes :meth:`Filler.fill_region`:

* input checks (shape, dimensionality, empty/full mask, NaN) raising :class:`SynthsegError`;
* cropping: each group of nearby mask components is filled in its own box (mask bounding box
  plus a context margin), because fill only needs local context and a 20-pixel lesion in a
  2048 x 2048 radiograph must not cost a full-image solve;
* 3D: a filler that declares ``supports_3d = False`` is run slice by slice along axis 0 (the
  axial slices of a (z, y, x) volume); one that declares True gets 3D crops;
* pasting: the result equals ``image.astype(float32)`` outside the mask, bit for bit.

Learned inpainting models plug in by subclassing :class:`Filler` and calling
:func:`register_filler`; callers only use :func:`get_filler` and :meth:`Filler.fill`.
"""

from __future__ import annotations

import abc
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage as ndi

from ..errors import SynthsegError
from ..utils.progress import CancelToken, ProgressCallback, report

Box = Tuple[slice, ...]


class Filler(abc.ABC):
    """Base class of all fillers.

    Attributes
    ----------
    name : str
        Registry name (e.g. ``"biharmonic"``).
    supports_3d : bool
        True if :meth:`fill_region` accepts 3D crops; otherwise 3D input is filled slice-wise.
    min_context_px : int
        Minimum context margin (pixels) around each mask component's bounding box.
    context_fraction : float
        Extra margin as a fraction of the component's extent along each axis; learned models
        that need more surroundings raise it.
    """

    name: str = "base"
    supports_3d: bool = False
    min_context_px: int = 8
    context_fraction: float = 0.5

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def fill_region(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        spacing: Optional[Tuple[float, ...]],
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Fill one crop.

        Parameters
        ----------
        image : ndarray, float32
            The crop (2D, or 3D if ``supports_3d``), finite values in native units (HU, raw
            detector values); pixels under ``mask`` hold the original values and must be ignored.
        mask : ndarray, bool
            Pixels to replace; never empty and never the whole crop.
        spacing : tuple of float or None
            Pixel spacing in mm for the crop's axes, if known.
        rng : numpy.random.Generator
            For stochastic fillers; seeded from ``seed`` in :meth:`fill`.

        Returns
        -------
        ndarray
            Same shape as ``image``; only values under ``mask`` are used.
        """

    # ------------------------------------------------------------------ shared driver
    def fill(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        *,
        spacing: Optional[Sequence[float]] = None,
        seed: Optional[int] = None,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelToken] = None,
    ) -> np.ndarray:
        """Return a new float32 array: ``image`` with the ``mask`` pixels filled.

        Parameters
        ----------
        image : ndarray
            2D (rows, cols) or 3D (z, y, x) grey image in native units (any real dtype).
        mask : ndarray of bool
            Same shape as ``image``; True where tissue is to be replaced.
        spacing : sequence of float, optional
            Pixel/voxel spacing in mm, one value per axis.
        seed : int, optional
            Seed for stochastic fillers (ignored by deterministic ones).
        progress, cancel : optional
            Progress callback ``(step, total, message)`` and cancel token, polled per crop.

        Returns
        -------
        ndarray of float32
            Equal to ``image.astype(np.float32)`` wherever ``mask`` is False.

        Raises
        ------
        SynthsegError
            Wrong dimensionality or shape, empty or full mask, non-finite image values.
        """
        img, msk, spc = _validate(image, mask, spacing)
        # _validate already returned a private float32 copy: fill it in place (a second
        # full-size copy would cost 300 MB for a 300-slice CT). Boxes never share mask
        # pixels, and each box is read before it is written.
        out = img
        rng = np.random.default_rng(seed)
        boxes = _component_boxes(msk, self.min_context_px, self.context_fraction,
                                 slicewise=(img.ndim == 3 and not self._use_3d(spc)))
        for i, box in enumerate(boxes):
            if cancel is not None:
                cancel.raise_if_cancelled()
            report(progress, i, len(boxes), f"{self.name}: filling region {i + 1}/{len(boxes)}")
            sub_img = img[box].copy()  # fillers may scribble on their input
            sub_msk = msk[box]
            filled = self._fill_box(sub_img, sub_msk, spc, rng)
            region = out[box]
            region[sub_msk] = filled[sub_msk]
        report(progress, len(boxes), len(boxes), f"{self.name}: done")
        return out

    def _use_3d(self, spacing: Optional[Tuple[float, ...]]) -> bool:
        """Whether a 3D crop goes to :meth:`fill_region` whole (subclasses may refine)."""
        return self.supports_3d

    def _fill_box(self, img, msk, spacing, rng) -> np.ndarray:
        if img.ndim == 2 or self._use_3d(spacing):
            res = np.asarray(self.fill_region(img, msk, spacing, rng), dtype=np.float32)
            if res.shape != img.shape:
                raise RuntimeError(f"filler {self.name!r} returned shape {res.shape}, "
                                   f"expected {img.shape}")
            return res
        res = img.copy()
        sp2 = None if spacing is None else tuple(spacing[1:])
        for z in range(img.shape[0]):
            if not msk[z].any():
                continue
            if msk[z].all():
                # A slice of the crop entirely masked (only possible when the crop spans the
                # whole slice) has no in-plane context; leave it to the caller's error path.
                raise SynthsegError(f"slice {z} of the region is entirely masked; "
                                    "shrink the mask so each slice keeps some unmasked pixels")
            res[z] = np.asarray(self.fill_region(img[z], msk[z], sp2, rng), dtype=np.float32)
        return res

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


# ---------------------------------------------------------------------- validation / cropping
def _validate(image, mask, spacing):
    img = np.asarray(image)
    msk = np.asarray(mask)
    if img.ndim not in (2, 3):
        raise SynthsegError(f"fill needs a 2D or 3D grey image, got {img.ndim} dimensions "
                            f"(shape {img.shape}); convert colour images to grey first")
    if not (np.issubdtype(img.dtype, np.number) or img.dtype == bool) or np.iscomplexobj(img):
        raise SynthsegError(f"fill needs a real-valued image, got dtype {img.dtype}")
    if msk.shape != img.shape:
        raise SynthsegError(f"mask shape {msk.shape} does not match image shape {img.shape}; "
                            "use a mask drawn on this image")
    msk = msk.astype(bool, copy=False)
    n = int(np.count_nonzero(msk))
    if n == 0:
        raise SynthsegError("the fill mask is empty; draw the region to fill first")
    if n == msk.size:
        raise SynthsegError("the fill mask covers the whole image; leave some unmasked "
                            "context around the region to fill")
    img = img.astype(np.float32)  # always a copy owned by us
    if not np.isfinite(img).all():
        raise SynthsegError("the image contains NaN or infinite values; replace them "
                            "(e.g. numpy.nan_to_num) before filling")
    spc = None
    if spacing is not None:
        spc = tuple(float(s) for s in spacing)
        if len(spc) != img.ndim or not all(np.isfinite(s) and s > 0 for s in spc):
            raise SynthsegError(f"spacing {tuple(spacing)} must give one positive value (mm) "
                                f"per image axis ({img.ndim})")
    return img, msk, spc


def _component_boxes(mask: np.ndarray, min_px: int, frac: float, slicewise: bool) -> List[Box]:
    """Boxes (bounding box + context margin) around groups of mask components.

    Boxes that overlap are merged until none do, so every mask pixel inside a box belongs to
    that box's own components and the margin ring always holds unmasked context.
    """
    # Label only inside the mask's bounding box: a small lesion in a 2048^2 radiograph
    # should not pay for labelling 4 M pixels.
    outer = tuple(slice(int(np.argmax(a)), len(a) - int(np.argmax(a[::-1])))
                  for a in (mask.any(axis=tuple(j for j in range(mask.ndim) if j != ax))
                            for ax in range(mask.ndim)))
    labels, n = ndi.label(mask[outer])
    raw = [None if sl is None else tuple(slice(s.start + o.start, s.stop + o.start)
                                         for s, o in zip(sl, outer))
           for sl in ndi.find_objects(labels)]
    boxes = []
    for sl in raw:
        if sl is None:
            continue
        lo, hi = [], []
        for ax, s in enumerate(sl):
            ext = s.stop - s.start
            # Slice-wise 3D fill needs no context along z: each slice is solved on its own.
            m = 0 if (slicewise and ax == 0) else max(min_px, int(np.ceil(frac * ext)))
            lo.append(max(0, s.start - m))
            hi.append(min(mask.shape[ax], s.stop + m))
        boxes.append((lo, hi))
    merged = True
    while merged:
        merged = False
        out: List[Tuple[list, list]] = []
        for lo, hi in boxes:
            for k, (lo2, hi2) in enumerate(out):
                if all(a < d and c < b for a, b, c, d in zip(lo, hi, lo2, hi2)):
                    out[k] = ([min(a, c) for a, c in zip(lo, lo2)],
                              [max(b, d) for b, d in zip(hi, hi2)])
                    merged = True
                    break
            else:
                out.append((lo, hi))
        boxes = out
    return [tuple(slice(a, b) for a, b in zip(lo, hi)) for lo, hi in boxes]


# ---------------------------------------------------------------------- registry
_REGISTRY: Dict[str, Callable[..., Filler]] = {}

# Fillers whose module is heavy (torch) register themselves when imported; the learned one
# by ``napari_synthseg.inpaint``, which sits above this layer. The workflow layer imports it
# when a caller names ``learned`` (``workflow.fillers``), so this module never imports upward.


def register_filler(name: str, factory: Callable[..., Filler], *, overwrite: bool = False) -> None:
    """Make a filler available under ``name``.

    Parameters
    ----------
    name : str
        Registry key, lower case (e.g. ``"telea"``).
    factory : callable
        A :class:`Filler` subclass or any callable returning a :class:`Filler`; keyword
        arguments given to :func:`get_filler` are passed to it.
    overwrite : bool
        Replace an existing entry instead of raising.
    """
    key = name.strip().lower()
    if not key:
        raise ValueError("filler name must not be empty")
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"a filler named {key!r} is already registered")
    _REGISTRY[key] = factory


def available_fillers() -> List[str]:
    """Names accepted by :func:`get_filler`, sorted."""
    return sorted(_REGISTRY)


def get_filler(name: str, **kwargs) -> Filler:
    """Instantiate the filler registered as ``name`` (case-insensitive).

    Raises
    ------
    SynthsegError
        Unknown name (the message lists the available ones).
    """
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        raise SynthsegError(f"unknown fill method {name!r}; choose one of "
                            f"{', '.join(available_fillers()) or '(none registered)'}")
    filler = _REGISTRY[key](**kwargs)
    if not isinstance(filler, Filler):
        raise TypeError(f"factory for {key!r} returned {type(filler).__name__}, not a Filler")
    return filler
