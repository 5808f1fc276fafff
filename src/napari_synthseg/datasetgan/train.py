"""Train the StyleGAN2-style generator on a folder of images.

Non-saturating logistic loss, lazy R1 regularisation of the discriminator on real images,
DiffAugment for small data sets, style mixing, an exponential moving average (EMA) of the
generator (the EMA copy is what gets saved and sampled), periodic checkpoints and resume.

Two files are written: ``G.safetensors`` (the EMA generator, all a user needs to sample) and
``G.train.safetensors`` beside it (raw G, D, EMA G and the Adam moments) for ``resume``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SynthsegError
from ..io import read_image
from ..io.read import IMAGE_EXTENSIONS, file_extension
from ..models import (
    autocast_context,
    load_extra_tensors,
    load_model,
    read_model_info,
    register_architecture,
    save_model,
    select_device,
)
from ..models.config import config_to_dict
from ..utils.progress import CancelToken, ProgressCallback, report
from .augment import DEFAULT_POLICY, diff_augment, parse_policy
from .generator import GENERATOR_ARCH, Discriminator, GanConfig, Generator, seeded_inputs, to_uint8

STATE_ARCH = "datasetgan-stylegan2-train-state"
PREVIEW_SEEDS = tuple(range(8))


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------
@dataclass
class TrainingImages:
    """Images ready for training: uint8 (N, size, size), plus where they came from."""

    pixels: np.ndarray
    paths: list[str]
    sha256: str
    source_shape: tuple[int, ...]

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


def _to_unit_uint8(arr: np.ndarray) -> np.ndarray:
    """Native intensities -> uint8, keeping 8-bit data untouched."""
    if arr.dtype == np.uint8:
        return arr
    arr = arr.astype(np.float32)
    lo, hi = np.percentile(arr, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((arr - lo) / (hi - lo) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _square_resize(arr: np.ndarray, size: int) -> np.ndarray:
    h, w = arr.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    arr = arr[top : top + side, left : left + side]
    interp = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
    return cv2.resize(arr, (size, size), interpolation=interp)


def list_image_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise SynthsegError(f"image folder not found: {folder}")
    files = [
        p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and file_extension(p) in IMAGE_EXTENSIONS
    ]
    if not files:
        raise SynthsegError(f"no images in {folder}; expected PNG, JPEG, TIFF, DICOM, NIfTI, MHA or NRRD files")
    return files


def load_image_folder(
    folder: str | Path,
    size: int,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> TrainingImages:
    """Read every image in ``folder`` (2D images; 3D volumes give their axial slices).

    All images must share one shape: a folder mixing sizes is usually two data sets by mistake,
    and silently rescaling them would teach the generator two pixel spacings.

    Raises
    ------
    SynthsegError
        Empty folder, unreadable files, or mixed image sizes.
    """
    files = list_image_files(folder)
    slices: list[np.ndarray] = []
    digests: list[str] = []
    first_shape: tuple[int, ...] | None = None
    first_name = ""
    for i, path in enumerate(files):
        if cancel is not None:
            cancel.raise_if_cancelled()
        image = read_image(path)
        arr = image.array
        plane = tuple(arr.shape[-2:])
        if first_shape is None:
            first_shape, first_name = plane, path.name
        elif plane != first_shape:
            raise SynthsegError(
                f"images have mixed sizes ({first_name} is {first_shape[0]}x{first_shape[1]}, "
                f"{path.name} is {plane[0]}x{plane[1]}); resample them to one size first"
            )
        arr = _to_unit_uint8(arr)
        planes = arr if arr.ndim == 3 else arr[None]
        slices.extend(_square_resize(p, size) for p in planes)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
        report(progress, i + 1, len(files), f"read {path.name}")
    combined = hashlib.sha256("\n".join(digests).encode()).hexdigest()
    return TrainingImages(np.stack(slices), [str(p) for p in files], combined, first_shape or ())


def images_from_array(pixels: np.ndarray, name: str = "array") -> TrainingImages:
    """Wrap an in-memory uint8 stack (N, size, size) as training images (tests, benchmarks)."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    return TrainingImages(pixels, [name], hashlib.sha256(pixels.tobytes()).hexdigest(), pixels.shape[1:])


# ------------------------------------------------------------------------------------------
# config and state
# ------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """How to train (not what: that is :class:`GanConfig`).

    Parameters
    ----------
    steps : int
        Total optimiser steps (counting steps done before a resume).
    batch_size : int
        Images per step (real and fake each).
    lr : float
        Adam learning rate for G and D (betas 0, 0.99 as in StyleGAN2).
    r1_gamma : float or None
        R1 weight; None uses the StyleGAN2-ADA heuristic ``0.0002 * size**2 / batch``.
    r1_every : int
        Lazy regularisation interval in steps.
    ema_half_life : float
        Half-life of the generator EMA in images (ramped up over the first steps).
    mixing_prob : float
        Probability of style mixing per batch.
    augment : str
        DiffAugment policy; ``""`` disables it.
    checkpoint_every, preview_every : int
        Steps between checkpoints / preview callbacks (0: only at the end).
    seed : int
        Seed of the training randomness.
    amp : bool
        Mixed precision on CUDA.
    """

    steps: int = 2000
    batch_size: int = 16
    lr: float = 0.0025
    r1_gamma: float | None = None
    r1_every: int = 16
    ema_half_life: float = 2000.0
    mixing_prob: float = 0.5
    augment: str = DEFAULT_POLICY
    checkpoint_every: int = 500
    preview_every: int = 100
    seed: int = 0
    amp: bool = True


@dataclass
class TrainResult:
    generator_path: Path
    state_path: Path
    steps: int
    images_seen: int
    seconds: float
    images_per_second: float
    last_losses: dict[str, float] = field(default_factory=dict)


class GanTrainingState(nn.Module):
    """Everything needed to resume: raw G, D and the EMA copy of G."""

    def __init__(self, config: GanConfig):
        super().__init__()
        self.G = Generator(config)
        self.D = Discriminator(config)
        self.G_ema = Generator(config)


register_architecture(STATE_ARCH, GanConfig)(GanTrainingState)


def state_path_for(generator_path: str | Path) -> Path:
    p = Path(generator_path)
    name = p.name[: -len(".safetensors")] if p.name.endswith(".safetensors") else p.stem
    return p.with_name(f"{name}.train.safetensors")


def _optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for gi, group in enumerate(opt.param_groups):
        for pi, p in enumerate(group["params"]):
            st = opt.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq", "step"):
                if key in st:
                    v = st[key]
                    out[f"{prefix}/{gi}/{pi}/{key}"] = v if torch.is_tensor(v) else torch.tensor(float(v))
    return out


def _restore_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    for gi, group in enumerate(opt.param_groups):
        for pi, p in enumerate(group["params"]):
            keys = {k: f"{prefix}/{gi}/{pi}/{k}" for k in ("exp_avg", "exp_avg_sq", "step")}
            if all(v in tensors for v in keys.values()):
                opt.state[p] = {
                    "exp_avg": tensors[keys["exp_avg"]].to(p.device, p.dtype),
                    "exp_avg_sq": tensors[keys["exp_avg_sq"]].to(p.device, p.dtype),
                    "step": tensors[keys["step"]].float().cpu(),
                }


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).float().div_(127.5).sub_(1.0).unsqueeze(1)


# ------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------
def train_generator(
    images: TrainingImages,
    out: str | Path,
    gan_config: GanConfig | None = None,
    train_config: TrainConfig | None = None,
    resume: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    preview: Callable[[int, np.ndarray], None] | None = None,
) -> TrainResult:
    """Train (or continue training) a generator and write checkpoints to ``out``.

    Parameters
    ----------
    images : TrainingImages
        From :func:`load_image_folder`; their side length must equal ``gan_config.size``.
    out : path
        Where the EMA generator goes; the resumable state goes to ``<out>.train.safetensors``.
    resume : path, optional
        A ``.train.safetensors`` state (or the generator file beside one) to continue from.
        Its architecture wins over ``gan_config``.
    preview : callable, optional
        ``preview(step, uint8 (8, size, size))`` with fixed seeds, every ``preview_every`` steps.

    On cancel a checkpoint is written first, so the run can be resumed, then
    :class:`~napari_synthseg.errors.CancelledError` is raised.
    """
    tc = train_config or TrainConfig()
    parse_policy(tc.augment)
    dev = select_device(device)
    out = Path(out)
    state_out = state_path_for(out)

    provenance_history: list[dict] = []
    start_step, nimg = 0, 0
    resume_tensors: dict[str, torch.Tensor] = {}
    if resume is not None:
        rpath = Path(resume)
        if not rpath.name.endswith(".train.safetensors"):
            rpath = state_path_for(rpath)
        if not rpath.exists():
            raise SynthsegError(f"cannot resume: training state {rpath.name} not found beside the generator")
        loaded = load_model(rpath, expected=STATE_ARCH, device=dev)
        state: GanTrainingState = loaded.module  # type: ignore[assignment]
        gan_config = loaded.config
        start_step = int(loaded.provenance.get("steps", 0))
        nimg = int(loaded.provenance.get("images_seen", 0))
        provenance_history = list(loaded.provenance.get("history", []))
        resume_tensors = load_extra_tensors(rpath)
    else:
        gan_config = gan_config or GanConfig(size=int(images.pixels.shape[-1]))
        torch.manual_seed(tc.seed)
        state = GanTrainingState(gan_config).to(dev)
        state.G_ema.load_state_dict(state.G.state_dict())
    if images.pixels.shape[-1] != gan_config.size:
        raise SynthsegError(
            f"images are {images.pixels.shape[-1]} px but the generator makes {gan_config.size} px; "
            "load them with the generator's size"
        )
    if len(images) < 2:
        raise SynthsegError("need at least 2 training images")

    G, D, G_ema = state.G, state.D, state.G_ema
    G.train()
    D.train()
    G_ema.eval()
    for p in G_ema.parameters():
        p.requires_grad_(False)
    # Lazy regularisation: D's Adam sees R1 every r1_every steps, so its betas are adjusted.
    mb = tc.r1_every / (tc.r1_every + 1)
    opt_g = torch.optim.Adam(G.parameters(), lr=tc.lr, betas=(0.0, 0.99), eps=1e-8)
    opt_d = torch.optim.Adam(D.parameters(), lr=tc.lr * mb, betas=(0.0, 0.99**mb), eps=1e-8)
    if resume_tensors:
        _restore_optimizer("opt_g", opt_g, resume_tensors)
        _restore_optimizer("opt_d", opt_d, resume_tensors)
    r1_gamma = tc.r1_gamma if tc.r1_gamma is not None else 0.0002 * gan_config.size**2 / tc.batch_size

    data = torch.from_numpy(images.pixels)
    rng = torch.Generator().manual_seed(tc.seed + start_step)
    bs = tc.batch_size
    t_start = time.perf_counter()
    segment_start = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    losses: dict[str, float] = {}
    preview_z, preview_noise = seeded_inputs(gan_config, PREVIEW_SEEDS, dev)
    step = start_step

    def checkpoint(final: bool) -> None:
        seconds = time.perf_counter() - t_start
        segment = {
            "started": segment_start,
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "steps": [start_step, step],
            "seconds": round(seconds, 1),
            "data_sha256": images.sha256,
            "device": str(dev),
        }
        provenance = {
            "kind": "datasetgan generator (EMA)",
            "steps": step,
            "images_seen": nimg,
            "data_sha256": images.sha256,
            "data_files": len(images.paths),
            "data_images": len(images),
            "data_source_shape": list(images.source_shape),
            "train_config": asdict(tc),
            "r1_gamma": r1_gamma,
            "history": provenance_history + [segment],
            "torch": torch.__version__,
            "final": final,
        }
        save_model(G_ema, gan_config, out, provenance=provenance)
        extra = _optimizer_tensors("opt_g", opt_g) | _optimizer_tensors("opt_d", opt_d)
        save_model(state, gan_config, state_out, provenance=provenance, extra_tensors=extra)

    def do_preview() -> None:
        if preview is None:
            return
        with torch.no_grad():
            imgs = G_ema(preview_z, noise=preview_noise)
        preview(step, to_uint8(imgs))

    while step < tc.steps:
        if cancel is not None and cancel.cancelled:
            checkpoint(final=False)
            cancel.raise_if_cancelled()
        idx = torch.randint(0, len(images), (bs,), generator=rng)
        real = _to_tensor(data[idx].numpy()).to(dev)

        # --- discriminator
        z = torch.randn(bs, gan_config.z_dim, device=dev)
        with torch.no_grad(), autocast_context(dev, tc.amp):
            fake = _generate(G, z, tc.mixing_prob, gan_config, track=False)
        with autocast_context(dev, tc.amp):
            d_fake = D(diff_augment(fake.float(), tc.augment))
            d_real = D(diff_augment(real, tc.augment))
            loss_d = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.float().backward()
        opt_d.step()
        losses["D"] = float(loss_d.detach())

        if r1_gamma > 0 and step % tc.r1_every == 0:
            real_r1 = real.detach().requires_grad_(True)
            d_r = D(diff_augment(real_r1, tc.augment))
            (grad,) = torch.autograd.grad(d_r.sum(), real_r1, create_graph=True)
            penalty = grad.square().sum(dim=(1, 2, 3)).mean()
            loss_r1 = penalty * (r1_gamma / 2) * tc.r1_every
            opt_d.zero_grad(set_to_none=True)
            (loss_r1 + 0 * d_r[0]).backward()
            opt_d.step()
            losses["R1"] = float(penalty.detach())

        # --- generator
        z = torch.randn(bs, gan_config.z_dim, device=dev)
        with autocast_context(dev, tc.amp):
            fake = _generate(G, z, tc.mixing_prob, gan_config, track=True)
            loss_g = F.softplus(-D(diff_augment(fake.float(), tc.augment))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.float().backward()
        opt_g.step()
        losses["G"] = float(loss_g.detach())

        # --- EMA of G, half-life in images, ramped up so early noise is forgotten quickly
        nimg += bs
        half_life = min(tc.ema_half_life, nimg * 0.05 + bs)
        beta = 0.5 ** (bs / max(half_life, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.copy_(p.detach().lerp(p_ema, beta))
            for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)
        step += 1

        if not math.isfinite(losses["D"]) or not math.isfinite(losses["G"]):
            raise SynthsegError(
                f"training diverged at step {step} (loss is not finite); lower the learning rate"
            )
        report(progress, step, tc.steps, f"step {step}: " + " ".join(f"{k} {v:.3f}" for k, v in losses.items()))
        if tc.checkpoint_every and step % tc.checkpoint_every == 0 and step < tc.steps:
            checkpoint(final=False)
        if tc.preview_every and step % tc.preview_every == 0:
            do_preview()
    checkpoint(final=True)
    if not (tc.preview_every and step % tc.preview_every == 0):
        do_preview()
    seconds = time.perf_counter() - t_start
    done = (step - start_step) * bs
    return TrainResult(
        generator_path=out,
        state_path=state_out,
        steps=step,
        images_seen=nimg,
        seconds=seconds,
        images_per_second=done / seconds if seconds > 0 else float("nan"),
        last_losses=dict(losses),
    )


def _generate(G: Generator, z: torch.Tensor, mixing_prob: float, cfg: GanConfig, track: bool) -> torch.Tensor:
    ws = G.styles(z, track_w_avg=track)
    if mixing_prob > 0 and torch.rand(()) < mixing_prob:
        # Style mixing: a second latent takes over from a random layer on, so neighbouring
        # layers do not learn to depend on each other (the reason DatasetGAN features are local).
        ws2 = G.styles(torch.randn_like(z), track_w_avg=False)
        cut = int(torch.randint(1, cfg.num_ws, ()))
        ws = torch.cat([ws[:, :cut], ws2[:, cut:]], dim=1)
    return G.synthesis(ws)


def load_generator(path: str | Path, device: str | torch.device | None = "cpu"):
    """Load a saved (EMA) generator; returns :class:`~napari_synthseg.models.LoadedModel`."""
    return load_model(path, expected=GENERATOR_ARCH, device=device)


def generator_info(path: str | Path) -> dict:
    info = read_model_info(path)
    if info["architecture"] != GENERATOR_ARCH:
        raise SynthsegError(f"{Path(path).name} is not a DatasetGAN generator ({info['architecture']})")
    return info


__all__ = [
    "GanTrainingState",
    "TrainConfig",
    "TrainResult",
    "TrainingImages",
    "config_to_dict",
    "images_from_array",
    "load_generator",
    "load_image_folder",
    "train_generator",
]
