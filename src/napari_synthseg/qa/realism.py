"""Hand-made realism features of one lesion, and the range real lesions span.

The same numbers serve two jobs: :mod:`napari_synthseg.evaluate.realism` compares whole sets of
real and synthetic lesions with them (which feature gives synthetic lesions away), and
``synthseg review --rules`` flags single lesions whose features fall outside the range a
:class:`RealismReference` (written by ``synthseg evaluate realism``) recorded on real lesions.
They live in ``qa`` because review (below ``evaluate`` in the layer order) needs them.

Features (``I`` image in native units, ``M`` lesion mask, ``S`` shell of ``shell_mm`` around M):

``mean``, ``p10``, ``p50``, ``p90``, ``std``
    Intensity statistics inside M.
``shell_contrast``
    mean(I in M) - mean(I in S): the lesion's contrast to its immediate surroundings.
``shell_std``
    std(I in S): texture/noise of the surroundings.
``edge_gradient``
    Mean |grad I| (units per mm) on the one-voxel band around the mask border.
``edge_sharpness``
    edge_gradient / max(|shell_contrast|, 1): 1/mm, how abruptly the lesion meets its
    surroundings relative to its contrast (a pasted, hard-edged lesion scores high).
``noise``
    std(I - gaussian(I, 1 voxel)) inside M eroded by 2 voxels (less for tiny lesions): fine-grain noise. Procedural lesions are smooth and
    score far below real CT.
``glcm_contrast``, ``glcm_homogeneity``, ``glcm_correlation``
    Grey-level co-occurrence texture (:func:`skimage.feature.graycomatrix`, 32 levels over the
    crop's 1-99 % range, distance 1, four in-plane angles) on the lesion's central slice.
``diameter_mm``
    Equivalent-sphere (3D) or -circle (2D) diameter of M.
``sphericity``
    3D: pi^(1/3) (6V)^(2/3) / A with A from a marching-cubes surface; 2D: 4 pi area / perimeter^2.
``elongation``
    sqrt(smallest / largest eigenvalue of the mask's coordinate covariance in mm): 1 for a ball.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage as ndi

from ..errors import SynthsegError

FEATURE_NAMES = (
    "mean",
    "p10",
    "p50",
    "p90",
    "std",
    "shell_contrast",
    "shell_std",
    "edge_gradient",
    "edge_sharpness",
    "noise",
    "glcm_contrast",
    "glcm_homogeneity",
    "glcm_correlation",
    "diameter_mm",
    "sphericity",
    "elongation",
)
#: Shell around the mask used as "surroundings", mm (inner, outer): skips the partial-volume rim.
SHELL_MM = (1.0, 3.0)
REFERENCE_VERSION = 1


def _glcm(image: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    from skimage.feature import graycomatrix, graycoprops

    if image.ndim == 3:
        z = int(round(np.mean(np.nonzero(mask)[0])))
        image, mask = image[z], mask[z]
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return (math.nan,) * 3
    margin = 2
    box = (slice(max(0, ys.min() - margin), ys.max() + margin + 1), slice(max(0, xs.min() - margin), xs.max() + margin + 1))
    region = image[box]
    lo, hi = np.percentile(image, [1, 99])
    if hi <= lo:
        hi = lo + 1.0
    levels = 32
    quantised = np.clip((region - lo) / (hi - lo) * (levels - 1), 0, levels - 1).astype(np.uint8)
    if min(quantised.shape) < 2:
        return (math.nan,) * 3
    glcm = graycomatrix(quantised, [1], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=levels, symmetric=True, normed=True)
    values = []
    for prop in ("contrast", "homogeneity", "correlation"):
        v = graycoprops(glcm, prop)
        values.append(float(np.nanmean(v)) if np.isfinite(v).any() else math.nan)
    return tuple(values)  # type: ignore[return-value]


def _shape(mask: np.ndarray, spacing: Sequence[float]) -> tuple[float, float, float]:
    n = int(mask.sum())
    voxel = float(np.prod(spacing))
    size = n * voxel
    coords = np.argwhere(mask) * np.asarray(spacing, dtype=float)
    if n >= 3:
        eig = np.clip(np.linalg.eigvalsh(np.cov(coords.T)), 0.0, None)
        elongation = math.sqrt(eig[0] / eig[-1]) if eig[-1] > 0 else math.nan
    else:
        elongation = math.nan
    if mask.ndim == 3:
        diameter = (6.0 * size / math.pi) ** (1.0 / 3.0)
        from skimage.measure import marching_cubes, mesh_surface_area

        padded = np.pad(mask.astype(np.float32), 1)
        try:
            verts, faces, _n, _v = marching_cubes(padded, 0.5, spacing=tuple(float(s) for s in spacing))
            area = mesh_surface_area(verts, faces)
            sphericity = (math.pi ** (1 / 3)) * (6 * size) ** (2 / 3) / area if area > 0 else math.nan
        except (ValueError, RuntimeError):
            sphericity = math.nan
    else:
        from skimage.measure import perimeter

        diameter = 2.0 * math.sqrt(size / math.pi)
        # perimeter() counts pixels: scale by the mean spacing (isotropic in practice).
        p = perimeter(mask) * float(np.mean(spacing))
        sphericity = 4 * math.pi * size / (p * p) if p > 0 else math.nan
    return diameter, sphericity, elongation


def realism_features(
    image: np.ndarray, mask: np.ndarray, spacing: Sequence[float], shell_mm: tuple[float, float] = SHELL_MM
) -> dict[str, float]:
    """The :data:`FEATURE_NAMES` of one lesion (see the module docstring).

    Parameters
    ----------
    image : ndarray
        Pixels in native units (HU for CT), (y, x) or (z, y, x); a crop around the lesion is
        enough if it holds the shell.
    mask : ndarray of bool
        The lesion on the same grid.
    spacing : sequence of float
        Pixel size in mm, numpy axis order.
    shell_mm : (float, float)
        Inner and outer distance of the surroundings shell from the mask, mm.
    """
    mask = np.asarray(mask, dtype=bool)
    image = np.asarray(image, dtype=np.float32)
    spacing = tuple(float(s) for s in spacing)
    if image.shape != mask.shape:
        raise SynthsegError(f"image {image.shape} and mask {mask.shape} differ in shape")
    if not mask.any():
        return {name: math.nan for name in FEATURE_NAMES}
    inside = image[mask]
    dist = ndi.distance_transform_edt(~mask, sampling=spacing)
    shell = (dist > shell_mm[0]) & (dist <= shell_mm[1])
    shell_values = image[shell]
    shell_mean = float(shell_values.mean()) if shell_values.size else math.nan
    contrast = float(inside.mean()) - shell_mean
    grads = np.gradient(image, *spacing)
    grad = np.sqrt(sum(g * g for g in grads))
    band = (mask & ~ndi.binary_erosion(mask, border_value=1)) | ((dist > 0) & (dist <= min(spacing) * 1.01))
    edge = float(grad[band].mean())
    smooth = ndi.gaussian_filter(image, 1.0)
    # The lesion's interior only: at the border the step to the surroundings would count as noise.
    core = ndi.binary_erosion(mask, iterations=2)
    if core.sum() < 5:
        core = ndi.binary_erosion(mask) if ndi.binary_erosion(mask).sum() >= 5 else mask
    noise = float((image - smooth)[core].std())
    p10, p50, p90 = (float(v) for v in np.percentile(inside, [10, 50, 90]))
    glcm = _glcm(image, mask)
    diameter, sphericity, elongation = _shape(mask, spacing)
    return {
        "mean": float(inside.mean()),
        "p10": p10,
        "p50": p50,
        "p90": p90,
        "std": float(inside.std()),
        "shell_contrast": contrast,
        "shell_std": float(shell_values.std()) if shell_values.size else math.nan,
        "edge_gradient": edge,
        "edge_sharpness": edge / max(abs(contrast), 1.0) if math.isfinite(contrast) else math.nan,
        "noise": noise,
        "glcm_contrast": glcm[0],
        "glcm_homogeneity": glcm[1],
        "glcm_correlation": glcm[2],
        "diameter_mm": diameter,
        "sphericity": sphericity,
        "elongation": elongation,
    }


@dataclass
class RealismReference:
    """The range of every realism feature over a set of real lesions.

    ``low``/``high`` are the ``quantiles`` of each feature over the real lesions; ``median`` and
    ``scale`` (IQR / 1.349, a robust standard deviation) give each feature a robust z-score.
    """

    low: dict[str, float]
    high: dict[str, float]
    median: dict[str, float]
    scale: dict[str, float]
    quantiles: tuple[float, float] = (0.02, 0.98)
    n: int = 0
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, rows: Sequence[dict[str, float]], quantiles: tuple[float, float] = (0.02, 0.98), source: str = "") -> "RealismReference":
        """The reference of real lesions' feature rows (from :func:`realism_features`)."""
        if not rows:
            raise SynthsegError("a realism reference needs at least one real lesion")
        low, high, median, scale = {}, {}, {}, {}
        for name in FEATURE_NAMES:
            values = np.array([r.get(name, math.nan) for r in rows], dtype=float)
            values = values[np.isfinite(values)]
            if values.size == 0:
                continue
            lo, q1, med, q3, hi = np.quantile(values, [quantiles[0], 0.25, 0.5, 0.75, quantiles[1]])
            low[name], high[name], median[name] = float(lo), float(hi), float(med)
            scale[name] = float((q3 - q1) / 1.349) if q3 > q1 else float(np.std(values)) or 1.0
        return cls(low, high, median, scale, tuple(quantiles), len(rows), source)

    def outside(self, features: dict[str, float], names: Sequence[str] | None = None) -> list[tuple[str, float, float, float]]:
        """(name, value, low, high) for every feature outside the real range."""
        out = []
        for name in names or FEATURE_NAMES:
            value = features.get(name)
            if name not in self.low or value is None or not math.isfinite(value):
                continue
            if value < self.low[name] or value > self.high[name]:
                out.append((name, float(value), self.low[name], self.high[name]))
        return out

    def score(self, features: dict[str, float], names: Sequence[str] | None = None) -> float:
        """Largest robust |z| over the features: 0 at the real median, ~2 at the usual edge."""
        zs = [
            abs(features[n] - self.median[n]) / self.scale[n]
            for n in (names or FEATURE_NAMES)
            if n in self.median and features.get(n) is not None and math.isfinite(features[n]) and self.scale[n] > 0
        ]
        return float(max(zs)) if zs else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": REFERENCE_VERSION,
            "kind": "synthseg-realism-reference",
            "quantiles": list(self.quantiles),
            "n": self.n,
            "source": self.source,
            "low": self.low,
            "high": self.high,
            "median": self.median,
            "scale": self.scale,
            **({"extra": self.extra} if self.extra else {}),
        }

    def save(self, path: str | os.PathLike) -> Path:
        from ..utils.atomic import atomic_write_text

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RealismReference":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SynthsegError(f"realism reference not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise SynthsegError(f"{path.name} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("kind") != "synthseg-realism-reference":
            raise SynthsegError(f"{path.name} is not a realism reference (write one with synthseg evaluate realism)")
        return cls(data["low"], data["high"], data["median"], data["scale"], tuple(data.get("quantiles", (0.02, 0.98))),
                   int(data.get("n", 0)), str(data.get("source", "")), dict(data.get("extra", {})))


def lesion_crop(labels: np.ndarray, value: int, spacing: Sequence[float], margin_mm: float = SHELL_MM[1] + 2.0):
    """The bounding box of ``labels == value`` grown by ``margin_mm`` (None if absent)."""
    found = ndi.find_objects((labels == value).astype(np.uint8))
    if not found or found[0] is None:
        return None
    return tuple(
        slice(max(0, s.start - int(math.ceil(margin_mm / sp))), min(n, s.stop + int(math.ceil(margin_mm / sp))))
        for s, sp, n in zip(found[0], spacing, labels.shape)
    )


def scene_realism_metrics(image: np.ndarray, labels: np.ndarray, records, spacing: Sequence[float],
                          reference: RealismReference, features: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per lesion id: ``realism_<feature>`` values, ``realism_outliers`` (how many features lie
    outside the reference range), ``realism_score`` (largest robust |z|) and ``realism_outside``
    (a readable list of the outside features, for the decision's reason)."""
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        box = lesion_crop(labels, rec.label, spacing)
        if box is None:
            continue
        values = realism_features(image[box], labels[box] == rec.label, spacing)
        outside = reference.outside(values, features)
        row: dict[str, Any] = {f"realism_{k}": v for k, v in values.items()}
        row["realism_outliers"] = len(outside)
        row["realism_score"] = reference.score(values, features)
        row["realism_outside"] = ", ".join(f"{n}={v:.3g} (real {lo:.3g}..{hi:.3g})" for n, v, lo, hi in outside)
        out[rec.id] = row
    return out
