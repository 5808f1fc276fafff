"""Training SinGAN / ConSinGAN on one image region (WGAN-GP + alpha-weighted reconstruction).

Speed-ups over the reference loops, none of which changes what is optimised:

* The fake image is computed once per iteration and shared by the critic steps (the reference
  recomputes the identical tensor ``d_steps`` times). SinGAN's later generator steps recompute
  it with the updated weights (the reference back-propagates a stale graph); ConSinGAN, like its
  reference, takes ``g_steps`` optimiser steps with one gradient.
* Without batch norm, fake and reconstruction go through the generator as one batch of two,
  and real and fake through the critic as one batch.
* The critic's parameters are frozen during generator steps (no unused weight gradients).
* With ``train_crop`` the finest scales run on random square windows; the generators compute
  a window exactly (see :mod:`.networks`), and the critic is a patch critic, so a window is an
  unbiased sample of its loss at a fraction of the cost.
* On CUDA: mixed precision (bf16/fp16 autocast) and channels_last.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SynthsegError
from ..models import autocast_context, select_device
from ..utils.progress import CancelToken, ProgressCallback, report
from .config import ConSinGANConfig, HarmonizerConfig, preset, pyramid_shapes
from .model import Harmonizer, fingerprint_of, image_sha256
from .networks import ConSinGAN, PatchDiscriminator, SinGAN, _crop_padded, resize, singan_nfc

__all__ = ["train_harmonizer", "select_region", "PreviewCallback"]

# preview(scale_index, image_at_that_scale_in_native_units)
PreviewCallback = Callable[[int, np.ndarray], None]


def select_region(
    shape: Sequence[int],
    roi: Optional[Sequence[int]] = None,
    lesion_mask: Optional[np.ndarray] = None,
    region_size: int = 256,
) -> tuple[int, int, int, int]:
    """The training region (row, col, height, width), px.

    ``roi`` wins; else a ``region_size`` square centred on the lesion (shifted to stay inside
    the image); else the whole image.
    """
    H, W = int(shape[0]), int(shape[1])
    if roi is not None:
        r, c, h, w = (int(v) for v in roi)
        if h <= 0 or w <= 0 or r < 0 or c < 0 or r + h > H or c + w > W:
            raise SynthsegError(
                f"the region (row {r}, col {c}, {h}x{w} px) does not lie inside the {H}x{W} image"
            )
        return r, c, h, w
    if lesion_mask is None:
        return 0, 0, H, W
    mask = np.asarray(lesion_mask, dtype=bool)
    if mask.shape != (H, W) or not mask.any():
        raise SynthsegError("the lesion mask is empty or does not match the image shape")
    rows, cols = np.nonzero(mask)
    h, w = min(region_size, H), min(region_size, W)
    if int(np.ptp(rows)) + 1 > h or int(np.ptp(cols)) + 1 > w:
        raise SynthsegError(
            f"the lesion ({int(np.ptp(rows)) + 1}x{int(np.ptp(cols)) + 1} px) is larger than the {h}x{w} px "
            "training region; give a larger region"
        )
    cr, cc = (rows.min() + rows.max() + 1) // 2, (cols.min() + cols.max() + 1) // 2
    r = int(np.clip(cr - h // 2, 0, H - h))
    c = int(np.clip(cc - w // 2, 0, W - w))
    return r, c, h, w


class _Trainer:
    def __init__(
        self,
        config: HarmonizerConfig,
        device: torch.device,
        seed: int,
        progress: Optional[ProgressCallback],
        cancel: Optional[CancelToken],
        preview: Optional[PreviewCallback],
        preview_every: int,
        total: int,
        iterations: Sequence[int],
    ) -> None:
        self.config = config
        self.iterations = list(iterations)
        self.device = device
        self.g = torch.Generator(device=device).manual_seed(int(seed))
        self.progress = progress
        self.cancel = cancel
        self.preview = preview
        self.preview_every = int(preview_every)
        self.total = total
        self.done = 0
        self.cuda = device.type == "cuda"
        self.seconds_per_iteration: list[float] = []
        self.seed = int(seed)

    def discriminator(self, *args) -> PatchDiscriminator:
        # Module init draws from the global RNG: seed it locally so training is reproducible.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 1)
            return PatchDiscriminator(*args).to(self.device)

    # helpers --------------------------------------------------------------------------------
    def randn(self, *shape) -> torch.Tensor:
        return torch.randn(*shape, generator=self.g, device=self.device)

    def rand(self, *shape) -> torch.Tensor:
        return torch.rand(*shape, generator=self.g, device=self.device)

    def randint(self, high: int) -> int:
        return int(torch.randint(0, max(1, high), (1,), generator=self.g, device=self.device))

    def autocast(self):
        return autocast_context(self.device, self.config.amp)

    def crop_for(self, shape) -> Optional[tuple[int, int, int]]:
        c = int(self.config.train_crop)
        if c <= 0 or min(shape) <= c:
            return None
        return self.randint(shape[0] - c + 1), self.randint(shape[1] - c + 1), c

    def random_window(self, x: torch.Tensor, crop) -> torch.Tensor:
        if crop is None:
            return x
        c = crop[2]
        top, left = self.randint(x.shape[-2] - c + 1), self.randint(x.shape[-1] - c + 1)
        return x[..., top : top + c, left : left + c]

    def augment_real(self, x: torch.Tensor) -> torch.Tensor:
        """Against overfitting (NODE21): Gaussian blur and noise on what the critic sees."""
        cfg = self.config
        if cfg.aug_blur_px > 0:
            sigma = cfg.aug_blur_px / 3.0
            radius = max(1, int(math.ceil(2 * sigma)))
            t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
            k = torch.exp(-0.5 * (t / sigma) ** 2)
            k = k / k.sum()
            x = F.conv2d(F.pad(x, [radius, radius, 0, 0], mode="replicate"), k.view(1, 1, 1, -1))
            x = F.conv2d(F.pad(x, [0, 0, radius, radius], mode="replicate"), k.view(1, 1, -1, 1))
        if cfg.aug_noise > 0:
            x = x + cfg.aug_noise * self.randn(*x.shape)
        return x

    def gradient_penalty(self, D, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        a = self.rand(1, 1, 1, 1)
        x = (a * real + (1 - a) * fake).requires_grad_(True)
        with self.autocast():
            out = D(x)
        (grad,) = torch.autograd.grad(out.float().sum(), x, create_graph=True)
        return self.config.lambda_grad * ((grad.norm(2, dim=1) - 1) ** 2).mean()

    def prepare(self, *modules):
        if self.cuda and self.config.channels_last:
            for m in modules:
                m.to(memory_format=torch.channels_last)

    def step_report(self, n, n_scales, it, shape):
        self.done += 1
        report(
            self.progress, self.done, self.total,
            f"scale {n + 1}/{n_scales} ({shape[0]}x{shape[1]} px), iteration {it + 1}/{self.iterations[n]}",
        )
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()

    def critic_steps(self, D, optD, real: torch.Tensor, fake: torch.Tensor, crop) -> None:
        cfg = self.config
        fake = fake.detach()
        for p in D.parameters():
            p.requires_grad_(True)
        for _ in range(cfg.d_steps):
            real_d = self.augment_real(self.random_window(real, crop))
            optD.zero_grad(set_to_none=True)
            with self.autocast():
                if cfg.d_batch_norm:
                    out_r, out_f = D(real_d), D(fake)
                else:
                    out = D(torch.cat([real_d, fake]))
                    out_r, out_f = out[:1], out[1:]
            loss = -out_r.float().mean() + out_f.float().mean()
            loss = loss + self.gradient_penalty(D, real_d, fake)
            loss.backward()
            optD.step()
        for p in D.parameters():
            p.requires_grad_(False)

    def generator_loss(self, D, fake: torch.Tensor, rec: torch.Tensor, target: torch.Tensor):
        with self.autocast():
            adv = -D(fake).float().mean()
        return adv + self.config.alpha * F.mse_loss(rec.float(), target.float())


def _adam(params, lr, beta1):
    return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999))


def _scheduler(opt, niter, gamma):
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[max(1, int(0.8 * niter))], gamma=gamma)


# --------------------------------------------------------------------------------------------
# SinGAN
# --------------------------------------------------------------------------------------------


def _train_singan(module: SinGAN, reals: list[torch.Tensor], tr: _Trainer, denorm):
    cfg = module.config  # the same object as tr.config, typed by architecture
    N = module.n_scales
    shapes = module.shapes
    amps: list[float] = []
    rec_outs: list[torch.Tensor] = []
    z0 = tr.randn(1, 1, *shapes[0])
    D_prev = None
    batch_g = not cfg.g_batch_norm

    def sample_prev(n: int) -> torch.Tensor:
        x = torch.zeros(1, 1, *shapes[0], device=tr.device)
        with torch.no_grad(), tr.autocast():
            for k in range(n):
                x = module.scale_forward(k, tr.randn(1, 1, *shapes[k]), resize(x, shapes[k]), amps[k])
        return resize(x.float(), shapes[n])

    for n in range(N):
        G = module.generators[n]
        nfc = singan_nfc(cfg, n)
        if n > 0 and singan_nfc(cfg, n - 1) == nfc:
            G.load_state_dict(module.generators[n - 1].state_dict())
        D = tr.discriminator(nfc, cfg.ker_size, cfg.num_layer - 2, cfg.d_batch_norm, cfg.lrelu_alpha)
        if D_prev is not None and singan_nfc(cfg, n - 1) == nfc:
            D.load_state_dict(D_prev.state_dict())
        for k, g in enumerate(module.generators):
            g.requires_grad_(k == n)
        tr.prepare(G, D)
        real = reals[n]
        if n == 0:
            rec_prev = torch.zeros_like(real)
            rec_noise = z0
            amp = 1.0
        else:
            rec_prev = resize(rec_outs[n - 1], shapes[n])
            rec_noise = torch.zeros_like(real)
            amp = float(cfg.noise_amp * torch.sqrt(F.mse_loss(rec_prev, real)))
        amps.append(amp)
        optG = _adam(G.parameters(), cfg.lr_g, cfg.beta1)
        optD = _adam(D.parameters(), cfg.lr_d, cfg.beta1)
        schedG, schedD = _scheduler(optG, tr.iterations[n], cfg.gamma), _scheduler(optD, tr.iterations[n], cfg.gamma)

        # This scale's values are bound as defaults: the closure must not follow the loop.
        def forward(noise, prev, crop, n=n, rec_noise=rec_noise, rec_prev=rec_prev, amp=amp):
            with tr.autocast():
                if batch_g:
                    out = module.scale_forward(
                        n, torch.cat([noise, rec_noise]), torch.cat([prev, rec_prev]), amp, crop
                    )
                    return out[:1], out[1:]
                return (
                    module.scale_forward(n, noise, prev, amp, crop),
                    module.scale_forward(n, rec_noise, rec_prev, amp, crop),
                )

        times = []
        for it in range(tr.iterations[n]):
            t0 = time.perf_counter()
            prev = sample_prev(n) if n > 0 else torch.zeros_like(real)
            for j in range(cfg.g_steps):
                crop = tr.crop_for(shapes[n])
                target = real if crop is None else real[..., crop[0] : crop[0] + crop[2], crop[1] : crop[1] + crop[2]]
                fake, rec = forward(tr.randn(1, 1, *shapes[n]), prev, crop)
                if j == 0:
                    tr.critic_steps(D, optD, real, fake, crop)
                optG.zero_grad(set_to_none=True)
                tr.generator_loss(D, fake, rec, target).backward()
                optG.step()
            schedG.step()
            schedD.step()
            times.append(time.perf_counter() - t0)
            if tr.preview is not None and tr.preview_every and (it + 1) % tr.preview_every == 0:
                tr.preview(n, denorm(_singan_sample(module, n, prev, amp, tr)))
            tr.step_report(n, N, it, shapes[n])
        tr.seconds_per_iteration.append(_typical(times))
        G.requires_grad_(False)
        with torch.no_grad(), tr.autocast():
            rec_outs.append(module.scale_forward(n, rec_noise, rec_prev, amp).float())
            if tr.preview is not None:
                prev = sample_prev(n) if n > 0 else torch.zeros_like(real)
                tr.preview(n, denorm(_singan_sample(module, n, prev, amp, tr)))
        D_prev = D
    return amps, [z0]


def _singan_sample(module, n, prev, amp, tr):
    with torch.no_grad(), tr.autocast():
        return module.scale_forward(n, tr.randn(*prev.shape), prev, amp).float()


# --------------------------------------------------------------------------------------------
# ConSinGAN
# --------------------------------------------------------------------------------------------


def _train_consingan(module: ConSinGAN, reals: list[torch.Tensor], tr: _Trainer, denorm):
    cfg = module.config  # the same object as tr.config, typed by architecture
    N = module.n_scales
    shapes = module.shapes
    nfc = cfg.nfc
    wpad = module.q + module.block_pad
    amps: list[float] = []
    fixed: list[torch.Tensor] = []
    D = tr.discriminator(nfc, cfg.ker_size, cfg.num_layer, cfg.d_batch_norm, cfg.lrelu_alpha)
    tr.prepare(module, D)
    batch_g = not cfg.g_batch_norm

    def augment_input(x):
        # The stage-0 input varies in contrast and brightness so that a naive paste (another
        # intensity at a few places) is still a familiar input (ConSinGAN's augmentation).
        gain = 1.0 + 0.2 * (tr.rand(1).item() - 0.5)
        shift = 0.2 * (tr.rand(1).item() - 0.5)
        x = x * gain + shift
        if cfg.aug_noise > 0:
            x = x + cfg.aug_noise * tr.randn(*x.shape)
        return x

    for n in range(N):
        if n > 0:
            module.body[n].load_state_dict(module.body[n - 1].state_dict())
        fixed.append(reals[0] if n == 0 else tr.randn(1, nfc, *shapes[n]))
        if n == 0:
            amps.append(1.0)
        else:
            with torch.no_grad(), tr.autocast():
                rec = module(fixed, amps + [0.0], depth=n).float()
            amps.append(float(cfg.noise_amp * torch.sqrt(F.mse_loss(rec, reals[n]))))
        lo = max(0, n - cfg.train_depth + 1)
        module.requires_grad_(False)
        groups = []
        for k in range(lo, n + 1):
            module.body[k].requires_grad_(True)
            groups.append({"params": module.body[k].parameters(), "lr": cfg.lr_g * cfg.lr_scale ** (n - k)})
        if n < cfg.train_depth:
            module.head.requires_grad_(True)
            groups.append({"params": module.head.parameters(), "lr": cfg.lr_g * cfg.lr_scale ** n})
        module.tail.requires_grad_(True)
        groups.append({"params": module.tail.parameters(), "lr": cfg.lr_g})
        optG = _adam(groups, cfg.lr_g, cfg.beta1)
        optD = _adam(D.parameters(), cfg.lr_d, cfg.beta1)
        schedG, schedD = _scheduler(optG, tr.iterations[n], cfg.gamma), _scheduler(optD, tr.iterations[n], cfg.gamma)
        real = reals[n]

        # This scale is bound as a default: the closure must not follow the loop.
        def forward(crop, n=n):
            noises = [augment_input(reals[0])]
            for k in range(1, n + 1):
                if crop is not None and k == n:
                    noises.append(tr.randn(1, nfc, crop[2] + 2 * wpad, crop[2] + 2 * wpad))
                else:
                    noises.append(tr.randn(1, nfc, *shapes[k]))
            with tr.autocast():
                if batch_g:
                    rec_noise = list(fixed[: n + 1])
                    if crop is not None:
                        rec_noise[n] = _crop_padded(fixed[n], wpad, crop)
                    both = [torch.cat([a, b]) for a, b in zip(noises, rec_noise)]
                    out = module(both, amps, depth=n, crop=crop)
                    return out[:1], out[1:]
                return (
                    module(noises, amps, depth=n, crop=crop),
                    module(fixed[: n + 1], amps, depth=n, crop=crop),
                )

        times = []
        for it in range(tr.iterations[n]):
            t0 = time.perf_counter()
            crop = tr.crop_for(shapes[n]) if n > 0 else None
            target = real if crop is None else real[..., crop[0] : crop[0] + crop[2], crop[1] : crop[1] + crop[2]]
            fake, rec = forward(crop)
            tr.critic_steps(D, optD, real, fake, crop)
            optG.zero_grad(set_to_none=True)
            tr.generator_loss(D, fake, rec, target).backward()
            # As the reference: g_steps optimiser steps with the one gradient.
            for _ in range(cfg.g_steps):
                optG.step()
            schedG.step()
            schedD.step()
            times.append(time.perf_counter() - t0)
            if tr.preview is not None and tr.preview_every and (it + 1) % tr.preview_every == 0:
                tr.preview(n, denorm(_consingan_sample(module, n, reals, amps, tr)))
            tr.step_report(n, N, it, shapes[n])
        tr.seconds_per_iteration.append(_typical(times))
        if tr.preview is not None:
            tr.preview(n, denorm(_consingan_sample(module, n, reals, amps, tr)))
    module.requires_grad_(False)
    return amps, fixed


def _consingan_sample(module, n, reals, amps, tr):
    noises = [reals[0]] + [tr.randn(1, module.config.nfc, *module.shapes[k]) for k in range(1, n + 1)]
    with torch.no_grad(), tr.autocast():
        return module(noises, amps, depth=n).float()


def _typical(times: list[float]) -> float:
    """Seconds per iteration, ignoring the first (warm-up) when there are more."""
    return float(np.median(times[1:] if len(times) > 1 else times)) if times else 0.0


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def train_harmonizer(
    image: np.ndarray,
    arch: str = "consingan",
    preset_name: str = "fast",
    config: Optional[HarmonizerConfig] = None,
    roi: Optional[Sequence[int]] = None,
    lesion_mask: Optional[np.ndarray] = None,
    seed: int = 0,
    device: Optional[str | torch.device] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    preview: Optional[PreviewCallback] = None,
    preview_every: int = 0,
    provenance: Optional[dict] = None,
    iterations: Optional[Sequence[int]] = None,
) -> Harmonizer:
    """Train a one-image harmonizer on a region of a 2D image.

    Parameters
    ----------
    image : ndarray
        2D image in native units (HU, raw CXR values, MR signal); any numeric dtype.
    arch : {"singan", "consingan"}
    preset_name : {"fast", "paper"}
        Used when ``config`` is not given.
    roi : (row, col, height, width), optional
        Training region in px. Default: a ``config.region_size`` square around
        ``lesion_mask``, or the whole image when there is no mask.
    preview : callable, optional
        ``preview(scale, array)`` with a random sample of the scale just trained (native
        units), at the end of each scale and every ``preview_every`` iterations.
    iterations : sequence of int, optional
        Iterations per scale instead of ``config.niter`` (benchmarks time a few iterations
        of chosen scales; 0 leaves a scale untrained).

    Returns
    -------
    Harmonizer
        Ready for :func:`~napari_synthseg.harmonize.harmonize` and ``.save()``.

    Raises
    ------
    SynthsegError
        For 3D input, a region outside the image or smaller than the minimum scale, or a
        constant region.
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise SynthsegError(
            f"harmonizers are trained on 2D images, got {arr.ndim}D {arr.shape}; pass one slice"
        )
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise SynthsegError(f"cannot train on an image of type {arr.dtype}")
    if config is None:
        config = preset(arch, preset_name)
    arch = "consingan" if isinstance(config, ConSinGANConfig) else "singan"
    r, c, h, w = select_region(arr.shape, roi, lesion_mask, config.region_size)
    region = arr[r : r + h, c : c + w].astype(np.float64)
    if not np.isfinite(region).all():
        raise SynthsegError("the training region contains NaN or infinite values")
    lo, hi = float(region.min()), float(region.max())
    if hi <= lo:
        raise SynthsegError("the training region has a single intensity; choose a region with tissue")
    norm = ((lo + hi) / 2.0, (hi - lo) / 2.0 * (1.0 + config.headroom))
    config = dataclasses.replace(config, shapes=pyramid_shapes(config, (h, w)))
    dev = select_device(device)
    region_norm = ((region - norm[0]) / norm[1]).astype(np.float32)
    real_full = torch.from_numpy(region_norm)[None, None].to(dev)
    reals = [resize(real_full, s).contiguous() for s in config.shapes]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        module = ConSinGAN(config) if isinstance(config, ConSinGANConfig) else SinGAN(config)
    module.to(dev)
    module.train()
    if iterations is None:
        iterations = [config.niter] * len(config.shapes)
    if len(iterations) != len(config.shapes):
        raise SynthsegError(f"give iterations for all {len(config.shapes)} scales")
    total = int(sum(iterations))

    def denorm(t: torch.Tensor) -> np.ndarray:
        return t[0, 0].detach().float().cpu().numpy() * norm[1] + norm[0]

    tr = _Trainer(config, dev, seed, progress, cancel, preview, preview_every, total, iterations)
    report(progress, 0, total, f"training {arch} on {h}x{w} px, {len(config.shapes)} scales")
    t0 = time.perf_counter()
    if isinstance(module, SinGAN):
        amps, rec_noise = _train_singan(module, reals, tr, denorm)
    else:
        amps, rec_noise = _train_consingan(module, reals, tr, denorm)
    seconds = time.perf_counter() - t0
    module.eval()
    module.requires_grad_(False)
    prov = dict(provenance or {})
    prov.update(
        arch=arch,
        seed=int(seed),
        train_seconds=round(seconds, 3),
        seconds_per_iteration=[round(s, 5) for s in tr.seconds_per_iteration],
        device=str(dev),
        roi_xywh=[c, r, w, h],
    )
    return Harmonizer(
        module=module,
        config=config,
        noise_amp=[float(a) for a in amps],
        rec_noise=[z.detach().float() for z in rec_noise],
        norm=norm,
        roi=(r, c, h, w),
        image_shape=tuple(arr.shape),
        image_dtype=str(arr.dtype),
        image_sha256=image_sha256(arr),
        fingerprint=fingerprint_of(region_norm),
        provenance=prov,
    )
