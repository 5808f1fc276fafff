"""A trained harmonizer: generator + the state it needs at inference + where it came from.

Saved with :func:`napari_synthseg.models.save_model` (safetensors, config in the header). Extra
tensors: ``noise_amp`` (per scale), ``rec_noise/<k>`` (fixed reconstruction noise),
``norm`` (centre, half-range of the intensity normalisation, native units) and ``fingerprint``
(the training region shrunk to 32x32, normalised). Provenance: the training image's sha256,
shape and dtype, and the region (ROI) it was trained on, so a model is never applied to another
image by mistake.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, cast

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SynthsegError
from ..models import file_sha256, load_extra_tensors, load_model, save_model
from .config import ConSinGANConfig, SinGANConfig
from .networks import ConSinGAN, SinGAN

__all__ = ["Harmonizer", "image_sha256", "FINGERPRINT_SIZE", "fingerprint_of"]

ARCHITECTURES = ("singan", "consingan")
FINGERPRINT_SIZE = 32
# Median |difference| (normalised units, range ~[-0.87, 0.87]) above which an image is
# taken to be another image than the training one. Re-encoding noise is ~0.005; another
# patient or another place in the same image is > 0.1.
FINGERPRINT_TOLERANCE = 0.03


def image_sha256(array: np.ndarray) -> str:
    """sha256 of an array's shape, dtype and values (C order)."""
    a = np.ascontiguousarray(array)
    digest = hashlib.sha256()
    digest.update(f"{a.dtype.str}{a.shape}".encode())
    digest.update(a.tobytes())
    return digest.hexdigest()


def fingerprint_of(region_norm: np.ndarray) -> np.ndarray:
    """Area-averaged 32x32 thumbnail of a normalised region (float32)."""
    t = torch.from_numpy(np.ascontiguousarray(region_norm, dtype=np.float32))[None, None]
    return F.adaptive_avg_pool2d(t, FINGERPRINT_SIZE)[0, 0].numpy()


@dataclass
class Harmonizer:
    """Everything :func:`~napari_synthseg.harmonize.harmonize` needs.

    Attributes
    ----------
    roi : tuple of int
        (row, col, height, width) of the training region in the training image, px.
    norm : tuple of float
        (centre, half-range) in native units: ``normalised = (x - centre) / half``.
    """

    module: Union[SinGAN, ConSinGAN]
    config: Union[SinGANConfig, ConSinGANConfig]
    noise_amp: list[float]
    rec_noise: list[torch.Tensor]
    norm: tuple[float, float]
    roi: tuple[int, int, int, int]
    image_shape: tuple[int, ...]
    image_dtype: str
    image_sha256: str
    fingerprint: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""

    @property
    def architecture(self) -> str:
        return self.module.architecture

    @property
    def n_scales(self) -> int:
        return len(self.config.shapes)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        c, h = self.norm
        return ((np.asarray(x, dtype=np.float64) - c) / h).astype(np.float32)

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        c, h = self.norm
        return np.asarray(x, dtype=np.float64) * h + c

    # ----------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the model as safetensors (atomic); returns the path."""
        extra = {
            "noise_amp": torch.tensor(self.noise_amp, dtype=torch.float32),
            "norm": torch.tensor(self.norm, dtype=torch.float64),
            "fingerprint": torch.from_numpy(np.asarray(self.fingerprint, dtype=np.float32)),
        }
        for k, z in enumerate(self.rec_noise):
            extra[f"rec_noise/{k}"] = z
        provenance = dict(self.provenance)
        provenance.update(
            image_sha256=self.image_sha256,
            image_shape=list(self.image_shape),
            image_dtype=self.image_dtype,
            roi=list(self.roi),
        )
        path = save_model(self.module, self.config, path, provenance=provenance, extra_tensors=extra)
        self.provenance = provenance
        # What a lesion record cites: the same hash :meth:`load` reports for this file.
        self.sha256 = file_sha256(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str | None = "cpu") -> Harmonizer:
        """Load a harmonizer saved by :meth:`save`; anything else is refused clearly."""
        loaded = load_model(path, expected=ARCHITECTURES, device=device)
        extra = load_extra_tensors(path)
        prov = loaded.provenance
        name = Path(path).name
        missing = [k for k in ("noise_amp", "norm", "fingerprint") if k not in extra]
        missing += [k for k in ("image_sha256", "image_shape", "roi") if k not in prov]
        if missing:
            raise SynthsegError(f"{name} lacks {', '.join(missing)}; it is not a complete harmonizer")
        n = len(loaded.config.shapes)
        amps = [float(v) for v in extra["noise_amp"].tolist()]
        rec = [extra[f"rec_noise/{k}"] for k in range(n) if f"rec_noise/{k}" in extra]
        if len(amps) != n or not rec:
            raise SynthsegError(
                f"{name} has {len(amps)} noise amplitudes for {n} scales; the file is damaged"
            )
        norm = [float(v) for v in extra["norm"].tolist()]
        roi = [int(v) for v in prov["roi"]]
        if len(norm) != 2 or len(roi) != 4:
            raise SynthsegError(f"{name} has a malformed norm or roi; the file is damaged")
        device = next(loaded.module.parameters()).device
        return cls(
            # load_model checked the architecture against ARCHITECTURES.
            module=cast(Union[SinGAN, ConSinGAN], loaded.module),
            config=loaded.config,
            noise_amp=amps,
            rec_noise=[z.to(device) for z in rec],
            norm=(norm[0], norm[1]),
            roi=(roi[0], roi[1], roi[2], roi[3]),
            image_shape=tuple(int(v) for v in prov["image_shape"]),
            image_dtype=str(prov.get("image_dtype", "")),
            image_sha256=str(prov["image_sha256"]),
            fingerprint=extra["fingerprint"].numpy(),
            provenance=prov,
            sha256=loaded.sha256,
        )

    def to(self, device: torch.device | str) -> Harmonizer:
        self.module.to(device)
        self.rec_noise = [z.to(device) for z in self.rec_noise]
        return self
