"""A compact StyleGAN2-style generator and discriminator for single-channel medical images.

Follows Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (2020): a mapping
network z -> w, weight-modulated and demodulated 3x3 convolutions, per-pixel noise inputs with a
learned strength, skip ("output") connections through 1x1 toRGB layers, and a residual
discriminator with a minibatch standard-deviation layer. Equalised learning rate everywhere.

Simplifications (documented so nobody hunts for them): upsampling is bilinear followed by a 3x3
convolution instead of a transposed convolution with an FIR filter, and modulation is applied
to the activations ("non-fused") because that is faster on CPUs than grouped convolutions.

The generator also returns its per-layer activations, which is what DatasetGAN reads as pixel
features (see :mod:`.features`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SynthsegError
from ..models import register_architecture

GENERATOR_ARCH = "datasetgan-stylegan2-g"
DISCRIMINATOR_ARCH = "datasetgan-stylegan2-d"


@dataclass
class GanConfig:
    """Architecture of the generator/discriminator pair.

    Parameters
    ----------
    size : int
        Output side length in pixels (a power of two, >= 8).
    z_dim, w_dim : int
        Latent and style vector sizes.
    mapping_layers : int
        Fully connected layers in the mapping network.
    channel_base, channel_max : int
        Feature maps at resolution ``r`` are ``min(channel_base // r, channel_max)``.
    img_channels : int
        1 for grayscale (CXR, CT and MR slices).
    """

    size: int = 128
    z_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 4
    channel_base: int = 8192
    channel_max: int = 128
    img_channels: int = 1

    def __post_init__(self) -> None:
        if self.size < 8 or self.size & (self.size - 1):
            raise SynthsegError(f"generator size must be a power of two >= 8, got {self.size}")

    def channels(self, res: int) -> int:
        return max(1, min(self.channel_base // res, self.channel_max))

    @property
    def resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.size)) + 1)]

    @property
    def num_ws(self) -> int:
        """Style vectors the synthesis network consumes (one per modulated conv + last toRGB)."""
        return 2 * len(self.resolutions)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate (weights scaled at run time)."""

    def __init__(self, cin: int, cout: int, bias_init: float = 0.0, lr_mul: float = 1.0, act: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / lr_mul)
        self.bias = nn.Parameter(torch.full((cout,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(cin)
        self.lr_mul = lr_mul
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return F.leaky_relu(x, 0.2) * math.sqrt(2) if self.act else x


class EqualConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, bias: bool = True, act: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.scale = 1.0 / math.sqrt(cin * k * k)
        self.pad = k // 2
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.scale, self.bias, padding=self.pad)
        return F.leaky_relu(x, 0.2) * math.sqrt(2) if self.act else x


class MappingNetwork(nn.Module):
    w_avg: torch.Tensor  # buffer registered in __init__

    def __init__(self, cfg: GanConfig):
        super().__init__()
        layers = []
        dim = cfg.z_dim
        for _ in range(cfg.mapping_layers):
            layers.append(EqualLinear(dim, cfg.w_dim, lr_mul=0.01, act=True))
            dim = cfg.w_dim
        self.net = nn.Sequential(*layers)
        # Running mean of w, the centre that truncation pulls towards.
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z: torch.Tensor, track_w_avg: bool = False) -> torch.Tensor:
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        w = self.net(z)
        if track_w_avg:
            with torch.no_grad():
                self.w_avg.lerp_(w.detach().mean(0).to(self.w_avg.dtype), 0.005)
        return w


class ModulatedConv2d(nn.Module):
    """3x3 (or 1x1) conv whose input channels are scaled per sample by a style, then demodulated."""

    def __init__(self, cin: int, cout: int, k: int, w_dim: int, demodulate: bool = True, up: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.affine = EqualLinear(w_dim, cin, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(cin * k * k)
        self.demodulate = demodulate
        self.up = up
        self.pad = k // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        style = self.affine(w)  # (B, cin)
        weight = self.weight * self.scale
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = x * style[:, :, None, None]
        x = F.conv2d(x, weight, padding=self.pad)
        if self.demodulate:
            # sum over (cin, k, k) of (weight * style)^2, without materialising per-sample weights
            wsq = weight.square().sum(dim=(2, 3))  # (cout, cin)
            demod = torch.rsqrt(style.square() @ wsq.t() + 1e-8)  # (B, cout)
            x = x * demod[:, :, None, None]
        return x


class StyledLayer(nn.Module):
    """Modulated conv + noise + bias + leaky ReLU."""

    def __init__(self, cin: int, cout: int, w_dim: int, up: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(cin, cout, 3, w_dim, up=up)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        x = self.conv(x, w)
        if noise is None:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        x = x + noise.to(x.dtype) * self.noise_strength
        return F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * math.sqrt(2)


class ToRGB(nn.Module):
    def __init__(self, cin: int, cout: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(cin, cout, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]


class GeneratorFeatures:
    """Activations the synthesis network produced, coarse to fine (list of (B, C, h, w))."""

    def __init__(self, maps: list[torch.Tensor]):
        self.maps = maps


class Generator(nn.Module):
    """z (B, z_dim) -> image (B, img_channels, size, size) in roughly [-1, 1]."""

    def __init__(self, config: GanConfig):
        super().__init__()
        self.config = config
        cfg = config
        self.mapping = MappingNetwork(cfg)
        res0 = cfg.resolutions[0]
        self.const = nn.Parameter(torch.randn(cfg.channels(res0), res0, res0))
        self.layers = nn.ModuleList()
        self.torgbs = nn.ModuleList()
        cin = cfg.channels(res0)
        for i, res in enumerate(cfg.resolutions):
            cout = cfg.channels(res)
            self.layers.append(StyledLayer(cin, cout, cfg.w_dim, up=i > 0))
            self.layers.append(StyledLayer(cout, cout, cfg.w_dim))
            self.torgbs.append(ToRGB(cout, cfg.img_channels, cfg.w_dim))
            cin = cout

    # -- shapes -----------------------------------------------------------------------------
    def noise_shapes(self) -> list[tuple[int, int]]:
        return [(r, r) for r in self.config.resolutions for _ in range(2)]

    def feature_channels(self) -> list[int]:
        """Channels of each activation returned with ``return_features=True``."""
        return [self.config.channels(r) for r in self.config.resolutions for _ in range(2)]

    # -- forward ----------------------------------------------------------------------------
    def styles(
        self, z: torch.Tensor, truncation_psi: float = 1.0, track_w_avg: bool = False
    ) -> torch.Tensor:
        """Mapping network plus truncation; returns ws (B, num_ws, w_dim)."""
        w = self.mapping(z, track_w_avg=track_w_avg)
        if truncation_psi != 1.0:
            w = self.mapping.w_avg.to(w.dtype) + truncation_psi * (w - self.mapping.w_avg.to(w.dtype))
        return w[:, None, :].expand(-1, self.config.num_ws, -1)

    def synthesis(
        self,
        ws: torch.Tensor,
        noise: list[torch.Tensor] | None = None,
        return_features: bool = False,
    ):
        batch = ws.shape[0]
        x = self.const[None].expand(batch, -1, -1, -1)
        rgb = None
        feats: list[torch.Tensor] = []
        for i, torgb in enumerate(self.torgbs):
            for j in range(2):
                k = 2 * i + j
                x = self.layers[k](x, ws[:, k], None if noise is None else noise[k])
                if return_features:
                    feats.append(x)
            # Skip architecture: each resolution adds its RGB contribution to the upsampled sum.
            y = torgb(x, ws[:, min(2 * i + 2, ws.shape[1] - 1)])
            rgb = y if rgb is None else F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False) + y
        if return_features:
            return rgb, GeneratorFeatures(feats)
        return rgb

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        noise: list[torch.Tensor] | None = None,
        return_features: bool = False,
    ):
        return self.synthesis(self.styles(z, truncation_psi), noise=noise, return_features=return_features)


def seeded_inputs(
    config: GanConfig, seeds, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Latents and noise maps for integer seeds, identical on every machine and device.

    Drawn on the CPU with one ``torch.Generator`` per seed so that sample ``seed`` is the same
    image whatever batch it is drawn in.
    """
    zs, noises = [], []
    shapes = [(r, r) for r in config.resolutions for _ in range(2)]
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        zs.append(torch.randn(config.z_dim, generator=gen))
        noises.append([torch.randn(1, h, w, generator=gen) for h, w in shapes])
    z = torch.stack(zs).to(device)
    noise = [torch.stack([n[k] for n in noises]).to(device) for k in range(len(shapes))]
    return z, noise


def _downsample(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


class DiscriminatorBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv0 = EqualConv2d(cin, cin, 3, act=True)
        self.conv1 = EqualConv2d(cin, cout, 3, act=True)
        self.skip = EqualConv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _downsample(self.conv1(self.conv0(x)))
        s = _downsample(self.skip(x))
        return (y + s) * (1 / math.sqrt(2))


class Discriminator(nn.Module):
    """Residual discriminator: image (B, C, size, size) -> logit (B,)."""

    def __init__(self, config: GanConfig):
        super().__init__()
        self.config = config
        cfg = config
        res = cfg.resolutions[::-1]  # size ... 4
        self.from_rgb = EqualConv2d(cfg.img_channels, cfg.channels(res[0]), 1, act=True)
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(cfg.channels(r), cfg.channels(r // 2)) for r in res[:-1]
        )
        c4 = cfg.channels(4)
        self.mbstd_group = 4
        self.conv = EqualConv2d(c4 + 1, c4, 3, act=True)
        self.fc = EqualLinear(c4 * 16, c4, act=True)
        self.out = EqualLinear(c4, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.from_rgb(img)
        for block in self.blocks:
            x = block(x)
        b, c, h, w = x.shape
        g = min(self.mbstd_group, b)
        while b % g:
            g -= 1
        # Minibatch standard deviation: lets D see sample diversity, which fights mode collapse.
        y = x.reshape(g, -1, c, h, w)
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean(dim=(1, 2, 3))
        y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        x = self.conv(torch.cat([x, y], dim=1))
        return self.out(self.fc(x.flatten(1))).squeeze(1)


register_architecture(GENERATOR_ARCH, GanConfig)(Generator)
register_architecture(DISCRIMINATOR_ARCH, GanConfig)(Discriminator)


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Generator output in [-1, 1] -> uint8 (B, H, W) (first channel)."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    arr = np.asarray(images)
    if arr.ndim == 4:
        arr = arr[:, 0]
    return np.clip(np.rint((arr + 1.0) * 127.5), 0, 255).astype(np.uint8)
