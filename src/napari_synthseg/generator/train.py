"""Train the lesion generator (rectified flow, MONAI) on the train side of a real-nodule table.

Only the *train* side of :func:`napari_synthseg.io.lesion_index.split_by_group` is ever read:
the test side (whole series) is the held-out set the realism benchmark and the evaluation
commands use. The saved file holds the EMA weights (what sampling uses) with the config and the
provenance (data hashes, split, steps, time, loss); the raw weights, the Adam moments and the
EMA count ride along as ``extra/`` tensors so a run resumes exactly (``resume=True``), together
with the mask shape model (:mod:`.shapes`) and neutral lung contexts (:mod:`.contexts`) that
sampling needs without the training data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from monai.networks.schedulers import RFlowScheduler

from .. import __version__
from ..errors import CancelledError, SynthsegError
from ..io.lesion_index import DEFAULT_SPLIT_SALT, read_lesion_index, split_by_group
from ..models import autocast_context, load_extra_tensors, load_model, save_model, select_device
from ..utils.progress import CancelToken, ProgressCallback, report
from .data import BatchSampler, class_statistics, load_examples
from .histograms import fit_histogram_table
from .network import ARCHITECTURE, LesionGeneratorConfig, LesionGeneratorNet

log = logging.getLogger(__name__)


@dataclass
class GeneratorTrainConfig:
    """Optimisation settings (the network's shape is :class:`LesionGeneratorConfig`).

    Attributes
    ----------
    steps : int
        Total optimiser steps (a resumed run continues up to this number).
    batch : int
        Cubes per step.
    lr : float
        AdamW learning rate (linear warm-up over ``warmup`` steps, then constant unless
        ``lr_tail`` asks for a decay: CPU runs are often cut by time, so the default assumes no
        known end).
    lr_tail : float
        0 = constant learning rate. Otherwise the rate falls along a half cosine from ``lr`` at
        the step *this run* starts (a resumed run starts its own tail) to ``lr * lr_tail`` at
        ``steps``. A decaying tail is how a long run is usually finished: the last steps average
        out the gradient noise a constant rate leaves in the weights.
    ema_decay : float
        Decay of the exponential moving average of the weights that is saved and sampled.
    healthy_prob : float
        Fraction of samples that are healthy fills (class ``empty``).
    outside_weight : float
        Loss weight of voxels outside the generation region (their velocity follows from the
        context; a small weight keeps the output smooth across the border).
    max_minutes : float
        Stop (and save) after this much training time in this run; 0 = no limit.
    crop : int
        Train on windows of this many voxels cut from the ``patch`` cubes (0 = the whole cube);
        the region is kept inside the window where it fits.
    limit : int
        Use only the first N train-side nodules (tests); 0 = all.
    """

    steps: int = 2000
    batch: int = 8
    lr: float = 1e-3
    warmup: int = 50
    lr_tail: float = 0.0
    ema_decay: float = 0.995
    healthy_prob: float = 0.2
    outside_weight: float = 0.05
    max_minutes: float = 0.0
    crop: int = 0
    limit: int = 0
    seed: int = 0
    checkpoint_every: int = 100
    threads: int = 0
    split_salt: str = DEFAULT_SPLIT_SALT


def learning_rate(tc: GeneratorTrainConfig, step: int, start_step: int = 0) -> float:
    """The learning rate of optimiser step ``step`` in a run that started at ``start_step``.

    Linear warm-up over ``tc.warmup`` steps from zero (counted from step 0, so a resumed run
    does not warm up again), then ``tc.lr``; with ``tc.lr_tail > 0`` a half cosine from ``tc.lr``
    at ``start_step`` down to ``tc.lr * tc.lr_tail`` at ``tc.steps``.
    """
    rate = tc.lr * min(1.0, (step + 1) / max(1, tc.warmup))
    if tc.lr_tail > 0 and tc.steps > start_step:
        progress = min(1.0, max(0.0, (step - start_step) / (tc.steps - start_step)))
        rate *= tc.lr_tail + (1.0 - tc.lr_tail) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return rate


def _condition(config: LesionGeneratorConfig, x0: torch.Tensor, mask: torch.Tensor,
               mean_hu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(condition channels, generation region) for clean cubes ``x0`` and lesion ``mask``."""
    e = int(config.edge_voxels)
    region = torch.nn.functional.max_pool3d(mask, 2 * e + 1, stride=1, padding=e) if e > 0 else mask
    channels = [x0 * (1 - region), region]
    if config.mean_hu_channel:
        level = config.normalise(mean_hu).view(-1, 1, 1, 1, 1)
        channels.append(mask * level)
    return torch.cat(channels, dim=1), region


def _flat_state(prefix: str, module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {f"{prefix}/{k}": v for k, v in module.state_dict().items()}


def _adam_tensors(opt: torch.optim.Optimizer) -> Dict[str, torch.Tensor]:
    out = {}
    for i, p in enumerate(opt.param_groups[0]["params"]):
        st = opt.state.get(p)
        if st:
            out[f"adam/{i}/exp_avg"] = st["exp_avg"]
            out[f"adam/{i}/exp_avg_sq"] = st["exp_avg_sq"]
            out[f"adam/{i}/step"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1)
    return out


def _load_adam(opt: torch.optim.Optimizer, tensors: Dict[str, torch.Tensor]) -> None:
    for i, p in enumerate(opt.param_groups[0]["params"]):
        key = f"adam/{i}/exp_avg"
        if key in tensors and tensors[key].shape == p.shape:
            opt.state[p] = {"step": torch.tensor(float(tensors[f"adam/{i}/step"][0])),
                            "exp_avg": tensors[key].to(p.device),
                            "exp_avg_sq": tensors[f"adam/{i}/exp_avg_sq"].to(p.device)}


def train_lesion_generator(
    library: str | Path,
    out: str | Path,
    *,
    model_config: Optional[LesionGeneratorConfig] = None,
    train_config: Optional[GeneratorTrainConfig] = None,
    resume: bool = False,
    device: Optional[str] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> Path:
    """Train (or resume) a lesion generator on the train side of ``library``; save to ``out``.

    Parameters
    ----------
    library : folder
        A folder with ``index.csv`` (``ct_file``, ``seg_file``, ``lidc_series_uid`` ...), read
        with :func:`~napari_synthseg.io.lesion_index.read_lesion_index`.
    out : path
        ``.safetensors`` output, also the checkpoint (every ``checkpoint_every`` steps, on
        cancel and at the end).
    resume : bool
        Continue from ``out``: weights, EMA, Adam state, step count and elapsed time.
    progress, cancel
        Reported / polled every step. On cancel a checkpoint is written and
        :class:`~napari_synthseg.errors.CancelledError` raised.
    """
    from .contexts import neutral_contexts
    from .shapes import fit_shape_model

    tc = train_config or GeneratorTrainConfig()
    out = Path(out)
    if out.suffix != ".safetensors":
        raise SynthsegError(f"the model file must end in .safetensors, got {out.name}")
    if not 0.0 <= tc.healthy_prob < 1.0:
        raise SynthsegError("the healthy fraction must lie in [0, 1)")
    if tc.batch < 1 or tc.steps < 1:
        raise SynthsegError("steps and batch must be positive")
    dev = select_device(device)
    if tc.threads and dev.type == "cpu":
        torch.set_num_threads(int(tc.threads))
    entries = read_lesion_index(library)
    train_entries, test_entries = split_by_group(entries, salt=tc.split_salt)
    if not train_entries:
        raise SynthsegError(f"{library}: the train side of the split is empty")
    if tc.limit:
        train_entries = train_entries[: int(tc.limit)]

    start_step, seconds_before, history = 0, 0.0, []
    extra: Dict[str, torch.Tensor] = {}
    if resume:
        if not out.exists():
            raise SynthsegError(f"cannot resume: {out} does not exist; train without --resume first")
        loaded = load_model(out, expected=ARCHITECTURE, device="cpu")
        mc = loaded.config
        ema_net = loaded.module
        prov = loaded.provenance
        start_step = int(prov.get("steps", 0))
        seconds_before = float(prov.get("train_seconds", 0.0))
        history = list(prov.get("history", []))
        extra = load_extra_tensors(out)
        raw = {k[4:]: v for k, v in extra.items() if k.startswith("raw/")}
        if not raw:
            raise SynthsegError(f"{out.name} holds no training state (a shipped, stripped file); "
                                "it cannot be resumed")
        net = LesionGeneratorNet(mc)
        net.load_state_dict(raw)
        if start_step >= tc.steps:
            raise SynthsegError(f"{out.name} already has {start_step} steps; ask for more with --steps")
    else:
        mc = model_config or LesionGeneratorConfig()

    report(progress, 0, len(train_entries), "loading nodules")
    nodules, healthy = load_examples(train_entries, mc, seed=tc.seed, healthy=tc.healthy_prob > 0,
                                     progress=progress, cancel=cancel)
    if tc.healthy_prob > 0 and not healthy:
        raise SynthsegError("no healthy example could be cut from the library (1 mm patches with lung "
                            "beside the nodule are needed); train with --healthy-prob 0")
    if not resume:
        mc = dataclasses.replace(mc, class_mean_hu=class_statistics(nodules, healthy))
        torch.manual_seed(tc.seed)
        net = LesionGeneratorNet(mc)
        ema_net = LesionGeneratorNet(mc)
        ema_net.load_state_dict(net.state_dict())
    shape_model = fit_shape_model(train_entries)
    contexts = neutral_contexts(train_entries, mc)
    histograms = fit_histogram_table(nodules, mc.denormalise)

    net, ema_net = net.to(dev).train(), ema_net.to(dev).eval()
    for p in ema_net.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=0.0)
    _load_adam(opt, extra)
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda" and not torch.cuda.is_bf16_supported())
    scheduler = RFlowScheduler(num_train_timesteps=mc.num_train_timesteps, use_discrete_timesteps=False,
                               sample_method="logit-normal")
    sampler = BatchSampler(nodules, healthy, mc, tc.healthy_prob, seed=tc.seed + start_step, crop=tc.crop)
    gen = torch.Generator(device="cpu").manual_seed(tc.seed + 7919 + start_step)
    torch.manual_seed(tc.seed + 104729 + start_step)  # the scheduler draws timesteps from torch's RNG

    data_prov = {
        "library": str(Path(library).resolve()),
        "split": {"by": "group (lidc_series_uid)", "salt": tc.split_salt, "side": "train",
                  "train_series": len({e.group for e in train_entries}),
                  "test_series_held_out": len({e.group for e in test_entries})},
        "n_nodules": len(nodules),
        "n_healthy": len(healthy),
        "class_counts": {name: int(sum(e.class_index == i for e in nodules))
                         for i, name in enumerate(mc.class_names) if i > 0},
        "combined_sha256": hashlib.sha256("".join(sorted(e.name for e in train_entries)).encode()).hexdigest(),
    }

    def checkpoint(step: int, seconds: float, loss_avg: Optional[float]) -> None:
        tensors = _flat_state("raw", net)
        tensors.update(_adam_tensors(opt))
        tensors.update(shape_model.to_tensors())
        tensors.update(histograms.to_tensors())
        tensors.update({"contexts": torch.from_numpy(contexts.astype(np.float32))})
        prov: Dict[str, Any] = {
            "steps": step,
            "train_seconds": round(seconds, 1),
            "samples_seen": step * tc.batch,
            "train_config": dataclasses.asdict(tc),
            "data": data_prov,
            "device": str(dev),
            "torch": torch.__version__,
            "napari_synthseg": __version__,
            "platform": platform.platform(),
            "metrics": {"loss_ema": None if loss_avg is None else round(loss_avg, 5)},
            "history": history,
        }
        save_model(ema_net, mc, out, provenance=prov, extra_tensors=tensors)

    t0 = time.perf_counter()
    step = start_step
    loss_avg: Optional[float] = None
    report(progress, step, tc.steps, "training lesion generator")
    try:
        while step < tc.steps:
            if cancel is not None and cancel.cancelled:
                raise CancelledError("cancelled by the user")
            if tc.max_minutes and time.perf_counter() - t0 > 60.0 * tc.max_minutes:
                log.info("time budget of %.1f min reached at step %d", tc.max_minutes, step)
                break
            for group in opt.param_groups:
                group["lr"] = learning_rate(tc, step, start_step)
            x0, mask, classes, mean_hu = (torch.from_numpy(a) for a in sampler.batch(tc.batch))
            x0, mask = x0.to(dev), mask.float().to(dev)
            classes, mean_hu = classes.to(dev), mean_hu.to(dev)
            condition, region = _condition(mc, x0, mask, mean_hu)
            noise = torch.randn(x0.shape, generator=gen).to(dev)
            timesteps = scheduler.sample_timesteps(x0)
            noisy = scheduler.add_noise(x0, noise, timesteps)
            with autocast_context(dev):
                velocity = net(noisy, timesteps, condition, classes)
            weight = region + tc.outside_weight * (1 - region)
            err = (velocity.float() - (x0 - noise)) ** 2 * weight
            loss = (err.flatten(1).sum(1) / weight.flatten(1).sum(1)).mean()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            with torch.no_grad():
                for pe, p in zip(ema_net.parameters(), net.parameters()):
                    pe.lerp_(p, 1.0 - tc.ema_decay)
                for be, b in zip(ema_net.buffers(), net.buffers()):
                    be.copy_(b)
            step += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                raise SynthsegError(f"training diverged at step {step} (loss {value}); lower --lr")
            loss_avg = value if loss_avg is None else 0.98 * loss_avg + 0.02 * value
            if step % 50 == 0:
                history.append([step, round(loss_avg, 5), round(seconds_before + time.perf_counter() - t0, 1)])
            report(progress, step, tc.steps, f"loss {loss_avg:.4f}")
            if tc.checkpoint_every and step % tc.checkpoint_every == 0:
                checkpoint(step, seconds_before + time.perf_counter() - t0, loss_avg)
    except CancelledError:
        checkpoint(step, seconds_before + time.perf_counter() - t0, loss_avg)
        raise
    checkpoint(step, seconds_before + time.perf_counter() - t0, loss_avg)
    return out


def strip_training_state(path: str | Path, out: str | Path) -> Path:
    """Write ``path`` without what only resuming needs (raw weights, Adam moments).

    The result keeps the EMA weights, the config, the provenance (plus a note), the mask shape
    model and the neutral contexts: everything sampling uses, at about a quarter of the size.
    It cannot be resumed.
    """
    loaded = load_model(path, expected=ARCHITECTURE, device="cpu")
    extras = {k: v for k, v in load_extra_tensors(path).items() if k.startswith(("shape/", "hist/", "contexts"))}
    prov = dict(loaded.provenance, stripped_from_sha256=loaded.sha256,
                note="training state (raw weights, Adam moments) removed for shipping; not resumable")
    return save_model(loaded.module, loaded.config, out, provenance=prov, extra_tensors=extras)


def attach_histograms(path: str | Path, library: str | Path, out: str | Path | None = None,
                      progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> Path:
    """Add (or renew) the histogram-control table of a generator file trained before it existed.

    The table is fitted on the train side of ``library`` with the split salt the file records,
    so it holds exactly the nodules the model learned from. Weights, config and every other
    tensor are kept; the provenance notes the addition. ``out`` defaults to ``path`` (rewritten
    atomically by :func:`~napari_synthseg.models.save_model`).
    """
    loaded = load_model(path, expected=ARCHITECTURE, device="cpu")
    mc = loaded.config
    prov = dict(loaded.provenance)
    salt = (prov.get("train_config") or {}).get("split_salt", DEFAULT_SPLIT_SALT)
    train_entries, _ = split_by_group(read_lesion_index(library), salt=salt)
    limit = int((prov.get("train_config") or {}).get("limit", 0) or 0)
    if limit:
        train_entries = train_entries[:limit]
    nodules, _ = load_examples(train_entries, mc, seed=0, healthy=False, progress=progress, cancel=cancel)
    table = fit_histogram_table(nodules, mc.denormalise)
    extras = {k: v for k, v in load_extra_tensors(path).items() if not k.startswith("hist/")}
    extras.update(table.to_tensors())
    prov["histograms_added"] = {"library": str(Path(library).resolve()), "split_salt": salt, "nodules": len(table),
                                "from_sha256": loaded.sha256}
    return save_model(loaded.module, mc, out if out is not None else path, provenance=prov, extra_tensors=extras)
