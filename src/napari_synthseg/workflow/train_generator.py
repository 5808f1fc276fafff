"""Training the lesion generator: one job for ``synthseg train-lesion-generator`` and the panel.

It owns the defaults (the CLI's and the panel's fields start from :class:`TrainGeneratorSettings`),
the checks that refuse a useless or destructive run before minutes of loading (a folder without
a nodule table, an output that is not a ``.safetensors`` file, an existing model that would be
overwritten, *Resume* of a file that is not there), and the one-line summary of a trained file
that both adapters show. The training itself is :func:`napari_synthseg.generator.train_lesion_generator`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SynthsegError
from ..utils.progress import CancelToken, ProgressCallback

#: Network widths a user picks by name (channels per U-Net level). ``small`` is the shipped
#: model's; ``tiny`` trains about 3x faster per step on a CPU and is meant for a quick try.
NETWORKS: dict[str, tuple[int, ...]] = {"small": (8, 16, 32), "tiny": (8, 8, 16), "wide": (16, 32, 64)}


@dataclass(frozen=True)
class TrainGeneratorSettings:
    """Every knob of a generator training run, with the product's defaults.

    The panel shows the common ones (steps, time budget, resume, network, learning-rate tail,
    nodule limit); the CLI exposes all of them.

    Attributes
    ----------
    steps : int
        Total optimiser steps (a resumed run continues up to this number).
    max_minutes : float
        Stop and save after this much training time in this run (0 = no limit).
    batch : int
        Cubes per step.
    lr, lr_tail, ema_decay, healthy_prob, checkpoint_every, seed, threads :
        As :class:`~napari_synthseg.generator.GeneratorTrainConfig`.
    crop : int
        Train on windows of this many voxels of the cubes (0 = whole cube).
    network : str
        A key of :data:`NETWORKS`, or ``custom`` with ``channels``.
    channels : tuple of int, optional
        Channels per level (overrides ``network``).
    patch : int
        Cube side in voxels.
    mean_hu_channel : bool
        Condition on the requested mean HU.
    limit : int
        Use only the first N train-side nodules (0 = all): a quick try, or tests.
    """

    steps: int = 2000
    max_minutes: float = 0.0
    batch: int = 8
    lr: float = 1e-3
    lr_tail: float = 0.0
    ema_decay: float = 0.995
    healthy_prob: float = 0.2
    crop: int = 0
    network: str = "small"
    channels: tuple[int, ...] | None = None
    patch: int = 32
    mean_hu_channel: bool = True
    limit: int = 0
    checkpoint_every: int = 100
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        if not 1 <= int(self.steps) <= 100_000_000:
            raise SynthsegError(f"steps must lie in 1..100000000, got {self.steps}")
        if not 0 <= float(self.max_minutes) <= 60 * 24 * 30:
            raise SynthsegError(f"the time budget must lie in 0..43200 minutes, got {self.max_minutes}")
        if not 1 <= int(self.batch) <= 1024:
            raise SynthsegError(f"batch must lie in 1..1024, got {self.batch}")
        if not 0 < float(self.lr) <= 1.0:
            raise SynthsegError(f"the learning rate must lie in (0, 1], got {self.lr}")
        if not 0 <= float(self.lr_tail) <= 1.0:
            raise SynthsegError(f"the learning-rate tail must lie in 0..1, got {self.lr_tail}")
        if not 0 <= float(self.ema_decay) < 1.0:
            raise SynthsegError(f"the EMA decay must lie in [0, 1), got {self.ema_decay}")
        if not 0 <= float(self.healthy_prob) <= 1.0:
            raise SynthsegError(f"the healthy-fill fraction must lie in 0..1, got {self.healthy_prob}")
        if int(self.patch) < 8 or int(self.patch) % 4:
            raise SynthsegError(f"the cube side must be a multiple of 4 and at least 8 voxels, got {self.patch}")
        if int(self.crop) and not 8 <= int(self.crop) <= int(self.patch):
            raise SynthsegError(f"the training window must lie in 8..{self.patch} voxels (or 0), got {self.crop}")
        if self.channels is None and self.network not in NETWORKS:
            raise SynthsegError(f"unknown network {self.network!r}; choose {', '.join(NETWORKS)}")
        channels = self.network_channels
        if len(channels) < 2 or any(c < 8 or c % 8 for c in channels):
            # MONAI's DiffusionModelUNet normalises with 8 groups: every level needs a multiple of 8.
            raise SynthsegError(f"channels must be two or more multiples of 8, got {','.join(map(str, channels))}")
        if int(self.patch) % (2 ** (len(channels) - 1)):
            raise SynthsegError(f"a cube of {self.patch} voxels cannot be halved {len(channels) - 1} times")
        if int(self.limit) < 0:
            raise SynthsegError(f"the nodule limit must be 0 (all) or more, got {self.limit}")

    @property
    def network_channels(self) -> tuple[int, ...]:
        return tuple(int(c) for c in (self.channels if self.channels is not None else NETWORKS[self.network]))

    def model_config(self):
        """The network's :class:`~napari_synthseg.generator.LesionGeneratorConfig` (new runs only)."""
        from ..generator import LesionGeneratorConfig

        channels = self.network_channels
        return LesionGeneratorConfig(patch=int(self.patch), channels=channels, mean_hu_channel=bool(self.mean_hu_channel),
                                     attention_levels=(False,) * len(channels))

    def train_config(self):
        """The optimisation settings (:class:`~napari_synthseg.generator.GeneratorTrainConfig`)."""
        from ..generator import GeneratorTrainConfig

        return GeneratorTrainConfig(steps=int(self.steps), batch=int(self.batch), lr=float(self.lr),
                                    lr_tail=float(self.lr_tail), ema_decay=float(self.ema_decay),
                                    healthy_prob=float(self.healthy_prob), max_minutes=float(self.max_minutes),
                                    crop=int(self.crop), limit=int(self.limit),
                                    checkpoint_every=int(self.checkpoint_every), seed=int(self.seed),
                                    threads=int(self.threads))

    def replace(self, **changes: Any) -> TrainGeneratorSettings:
        return dataclasses.replace(self, **changes)


def check_generator_training(library: str | Path, out: str | Path, resume: bool = False,
                             replace: bool = False) -> None:
    """Refuse a run that cannot work or would destroy a model, before anything is loaded.

    Raises
    ------
    SynthsegError
        No library folder or no readable nodule table in it; an output that is not a
        ``.safetensors`` path in an existing folder; *resume* of a missing file, or a new run
        over an existing file without ``replace``.
    """
    from ..io.lesion_index import read_lesion_index

    if not str(library).strip():
        raise SynthsegError("choose the nodule library folder (with index.csv)")
    if not Path(library).is_dir():
        raise SynthsegError(f"nodule library folder not found: {library}")
    read_lesion_index(library)  # one clear line for a missing or broken table
    text = str(out).strip()
    if not text:
        raise SynthsegError("choose the output model file (.safetensors)")
    path = Path(text)
    if path.suffix != ".safetensors":
        raise SynthsegError(f"the output model file must end in .safetensors, got {path.name}")
    if not path.parent.is_dir():
        raise SynthsegError(f"output folder does not exist: {path.parent}")
    if resume and not path.is_file():
        raise SynthsegError(f"cannot resume: {path} does not exist; train without resume first")
    if not resume and path.exists() and not replace:
        raise SynthsegError(f"{path.name} already exists; resume it, choose a new file, or replace it (--force)")


def train_generator_model(
    library: str | Path,
    out: str | Path,
    settings: TrainGeneratorSettings = TrainGeneratorSettings(),
    resume: bool = False,
    replace: bool = False,
    device: str | None = "auto",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """Train (or resume) a lesion generator on the train side of ``library``; slow: off the UI thread.

    Parameters
    ----------
    library : path
        Folder with ``index.csv`` (``ct_file``, ``seg_file``, ``lidc_series_uid`` ...); only the
        train side of the fixed series-level split is used.
    out : path
        The ``.safetensors`` model, also the checkpoint: Cancel and the time budget keep it
        resumable.
    settings : TrainGeneratorSettings
    resume : bool
        Continue ``out`` up to ``settings.steps`` (its network is kept; ``settings``' network
        fields are ignored).
    replace : bool
        Start a new model over an existing ``out``.

    Returns
    -------
    Path
        ``out``.
    """
    from ..generator import train_lesion_generator

    check_generator_training(library, out, resume=resume, replace=replace)
    return Path(train_lesion_generator(library, out, model_config=None if resume else settings.model_config(),
                                       train_config=settings.train_config(), resume=resume, device=device,
                                       progress=progress, cancel=cancel))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def model_summary(path: str | Path) -> str:
    """One line about a generator file: steps, training time, data, last loss, resumable or not."""
    from ..models import read_model_info

    info = read_model_info(path)
    prov = info.get("provenance", {}) or {}
    data = prov.get("data", {}) or {}
    split = data.get("split", {}) or {}
    loss = (prov.get("metrics", {}) or {}).get("loss_ema")
    parts = [f"{Path(path).name}: {prov.get('steps', '?')} steps",
             f"{_duration(float(prov.get('train_seconds', 0.0)))} on {prov.get('device', '?')}"]
    if data:
        parts.append(f"{data.get('n_nodules', '?')} train-side nodules from {split.get('train_series', '?')} series")
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    parts.append("not resumable (shipped copy)" if "stripped_from_sha256" in prov else "resumable")
    return ", ".join(parts)


__all__ = ["NETWORKS", "TrainGeneratorSettings", "check_generator_training", "model_summary",
           "train_generator_model"]
