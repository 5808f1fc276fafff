"""Display windows: contrast limits for native intensities, never a cast to 8 bit.

CT presets are the usual radiology (width, level) pairs in HU. Radiographs and MRI have no
absolute scale, so their presets are percentiles of the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SynthsegError


@dataclass(frozen=True)
class WindowPreset:
    name: str
    label: str
    width: float | None = None
    level: float | None = None
    percentiles: tuple[float, float] | None = None

    def limits(self, array: np.ndarray) -> tuple[float, float]:
        """Contrast limits (low, high) for ``array``."""
        if self.percentiles is not None:
            return percentile_limits(array, *self.percentiles)
        if self.level is None or self.width is None:
            raise ValueError("a window preset needs level and width, or percentiles")
        return (self.level - self.width / 2.0, self.level + self.width / 2.0)


PRESETS: dict[str, WindowPreset] = {
    p.name: p
    for p in (
        WindowPreset("ct-lung", "CT lung (W1500 / L-600)", width=1500, level=-600),
        WindowPreset("ct-mediastinum", "CT mediastinum / soft tissue (W400 / L40)", width=400, level=40),
        WindowPreset("ct-bone", "CT bone (W1800 / L400)", width=1800, level=400),
        WindowPreset("brain", "Brain MRI (W80 / L40)", width=80, level=40),
        WindowPreset("mri-auto", "MRI auto (1-99 percentile)", percentiles=(1.0, 99.0)),
        WindowPreset("cxr-auto", "CXR auto (0.5-99.5 percentile)", percentiles=(0.5, 99.5)),
        WindowPreset("full", "Full range (min-max)", percentiles=(0.0, 100.0)),
    )
}

DEFAULT_PRESET = {"CT": "ct-lung", "CXR": "cxr-auto", "MR": "mri-auto", "unknown": "full"}


def percentile_limits(array: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """Percentile limits on a strided subsample of at most ~1M values (fast, small memory)."""
    if array.size == 0:
        raise SynthsegError("cannot window an empty image")
    step = max(1, int(array.size // 1_000_000))
    sample = np.asarray(array).reshape(-1)[::step]
    finite = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample
    if finite.size == 0:
        raise SynthsegError("cannot window an image without finite values")
    lo, hi = np.percentile(finite, [low, high])
    lo, hi = float(lo), float(hi)
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def window_limits(array: np.ndarray, preset: str, modality: str = "unknown") -> tuple[float, float]:
    """Contrast limits for ``preset`` (a name from :data:`PRESETS` or ``"auto"``)."""
    name = DEFAULT_PRESET.get(modality, "full") if preset == "auto" else preset
    if name not in PRESETS:
        raise SynthsegError(f"unknown window preset {preset!r}; choose one of: auto, {', '.join(PRESETS)}")
    return PRESETS[name].limits(array)


def apply_window(array: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    """Map ``array`` to float32 [0, 1] through ``limits`` (for thumbnails and contact sheets)."""
    lo, hi = limits
    out = (np.asarray(array, dtype=np.float32) - np.float32(lo)) / np.float32(max(hi - lo, 1e-12))
    return np.clip(out, 0.0, 1.0, out=out)
