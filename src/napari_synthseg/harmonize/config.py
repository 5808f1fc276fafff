"""Settings of the one-image GANs (SinGAN, ConSinGAN) and their two presets.

``paper`` reproduces the published defaults: SinGAN (Rott Shaham et al. 2019) with the NODE21
changes (scale factor 0.85, kernel 5; Sallé et al.), and ConSinGAN's harmonisation recipe (Hinz
et al. 2021: 3 stages, min size 120, 1000 iterations, leaky ReLU 0.3, batch norm) as used for
brain metastases (Asher). ``fast`` is for a CPU: smaller networks, fewer stages and iterations,
fine stages trained on crops (exact, see :mod:`.train`) and no repeated forward passes.

The pyramid ``shapes`` (rows, cols per scale, coarse to fine) depend on the training region and
are filled in by training; a config with shapes fully describes the saved generator.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Union

from ..errors import SynthsegError

__all__ = [
    "SinGANConfig",
    "ConSinGANConfig",
    "HarmonizerConfig",
    "PRESETS",
    "preset",
    "pyramid_shapes",
]


@dataclass(frozen=True)
class _Common:
    # pyramid
    scale_factor: float = 0.75
    min_size: int = 25          # px, shorter side at the coarsest scale
    max_size: int = 250         # px, longer side at the finest scale (larger regions are shrunk)
    # networks
    nfc: int = 32               # feature channels
    ker_size: int = 3
    num_layer: int = 5
    lrelu_alpha: float = 0.2
    g_batch_norm: bool = True
    d_batch_norm: bool = True
    # optimisation
    niter: int = 2000           # iterations per scale/stage
    lr_g: float = 5e-4
    lr_d: float = 5e-4
    beta1: float = 0.5
    gamma: float = 0.1          # learning-rate decay at 80 % of niter
    g_steps: int = 3
    d_steps: int = 3
    lambda_grad: float = 0.1    # WGAN-GP weight
    alpha: float = 10.0         # reconstruction loss weight
    noise_amp: float = 0.1      # per-scale noise amplitude = noise_amp * RMSE of the reconstruction
    # speed (results identical in distribution; see train.py)
    train_crop: int = 0         # px; >0 trains scales larger than this on random crops
    amp: bool = True            # mixed precision, CUDA only
    channels_last: bool = True  # CUDA only
    # augmentation of the training image against overfitting (NODE21: noise sigma 3, blur 3 px)
    aug_noise: float = 0.0      # std in units of the normalised range [-1, 1]
    aug_blur_px: float = 0.0
    # intensity normalisation: training range widened by this fraction so a brighter lesion
    # is not clipped by the generator's tanh
    headroom: float = 0.15
    # region size around a lesion when no ROI is given (px)
    region_size: int = 256
    # filled by training: pyramid (rows, cols) per scale, coarse to fine
    shapes: tuple = ()

    def __post_init__(self) -> None:
        # JSON brings nested lists back; keep shapes hashable and uniform.
        object.__setattr__(self, "shapes", tuple(tuple(int(v) for v in s) for s in self.shapes))


@dataclass(frozen=True)
class SinGANConfig(_Common):
    """SinGAN: one generator/discriminator pair per scale, trained coarse to fine.

    ``nfc`` doubles every 4 scales up to ``max_nfc`` (as the reference code does).
    """

    max_nfc: int = 128
    nfc_growth: bool = True
    nc_z: int = 1


@dataclass(frozen=True)
class ConSinGANConfig(_Common):
    """ConSinGAN: one growing generator; ``train_depth`` stages train concurrently, stage n-k
    with learning rate ``lr_scale**k`` times the top one."""

    train_stages: int = 3
    train_depth: int = 3
    lr_scale: float = 0.1


HarmonizerConfig = Union[SinGANConfig, ConSinGANConfig]

PRESETS: dict[str, dict[str, HarmonizerConfig]] = {
    "singan": {
        # SinGAN defaults + NODE21 (scale factor 0.85, kernel 5, noise 3/255 -> 0.0235, blur 3 px)
        "paper": SinGANConfig(
            scale_factor=0.85, ker_size=5, min_size=25, max_size=250, nfc=32, num_layer=5,
            niter=2000, g_steps=3, d_steps=3, aug_noise=2 * 3 / 255, aug_blur_px=3.0,
            train_crop=0,
        ),
        # CPU: 6 scales instead of 16, 32 channels throughout, 4 layers, no batch norm (fake
        # and reconstruction in one batch), one critic and one generator step, 500 iterations,
        # scales above 64 px trained on exact 64 px windows.
        "fast": SinGANConfig(
            scale_factor=0.6, ker_size=3, min_size=24, max_size=256, nfc=32, max_nfc=32,
            nfc_growth=False, num_layer=4, g_batch_norm=False, d_batch_norm=False,
            niter=500, g_steps=1, d_steps=1, aug_noise=0.01, aug_blur_px=0.0, train_crop=64,
        ),
    },
    "consingan": {
        # ConSinGAN harmonisation recipe (README: --train_stages 3 --min_size 120
        # --lrelu_alpha 0.3 --niter 1000 --batch_norm), network defaults nfc 64, 3 layers.
        "paper": ConSinGANConfig(
            train_stages=3, train_depth=3, lr_scale=0.1, min_size=120, max_size=250, nfc=64,
            ker_size=3, num_layer=3, lrelu_alpha=0.3, g_batch_norm=True, d_batch_norm=False,
            niter=1000, g_steps=3, d_steps=3, scale_factor=0.0, train_crop=0,
        ),
        # CPU: 3 stages from 96 px (a larger minimum size is sharper, as Asher found), 32
        # channels, no batch norm, one critic step, 250 iterations, the 157 and 256 px stages on
        # exact 64 px windows.
        "fast": ConSinGANConfig(
            train_stages=3, train_depth=3, lr_scale=0.1, min_size=96, max_size=256, nfc=32,
            ker_size=3, num_layer=3, lrelu_alpha=0.3, g_batch_norm=False, d_batch_norm=False,
            niter=250, g_steps=1, d_steps=1, scale_factor=0.0, aug_noise=0.01, train_crop=64,
        ),
    },
}


def preset(arch: str, name: str, **changes) -> HarmonizerConfig:
    """The ``paper`` or ``fast`` config of ``arch`` (``singan`` or ``consingan``), with changes."""
    try:
        base = PRESETS[arch][name]
    except KeyError:
        raise SynthsegError(
            f"unknown harmonizer {arch!r}/{name!r}; use arch singan|consingan and preset paper|fast"
        ) from None
    return dataclasses.replace(base, **changes) if changes else base


def pyramid_shapes(config: HarmonizerConfig, shape: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """Per-scale (rows, cols), coarse to fine, for a training region of ``shape`` px.

    SinGAN: as the reference ``adjust_scales2image``: the region is shrunk so its longer side
    is at most ``max_size``; the number of scales follows from ``scale_factor`` and
    ``min_size``, and the factor is then adjusted so the coarsest shorter side is ``min_size``.
    ConSinGAN: ``train_stages`` scales from ``min_size`` to the (shrunk) region.

    Raises
    ------
    SynthsegError
        If the region is smaller than ``min_size``.
    """
    h, w = int(shape[0]), int(shape[1])
    if min(h, w) < config.min_size:
        raise SynthsegError(
            f"the training region is {h}x{w} px, smaller than the minimum scale "
            f"{config.min_size} px; choose a larger region or a preset with a smaller min_size"
        )
    scale1 = min(config.max_size / max(h, w), 1.0)
    fh, fw = max(1, round(h * scale1)), max(1, round(w * scale1))
    if min(fh, fw) < config.min_size:
        raise SynthsegError(
            f"the region {h}x{w} px is too elongated: shrunk to {fh}x{fw} px its short side is "
            f"below the minimum scale {config.min_size} px; choose a squarer region"
        )
    short = min(fh, fw)
    if isinstance(config, ConSinGANConfig):
        n = max(1, int(config.train_stages))
    else:
        if not 0.0 < config.scale_factor < 1.0:
            raise SynthsegError(f"scale_factor must lie in (0, 1), got {config.scale_factor}")
        n = math.ceil(math.log(config.min_size / short) / math.log(config.scale_factor)) + 1
        n = max(n, 1)
    if n == 1:
        return ((fh, fw),)
    factor = (config.min_size / short) ** (1.0 / (n - 1))
    shapes = []
    for i in range(n):
        s = factor ** (n - 1 - i)
        shapes.append((max(1, round(fh * s)), max(1, round(fw * s))))
    shapes[-1] = (fh, fw)
    return tuple(shapes)
