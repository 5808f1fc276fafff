"""Run a trained inpainter: per-crop normalisation, padding, tiling with blended overlaps, samples.

:class:`Inpainter` works on one 2D crop at a time (the fill driver in
:mod:`napari_synthseg.fill.base` already cuts each mask component's bounding box plus context
out of the image, so a nodule in a 2048 x 2048 radiograph costs a ~128 x 128 forward pass).
A crop larger than ``tile`` pixels (outpainting, big lesions) is processed in overlapping tiles
whose outputs are blended with linear ramps; the smooth prior fill and the noise are
computed once for the whole crop so tiles agree where they overlap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Union, cast

import numpy as np
import torch

from ..errors import SynthsegError
from ..models import LoadedModel, load_model, select_device
from ..utils.progress import CancelToken
from .network import ARCHITECTURE, MODES, InpaintNet, pad_to_multiple, push_pull_fill
from .normalize import Normalizer
from .normalize import image_half_range as _image_half_range
from .prior import prior_fill

WEIGHTS_DIR = Path(__file__).with_name("weights")
#: name -> file in the package's weights folder
BUILTIN_MODELS: Dict[str, str] = {"cxr_inpainter_small": "cxr_inpainter_small.safetensors",
                                  "cxr_outpainter_small": "cxr_outpainter_small.safetensors"}
#: the built-in model that plain ``builtin`` means for each mode (model cards in docs/model_cards)
BUILTIN_FOR_MODE: Dict[str, str] = {"healthy": "cxr_inpainter_small", "outpaint": "cxr_outpainter_small"}
CLASSICAL = ("biharmonic", "telea")


def builtin_model_path(name: str = "cxr_inpainter_small") -> Path:
    """Path of a model shipped with the package (``builtin:NAME`` elsewhere)."""
    key = name.split(":", 1)[-1]
    if key not in BUILTIN_MODELS:
        raise SynthsegError(f"unknown built-in model {name!r}; choose {', '.join(BUILTIN_MODELS)}")
    path = WEIGHTS_DIR / BUILTIN_MODELS[key]
    if not path.is_file():
        raise SynthsegError(f"the built-in model file {path.name} is missing from this install")
    return path


def builtin_for_mode(mode: Optional[str] = None) -> str:
    """``builtin:NAME`` of the shipped model that plain ``builtin`` means for ``mode``."""
    key = str(mode or "healthy").strip().lower()
    if key not in BUILTIN_FOR_MODE:
        raise SynthsegError(f"no built-in model does {key!r} fill; train one (train-inpainter "
                            f"--masks DIR for lesion fill) and give its file")
    return f"builtin:{BUILTIN_FOR_MODE[key]}"


def resolve_model_path(model: Union[str, Path], mode: Optional[str] = None) -> Path:
    """A model file from a path, ``builtin:NAME``, or ``builtin`` (the shipped model for ``mode``)."""
    text = str(model)
    if text.strip().lower() == "builtin":
        return builtin_model_path(builtin_for_mode(mode))
    if text.startswith("builtin:"):
        return builtin_model_path(text)
    return Path(model)


def _ramp(n: int, overlap: int, lo_edge: bool, hi_edge: bool) -> np.ndarray:
    w = np.ones(n, np.float32)
    if overlap > 0:
        r = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        if not lo_edge:
            w[:overlap] = np.minimum(w[:overlap], r)
        if not hi_edge:
            w[-overlap:] = np.minimum(w[-overlap:], r[::-1])
    return w


def _starts(n: int, tile: int, step: int) -> List[int]:
    if n <= tile:
        return [0]
    s = list(range(0, n - tile, step)) + [n - tile]
    return sorted(set(s))


class Inpainter:
    """A loaded inpainting model ready for inference.

    Parameters
    ----------
    model : path, ``builtin:NAME`` or LoadedModel
        A file written by :func:`~napari_synthseg.inpaint.train_inpainter`. Files of another
        architecture, newer format or pickles are refused with :class:`SynthsegError`.
    device : str, optional
        ``auto`` (default), ``cpu``, ``cuda``...
    tile, overlap : int
        Tile side and overlap in pixels for crops larger than ``tile``.
    threads : int, optional
        CPU threads for the forward pass (restored afterwards); None keeps torch's setting.
        On a busy shared machine 1 thread is faster than 2 (measured: 512 x 512 in 0.18 s with
        1 thread vs 0.3-0.6 s with 2, see docs/benchmarks.md).
    """

    def __init__(self, model: Union[str, Path, LoadedModel] = "builtin:cxr_inpainter_small",
                 device: Optional[str] = None, tile: int = 512, overlap: int = 64,
                 threads: Optional[int] = None) -> None:
        self.threads = threads
        if isinstance(model, LoadedModel):
            loaded = model
            if loaded.architecture != ARCHITECTURE:
                raise SynthsegError(f"a {loaded.architecture!r} model is not an inpainter")
        else:
            loaded = load_model(resolve_model_path(model), expected=ARCHITECTURE, device=None)
        self.loaded = loaded
        self.config = loaded.config
        self.device = select_device(device)
        # the architecture was checked above, so the module is an InpaintNet
        net = cast(InpaintNet, loaded.module).float().eval().to(self.device)
        # channels_last speeds up the convolutions on CUDA and (measured) on x86 CPU too;
        # torch's stubs lack Module.to(memory_format=...), which torch accepts and documents
        self.net: InpaintNet = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.tile = max(64, int(tile) // 8 * 8)
        self.overlap = max(0, min(int(overlap), self.tile // 4))

    # ------------------------------------------------------------------ info
    @property
    def modes(self) -> tuple:
        return tuple(self.config.modes)

    def check_mode(self, mode: str) -> int:
        key = str(mode).strip().lower()
        if key not in MODES:
            raise SynthsegError(f"unknown inpainting mode {mode!r}; choose {', '.join(MODES)}")
        if key not in self.modes:
            hint = (f"use builtin:{BUILTIN_FOR_MODE[key]} (or plain 'builtin'), or train one"
                    if key in BUILTIN_FOR_MODE else "train one")
            raise SynthsegError(
                f"this model was trained for {', '.join(self.modes)} only, not {key!r}; "
                f"{hint} with that mode (train-inpainter --modes ...{', --masks DIR' if key == 'lesion' else ''})")
        return MODES.index(key)

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def predict(self, image: np.ndarray, mask: np.ndarray, mode: str = "healthy",
                rng: Optional[np.random.Generator] = None,
                neighbours: Optional[np.ndarray] = None,
                cancel: Optional[CancelToken] = None, texture: float = 0.0,
                image_half_range: Optional[float] = None) -> np.ndarray:
        """Fill ``mask`` in one 2D crop; returns float32 native values (input outside the mask).

        Parameters
        ----------
        image : ndarray (H, W)
            Native intensities; values under ``mask`` are ignored.
        mask : ndarray of bool (H, W)
            Pixels to generate; must leave some context.
        rng : numpy.random.Generator, optional
            Source of the noise input (different generators give different samples).
        neighbours : ndarray (2k, H, W), optional
            Neighbouring slices (-k..-1, +1..+k) for models with ``context_slices = k``.
        texture : float
            Strength of seeded fine-grain texture added inside the hole (0 = the model's
            mean-like fill, best PSNR; 1 = grain as strong as the context's). See
            :func:`texture_noise`.
        image_half_range : float, optional
            For models with ``norm_scale="image"``: the whole image's percentile half range
            (:func:`~.normalize.image_half_range`; :class:`LearnedFiller` passes it). Without
            it the crop itself is taken as the image.
        """
        mode_i = self.check_mode(mode)
        img = np.asarray(image, np.float32)
        msk = np.asarray(mask, bool)
        if img.ndim != 2 or msk.shape != img.shape:
            raise SynthsegError(f"inpainting needs a 2D crop and a mask of the same shape, got "
                                f"{img.shape} and {msk.shape}")
        if not msk.any():
            raise SynthsegError("the fill mask is empty; draw the region to fill first")
        if msk.all():
            raise SynthsegError("the fill mask covers the whole image; leave some context")
        cfg = self.config
        rng = rng if rng is not None else np.random.default_rng(0)
        scale = None
        if cfg.norm_scale == "image":
            scale = image_half_range if image_half_range else _image_half_range(img, cfg.norm_percentiles)
        norm = Normalizer.from_context(img, msk, cfg.norm_percentiles, half_range=scale)
        x = np.clip(norm.forward(img), -6, 6)
        x[msk] = 0.0
        k = cfg.context_slices
        nb = None
        if k:
            if neighbours is None:
                nb = None
            else:
                nb = np.clip(norm.forward(np.asarray(neighbours, np.float32)), -6, 6)
                if nb.shape != (2 * k,) + img.shape:
                    raise SynthsegError(f"the model wants {2 * k} neighbouring slices of shape "
                                        f"{img.shape}, got {nb.shape}")
        h, w = img.shape
        noise = (rng.standard_normal((cfg.noise_channels, h, w)).astype(np.float32)
                 if cfg.noise_channels else None)
        dev = self.device
        xt = torch.from_numpy(x)[None, None].to(dev)
        mt = torch.from_numpy(msk.astype(np.float32))[None, None].to(dev)
        xt, pads = pad_to_multiple(xt, 8)
        mt, _ = pad_to_multiple(mt, 8)
        # padded border is "unknown but ignored": mark as known so it acts as context
        nt = pad_to_multiple(torch.from_numpy(noise)[None].to(dev), 8)[0] if noise is not None else None
        bt = pad_to_multiple(torch.from_numpy(nb)[None].to(dev), 8)[0] if nb is not None else None
        prior = prior_fill(xt[0, 0].cpu().numpy(), mt[0, 0].cpu().numpy() > 0.5, mode_i, cfg)
        coarse = (push_pull_fill(xt, mt) if prior is None
                  else torch.from_numpy(prior)[None, None].to(dev))
        before = torch.get_num_threads()
        if self.threads and dev.type == "cpu":
            torch.set_num_threads(int(self.threads))
        try:
            out = self._tiled(xt, mt, coarse, mode_i, nt, bt, cancel)
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)
        out = out[0, 0, :h, :w].float().cpu().numpy()
        if texture > 0:
            out = out + texture * texture_noise(x, msk, rng)
        res = norm.inverse(out)
        res[~msk] = img[~msk]
        return res

    def _forward(self, x, m, coarse, mode_i, noise, nb):
        n = x.shape[0]
        mode = torch.full((n,), mode_i, dtype=torch.long, device=x.device)
        cl = torch.channels_last
        args = [t.contiguous(memory_format=cl) if t is not None else None
                for t in (x, m, noise, nb)]
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=x.device.type == "cuda"):
            y = self.net(args[0], args[1], mode, noise=args[2], neighbours=args[3], coarse=coarse)
        return y.float()

    def _tiled(self, x, m, coarse, mode_i, noise, nb, cancel):
        H, W = x.shape[-2:]
        t = self.tile
        if H <= t and W <= t:
            return self._forward(x, m, coarse, mode_i, noise, nb)
        ov = self.overlap
        step = t - ov
        acc = torch.zeros_like(x)
        wsum = torch.zeros_like(x)
        ys, xs = _starts(H, t, step), _starts(W, t, step)
        for y0 in ys:
            for x0 in xs:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                th, tw = min(t, H), min(t, W)
                sl = (..., slice(y0, y0 + th), slice(x0, x0 + tw))
                wy = _ramp(th, ov, y0 == 0, y0 + th >= H)
                wx = _ramp(tw, ov, x0 == 0, x0 + tw >= W)
                wt = torch.from_numpy(np.outer(wy, wx))[None, None].to(x.device)
                if not bool(m[sl].any()):
                    pred = x[sl]
                else:
                    pred = self._forward(x[sl], m[sl], coarse[sl], mode_i,
                                         None if noise is None else noise[sl],
                                         None if nb is None else nb[sl])
                acc[sl] += pred * wt
                wsum[sl] += wt
        return acc / wsum.clamp_min(1e-6)


def texture_noise(x: np.ndarray, hole: np.ndarray, rng: np.random.Generator,
                  sigma: float = 1.0, ring: int = 16) -> np.ndarray:
    """Seeded grain for the hole, matched to the context's fine-scale variation.

    An L1-trained fill is close to the conditional mean: right on average, but smoother than
    tissue, and the same for every seed. This adds Gaussian noise low-passed at ``sigma``
    pixels and scaled to the robust standard deviation of the context's high-pass residual
    (``x`` minus its Gaussian blur) within ``ring`` pixels of the hole, feathered over 3 pixels
    at the hole's border so no seam appears. Zero outside the hole.
    """
    from scipy import ndimage as ndi

    known = ~hole
    w = ndi.gaussian_filter(known.astype(np.float32), 2.0)
    blur = ndi.gaussian_filter(np.where(known, x, 0).astype(np.float32), 2.0) / np.maximum(w, 1e-3)
    hp = x - blur
    near = known & (ndi.distance_transform_edt(known) <= ring) & (w > 0.9)
    vals = hp[near] if near.any() else hp[known]
    scale = 1.4826 * float(np.median(np.abs(vals - np.median(vals)))) if vals.size else 0.0
    noise = ndi.gaussian_filter(rng.standard_normal(x.shape).astype(np.float32), sigma)
    noise /= max(float(noise.std()), 1e-6)
    feather = np.clip(ndi.distance_transform_edt(hole) / 3.0, 0.0, 1.0)
    return (noise * scale * feather).astype(np.float32)
