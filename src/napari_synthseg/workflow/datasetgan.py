"""DatasetGAN labelling: one job for ``synthseg train-generator|datasetgan`` and the DatasetGAN panel.

Train a generator on a folder of images, draw seeded samples to label, fit the pixel-classifier
ensemble on the labelled ones, generate labelled pairs. The defaults, the checks and the
provenance of each step live here once. Wave 1 had two copies that disagreed: the panel trained
a different generator (64 px, 64-d latents, widest layer 32, batch 8) than
``synthseg train-generator`` (128 px, 128-d, 128, batch 16), parsed class names its own way, and
its classifier recorded neither ``max_per_class`` nor the fit seed the CLI passed. The defaults
below are the CLI's; a panel may show smaller values, but starts from these.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SynthsegError
from ..utils.progress import CancelToken, ProgressCallback, report

logger = logging.getLogger(__name__)

#: Classes a new labelling starts with (value k = class k; background is 0).
DEFAULT_CLASSES = ("background", "lung", "heart", "nodule")
FORMATS = ("png", "nifti")
LAYOUTS = ("plain", "nnunet")


def _whole(value: Any, lo: int, hi: int, what: str) -> int:
    if isinstance(value, bool) or int(value) != value or not lo <= int(value) <= hi:
        raise SynthsegError(f"{what} must be a whole number in {lo}..{hi}, got {value}")
    return int(value)


def parse_class_names(text: str | Sequence[str] | None, default: Sequence[str] | None = DEFAULT_CLASSES) -> tuple[str, ...]:
    """Class names from ``"background,lung,..."`` (or a sequence); empty: ``default``.

    At least two distinct names, background (value 0) first.
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        if default is None:
            raise SynthsegError("give the class names, background first")
        names = tuple(default)
    else:
        parts = text.split(",") if isinstance(text, str) else list(text)
        names = tuple(str(c).strip() for c in parts if str(c).strip())
    if len(names) < 2:
        raise SynthsegError("give at least two class names, background first")
    if len(set(names)) != len(names):
        raise SynthsegError(f"class names must differ: {', '.join(names)}")
    return names


# ---- 1. the generator ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainGeneratorSettings:
    """Defaults of training a generator (the flags of ``synthseg train-generator``)."""

    size: int = 128
    steps: int = 2000
    batch: int = 16
    lr: float = 0.0025
    r1_gamma: float | None = None
    augment: str = "color,translation,cutout"
    channel_max: int = 128
    z_dim: int = 128
    checkpoint_every: int = 500
    preview_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        size = _whole(self.size, 8, 4096, "generator size")
        if size & (size - 1):
            raise SynthsegError(f"generator size must be a power of two >= 8, got {size}")
        _whole(self.steps, 1, 10_000_000, "steps")
        _whole(self.batch, 1, 4096, "batch")
        _whole(self.channel_max, 1, 4096, "widest layer")
        _whole(self.z_dim, 1, 4096, "latent size")
        _whole(self.checkpoint_every, 0, 10_000_000, "checkpoint interval")
        _whole(self.preview_every, 0, 10_000_000, "preview interval")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise SynthsegError(f"learning rate must be positive, got {self.lr}")
        if self.r1_gamma is not None and not (math.isfinite(self.r1_gamma) and self.r1_gamma >= 0):
            raise SynthsegError(f"R1 weight must be 0 or more, got {self.r1_gamma}")
        from ..datasetgan.augment import parse_policy

        parse_policy(self.augment)

    def gan_config(self):
        """The generator architecture (style vectors as wide as the latent)."""
        from ..datasetgan.generator import GanConfig

        return GanConfig(size=int(self.size), z_dim=int(self.z_dim), w_dim=int(self.z_dim),
                         channel_max=int(self.channel_max))

    def train_config(self):
        """How to train."""
        from ..datasetgan.train import TrainConfig

        return TrainConfig(steps=int(self.steps), batch_size=int(self.batch), lr=float(self.lr),
                           r1_gamma=self.r1_gamma, augment=self.augment, checkpoint_every=int(self.checkpoint_every),
                           preview_every=int(self.preview_every), seed=int(self.seed))


def check_model_path(out: str | Path, what: str = "model") -> Path:
    """A ``.safetensors`` path in an existing folder."""
    if not str(out).strip():
        raise SynthsegError(f"choose a file to save the {what} to (.safetensors)")
    path = Path(out)
    if path.suffix != ".safetensors":
        raise SynthsegError(f"the {what} file must end in .safetensors")
    if not path.parent.is_dir():
        raise SynthsegError(f"output folder does not exist: {path.parent}")
    return path


def check_image_folder(images: str | Path) -> Path:
    """An existing folder of training images."""
    if not str(images).strip():
        raise SynthsegError("choose a folder of training images")
    if not Path(images).is_dir():
        raise SynthsegError(f"image folder not found: {images}")
    return Path(images)


def train_generator(
    images: str | Path,
    out: str | Path,
    settings: TrainGeneratorSettings = TrainGeneratorSettings(),
    *,
    resume: bool = False,
    device: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    preview: Callable[[int, np.ndarray], None] | None = None,
):
    """Train a generator on a folder of images (slow: off the UI thread).

    Parameters
    ----------
    images : path
        Folder of images; each is resized to ``settings.size`` squared.
    out : path
        Generator file to write; the training state goes beside it (``--resume`` continues it).
    preview : callable, optional
        ``preview(step, uint8 images)`` with samples of fixed seeds as training goes.

    Returns
    -------
    napari_synthseg.datasetgan.train.TrainResult
    """
    from ..datasetgan.train import load_image_folder, state_path_for
    from ..datasetgan.train import train_generator as train

    out = check_model_path(out, "generator")
    check_image_folder(images)
    state = None
    if resume:
        state = state_path_for(out)
        if not state.exists():
            raise SynthsegError(f"--resume: no training state {state.name} beside {out.name}")
    data = load_image_folder(images, int(settings.size), progress=progress, cancel=cancel)
    result = train(data, out, settings.gan_config(), settings.train_config(), resume=state, device=device,
                   progress=progress, cancel=cancel, preview=preview)
    logger.info("trained %s: %d steps, %.1f images/s", out, result.steps, result.images_per_second)
    return result


def load_generator(path: str | Path):
    """A saved generator (:class:`~napari_synthseg.models.LoadedModel`); one line if it is missing."""
    from ..datasetgan.train import load_generator as load

    if not str(path).strip():
        raise SynthsegError("choose a generator file first")
    if not Path(path).is_file():
        raise SynthsegError(f"generator file not found: {path}")
    return load(path)


# ---- 2. samples to label ------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleSettings:
    """Defaults of drawing seeded samples to label."""

    n: int = 8
    start_seed: int = 0
    truncation_psi: float = 0.7

    def __post_init__(self) -> None:
        _whole(self.n, 1, 100_000, "the number of samples")
        _whole(self.start_seed, 0, 2**31 - 1, "the first seed")
        if not (math.isfinite(self.truncation_psi) and 0.0 <= self.truncation_psi <= 2.0):
            raise SynthsegError(f"truncation psi must lie in [0, 2] (1 = none), got {self.truncation_psi}")

    def seeds(self) -> list[int]:
        return list(range(int(self.start_seed), int(self.start_seed) + int(self.n)))


def more_seeds(settings: SampleSettings, shown_seeds: Sequence[int], shown_psi: float) -> list[int]:
    """Seeds of ``settings.n`` samples added to a shown stack: they follow its last seed.

    Refused when the truncation changed (one stack, one truncation: the classifier is fitted
    and predicts at the stack's truncation).
    """
    if not shown_seeds:
        return settings.seeds()
    if abs(float(shown_psi) - float(settings.truncation_psi)) > 1e-9:
        raise SynthsegError("truncation changed; sample a new stack instead of adding to this one")
    start = max(int(s) for s in shown_seeds) + 1
    return list(range(start, start + int(settings.n)))


def write_samples(generator, out: str | Path, settings: SampleSettings = SampleSettings(), *, overwrite: bool = False,
                  progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> Path:
    """Write seeded samples and ``samples.json`` to a new folder for labelling by hand."""
    from ..datasetgan.sampling import write_samples as write

    return write(generator, int(settings.n), out, int(settings.start_seed), float(settings.truncation_psi),
                 overwrite=overwrite, progress=progress, cancel=cancel)


def sample_images(generator, seeds: Sequence[int], truncation_psi: float) -> np.ndarray:
    """uint8 (N, size, size) samples of ``seeds``."""
    from ..datasetgan.sampling import sample_images as sample

    return sample(generator.module, list(seeds), float(truncation_psi))


def predict_stack(generator, classifier, seeds: Sequence[int], truncation_psi: float,
                  progress: ProgressCallback | None = None,
                  cancel: CancelToken | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N, H, W) uint8 and their ensemble disagreement (Jensen-Shannon, float32)."""
    from ..datasetgan.sampling import predict_seed

    size = generator.module.config.size
    labels = np.zeros((len(seeds), size, size), np.uint8)
    uncertainty = np.zeros((len(seeds), size, size), np.float32)
    for i, seed in enumerate(seeds):
        if cancel is not None:
            cancel.raise_if_cancelled()
        _, prediction = predict_seed(generator.module, classifier.module, int(seed), float(truncation_psi))
        labels[i], uncertainty[i] = prediction.labels, prediction.uncertainty
        report(progress, i + 1, len(seeds), f"predicted sample {seed}")
    return labels, uncertainty


# ---- 3. the classifier --------------------------------------------------------------------------


@dataclass(frozen=True)
class FitSettings:
    """Defaults of fitting the pixel-classifier ensemble (``synthseg datasetgan fit``)."""

    ensemble: int = 5
    epochs: int = 3
    max_per_class: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        _whole(self.ensemble, 1, 50, "ensemble members")
        _whole(self.epochs, 1, 1000, "epochs")
        _whole(self.max_per_class, 10, 10_000_000, "pixels per class")
        _whole(self.seed, 0, 2**31 - 1, "seed")

    def fit_config(self):
        from ..datasetgan.classifier import FitConfig

        return FitConfig(epochs=int(self.epochs), max_per_class=int(self.max_per_class), seed=int(self.seed))

    @property
    def min_labelled(self) -> int:
        """Labelled samples a fit needs."""
        return self.fit_config().min_labelled


def check_labels(generator, label_maps: Sequence[np.ndarray], class_names: Sequence[str],
                 settings: FitSettings = FitSettings(), names: list[str] | None = None) -> None:
    """Refuse, with one line, label maps a classifier cannot learn from (cheap: at the click)."""
    from ..datasetgan.classifier import validate_labels

    validate_labels([np.asarray(m) for m in label_maps], tuple(class_names), generator.module.config.size,
                    settings.min_labelled, names)


def fit_classifier(
    generator,
    seeds: Sequence[int],
    label_maps: Sequence[np.ndarray],
    class_names: Sequence[str],
    truncation_psi: float,
    out: str | Path,
    settings: FitSettings = FitSettings(),
    *,
    label_files: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
):
    """Fit the ensemble on labelled samples, save it to ``out`` and load it back (slow).

    The provenance records the generator hash, the seeds and pixels per class, every fit
    setting and, for labels read from files, their names. Loading the saved file back gives the
    classifier its file hash (what generated data cite) and checks it belongs to ``generator``.

    Returns
    -------
    napari_synthseg.models.LoadedModel
    """
    from ..datasetgan.classifier import (
        PixelClassifierConfig,
        fit_ensemble,
        load_classifier,
        save_classifier,
    )
    from ..datasetgan.features import feature_channels

    out = check_model_path(out, "classifier")
    class_names = parse_class_names(list(class_names), None)
    maps = [np.asarray(m).astype(np.int64) for m in label_maps]
    check_labels(generator, maps, class_names, settings, list(label_files) if label_files else None)
    config = PixelClassifierConfig(in_features=feature_channels(generator.module), ensemble_size=int(settings.ensemble))
    ensemble, provenance = fit_ensemble(
        generator.module, [int(s) for s in seeds], maps, class_names, generator_sha256=generator.sha256,
        truncation_psi=float(truncation_psi), config=config, fit=settings.fit_config(), progress=progress,
        cancel=cancel,
    )
    if label_files:
        provenance["label_files"] = list(label_files)
    save_classifier(ensemble, out, provenance)
    logger.info("fitted %d classifiers on %d labelled samples -> %s", settings.ensemble, len(maps), out)
    return load_classifier(out, generator=generator)


def fit_from_folder(
    generator,
    labels_folder: str | Path,
    out: str | Path,
    classes: str | None = None,
    settings: FitSettings = FitSettings(),
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
):
    """Fit on a sample folder holding ``<sample>_label.png`` maps (``datasetgan fit --labels``).

    Class names: ``classes`` if given, else those stored in ``samples.json``, else
    :data:`DEFAULT_CLASSES`.
    """
    from ..datasetgan.sampling import read_labelled_samples

    check_model_path(out, "classifier")
    labelled = read_labelled_samples(labels_folder, generator)
    names = parse_class_names(classes, labelled.class_names or DEFAULT_CLASSES)
    return fit_classifier(generator, labelled.seeds, labelled.labels, names, labelled.truncation_psi, out, settings,
                          label_files=labelled.names, progress=progress, cancel=cancel)


def save_labelled(generator, seeds: Sequence[int], label_maps: dict[int, np.ndarray], out: str | Path,
                  truncation_psi: float, class_names: Sequence[str]) -> Path:
    """A sample folder with label maps for the labelled seeds (``datasetgan fit --labels`` reads it)."""
    from ..datasetgan.sampling import write_labelled_samples

    if not label_maps:
        raise SynthsegError("label at least one sample before saving")
    return write_labelled_samples(generator, list(seeds), label_maps, out, float(truncation_psi),
                                  parse_class_names(list(class_names), None))


# ---- 4. labelled pairs --------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateSettings:
    """Defaults of generating labelled pairs (``synthseg datasetgan generate``).

    ``truncation_psi`` None: the truncation the classifier was fitted at.
    """

    n: int = 100
    start_seed: int = 1_000_000
    truncation_psi: float | None = None
    drop_fraction: float = 0.1
    fmt: str = "png"
    layout: str = "plain"

    def __post_init__(self) -> None:
        _whole(self.n, 1, 10_000_000, "the number of pairs")
        _whole(self.start_seed, 0, 2**31 - 1, "the first seed")
        if not (math.isfinite(self.drop_fraction) and 0.0 <= self.drop_fraction < 1.0):
            raise SynthsegError(f"drop fraction must lie in [0, 1), got {self.drop_fraction}")
        if self.truncation_psi is not None and not (math.isfinite(self.truncation_psi)
                                                    and 0.0 <= self.truncation_psi <= 2.0):
            raise SynthsegError(f"truncation psi must lie in [0, 2] (1 = none), got {self.truncation_psi}")
        if self.fmt not in FORMATS:
            raise SynthsegError(f"format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if self.layout not in LAYOUTS:
            raise SynthsegError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")


def generate(generator, classifier, out: str | Path, settings: GenerateSettings = GenerateSettings(), *,
             overwrite: bool = False, progress: ProgressCallback | None = None,
             cancel: CancelToken | None = None) -> dict:
    """Generate ``settings.n`` labelled pairs into a new folder, dropping the most uncertain.

    Returns the provenance also written to ``provenance.json`` (both model hashes, seeds kept
    and dropped, per-seed uncertainty).
    """
    from ..datasetgan.sampling import generate_pairs

    if not str(out).strip():
        raise SynthsegError("choose an output folder (a new folder name)")
    return generate_pairs(generator, classifier, int(settings.n), out, start_seed=int(settings.start_seed),
                          truncation_psi=settings.truncation_psi, drop_fraction=float(settings.drop_fraction),
                          fmt=settings.fmt, overwrite=overwrite, progress=progress, cancel=cancel,
                          layout=settings.layout)


__all__ = [
    "DEFAULT_CLASSES",
    "FORMATS",
    "LAYOUTS",
    "FitSettings",
    "GenerateSettings",
    "SampleSettings",
    "TrainGeneratorSettings",
    "check_image_folder",
    "check_labels",
    "check_model_path",
    "fit_classifier",
    "fit_from_folder",
    "generate",
    "load_generator",
    "more_seeds",
    "parse_class_names",
    "predict_stack",
    "sample_images",
    "save_labelled",
    "train_generator",
    "write_samples",
]
