"""Fréchet Radiomics Distance between two lesion sets.

Two backends, named in every report as ``frd_backend``:

``frd-score``
    The ``frd-score`` package (Osuala et al., FRD; pyradiomics features of each crop inside its
    mask, normalised on the joint set, Fréchet distance of the two Gaussians). Used when
    ``frd_score`` and ``radiomics`` import. PyPI's pyradiomics has no wheel for Python 3.11 and
    its build needs ``--no-build-isolation`` with numpy present (docs/evaluation.md), so it is an
    optional extra.
``synthseg-features``
    The same Fréchet distance over the hand-made radiomics-style features of
    :mod:`napari_synthseg.qa.realism` (first-order, GLCM texture, shape), z-scored on the joint
    set. Its numbers are not on the frd-score scale; compare runs of the same backend only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import linalg

from ..errors import SynthsegError
from .lesion_sets import LesionSample

log = logging.getLogger(__name__)

BACKENDS = ("auto", "frd-score", "synthseg-features")


def frd_score_available() -> bool:
    try:
        import frd_score  # noqa: F401
        import radiomics  # noqa: F401
    except ImportError:
        return False
    return True


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """Squared Fréchet distance between Gaussians fitted to the rows of ``a`` and ``b``."""
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    offset = np.eye(s1.shape[0]) * eps
    covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def feature_frd(real_rows: Sequence[dict[str, float]], synthetic_rows: Sequence[dict[str, float]], names: Sequence[str]) -> float:
    """Fréchet distance over feature rows, each feature z-scored on the joint set."""
    x = np.array([[r.get(n, math.nan) for n in names] for r in list(real_rows) + list(synthetic_rows)], float)
    keep = np.isfinite(x).all(axis=0) & (np.nanstd(x, axis=0) > 0)
    x = x[:, keep]
    if x.shape[1] == 0:
        return math.nan
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    n = len(real_rows)
    if n < 2 or len(synthetic_rows) < 2:
        return math.nan
    return frechet_distance(x[:n], x[n:])


def _write_crops(samples: Sequence[LesionSample], folder: Path) -> tuple[list[str], list[str]]:
    import SimpleITK as sitk

    images, masks = [], []
    for i, s in enumerate(samples):
        img = sitk.GetImageFromArray(s.image.astype(np.float32))
        img.SetSpacing(tuple(float(v) for v in s.spacing[::-1]))
        m = sitk.GetImageFromArray(s.mask.astype(np.uint8))
        m.CopyInformation(img)
        ip, mp = folder / f"case{i:05d}.nii.gz", folder / f"case{i:05d}_mask.nii.gz"
        sitk.WriteImage(img, str(ip))
        sitk.WriteImage(m, str(mp))
        images.append(str(ip))
        masks.append(str(mp))
    return images, masks


def package_frd(real: Sequence[LesionSample], synthetic: Sequence[LesionSample], workers: int = 1) -> float:
    """FRD from the ``frd-score`` package (v0 settings: original image only, so it stays fast)."""
    from frd_score import compute_frd

    with tempfile.TemporaryDirectory(prefix="synthseg-frd-") as tmp:
        a, b = Path(tmp, "real"), Path(tmp, "synthetic")
        a.mkdir()
        b.mkdir()
        real_images, real_masks = _write_crops(real, a)
        synth_images, synth_masks = _write_crops(synthetic, b)
        # frd-score prints its result; keep the CLI's stdout to our own lines.
        with contextlib.redirect_stdout(io.StringIO()):
            value = compute_frd([real_images, synth_images], paths_masks=[real_masks, synth_masks], frd_version="v0",
                                image_types=["Original"], num_workers=workers, verbose=False)
    return float(value)


def compute_frd(
    real: Sequence[LesionSample],
    synthetic: Sequence[LesionSample],
    real_rows: Sequence[dict[str, float]],
    synthetic_rows: Sequence[dict[str, float]],
    names: Sequence[str],
    backend: str = "auto",
    workers: int = 1,
) -> tuple[float, str]:
    """(FRD, backend used). ``auto`` takes frd-score when installed, else the feature backend."""
    if backend not in BACKENDS:
        raise SynthsegError(f"unknown FRD backend {backend!r}; use {', '.join(BACKENDS)}")
    if backend == "frd-score" and not frd_score_available():
        raise SynthsegError("frd-score is not installed (it needs pyradiomics; see docs/evaluation.md)")
    if backend in ("auto", "frd-score") and frd_score_available():
        try:
            return package_frd(real, synthetic, workers), "frd-score"
        except Exception as exc:  # a radiomics failure on odd crops must not lose the whole report
            if backend == "frd-score":
                raise SynthsegError(f"frd-score failed: {exc}") from exc
            log.warning("frd-score failed (%s); using the feature backend", exc)
    return feature_frd(real_rows, synthetic_rows, names), "synthseg-features"
