"""Seeded samples for labelling, and generated labelled pairs with provenance.

A sample is fully described by (generator file hash, seed, truncation): the latent and every
noise map come from the seed (see :func:`.generator.seeded_inputs`), so a labelled sample folder
stores seeds, not latents, and the features are recomputed when the classifier is fitted.

Folder layouts
--------------
``sample`` writes ``sample_<seed>.png`` and ``samples.json``. A user paints full label maps
(value k = class k, 0 = background) and saves them beside the images as
``sample_<seed>_label.png`` (or ``.nii.gz``, ``.mha``, ``.tif``) or in ``labels/sample_<seed>.png``.

``generate`` writes ``images/gen_<seed>.<ext>``, ``labels/gen_<seed>.<ext>`` (same name in both,
PNG or NIfTI) and ``provenance.json``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..errors import SynthsegError
from ..io import read_image
from ..io.read import IMAGE_EXTENSIONS, file_extension
from ..models import LoadedModel
from ..utils.atomic import atomic_directory
from ..utils.progress import CancelToken, ProgressCallback, report
from .classifier import PixelEnsemble, Prediction, check_pair, predict_features
from .features import image_and_features
from .generator import Generator, seeded_inputs, to_uint8

MANIFEST = "samples.json"
FORMATS = {"png": ".png", "nifti": ".nii.gz"}


@torch.no_grad()
def sample_images(
    G: Generator, seeds, truncation_psi: float = 1.0, batch_size: int = 1
) -> np.ndarray:
    """uint8 (N, size, size) images for ``seeds``; the same seed always gives the same image.

    One image per forward pass by default: batched convolutions take other BLAS paths, and a
    rounding difference can flip a pixel by one grey level, which would break "seed N is
    exactly this image" (and the features computed per image when fitting).
    """
    dev = next(G.parameters()).device
    seeds = [int(s) for s in seeds]
    out = np.empty((len(seeds), G.config.size, G.config.size), np.uint8)
    for i in range(0, len(seeds), batch_size):
        z, noise = seeded_inputs(G.config, seeds[i : i + batch_size], dev)
        out[i : i + batch_size] = to_uint8(G(z, truncation_psi=truncation_psi, noise=noise))
    return out


def _write_2d(array: np.ndarray, path: Path) -> None:
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    sitk.WriteImage(img, str(path), useCompression=file_extension(path) != ".png")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_samples(
    generator: LoadedModel,
    n: int,
    out: str | Path,
    start_seed: int = 0,
    truncation_psi: float = 0.7,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """Write ``n`` seeded samples for labelling, with ``samples.json``."""
    if n < 1:
        raise SynthsegError("--n must be at least 1")
    G: Generator = generator.module  # type: ignore[assignment]
    seeds = list(range(start_seed, start_seed + n))
    with atomic_directory(out, overwrite=overwrite) as tmp:
        files = []
        for i in range(0, n, 8):
            if cancel is not None:
                cancel.raise_if_cancelled()
            chunk = seeds[i : i + 8]
            for seed, img in zip(chunk, sample_images(G, chunk, truncation_psi)):
                name = f"sample_{seed:06d}.png"
                _write_2d(img, tmp / name)
                files.append(name)
            report(progress, min(i + 8, n), n, "sampling")
        manifest = {
            "kind": "datasetgan samples for labelling",
            "generator_sha256": generator.sha256,
            "image_size": G.config.size,
            "truncation_psi": truncation_psi,
            "seeds": seeds,
            "files": files,
            "time": _now(),
            "labels": "save full label maps as <image stem>_label.png (value k = class k, 0 = background)",
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return Path(out)


def write_labelled_samples(
    generator: LoadedModel,
    seeds: list[int],
    labels: dict[int, np.ndarray],
    out: str | Path,
    truncation_psi: float,
    class_names=None,
    overwrite: bool = False,
) -> Path:
    """Write a sample folder with label maps for some seeds (what the widget's labels hold).

    Same layout as :func:`write_samples` plus ``sample_<seed>_label.png``, so
    ``synthseg datasetgan fit --labels`` reproduces a fit done in napari.
    """
    G: Generator = generator.module  # type: ignore[assignment]
    seeds = [int(s) for s in seeds]
    unknown = sorted(set(labels) - set(seeds))
    if unknown:
        raise SynthsegError(f"labels for seeds {unknown} that are not among the samples")
    with atomic_directory(out, overwrite=overwrite) as tmp:
        files = []
        for seed in seeds:
            name = f"sample_{seed:06d}.png"
            _write_2d(sample_images(G, [seed], truncation_psi)[0], tmp / name)
            files.append(name)
            if seed in labels:
                lab = np.asarray(labels[seed])
                if lab.max(initial=0) > 255:
                    raise SynthsegError(f"label value {int(lab.max())} does not fit an 8-bit PNG label map")
                _write_2d(lab.astype(np.uint8), tmp / f"sample_{seed:06d}_label.png")
        manifest = {
            "kind": "datasetgan samples for labelling",
            "generator_sha256": generator.sha256,
            "image_size": G.config.size,
            "truncation_psi": truncation_psi,
            "seeds": seeds,
            "files": files,
            "class_names": list(class_names) if class_names else None,
            "time": _now(),
            "labels": "full label maps <image stem>_label.png (value k = class k, 0 = background)",
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return Path(out)


@dataclass
class LabelledSamples:
    seeds: list[int]
    labels: list[np.ndarray]
    names: list[str]
    truncation_psi: float
    generator_sha256: str
    class_names: tuple | None = None


def _find_label(folder: Path, stem: str) -> Path | None:
    candidates = [p for p in folder.glob(f"{stem}_label.*") if file_extension(p) in IMAGE_EXTENSIONS]
    sub = folder / "labels"
    if sub.is_dir():
        candidates += [p for p in sub.glob(f"{stem}.*") if file_extension(p) in IMAGE_EXTENSIONS]
    if len(candidates) > 1:
        raise SynthsegError(f"sample {stem} has several label files ({', '.join(p.name for p in candidates)}); keep one")
    return candidates[0] if candidates else None


def read_labelled_samples(folder: str | Path, generator: LoadedModel | None = None) -> LabelledSamples:
    """Label maps of a sample folder, checked against the generator that drew the samples."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise SynthsegError(
            f"{folder} has no {MANIFEST}; point --labels at a folder written by 'synthseg datasetgan sample'"
        )
    manifest = json.loads(manifest_path.read_text())
    if generator is not None and manifest.get("generator_sha256") not in ("", None, generator.sha256):
        raise SynthsegError(
            f"the samples in {folder.name} were drawn from generator {manifest['generator_sha256'][:12]}, "
            f"not from this one ({generator.sha256[:12]}); use the same generator"
        )
    seeds, labels, names = [], [], []
    for seed, fname in zip(manifest["seeds"], manifest["files"]):
        stem = Path(fname).stem
        path = _find_label(folder, stem)
        if path is None:
            continue
        arr = np.asarray(read_image(path).array)
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2 or arr.dtype.kind not in "iub":
            raise SynthsegError(f"{path.name} must be a 2D integer label map, got {arr.ndim}D {arr.dtype}")
        seeds.append(int(seed))
        labels.append(arr.astype(np.int64))
        names.append(path.name)
    classes = manifest.get("class_names")
    return LabelledSamples(
        seeds, labels, names, float(manifest.get("truncation_psi", 1.0)), manifest.get("generator_sha256", ""),
        tuple(classes) if classes else None,
    )


@torch.no_grad()
def predict_seed(G: Generator, ensemble: PixelEnsemble, seed: int, truncation_psi: float) -> tuple[np.ndarray, Prediction]:
    """Image and prediction for one seed."""
    image, feats = image_and_features(G, seed, truncation_psi)
    return image, predict_features(ensemble, feats)


def generate_pairs(
    generator: LoadedModel,
    classifier: LoadedModel,
    n: int,
    out: str | Path,
    start_seed: int = 1_000_000,
    truncation_psi: float | None = None,
    drop_fraction: float = 0.1,
    fmt: str = "png",
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    layout: str = "plain",
    channel_name: str = "CXR",
) -> dict:
    """Generate ``n`` labelled pairs, dropping the most uncertain candidates.

    ``layout="plain"`` writes ``images/`` and ``labels/``; ``layout="nnunet"`` makes ``out`` an
    nnU-Net v2 raw dataset (``imagesTr/<case>_0000<ext>``, ``labelsTr/<case><ext>``,
    ``dataset.json`` with the classifier's classes), ready for ``nnUNetv2_plan_and_preprocess``.

    ``ceil(n / (1 - drop_fraction))`` candidates are drawn; the ``drop_fraction`` with the
    highest mean Jensen-Shannon divergence across the ensemble are discarded (DatasetGAN keeps
    the most confident ~90 %). Returns the provenance that is also written to
    ``provenance.json``.
    """
    if n < 1:
        raise SynthsegError("--n must be at least 1")
    if not 0.0 <= drop_fraction < 1.0:
        raise SynthsegError(f"drop fraction must be in [0, 1), got {drop_fraction}")
    if fmt not in FORMATS:
        raise SynthsegError(f"unknown format {fmt!r}; use {' or '.join(FORMATS)}")
    if layout not in ("plain", "nnunet"):
        raise SynthsegError(f"unknown layout {layout!r}; use plain or nnunet")
    check_pair(generator, classifier)
    G: Generator = generator.module  # type: ignore[assignment]
    ens: PixelEnsemble = classifier.module  # type: ignore[assignment]
    psi = ens.config.truncation_psi if truncation_psi is None else float(truncation_psi)
    ext = FORMATS[fmt]
    n_candidates = int(math.ceil(n / (1.0 - drop_fraction) - 1e-9))
    seeds = list(range(start_seed, start_seed + n_candidates))
    scores: dict[int, float] = {}
    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        for i, seed in enumerate(seeds):
            if cancel is not None:
                cancel.raise_if_cancelled()
            image, pred = predict_seed(G, ens, seed, psi)
            name = f"gen_{seed:07d}{ext}"
            _write_2d(image, tmp / "images" / name)
            _write_2d(pred.labels, tmp / "labels" / name)
            scores[seed] = pred.score
            report(progress, i + 1, n_candidates, f"generated {i + 1}/{n_candidates}")
        ranked = sorted(seeds, key=lambda s: (scores[s], s))
        kept, dropped = sorted(ranked[:n]), sorted(ranked[n:])
        for seed in dropped:
            for sub in ("images", "labels"):
                (tmp / sub / f"gen_{seed:07d}{ext}").unlink()
        cfg = ens.config
        provenance = {
            "kind": "datasetgan generated pairs",
            "generator_sha256": generator.sha256,
            "classifier_sha256": classifier.sha256,
            "classes": {str(k): name for k, name in enumerate(cfg.class_names)},
            "image_size": G.config.size,
            "truncation_psi": psi,
            "format": fmt,
            "seeds": kept,
            "dropped_seeds": dropped,
            "drop_fraction": drop_fraction,
            "uncertainty": "mean per-pixel Jensen-Shannon divergence across the ensemble (nats)",
            "uncertainty_by_seed": {str(s): round(scores[s], 6) for s in seeds},
            "pairs": [{"image": f"images/gen_{s:07d}{ext}", "label": f"labels/gen_{s:07d}{ext}"} for s in kept],
            "classifier_training_seeds": classifier.provenance.get("seeds", []),
            "time": _now(),
        }
        if layout == "nnunet":
            _to_nnunet_layout(tmp, kept, ext, cfg.class_names, channel_name, provenance)
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2))
    return provenance


def _to_nnunet_layout(root: Path, seeds: list[int], ext: str, class_names, channel_name: str, provenance: dict) -> None:
    """Move plain pairs into nnU-Net v2's raw layout and write its dataset.json."""
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    pairs = []
    for seed in seeds:
        case = f"gen_{seed:07d}"
        (root / "images" / f"{case}{ext}").rename(root / "imagesTr" / f"{case}_0000{ext}")
        (root / "labels" / f"{case}{ext}").rename(root / "labelsTr" / f"{case}{ext}")
        pairs.append({"image": f"imagesTr/{case}_0000{ext}", "label": f"labelsTr/{case}{ext}"})
    (root / "images").rmdir()
    (root / "labels").rmdir()
    dataset = {
        "channel_names": {"0": channel_name},
        "labels": {name: k for k, name in enumerate(class_names)},
        "numTraining": len(seeds),
        "file_ending": ext,
        "name": root.name,
        "description": "DatasetGAN generated pairs (napari-synthseg); provenance in provenance.json",
    }
    (root / "dataset.json").write_text(json.dumps(dataset, indent=2))
    provenance["pairs"] = pairs
    provenance["layout"] = "nnunet"


__all__ = [
    "LabelledSamples",
    "generate_pairs",
    "predict_seed",
    "read_labelled_samples",
    "sample_images",
    "write_labelled_samples",
    "write_samples",
]
