"""DatasetGAN pixel features with bounded memory.

Zhang et al., "DatasetGAN" (CVPR 2021) describe every pixel by the generator's activations at
that point: each synthesis layer's output, upsampled to the image size and concatenated. The
official code keeps all of them for all labelled images in RAM (512x512x5088 floats per image,
~160 GB for 16 images). Here:

* features are computed **per image** and never for the whole set at once;
* they are stored as **float16** (activations are O(1) after demodulation, so half precision
  loses nothing a pixel classifier could use);
* only a **class-balanced subsample** of labelled pixels is kept (all pixels of rare classes
  such as nodules, a capped random draw of frequent ones such as background);
* the kept rows go to a **memory-mapped** file in a temporary folder, so the training set can
  exceed RAM and the OS pages it in as the classifiers read minibatches.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .generator import Generator, seeded_inputs, to_uint8


def feature_channels(G: Generator) -> int:
    """Length of one pixel's feature vector for generator ``G``."""
    return int(sum(G.feature_channels()))


@torch.no_grad()
def image_and_features(
    G: Generator,
    seed: int,
    truncation_psi: float = 1.0,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, torch.Tensor]:
    """The sample for ``seed`` and its per-pixel features.

    Returns
    -------
    image : uint8 (H, W)
    features : float16 tensor (C, H, W) on the CPU; C = :func:`feature_channels`.
    """
    dev = device or next(G.parameters()).device
    z, noise = seeded_inputs(G.config, [seed], dev)
    img, feats = G(z, truncation_psi=truncation_psi, noise=noise, return_features=True)
    size = G.config.size
    out = torch.empty((feature_channels(G), size, size), dtype=torch.float16)
    c0 = 0
    # Upsample and cast one layer at a time: a float32 copy of all layers at full size is
    # exactly the memory blow-up this module exists to avoid.
    for fmap in feats.maps:
        c = fmap.shape[1]
        up = fmap.float() if fmap.shape[-1] == size else F.interpolate(
            fmap.float(), size=(size, size), mode="bilinear", align_corners=False
        )
        out[c0 : c0 + c] = up[0].to("cpu", torch.float16)
        c0 += c
    return to_uint8(img)[0], out


def balanced_pixel_indices(
    labels: np.ndarray, max_per_class: int, rng: np.random.Generator
) -> np.ndarray:
    """Flat pixel indices: every pixel of classes with <= ``max_per_class`` pixels, a random
    ``max_per_class`` of the others."""
    flat = labels.reshape(-1)
    chosen = []
    for cls in np.unique(flat):
        idx = np.flatnonzero(flat == cls)
        if idx.size > max_per_class:
            idx = rng.choice(idx, size=max_per_class, replace=False)
        chosen.append(idx)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


@dataclass
class FeatureStore:
    """Append-only, disk-backed (features, label) rows for classifier training.

    Use as a context manager; the temporary folder is removed on exit.

    Parameters
    ----------
    channels : int
        Feature vector length.
    max_per_class : int
        Cap of pixels per class per image (class-balanced subsampling).
    seed : int
        Seed of the subsampling.
    folder : path, optional
        Where the temporary folder goes (default: the system temp dir).
    """

    channels: int
    max_per_class: int = 2000
    seed: int = 0
    folder: str | Path | None = None

    def __post_init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="synthseg-dgan-", dir=self.folder))
        self._x_path = self._dir / "features.f16"
        self._y_path = self._dir / "labels.u8"
        self._x_fh = open(self._x_path, "wb")
        self._y_fh = open(self._y_path, "wb")
        self._rng = np.random.default_rng(self.seed)
        self.rows = 0
        self.images = 0
        self.class_counts: dict[int, int] = {}

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self._dir

    def add(self, features: torch.Tensor | np.ndarray, labels: np.ndarray) -> int:
        """Subsample one labelled image's pixels and append them; returns rows added."""
        c, h, w = features.shape
        if c != self.channels:
            raise ValueError(f"expected {self.channels} feature channels, got {c}")
        idx = balanced_pixel_indices(labels, self.max_per_class, self._rng)
        feats = features.reshape(c, h * w)
        rows = feats[:, torch.from_numpy(idx)] if torch.is_tensor(feats) else feats[:, idx]
        rows = rows.T.contiguous() if torch.is_tensor(rows) else np.ascontiguousarray(rows.T)
        rows = rows.numpy() if torch.is_tensor(rows) else rows
        self._x_fh.write(rows.astype(np.float16, copy=False).tobytes())
        lab = labels.reshape(-1)[idx].astype(np.uint8)
        self._y_fh.write(lab.tobytes())
        for cls, n in zip(*np.unique(lab, return_counts=True)):
            self.class_counts[int(cls)] = self.class_counts.get(int(cls), 0) + int(n)
        self.rows += idx.size
        self.images += 1
        return int(idx.size)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Read-only memory maps (rows, channels) float16 and (rows,) uint8."""
        self._x_fh.flush()
        self._y_fh.flush()
        if self.rows == 0:
            return np.zeros((0, self.channels), np.float16), np.zeros(0, np.uint8)
        x = np.memmap(self._x_path, dtype=np.float16, mode="r", shape=(self.rows, self.channels))
        y = np.memmap(self._y_path, dtype=np.uint8, mode="r", shape=(self.rows,))
        return x, y

    def channel_stats(self, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std (float32), streamed over the stored rows."""
        x, _ = self.arrays()
        total = np.zeros(self.channels, np.float64)
        total_sq = np.zeros(self.channels, np.float64)
        for i in range(0, self.rows, chunk):
            block = np.asarray(x[i : i + chunk], dtype=np.float32)
            total += block.sum(0)
            total_sq += np.square(block.astype(np.float64)).sum(0)
        n = max(self.rows, 1)
        mean = total / n
        std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
        return mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32)

    def close(self) -> None:
        for fh in (self._x_fh, self._y_fh):
            if not fh.closed:
                fh.close()
        shutil.rmtree(self._dir, ignore_errors=True)
