"""Inpainting: one job for ``synthseg inpaint`` and the Inpaint widget.

It owns the defaults, the checks that keep a user from a long, useless run (wave 1 let the
widget use the source image itself as the mask: 52 s and three black samples), which model a
``builtin`` choice means for a mode, and the provenance of an accepted sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SynthsegError
from ..scene import LesionRecord, Scene
from ..utils.progress import CancelToken, ProgressCallback

MODES = ("healthy", "lesion", "outpaint")
CLASSICAL = ("biharmonic", "telea")
#: A fill mask larger than this fraction of the image is refused: it is the wrong layer, not a
#: lesion (a real lesion, even a large mass, covers a few percent of a radiograph).
MAX_FILL_FRACTION = 0.25
#: Grain of automatic texture for several samples: the surroundings' own grain strength.
AUTO_TEXTURE = 1.0


@dataclass(frozen=True)
class InpaintSettings:
    """Defaults of one inpainting request (the CLI flags and widget fields start here)."""

    model: str = "builtin"
    mode: str = "healthy"
    samples: int = 3
    seed: int = 0
    margin_px: int = 8
    #: Seeded grain strength of learned fills in [0, 1]; None: :meth:`effective_texture` decides.
    texture: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SynthsegError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 1 <= int(self.samples) <= 64:
            raise SynthsegError(f"samples must lie in 1..64, got {self.samples}")
        if not 0 <= int(self.margin_px) <= 512:
            raise SynthsegError(f"margin must lie in 0..512 px, got {self.margin_px}")
        if self.texture is not None and not (np.isfinite(self.texture) and 0 <= self.texture <= 1):
            raise SynthsegError(f"texture must lie in [0, 1], got {self.texture}")
        if not 0 <= int(self.seed) < 2**32:
            raise SynthsegError(f"seed must be a whole number in [0, 2^32), got {self.seed}")

    def effective_texture(self) -> float:
        """The grain strength this request uses.

        An explicit ``texture`` wins. Automatic (None): one sample gets the smooth best-PSNR fill
        (0, what lesion extraction and a single clean removal want); several samples get grain
        like the surroundings (1.0), because without it a learned model's seeded samples are
        nearly identical and there is nothing to choose between. Classical fills take none.
        """
        if self.model in CLASSICAL:
            return 0.0
        if self.texture is not None:
            return float(self.texture)
        return 0.0 if int(self.samples) == 1 else AUTO_TEXTURE

    def model_name(self) -> str:
        """The model this request uses: ``builtin`` names the shipped model for the mode."""
        if self.model == "builtin":
            from ..inpaint.infer import builtin_for_mode

            return builtin_for_mode(self.mode)
        if self.model in CLASSICAL or self.model.startswith("builtin:"):
            return self.model
        if not Path(self.model).is_file():
            raise SynthsegError(f"model file not found: {self.model}")
        return self.model


def fill_mask(values: np.ndarray, image_shape: tuple[int, ...], what: str = "the mask") -> np.ndarray:
    """A boolean fill mask from a layer's or file's values, with the checks of a real lesion.

    Refuses a mask of another shape, an empty one, one that is an image rather than a mask
    (many distinct values) and one covering more than ``MAX_FILL_FRACTION`` of the image.
    """
    values = np.asarray(values)
    if values.shape != tuple(image_shape):
        raise SynthsegError(f"{what} has shape {values.shape}, the image {tuple(image_shape)}; draw it on this image")
    if values.dtype.kind == "f" or values.dtype.itemsize > 1:
        sample = values.ravel()[:: max(1, values.size // 200_000)]
        if np.unique(sample).size > 32:
            raise SynthsegError(f"{what} is an image, not a mask; paint the region to fill in a labels layer")
    mask = values > 0
    if not mask.any():
        raise SynthsegError(f"{what} is empty; paint the region to fill first")
    fraction = float(mask.mean())
    if fraction > MAX_FILL_FRACTION:
        raise SynthsegError(
            f"{what} covers {fraction:.0%} of the image (at most {MAX_FILL_FRACTION:.0%}); "
            "pick the lesion mask, not a whole-image layer"
        )
    return mask


def inpaint(
    image: np.ndarray,
    mask: np.ndarray,
    settings: InpaintSettings = InpaintSettings(),
    *,
    spacing: tuple[float, ...] | None = None,
    device: str | None = None,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[np.ndarray]:
    """``settings.samples`` seeded fills of ``mask`` in ``image`` (slow: off the UI thread)."""
    from ..inpaint import inpaint_samples

    mask = fill_mask(mask, np.asarray(image).shape)
    model = settings.model_name()
    return inpaint_samples(
        image, mask, model=model, mode=settings.mode, n_samples=settings.samples, seed=settings.seed,
        margin=settings.margin_px, texture=settings.effective_texture(),
        spacing=spacing, device=device, threads=threads, progress=progress, cancel=cancel,
    )


def sample_provenance(settings: InpaintSettings, index: int) -> dict[str, Any]:
    """What made sample ``index`` (model name and file hash, seed, texture)."""
    from ..models import file_sha256

    model = settings.model_name()
    provenance: dict[str, Any] = {"model": model, "mode": settings.mode, "seed": int(settings.seed) + int(index),
                                  "sample": int(index), "texture": settings.effective_texture()}
    if Path(model).is_file():
        provenance["model_sha256"] = file_sha256(model)
    return provenance


#: A sample agrees with an image when its pixels outside the fill region differ from it by at
#: most this fraction of the image's intensity range (float rounding, a stored uint8/int16
#: round trip) ...
MATCH_TOLERANCE = 1e-3
#: ... except for at most this fraction of them (a learned fill may touch a seam pixel or two
#: beside the mask; another image, even of the same patient, differs almost everywhere).
MATCH_OUTLIER_FRACTION = 0.005


def filled_region(mask: np.ndarray, settings: InpaintSettings) -> np.ndarray:
    """The pixels a sample of ``settings`` may change: the mask, or for outpaint all but the kept box."""
    mask = np.asarray(mask, bool)
    if settings.mode != "outpaint":
        return mask
    from ..inpaint.masks import mask_bbox, outpaint_mask

    return outpaint_mask(mask.shape, mask_bbox(mask), settings.margin_px)


def _disagreement(sample: np.ndarray, image: np.ndarray, kept: np.ndarray) -> float:
    """Fraction of the kept pixels where ``sample`` and ``image`` differ beyond the tolerance."""
    reference = np.asarray(image, np.float32)[kept]
    lo, hi = np.percentile(reference, [0.5, 99.5]) if reference.size else (0.0, 1.0)
    tolerance = MATCH_TOLERANCE * max(float(hi - lo), 1e-6)
    return float(np.mean(np.abs(sample[kept] - reference) > tolerance)) if reference.size else 0.0


def check_made_on_scene(
    scene: Scene,
    sample: np.ndarray,
    mask: np.ndarray,
    settings: InpaintSettings,
    current: np.ndarray | None = None,
) -> None:
    """Refuse a sample that was not made on the scene's image.

    Outside the region it filled, a sample is a copy of the image it was made on. That image
    must be the scene's source image or the scene as currently rendered (``current``, the
    editor's ``synthetic`` layer; rendered here when not given and the source does not match).
    A sample of another image would be stored as a record whose pixels replace the scene's.
    """
    image = scene.load_image()
    sample = np.asarray(sample, np.float32)
    if sample.shape != tuple(image.shape):
        raise SynthsegError(
            f"the sample is {'x'.join(map(str, sample.shape))}, the scene's image "
            f"{'x'.join(map(str, image.shape))}: inpaint the scene's image (the editor's 'synthetic' layer)"
        )
    kept = ~filled_region(mask, settings)
    off_source = _disagreement(sample, image.array, kept)
    if off_source <= MATCH_OUTLIER_FRACTION:
        return
    if current is None:
        from ..render import render_scene

        current = render_scene(scene).image
    off_render = _disagreement(sample, np.asarray(current), kept)
    if off_render <= MATCH_OUTLIER_FRACTION:
        return
    paths = scene.source.paths
    name = Path(paths[0]).name if len(paths) == 1 else Path(paths[0]).parent.name
    raise SynthsegError(
        f"the sample was made on another image: {min(off_source, off_render):.0%} of the pixels outside the "
        f"fill region differ from the scene's image ({name}) and from its current render; "
        "inpaint the editor's 'synthetic' layer or the scene's source image"
    )


def accept_inpainted(
    scene: Scene,
    sample: np.ndarray,
    mask: np.ndarray,
    settings: InpaintSettings,
    index: int,
    current: np.ndarray | None = None,
) -> LesionRecord:
    """Store a fill sample in ``scene`` as one undoable record.

    Parameters
    ----------
    sample : ndarray
        The filled image (full size).
    mask : ndarray of bool
        The fill mask the sample was made with (outpaint: the kept lesion).
    index : int
        Which of the request's samples it is (its seed and provenance).
    current : ndarray, optional
        The scene as currently rendered (the editor has it); see :func:`check_made_on_scene`.

    Raises
    ------
    SynthsegError
        When the sample was not made on the scene's image (one line naming what differs).
    """
    from ..lesions.accept import accept_fill_sample

    mask = np.asarray(mask, bool)
    check_made_on_scene(scene, sample, mask, settings, current)
    outer = filled_region(mask, settings) if settings.mode == "outpaint" else None
    return accept_fill_sample(scene, sample, mask, settings.mode, sample_provenance(settings, index), fill_mask=outer)


@dataclass(frozen=True)
class TrainInpainterSettings:
    """Defaults of training an inpainting model from a panel (the CLI exposes every knob).

    The network and the remaining training settings are the core's defaults
    (:class:`~napari_synthseg.inpaint.InpainterConfig`, :class:`~napari_synthseg.inpaint.TrainConfig`).
    """

    steps: int = 2000
    crop_px: int = 128
    batch: int = 8
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        if not 1 <= int(self.steps) <= 1_000_000:
            raise SynthsegError(f"steps must lie in 1..1000000, got {self.steps}")
        if int(self.crop_px) < 16 or int(self.crop_px) % 8:
            raise SynthsegError(f"the training crop must be a multiple of 8 and at least 16 px, got {self.crop_px}")
        if not 1 <= int(self.batch) <= 256:
            raise SynthsegError(f"batch must lie in 1..256, got {self.batch}")


def train_modes(has_lesion_masks: bool) -> tuple[str, ...]:
    """Modes a model learns: lesion filling needs lesion masks to learn from."""
    return ("healthy", "lesion", "outpaint") if has_lesion_masks else ("healthy", "outpaint")


def check_training_paths(images: str | Path, out: str | Path, masks: str | Path | None = None) -> None:
    """Refuse a missing image folder, an output that is not a new ``.safetensors`` file's path."""
    if not str(images).strip() or not Path(images).is_dir():
        raise SynthsegError("choose a folder of training images")
    if not str(out).endswith(".safetensors"):
        raise SynthsegError("the output model file must end in .safetensors")
    if not Path(out).parent.is_dir():
        raise SynthsegError(f"output folder does not exist: {Path(out).parent}")
    if masks is not None and not Path(masks).is_dir():
        raise SynthsegError(f"lesion mask folder not found: {masks}")


def train_inpainter_model(
    images: str | Path,
    out: str | Path,
    masks: str | Path | None = None,
    settings: TrainInpainterSettings = TrainInpainterSettings(),
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """Train a model on a folder of images (slow: off the UI thread); cancel keeps a checkpoint.

    Parameters
    ----------
    images : path
        Folder of training images.
    out : path
        The ``.safetensors`` model file to write (also the resumable checkpoint).
    masks : path, optional
        Folder of lesion masks named like the images; enables the ``lesion`` mode.
    """
    from ..inpaint import InpainterConfig, TrainConfig, train_inpainter

    check_training_paths(images, out, masks)
    model_config = InpainterConfig(modes=train_modes(masks is not None), prior="biharmonic")
    train_config = TrainConfig(steps=int(settings.steps), crop=int(settings.crop_px), batch=int(settings.batch),
                               checkpoint_every=int(settings.checkpoint_every))
    return Path(train_inpainter([str(images)], str(out), masks_dir=masks, model_config=model_config,
                                train_config=train_config, progress=progress, cancel=cancel))
