"""Train an :class:`~.network.InpaintNet` from a folder of images, with resume and provenance.

Losses need no downloaded network: L1 inside the hole (plus a small weight on a ring around
it), an image-gradient L1 (keeps edges and texture that plain L1 blurs), and optionally a
PatchGAN hinge adversarial loss with discriminator feature matching (sharper, more diverse
samples). Checkpoints are :func:`napari_synthseg.models.save_model` files holding the
generator, the config and the provenance; the discriminator and Adam moments ride along as
``extra/`` tensors so :func:`train_inpainter` can resume exactly where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, cast

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__
from ..errors import CancelledError, SynthsegError
from ..models import autocast_context, load_extra_tensors, load_model, read_model_info, save_model, select_device
from ..utils.progress import CancelToken, ProgressCallback, report
from .data import CropSampler, load_training_images
from .network import ARCHITECTURE, InpainterConfig, InpaintNet, PatchDiscriminator, push_pull_fill


@dataclass
class TrainConfig:
    """Optimisation settings (the model's shape is :class:`InpainterConfig`).

    Attributes
    ----------
    steps : int
        Total optimiser steps (a resumed run continues up to this number).
    batch : int
        Crops per step.
    crop : int
        Crop side in pixels.
    lr : float
        Adam learning rate of the generator (the discriminator uses the same); cosine decay to
        10 % over ``steps``.
    hole_loss : str
        Reconstruction loss in the hole: ``l1`` (pooled over the batch; converges to the
        conditional median), ``mse`` (pooled; the conditional mean, what PSNR rewards) or
        ``psnr`` (the mean over samples of the log of each sample's hole MSE: exactly the
        benchmark's mean per-case PSNR, independent of each crop's intensity scale) or
        ``mse-native`` (pooled MSE in the image's own units: each crop's normalised error
        times its normalisation range, so a high-contrast crop, such as a rib edge or a
        vessel, counts as much as it does in a PSNR benchmark; with per-crop normalisation
        plain ``mse`` down-weights exactly those crops, and the model learned no residual).
    hole_weight, ring_weight, grad_weight : float
        Weights of the hole loss, L1 on the hole's 4-pixel ring (identically zero with
        :class:`InpaintNet`, whose output copies the known pixels; kept for networks that do
        not) and gradient L1 in the hole.
    adv_weight, fm_weight : float
        PatchGAN hinge generator loss and feature-matching weights; 0 disables the
        discriminator (faster, higher PSNR, less diverse samples).
    adv_start : int
        Step at which the adversarial terms switch on (reconstruction first).
    lesion_prob, outpaint_prob : float
        Fractions of lesion-fill and outpaint samples (when the model has those modes).
    nodule_prob : float
        Fraction of the remaining (healthy) samples whose hole is a nodule-sized blob centred
        in the crop, in aerated lung on 2D CXRs (see :func:`.data.aerated_lung_centres`);
        the rest get random strokes, boxes and blobs anywhere.
    nodule_radius : (float, float)
        Radius range of those blobs, pixels per 1024 px of image height.
    half_scale_prob : float
        Fraction of nodule samples taken from the image averaged 2 x 2 (lower-resolution
        radiographs).
    intensity_jitter : float
        Random gamma ``exp(U(-j, j))`` on each crop (0 = off).
    nodule_jitter : float
        Standard deviation of a nodule hole's offset from the crop centre, as a fraction of the
        crop (0: always centred, as at inference where the crop is built around the mask).
    pushpull_mix : float
        Fraction of samples given the push-pull prior although biharmonic would be used at
        inference (so a biharmonic-prior model also knows the prior of large holes).
    seed : int
        Seeds the crops, holes, noise and initial weights.
    checkpoint_every : int
        Save to the output path every this many steps (0: only at the end).
    threads : int
        torch CPU threads (0 = torch default).
    """

    steps: int = 2000
    batch: int = 8
    crop: int = 128
    lr: float = 1e-3
    hole_loss: str = "l1"
    hole_weight: float = 1.0
    ring_weight: float = 0.1
    grad_weight: float = 0.5
    adv_weight: float = 0.0
    fm_weight: float = 0.0
    adv_start: int = 0
    lesion_prob: float = 0.5
    outpaint_prob: float = 0.1
    nodule_prob: float = 0.0
    nodule_radius: tuple = (6.0, 25.0)
    half_scale_prob: float = 0.0
    intensity_jitter: float = 0.0
    pushpull_mix: float = 0.2
    nodule_jitter: float = 0.1
    seed: int = 0
    checkpoint_every: int = 500
    threads: int = 0


def _masked_l1(a, b, w):
    return (torch.abs(a - b) * w).sum() / w.sum().clamp_min(1.0)


HOLE_LOSSES = ("l1", "mse", "psnr", "mse-native")


def _masked_mse(a, b, w):
    return (((a - b) ** 2) * w).sum() / w.sum().clamp_min(1.0)


def _log_mse_per_sample(a, b, w):
    """Mean over samples of ln(hole MSE): 10/ln(10) of it is minus the mean per-sample PSNR
    (up to a constant), so every sample counts by its relative error, as in the benchmark."""
    se = (((a - b) ** 2) * w).flatten(1).sum(1)
    n = w.flatten(1).sum(1)
    keep = n > 0
    return torch.log(se[keep] / n[keep] + 1e-6).mean()


def _native_weights(scale: torch.Tensor) -> torch.Tensor:
    """Per-sample weights that turn normalised squared errors into native ones (batch mean 1)."""
    w = scale.float() ** 2
    return (w / w.mean().clamp_min(1e-12)).view(-1, 1, 1, 1)


def hole_loss(name: str, pred, target, hole, scale=None):
    """The reconstruction term of :class:`TrainConfig` ``hole_loss`` (see there)."""
    if name == "mse-native":
        if scale is None:
            raise SynthsegError("the mse-native hole loss needs each crop's normalisation scale")
        # pooled over the batch's hole pixels like ``mse``, each crop's squared error in native
        # units (relative to the batch's mean scale, so the loss keeps mse's magnitude)
        return (((pred - target) ** 2) * hole * _native_weights(scale)).sum() / hole.sum().clamp_min(1.0)
    if name == "l1":
        return _masked_l1(pred, target, hole)
    if name == "mse":
        return _masked_mse(pred, target, hole)
    if name == "psnr":
        return _log_mse_per_sample(pred, target, hole)
    raise SynthsegError(f"unknown hole loss {name!r}; choose {', '.join(HOLE_LOSSES)}")


def _grad_l1(pred, target, w):
    dxp, dxt = pred[..., :, 1:] - pred[..., :, :-1], target[..., :, 1:] - target[..., :, :-1]
    dyp, dyt = pred[..., 1:, :] - pred[..., :-1, :], target[..., 1:, :] - target[..., :-1, :]
    wx = torch.maximum(w[..., :, 1:], w[..., :, :-1])
    wy = torch.maximum(w[..., 1:, :], w[..., :-1, :])
    return _masked_l1(dxp, dxt, wx) + _masked_l1(dyp, dyt, wy)


def hole_psnr(pred: np.ndarray, target: np.ndarray, hole: np.ndarray, data_range: float) -> float:
    """PSNR (dB) over the hole pixels only."""
    mse = float(np.mean((pred[hole].astype(np.float64) - target[hole]) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(data_range ** 2 / mse)


def _adam_state(opt: torch.optim.Optimizer, prefix: str) -> Dict[str, torch.Tensor]:
    out = {}
    for i, p in enumerate(opt.param_groups[0]["params"]):
        st = opt.state.get(p)
        if not st:
            continue
        out[f"{prefix}/{i}/exp_avg"] = st["exp_avg"]
        out[f"{prefix}/{i}/exp_avg_sq"] = st["exp_avg_sq"]
        out[f"{prefix}/{i}/step"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1)
    return out


def _load_adam_state(opt: torch.optim.Optimizer, tensors: Dict[str, torch.Tensor], prefix: str):
    for i, p in enumerate(opt.param_groups[0]["params"]):
        key = f"{prefix}/{i}/exp_avg"
        if key not in tensors or tensors[key].shape != p.shape:
            continue
        opt.state[p] = {
            "step": torch.tensor(float(tensors[f"{prefix}/{i}/step"][0])),
            "exp_avg": tensors[key].to(p.device),
            "exp_avg_sq": tensors[f"{prefix}/{i}/exp_avg_sq"].to(p.device),
        }


def _ring(hole: torch.Tensor, px: int = 4) -> torch.Tensor:
    grown = F.max_pool2d(hole, 2 * px + 1, stride=1, padding=px)
    return grown - hole


def _to_device(batch, device, channels_last):
    img, hole, mode, nb, coarse, has, scale = (torch.from_numpy(np.ascontiguousarray(a)) for a in batch)
    img, hole, mode, scale = img.to(device), hole.to(device), mode.to(device), scale.to(device)
    nb = nb.to(device) if nb.shape[1] else None
    has = has.to(device)[:, None, None, None]
    # samples without a biharmonic prior get the network's own push-pull fill
    coarse = has * coarse.to(device) + (1 - has) * push_pull_fill(img, hole)
    if channels_last:
        img = img.contiguous(memory_format=torch.channels_last)
        hole = hole.contiguous(memory_format=torch.channels_last)
        coarse = coarse.contiguous(memory_format=torch.channels_last)
    return img, hole, mode, nb, coarse, scale


def train_inpainter(
    images: Sequence[str | Path],
    out: str | Path,
    *,
    masks_dir: Optional[str | Path] = None,
    organ_dir: Optional[str | Path] = None,
    exclude: Sequence[str] = (),
    model_config: Optional[InpainterConfig] = None,
    train_config: Optional[TrainConfig] = None,
    resume: bool = False,
    device: Optional[str] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    val_images: Sequence[str | Path] = (),
) -> Path:
    """Train (or resume training of) an inpainting model and save it to ``out``.

    Parameters
    ----------
    images : sequence of folders or files
        Training images (2D, or volumes used slice by slice).
    out : path
        ``.safetensors`` output; also the checkpoint written every ``checkpoint_every`` steps.
    masks_dir : folder, optional
        Lesion masks matched by name. Healthy holes avoid them; with ``lesion`` among the
        model's modes, about ``lesion_prob`` of the samples learn to draw those lesions.
    organ_dir : folder, optional
        Organ masks matched by name: healthy training holes are kept inside them.
    exclude : names
        File names or stems to leave out (held-out evaluation images).
    resume : bool
        Continue from ``out`` (weights, discriminator, Adam state, step count, elapsed time).
    val_images : sequence
        Held-out images: the final hole PSNR on fixed random holes there goes into the
        provenance metrics.
    progress, cancel
        Reported/polled every step. On cancel, a checkpoint is saved and
        :class:`~napari_synthseg.errors.CancelledError` is raised.

    Returns
    -------
    Path
        ``out``.
    """
    tc = train_config or TrainConfig()
    if tc.hole_loss not in HOLE_LOSSES:
        raise SynthsegError(f"unknown hole loss {tc.hole_loss!r}; choose {', '.join(HOLE_LOSSES)}")
    if not 0.0 <= tc.nodule_prob <= 1.0 or not 0.0 <= tc.half_scale_prob <= 1.0:
        raise SynthsegError("nodule and half-scale fractions must lie between 0 and 1")
    lo_r, hi_r = (float(r) for r in tc.nodule_radius)
    if not 0 < lo_r <= hi_r:
        raise SynthsegError(f"the nodule radius range must be 0 < min <= max, got {tc.nodule_radius}")
    out = Path(out)
    if out.suffix != ".safetensors":
        raise SynthsegError(f"the model file must end in .safetensors, got {out.name}")
    dev = select_device(device)
    if tc.threads and dev.type == "cpu":
        torch.set_num_threads(int(tc.threads))
    start_step, elapsed_before, history, crops_before = 0, 0.0, [], 0
    extra: Dict[str, torch.Tensor] = {}
    if resume:
        if not out.exists():
            raise SynthsegError(f"cannot resume: {out} does not exist; train without --resume first")
        loaded = load_model(out, expected=ARCHITECTURE, device="cpu")
        mc = loaded.config
        # load_model checked the architecture, so the module is an InpaintNet
        gen = cast(InpaintNet, loaded.module).train()
        prov = loaded.provenance
        start_step = int(prov.get("steps", 0))
        elapsed_before = float(prov.get("train_seconds", 0.0))
        # files from before crops were counted: assume the batch size did not change
        crops_before = int(prov.get("crops_seen", start_step * tc.batch))
        history = list(prov.get("history", []))
        extra = load_extra_tensors(out)
        if start_step >= tc.steps:
            raise SynthsegError(f"{out.name} already has {start_step} steps; ask for more than "
                                f"that with --steps to continue")
    else:
        mc = model_config or InpainterConfig()
        torch.manual_seed(tc.seed)
        gen = InpaintNet(mc)
    items = load_training_images(images, masks_dir, organ_dir, exclude,
                                 nodule_centres=tc.nodule_prob > 0)
    if "lesion" in mc.modes and not any(it.lesion_slices for it in items):
        raise SynthsegError("lesion mode needs lesion masks: give --masks DIR with masks named "
                            "like the images, or train without the lesion mode")
    sampler = CropSampler(items, tc.crop, mc.modes, mc.context_slices, tc.lesion_prob,
                          tc.outpaint_prob, mc.norm_percentiles, seed=tc.seed + start_step,
                          config=mc, nodule_prob=tc.nodule_prob, nodule_radius=tc.nodule_radius,
                          half_scale_prob=tc.half_scale_prob,
                          intensity_jitter=tc.intensity_jitter, pushpull_mix=tc.pushpull_mix,
                          nodule_jitter=tc.nodule_jitter)
    use_d = tc.adv_weight > 0 or tc.fm_weight > 0
    disc = PatchDiscriminator() if use_d else None
    if disc is not None and any(k.startswith("disc/") for k in extra):
        disc.load_state_dict({k[5:]: v for k, v in extra.items() if k.startswith("disc/")})
    channels_last = dev.type == "cuda"
    gen = gen.to(dev)
    if channels_last:
        # torch's stubs lack Module.to(memory_format=...), which torch accepts and documents
        gen = gen.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt_g = torch.optim.Adam(gen.parameters(), lr=tc.lr, betas=(0.9, 0.99))
    _load_adam_state(opt_g, extra, "opt_g")
    opt_d = None
    # the discriminator with its optimiser; they exist together
    adversary: Optional[tuple[PatchDiscriminator, torch.optim.Adam]] = None
    if disc is not None:
        disc = disc.to(dev)
        opt_d = torch.optim.Adam(disc.parameters(), lr=tc.lr, betas=(0.5, 0.99))
        _load_adam_state(opt_d, extra, "opt_d")
        adversary = (disc, opt_d)
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda"
                                  and not torch.cuda.is_bf16_supported())
    noise_gen = torch.Generator(device="cpu").manual_seed(tc.seed + 7919 + start_step)

    def lr_at(step):
        return tc.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step / tc.steps, 1.0))))

    def checkpoint(step, seconds, metrics):
        tensors = {}
        tensors.update(_adam_state(opt_g, "opt_g"))
        if disc is not None:
            tensors.update({f"disc/{k}": v for k, v in disc.state_dict().items()})
            tensors.update(_adam_state(opt_d, "opt_d"))
        prov = {
            "steps": step,
            "train_seconds": round(seconds, 1),
            "crops_seen": crops_before + tc.batch * (step - start_step),
            "train_config": dataclasses.asdict(tc),
            "data": {
                "n_images": len(items),
                "files": [{"name": it.path.name, "sha256": it.sha256} for it in items],
                "combined_sha256": hashlib.sha256(
                    "".join(sorted(it.sha256 for it in items)).encode()).hexdigest(),
                "masks_dir": str(masks_dir) if masks_dir else None,
                "organ_dir": str(organ_dir) if organ_dir else None,
                "excluded": list(exclude),
            },
            "device": str(dev),
            "torch": torch.__version__,
            "napari_synthseg": __version__,
            "platform": platform.platform(),
            "metrics": metrics,
            "history": history,
        }
        gen_cpu = gen
        save_model(gen_cpu, mc, out, provenance=prov, extra_tensors=tensors)

    t0 = time.perf_counter()
    step = start_step
    run_l1 = None
    report(progress, step, tc.steps, "training inpainter")
    gen.train()
    try:
        while step < tc.steps:
            if cancel is not None and cancel.cancelled:
                raise CancelledError("cancelled by the user")
            for group in opt_g.param_groups:
                group["lr"] = lr_at(step)
            img, hole, mode, nb, coarse, scale = _to_device(sampler.batch(tc.batch), dev, channels_last)
            noise = None
            if mc.noise_channels:
                noise = torch.randn(img.shape[0], mc.noise_channels, *img.shape[-2:],
                                    generator=noise_gen).to(dev)
            adv = adversary if step >= tc.adv_start else None
            with autocast_context(dev):
                pred = gen(img, hole, mode, noise=noise, neighbours=nb, coarse=coarse)
            pred = pred.float()
            if adv is not None:
                adv_disc, adv_opt = adv
                with autocast_context(dev):
                    d_real, _ = adv_disc(img, hole)
                    d_fake, _ = adv_disc(pred.detach(), hole)
                loss_d = F.relu(1 - d_real.float()).mean() + F.relu(1 + d_fake.float()).mean()
                adv_opt.zero_grad(set_to_none=True)
                scaler.scale(loss_d).backward()
                scaler.step(adv_opt)
            l1 = _masked_l1(pred, img, hole)
            rec = l1 if tc.hole_loss == "l1" else hole_loss(tc.hole_loss, pred, img, hole, scale)
            loss = tc.hole_weight * rec
            if tc.ring_weight:
                loss = loss + tc.ring_weight * _masked_l1(pred, img, _ring(hole))
            if tc.grad_weight:
                loss = loss + tc.grad_weight * _grad_l1(pred, img, hole)
            if adv is not None:
                adv_disc, _ = adv
                with autocast_context(dev):
                    g_fake, f_fake = adv_disc(pred, hole)
                    with torch.no_grad():
                        _, f_real = adv_disc(img, hole)
                loss = loss + tc.adv_weight * (-g_fake.float().mean())
                if tc.fm_weight:
                    loss = loss + tc.fm_weight * sum(
                        F.l1_loss(a.float(), b.float()) for a, b in zip(f_fake, f_real)) / len(f_fake)
            opt_g.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt_g)
            scaler.update()
            step += 1
            v = float(l1.detach())
            run_l1 = v if run_l1 is None else 0.98 * run_l1 + 0.02 * v
            if step % 50 == 0 or step == tc.steps:
                history.append([step, round(run_l1, 5)])
            report(progress, step, tc.steps, f"step {step}/{tc.steps}, hole L1 {run_l1:.4f}")
            if tc.checkpoint_every and step % tc.checkpoint_every == 0 and step < tc.steps:
                checkpoint(step, elapsed_before + time.perf_counter() - t0,
                           {"train_hole_l1_norm": run_l1})
    except (CancelledError, KeyboardInterrupt):
        # Cancel in napari and Ctrl+C in the CLI both leave a file that --resume continues.
        checkpoint(step, elapsed_before + time.perf_counter() - t0,
                   {"train_hole_l1_norm": run_l1, "cancelled": True})
        raise
    seconds = elapsed_before + time.perf_counter() - t0
    gen.eval()
    # Throughput over the whole training (every resumed segment), and of this segment alone:
    # a model trained in stages on a busy machine would otherwise report only its last stage.
    metrics: Dict[str, Any] = {
        "train_hole_l1_norm": run_l1,
        "images_per_second": round((crops_before + tc.batch * (step - start_step)) / max(seconds, 1e-9), 2),
        "images_per_second_last_segment": round(tc.batch * (step - start_step)
                                                / max(time.perf_counter() - t0, 1e-9), 2)}
    if val_images:
        metrics.update(validate(gen, mc, val_images, dev, crop=tc.crop, seed=12345))
        if tc.nodule_prob > 0:
            metrics.update(validate(gen, mc, val_images, dev, crop=tc.crop, seed=12345,
                                    nodule=True, radius=tc.nodule_radius))
    checkpoint(step, seconds, metrics)
    report(progress, tc.steps, tc.steps, f"saved {out.name}")
    return out


@torch.no_grad()
def validate(gen: InpaintNet, mc: InpainterConfig, images: Sequence[str | Path], device,
             crop: int = 128, n: int = 64, seed: int = 12345, nodule: bool = False,
             radius=(6.0, 25.0)) -> Dict[str, float]:
    """Hole PSNR/L1 (normalised units, range 2) of ``gen`` vs its smooth prior fill alone.

    PSNR is pooled over all ``n`` holes. ``nodule=True`` uses nodule-sized blobs in aerated
    lung (keys ``val_nodule_...``) instead of the random training holes (``val_hole_...``).
    """
    items = load_training_images(images, nodule_centres=nodule)
    sampler = CropSampler(items, crop, ("healthy",), mc.context_slices, 0.0, 0.0,
                          mc.norm_percentiles, seed=seed, config=mc, pushpull_mix=0.0,
                          nodule_prob=1.0 if nodule else 0.0, nodule_radius=radius,
                          half_scale_prob=0.0)
    img, hole, mode, nb, coarse, _ = _to_device(sampler.batch(n), device, False)
    noise = torch.zeros(n, mc.noise_channels, *img.shape[-2:], device=device) if mc.noise_channels else None
    pred = gen.float()(img, hole, mode, noise=noise, neighbours=nb, coarse=coarse)
    res = {}
    key = "val_nodule" if nodule else "val_hole"
    for name, p in ((key, pred), (f"{key}_{mc.prior}_prior", coarse)):
        a, b, h = p.cpu().numpy(), img.cpu().numpy(), hole.cpu().numpy() > 0.5
        res[f"{name}_psnr_db"] = round(hole_psnr(a, b, h, 2.0), 3)
        res[f"{name}_l1_norm"] = round(float(np.abs(a[h] - b[h]).mean()), 5)
    return res


def describe(path: str | Path) -> Dict[str, Any]:
    """Header summary of a saved inpainter (architecture, config, provenance)."""
    return read_model_info(path)
