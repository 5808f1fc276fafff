"""The downstream segmenter: one MONAI ``BasicUNet`` (2D or 3D) trained on lesion crops.

Every arm of a downstream comparison trains this same model with the same budget (steps,
batch, learning rate, augmentation); only the training lesions differ. Training draws random
``patch``-sized windows from each lesion's larger context crop, so the lesion is not always at
the centre and the model cannot learn "predict the middle"; testing runs the fully
convolutional network on the whole context crop.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ..utils.progress import CancelToken
from .lesion_sets import LesionSample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmenterConfig:
    """Model and training budget shared by every arm."""

    features: tuple[int, ...] = (8, 8, 16, 32, 64, 8)
    steps: int = 300
    batch_size: int = 4
    learning_rate: float = 2e-3
    patch: int = 32
    augment: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def normalise(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    lo, hi = window
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def build_model(ndim: int, config: SegmenterConfig):
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=ndim, in_channels=1, out_channels=1, features=config.features)


def _random_window(sample: LesionSample, patch: int, rng: np.random.Generator) -> tuple[slice, ...]:
    out = []
    for n in sample.image.shape:
        size = min(patch, n)
        start = int(rng.integers(0, n - size + 1))
        out.append(slice(start, start + size))
    return tuple(out)


def train_segmenter(
    samples: Sequence[LesionSample],
    window: tuple[float, float],
    config: SegmenterConfig,
    seed: int,
    device,
    on_step=None,
    cancel: CancelToken | None = None,
):
    """Train a ``BasicUNet`` on ``samples``; returns (model, final mean loss of the last 20 steps)."""
    import torch
    from monai.losses import DiceCELoss

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ndim = samples[0].ndim
    model = build_model(ndim, config).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_fn = DiceCELoss(sigmoid=True)
    images = [normalise(s.image, window) for s in samples]
    masks = [s.mask.astype(np.float32) for s in samples]
    recent: list[float] = []
    model.train()
    for step in range(config.steps):
        if cancel is not None and step % 5 == 0:
            cancel.raise_if_cancelled()
        idx = rng.integers(0, len(samples), size=config.batch_size)
        xs, ys = [], []
        for i in idx:
            box = _random_window(samples[i], config.patch, rng)
            x, y = images[i][box], masks[i][box]
            if config.augment:
                for axis in range(ndim):
                    if rng.random() < 0.5:
                        x, y = np.flip(x, axis), np.flip(y, axis)
            xs.append(np.ascontiguousarray(x))
            ys.append(np.ascontiguousarray(y))
        xb = torch.from_numpy(np.stack(xs)[:, None]).to(device)
        yb = torch.from_numpy(np.stack(ys)[:, None]).to(device)
        optimiser.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimiser.step()
        recent = (recent + [float(loss.detach())])[-20:]
        if on_step is not None:
            on_step(step + 1)
    model.eval()
    return model, float(np.mean(recent)) if recent else float("nan")


def predict(model, samples: Sequence[LesionSample], window: tuple[float, float], device,
            batch_size: int = 8) -> list[np.ndarray]:
    """Lesion probability maps (float32, same shape as each sample's image)."""
    import torch

    out: list[np.ndarray] = []
    with torch.no_grad():
        i = 0
        while i < len(samples):
            shape = samples[i].image.shape
            j = i
            while j < len(samples) and j - i < batch_size and samples[j].image.shape == shape:
                j += 1
            x = torch.from_numpy(np.stack([normalise(s.image, window) for s in samples[i:j]])[:, None]).to(device)
            probs = torch.sigmoid(model(x))[:, 0].cpu().numpy().astype(np.float32)
            out.extend(probs)
            i = j
    return out
