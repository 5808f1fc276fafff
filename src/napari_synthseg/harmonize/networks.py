"""SinGAN and ConSinGAN generators and their patch discriminator, single channel.

Both follow the reference implementations' layer layout (unpadded 'valid' convolutions with
explicit zero padding of the input, leaky ReLU, optional batch norm, tanh output) so that the
published hyper-parameters mean the same here. Batch norm always uses the statistics of the
current batch (``track_running_stats=False``), as the reference code does in practice (it never
switches to eval mode); samples are therefore generated one at a time.

Both generators can compute the finest scale on a window only (``crop``). The window is read
with its receptive-field margin from the zero-padded full input, so the result equals the
matching window of the full output exactly; training on such windows is what makes the ``fast``
preset cheap.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..models import register_architecture
from .config import ConSinGANConfig, SinGANConfig

__all__ = ["SinGAN", "ConSinGAN", "PatchDiscriminator", "resize", "Crop"]

# (top, left, size) of a square window at the finest scale, px
Crop = tuple[int, int, int]


def resize(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Bicubic resize of a (B, C, H, W) tensor to ``shape``; antialiased when shrinking."""
    shape = (int(shape[0]), int(shape[1]))
    if tuple(x.shape[-2:]) == shape:
        return x
    shrink = shape[0] < x.shape[-2] or shape[1] < x.shape[-1]
    return F.interpolate(x, size=shape, mode="bicubic", align_corners=False, antialias=shrink)


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, ker: int, batch_norm: bool, lrelu: float) -> None:
        super().__init__()
        self.add_module("conv", nn.Conv2d(cin, cout, ker, stride=1, padding=0))
        if batch_norm:
            self.add_module("norm", nn.BatchNorm2d(cout, track_running_stats=False))
        self.add_module("act", nn.LeakyReLU(lrelu, inplace=True))


def init_weights(module: nn.Module) -> None:
    """The reference initialisation: conv N(0, 0.02), norm weight N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class PatchDiscriminator(nn.Module):
    """WGAN critic: a stack of valid convolutions giving one score per receptive field."""

    def __init__(self, nfc: int, ker: int, num_layer: int, batch_norm: bool, lrelu: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBlock(1, nfc, ker, batch_norm, lrelu)]
        layers += [ConvBlock(nfc, nfc, ker, batch_norm, lrelu) for _ in range(num_layer)]
        layers.append(nn.Conv2d(nfc, 1, ker, padding=0))
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _crop_padded(x: torch.Tensor, pad: int, crop: Crop) -> torch.Tensor:
    """Window ``crop`` of ``x`` widened by ``pad`` on each side, zeros outside ``x``."""
    top, left, size = crop
    xp = F.pad(x, [pad, pad, pad, pad])
    return xp[..., top : top + size + 2 * pad, left : left + size + 2 * pad]


# --------------------------------------------------------------------------------------------
# SinGAN
# --------------------------------------------------------------------------------------------


class _SinGANScale(nn.Module):
    """One scale: ``G(z, prev) = tail(body(head(z))) + prev`` on a zero-padded input."""

    def __init__(self, nfc: int, ker: int, num_layer: int, batch_norm: bool, lrelu: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBlock(1, nfc, ker, batch_norm, lrelu)]
        layers += [ConvBlock(nfc, nfc, ker, batch_norm, lrelu) for _ in range(num_layer - 2)]
        layers += [nn.Conv2d(nfc, 1, ker, padding=0), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, z_padded: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        return self.net(z_padded) + prev


def singan_nfc(config: SinGANConfig, scale: int) -> int:
    """Feature channels at ``scale``: doubled every 4 scales up to ``max_nfc`` (reference)."""
    if not config.nfc_growth:
        return int(config.nfc)
    return int(min(config.nfc * 2 ** (scale // 4), config.max_nfc))


@register_architecture("singan", SinGANConfig)
class SinGAN(nn.Module):
    """SinGAN generator pyramid (Rott Shaham et al. 2019), coarse (0) to fine.

    Parameters
    ----------
    config : SinGANConfig
        With ``shapes`` filled (one generator per entry).
    """

    architecture: str  # set by @register_architecture

    def __init__(self, config: SinGANConfig) -> None:
        super().__init__()
        if not config.shapes:
            raise ValueError("SinGANConfig.shapes is empty; it is filled by training")
        self.config = config
        self.shapes = [tuple(s) for s in config.shapes]
        self.pad = (config.ker_size - 1) * config.num_layer // 2
        self.generators = nn.ModuleList(
            _SinGANScale(
                singan_nfc(config, n), config.ker_size, config.num_layer, config.g_batch_norm,
                config.lrelu_alpha,
            )
            for n in range(len(self.shapes))
        )

    @property
    def n_scales(self) -> int:
        return len(self.shapes)

    def scale_forward(
        self,
        n: int,
        noise: torch.Tensor,
        prev: torch.Tensor,
        amp: float | torch.Tensor,
        crop: Optional[Crop] = None,
    ) -> torch.Tensor:
        """Output of scale ``n`` for full-size ``noise`` and upsampled ``prev``.

        With ``crop``, ``noise`` may already be the window widened by ``self.pad``.
        """
        if crop is None:
            z = F.pad(amp * noise + prev, [self.pad] * 4)
            return self.generators[n](z, prev)
        top, left, size = crop
        if noise.shape[-1] == size + 2 * self.pad:
            z = amp * noise + _crop_padded(prev, self.pad, crop)
        else:
            z = _crop_padded(amp * noise + prev, self.pad, crop)
        return self.generators[n](z, prev[..., top : top + size, left : left + size])

    def run(
        self,
        start: int,
        stop: int,
        image: torch.Tensor,
        noises: Sequence[torch.Tensor],
        amps: Sequence[float],
    ) -> torch.Tensor:
        """Run scales ``start..stop-1``; ``image`` is the input (upsampled prev) at ``start``.

        ``noises[k]`` is the noise of scale ``start + k`` (full size).
        """
        x = image
        for k, n in enumerate(range(start, stop)):
            if x.shape[-2:] != torch.Size(self.shapes[n]):
                x = resize(x, self.shapes[n])
            x = self.scale_forward(n, noises[k], x, amps[n])
        return x


# --------------------------------------------------------------------------------------------
# ConSinGAN
# --------------------------------------------------------------------------------------------


@register_architecture("consingan", ConSinGANConfig)
class ConSinGAN(nn.Module):
    """ConSinGAN growing generator (Hinz et al. 2021), harmonisation/editing layout.

    Stage 0 takes an image (the training image or the naive paste) at the coarsest scale;
    every later stage upsamples the previous stage's *features*, adds ``noise * amp`` and
    refines them with a residual block stack; the tail maps features to the image.
    """

    architecture: str  # set by @register_architecture

    def __init__(self, config: ConSinGANConfig) -> None:
        super().__init__()
        if not config.shapes:
            raise ValueError("ConSinGANConfig.shapes is empty; it is filled by training")
        self.config = config
        self.shapes = [tuple(s) for s in config.shapes]
        nfc, ker, bn, a = config.nfc, config.ker_size, config.g_batch_norm, config.lrelu_alpha
        self.q = (ker - 1) // 2                      # head/tail padding
        self.block_pad = self.q * config.num_layer   # body padding
        self.head = ConvBlock(1, nfc, ker, bn, a)
        self.body = nn.ModuleList(
            nn.Sequential(*[ConvBlock(nfc, nfc, ker, bn, a) for _ in range(config.num_layer)])
            for _ in self.shapes
        )
        self.tail = nn.Sequential(nn.Conv2d(nfc, 1, ker, padding=0), nn.Tanh())
        init_weights(self)

    @property
    def n_scales(self) -> int:
        return len(self.shapes)

    def forward(
        self,
        noises: Sequence[torch.Tensor],
        amps: Sequence[float | torch.Tensor],
        depth: Optional[int] = None,
        crop: Optional[Crop] = None,
    ) -> torch.Tensor:
        """Image at stage ``depth`` (default: the last).

        ``noises[0]`` is the (B, 1, h0, w0) input image, ``noises[k]`` (B, nfc, hk, wk) noise.
        With ``crop`` (finest stage window, ``depth > 0``) ``noises[depth]`` is either full size
        or the window widened by ``block_pad + q``; the result is that window of the output.
        """
        depth = self.n_scales - 1 if depth is None else depth
        if crop is not None and depth == 0:
            raise ValueError("crop needs depth > 0")
        q, bp = self.q, self.block_pad
        x = self.head(F.pad(noises[0], [q] * 4))
        x = self.body[0](F.pad(x, [bp] * 4))
        for idx in range(1, depth + 1):
            up = resize(x, self.shapes[idx])
            if crop is not None and idx == depth:
                return self._cropped_last(idx, up, noises[idx], amps[idx], crop)
            x = self.body[idx](F.pad(up + noises[idx] * amps[idx], [bp] * 4)) + up
        return self.tail(F.pad(x, [q] * 4))

    def _cropped_last(self, idx, up, noise, amp, crop: Crop) -> torch.Tensor:
        q, bp = self.q, self.block_pad
        top, left, size = crop
        h, w = up.shape[-2:]
        # features needed on the window widened by q (tail), the block needs bp more
        up_w = _crop_padded(up, q + bp, crop)
        if noise.shape[-1] == size + 2 * (q + bp):
            z = up_w + noise * amp
        else:
            z = up_w + _crop_padded(noise, q + bp, crop) * amp
        # zero outside the image: the full forward zero-pads there
        inside = torch.zeros((1, 1) + tuple(z.shape[-2:]), device=z.device, dtype=z.dtype)
        r0, c0 = top - q - bp, left - q - bp
        inside[..., max(0, -r0) : min(z.shape[-2], h - r0), max(0, -c0) : min(z.shape[-1], w - c0)] = 1
        z = z * inside
        feat = self.body[idx](z) + up_w[..., bp:-bp, bp:-bp]
        feat = feat * inside[..., bp:-bp, bp:-bp]
        return self.tail(feat)
