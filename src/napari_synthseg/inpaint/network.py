"""The inpainting generator: a gated-convolution U-Net with fast-Fourier-convolution blocks.

Design (chosen for CPU speed at 512 x 512, see docs/benchmarks.md "Inpainting"):

* A parameter-free smooth **prior** fill (biharmonic for small holes, or a push-pull
  normalised convolution over an image pyramid) first gives an estimate of the hole from its
  border. The network sees it as an input channel and predicts only a residual, so an untrained
  or briefly trained model is already as good as the smooth interpolation and training time
  goes into texture and structure.
* **Gated convolutions** (Yu et al. 2019) in the encoder let each layer learn which pixels are
  valid; the decoder uses plain convolutions (the gate there buys little and costs 2x).
* **Fast Fourier convolution** residual blocks (LaMa, Suvorov et al. 2022) at 1/8 resolution
  give every output pixel an image-wide receptive field for a few FFTs.
* ``body="local"`` replaces the FFC bottleneck by a purely local U-Net (plain 3x3 convolutions
  at 1, 1/2 and 1/4 resolution, dilated convolutions at 1/4, receptive field ~70 px). For
  nodule-sized holes it learns the biharmonic prior's error where the FFC body, trained the same
  way, learned almost nothing (docs/model_cards/cxr_inpainter_small.md); outpainting of large
  regions still wants the FFC body's global view.
* A **noise channel** makes seeded samples differ; a **mode** one-hot (healthy, lesion,
  outpaint) broadcast as constant channels selects the use with one set of weights.

Inputs and outputs are per-image normalised intensities (see :mod:`.normalize`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models import register_architecture

ARCHITECTURE = "synthseg-inpaint-ffc-unet-v1"
MODES = ("healthy", "lesion", "outpaint")


@dataclass
class InpainterConfig:
    """Everything needed to rebuild an :class:`InpaintNet` (stored in the safetensors header).

    Attributes
    ----------
    base_channels : int
        Channels at full resolution; doubled at 1/2 and 1/4, ``bottleneck_channels`` at 1/8.
    bottleneck_channels : int
        Channels of the FFC blocks at 1/8 resolution.
    n_ffc_blocks : int
        Number of FFC residual blocks at 1/8 resolution.
    global_ratio : float
        Fraction of bottleneck channels that take the spectral (global) path.
    context_slices : int
        Neighbouring slices on each side given as extra channels (0 for 2D images).
    noise_channels : int
        Channels of Gaussian noise (0 makes the model deterministic).
    modes : tuple of str
        Modes this model was trained for (subset of ``healthy``, ``lesion``, ``outpaint``).
    modality : str
        Modality of the training data (``CXR``, ``CT``, ``MR``, ``any``); informative.
    norm_percentiles : tuple of float
        Context percentiles mapped to -1 and 1 (see :mod:`.normalize`).
    prior : str
        Smooth first guess the network refines: ``pushpull`` (pyramid normalised convolution,
        computed inside the network) or ``biharmonic`` (scikit-image's biharmonic fill, computed
        by the caller for healthy/lesion holes of at most ``biharmonic_max_pixels`` pixels and
        passed as ``coarse``; larger holes and outpainting fall back to push-pull, which the
        training also mixes in so the network knows both).
    biharmonic_max_pixels : int
        Largest hole (pixels) given the biharmonic prior.
    norm_scale : str
        ``crop``: each crop's context percentiles map to -1/1 (files from before this option);
        ``image``: the scale is the whole image's percentile range, only the centre comes from
        the crop, so the network sees each region's real contrast.
    body : str
        ``ffc`` (gated encoder, FFC blocks at 1/8) or ``local`` (plain and dilated
        convolutions down to 1/4; ``bottleneck_channels``, ``n_ffc_blocks`` and
        ``global_ratio`` are unused). Files written before this option existed are ``ffc``.
    """

    base_channels: int = 16
    bottleneck_channels: int = 96
    n_ffc_blocks: int = 3
    global_ratio: float = 0.5
    context_slices: int = 0
    noise_channels: int = 1
    modes: tuple = ("healthy", "outpaint")
    modality: str = "any"
    norm_percentiles: tuple = (1.0, 99.0)
    prior: str = "pushpull"
    biharmonic_max_pixels: int = 12000
    body: str = "ffc"
    norm_scale: str = "crop"

    @property
    def in_channels(self) -> int:
        # masked image, mask, push-pull fill, neighbours, noise, mode one-hot
        return 3 + 2 * self.context_slices + self.noise_channels + len(MODES)


def push_pull_fill(image: torch.Tensor, mask: torch.Tensor, levels: int = 8) -> torch.Tensor:
    """Smooth fill of ``mask`` from its surroundings by normalised convolution on a pyramid.

    Parameters
    ----------
    image, mask : Tensor (N, 1, H, W)
        Values and hole (1 = unknown). Values under the hole are ignored.

    Returns
    -------
    Tensor (N, 1, H, W)
        ``image`` outside the hole, the pyramid interpolation inside.
    """
    w = 1.0 - mask
    vals = [image * w]
    wts = [w]
    for _ in range(levels):
        if min(vals[-1].shape[-2:]) < 2:
            break
        vals.append(F.avg_pool2d(vals[-1], 2, ceil_mode=True))
        wts.append(F.avg_pool2d(wts[-1], 2, ceil_mode=True))
    est = vals[-1] / wts[-1].clamp_min(1e-6)
    for v, wt in zip(reversed(vals[:-1]), reversed(wts[:-1])):
        up = F.interpolate(est, size=v.shape[-2:], mode="bilinear", align_corners=False)
        conf = wt.clamp(0, 1)
        # where this level has enough known weight, trust its local mean; else the coarser one
        local = v / wt.clamp_min(1e-6)
        alpha = (conf * 4).clamp(max=1.0)
        est = alpha * local + (1 - alpha) * up
    return image * w + est * mask


class GatedConv(nn.Module):
    """Conv whose output is multiplied by a learned soft validity gate (sigmoid)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, 2 * cout, k, stride, padding=k // 2, padding_mode="reflect")
        self.cout = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, g = self.conv(x).split(self.cout, dim=1)
        return F.silu(f) * torch.sigmoid(g)


class SpectralTransform(nn.Module):
    """LaMa's Fourier unit: 1x1 conv on the real/imaginary spectrum = global receptive field."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        half = max(ch // 2, 1)
        self.inp = nn.Sequential(nn.Conv2d(ch, half, 1), nn.SiLU())
        self.freq = nn.Sequential(nn.Conv2d(2 * half, 2 * half, 1), nn.SiLU())
        self.out = nn.Conv2d(half, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inp(x)
        h, w = y.shape[-2:]
        # FFT in float32: cuFFT half precision needs power-of-two sizes, and AMP would pick fp16
        spec = torch.fft.rfft2(y.float(), norm="ortho")
        z = torch.cat([spec.real, spec.imag], dim=1).to(y.dtype)
        z = self.freq(z).float()
        re, im = z.chunk(2, dim=1)
        y = y + torch.fft.irfft2(torch.complex(re, im), s=(h, w), norm="ortho").to(y.dtype)
        return self.out(y)


class FFCBlock(nn.Module):
    """Residual block: a local 3x3 path and a global spectral path on a channel split."""

    def __init__(self, ch: int, global_ratio: float) -> None:
        super().__init__()
        self.cg = int(round(ch * global_ratio))
        self.cl = ch - self.cg
        self.local = nn.Sequential(
            nn.Conv2d(ch, self.cl, 3, padding=1, padding_mode="reflect"), nn.SiLU(),
            nn.Conv2d(self.cl, self.cl, 3, padding=1, padding_mode="reflect"),
        )
        self.glob = SpectralTransform(self.cg) if self.cg else None
        self.norm = nn.GroupNorm(8 if ch % 8 == 0 else 1, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xn = self.norm(x)
        loc = self.local(xn)
        if self.glob is None:
            return x + loc
        glb = self.glob(xn[:, self.cl:])
        return x + F.silu(torch.cat([loc, glb], dim=1))


BODIES = ("ffc", "local")
NORM_SCALES = ("crop", "image")


def _zero_init(conv: nn.Conv2d) -> nn.Conv2d:
    """Zero a convolution's weight and bias: the head starts by adding nothing to the coarse fill."""
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def _conv_act(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation), nn.GELU())


class LocalBody(nn.Module):
    """U-Net of plain convolutions to 1/4 resolution with dilated convolutions there (``local``)."""

    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.enc0 = nn.Sequential(_conv_act(cin, c), _conv_act(c, c))
        self.enc1 = nn.Sequential(_conv_act(c, 2 * c, stride=2), _conv_act(2 * c, 2 * c))
        self.enc2 = nn.Sequential(_conv_act(2 * c, 4 * c, stride=2), _conv_act(4 * c, 4 * c, dilation=2),
                                  _conv_act(4 * c, 4 * c, dilation=4), _conv_act(4 * c, 4 * c, dilation=2))
        self.dec1 = nn.Sequential(_conv_act(6 * c, 2 * c), _conv_act(2 * c, 2 * c))
        self.dec0 = nn.Sequential(_conv_act(3 * c, c), _conv_act(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e0 = self.enc0(x)
        e1 = self.enc1(e0)
        e2 = self.enc2(e1)
        d = F.interpolate(e2, size=e1.shape[-2:], mode="bilinear", align_corners=False)
        d = self.dec1(torch.cat([d, e1], dim=1))
        d = F.interpolate(d, size=e0.shape[-2:], mode="bilinear", align_corners=False)
        return self.dec0(torch.cat([d, e0], dim=1))


class UpBlock(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin + cskip, cout, 3, padding=1, padding_mode="reflect"), nn.SiLU(),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.conv(torch.cat([x, skip], dim=1))


@register_architecture(ARCHITECTURE, InpainterConfig)
class InpaintNet(nn.Module):
    """Mask-aware inpainting generator (see module docstring).

    ``forward(image, mask, mode, noise=None, neighbours=None, coarse=None)`` takes normalised ``image``
    (N, 1, H, W), binary ``mask`` (N, 1, H, W; 1 = fill), integer ``mode`` (N,) indexing
    :data:`MODES`, and returns the completed image (known pixels copied through). H and W must
    be multiples of 8 (:func:`pad_to_multiple` does it).
    """

    multiple = 8

    def __init__(self, config: InpainterConfig) -> None:
        super().__init__()
        self.config = config
        from ..errors import SynthsegError

        if config.body not in BODIES:
            raise SynthsegError(f"unknown inpainting network body {config.body!r}; choose {', '.join(BODIES)}")
        if config.norm_scale not in NORM_SCALES:
            raise SynthsegError(f"unknown inpainting normalisation {config.norm_scale!r}; "
                                f"choose {', '.join(NORM_SCALES)}")
        c = config.base_channels
        cb = config.bottleneck_channels
        if config.body == "local":
            self.local = LocalBody(config.in_channels, c)
            self.head = _zero_init(nn.Conv2d(c, 1, 3, padding=1))
            return
        self.enc0 = GatedConv(config.in_channels, c, 3)
        self.enc1 = GatedConv(c, 2 * c, 3, stride=2)
        self.enc2 = GatedConv(2 * c, 4 * c, 3, stride=2)
        self.enc3 = GatedConv(4 * c, cb, 3, stride=2)
        self.blocks = nn.Sequential(*[FFCBlock(cb, config.global_ratio)
                                      for _ in range(config.n_ffc_blocks)])
        self.up2 = UpBlock(cb, 4 * c, 4 * c)
        self.up1 = UpBlock(4 * c, 2 * c, 2 * c)
        self.up0 = UpBlock(2 * c, c, c)
        self.head = _zero_init(nn.Conv2d(c, 1, 3, padding=1, padding_mode="reflect"))

    def forward(self, image, mask, mode, noise=None, neighbours=None, coarse=None):
        cfg = self.config
        n, _, h, w = image.shape
        known = image * (1 - mask)
        if coarse is None:  # tiled inference passes the whole crop's fill so tiles agree
            coarse = push_pull_fill(image, mask)
        parts = [known, mask, coarse]
        if cfg.context_slices:
            if neighbours is None:
                neighbours = coarse.expand(n, 2 * cfg.context_slices, h, w)
            parts.append(neighbours)
        if cfg.noise_channels:
            if noise is None:
                noise = torch.zeros(n, cfg.noise_channels, h, w, device=image.device,
                                    dtype=image.dtype)
            parts.append(noise)
        onehot = F.one_hot(mode.long(), len(MODES)).to(image.dtype)
        parts.append(onehot[:, :, None, None].expand(n, len(MODES), h, w))
        x = torch.cat(parts, dim=1)
        if cfg.body == "local":
            return known + (coarse + self.head(self.local(x))) * mask
        e0 = self.enc0(x)
        e1 = self.enc1(e0)
        e2 = self.enc2(e1)
        b = self.blocks(self.enc3(e2))
        d = self.up2(b, e2)
        d = self.up1(d, e1)
        d = self.up0(d, e0)
        pred = coarse + self.head(d)
        return known + pred * mask


def pad_to_multiple(t: torch.Tensor, multiple: int = 8):
    """Reflect-pad (N, C, H, W) on the bottom/right to multiples of ``multiple``; returns pads."""
    h, w = t.shape[-2:]
    ph = (-h) % multiple
    pw = (-w) % multiple
    if ph or pw:
        mode = "reflect" if (ph < h and pw < w) else "replicate"
        t = F.pad(t, (0, pw, 0, ph), mode=mode)
    return t, (ph, pw)


class PatchDiscriminator(nn.Module):
    """Small PatchGAN (hinge loss) that also returns its features for feature matching."""

    def __init__(self, in_ch: int = 2, ch: int = 32, n_layers: int = 3) -> None:
        super().__init__()
        layers = []
        c = in_ch
        for i in range(n_layers):
            co = ch * (2 ** i)
            layers.append(nn.Sequential(
                nn.utils.spectral_norm(nn.Conv2d(c, co, 4, 2, 1)), nn.LeakyReLU(0.2)))
            c = co
        self.layers = nn.ModuleList(layers)
        self.out = nn.Conv2d(c, 1, 3, padding=1)

    def forward(self, image, mask):
        x = torch.cat([image, mask], dim=1)
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return self.out(x), feats
