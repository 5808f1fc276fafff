"""Harmonizing a placed lesion: one job for ``synthseg harmonize`` and the Harmonize widget.

Defaults, staleness checks and the provenance of an accepted sample live here once. Wave 1 had
two copies that disagreed (the CLI trained ConSinGAN by default, the widget SinGAN); the default
is now SinGAN ``fast``, the engine that beats the naive paste on average in the project's
realism benchmark without NODE21's add-back (docs/harmonization.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SynthsegError
from ..scene import LesionRecord, Scene
from ..utils.progress import CancelToken, ProgressCallback

logger = logging.getLogger(__name__)

ARCHITECTURES = ("singan", "consingan")
PRESETS = ("fast", "paper")
ADD_BACK_CHOICES = ("auto", "replace", "coarse", "detail", "original")
#: Default of contrast-preserving harmonization for added lesions: the lesion's mean contrast
#: against the image without it stays within 25 % of the naive paste's. The same number as
#: ``harmonize.apply.CONTRAST_TOLERANCE`` (kept here so that importing the settings does not
#: import torch; a test checks they agree). Measured in docs/benchmarks.md (issue 15, 14 lesions x
#: 4 samples): with it 100 % of samples keep >= 50 % of the contrast, 68 % without.
CONTRAST_TOLERANCE = 0.25


@dataclass(frozen=True)
class TrainHarmonizerSettings:
    """Defaults of training a one-image harmonizer."""

    architecture: str = "singan"
    preset: str = "fast"
    iterations: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise SynthsegError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}")
        if self.preset not in PRESETS:
            raise SynthsegError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.iterations is not None and not 1 <= int(self.iterations) <= 100_000:
            raise SynthsegError(f"iterations per scale must lie in 1..100000, got {self.iterations}")

    def config(self):
        """The harmonizer config these settings name."""
        import dataclasses

        from ..harmonize import preset

        config = preset(self.architecture, self.preset)
        return dataclasses.replace(config, niter=int(self.iterations)) if self.iterations else config


@dataclass(frozen=True)
class HarmonizeSettings:
    """Defaults of one harmonization request.

    Attributes
    ----------
    injection_scale : int or None
        Scale where the naive paste enters; None: the model's default (SinGAN: two below the
        finest, ConSinGAN: 0, the only one it has).
    samples : int
        How many seeded samples to make (1..16).
    seed : int
        Seed of the first sample; sample k uses a seed derived from (seed, k).
    margin_px : int
        Ramp around the lesion where the result is blended in.
    add_back : str
        ``auto`` picks by modality and lesion kind (``harmonize.apply.default_add_back``).
    contrast_tolerance : float or None
        Contrast-preserving harmonization of added lesions: after the GAN pass, the lesion's
        mean contrast against the image without it is moved (by re-scaling the lesion's coarse
        band) into ``[1 - tol, 1 + tol]`` times the naive paste's; the texture stays the
        GAN's/add-back's. None: the GAN's output as it is (samples that lost the lesion are
        then refused). Not applied to removals.
    """

    injection_scale: int | None = None
    samples: int = 4
    seed: int = 0
    margin_px: int = 8
    add_back: str = "auto"
    contrast_tolerance: float | None = CONTRAST_TOLERANCE

    def __post_init__(self) -> None:
        if not 1 <= int(self.samples) <= 16:
            raise SynthsegError(f"samples must lie in 1..16, got {self.samples}")
        if not 0 <= int(self.margin_px) <= 128:
            raise SynthsegError(f"blend margin must lie in 0..128 px, got {self.margin_px}")
        if self.add_back not in ADD_BACK_CHOICES:
            raise SynthsegError(f"add-back must be one of {', '.join(ADD_BACK_CHOICES)}, got {self.add_back!r}")
        if not 0 <= int(self.seed) < 2**32:
            raise SynthsegError(f"seed must be a whole number in [0, 2^32), got {self.seed}")
        if self.contrast_tolerance is not None and not 0.0 <= float(self.contrast_tolerance) <= 0.5:
            # above 0.5 the lower bound would fall below MIN_CONTRAST_KEPT (0.5), the refusal rule
            raise SynthsegError(f"contrast tolerance must lie in 0..0.5 (or off), got {self.contrast_tolerance}")


def check_model_fits(model, image: np.ndarray) -> None:
    """A one-image harmonizer only fits the image it was trained on (shape and pixel hash).

    The panel checks this as soon as a model is loaded or trained; ``harmonize`` checks it
    again on every request.
    """
    from ..harmonize import image_sha256

    if tuple(image.shape) != tuple(model.image_shape) or image_sha256(image) != model.image_sha256:
        raise SynthsegError("this harmonizer was trained on another image than the scene's; train one on this image")


def default_injection_scale(model) -> int:
    """SinGAN: two scales below the finest (changes texture, keeps shape); ConSinGAN: 0."""
    if model.architecture == "consingan":
        return 0
    return max(0, int(model.n_scales) - 2)


@dataclass
class HarmonizeResult:
    """Samples of one request and everything needed to accept one of them later."""

    lesion_id: str
    samples: list[np.ndarray]
    naive: np.ndarray
    mask: np.ndarray
    injection_scale: int
    add_back: str
    settings: HarmonizeSettings
    model: Any
    scene_revision: int
    info: dict[str, Any] = field(default_factory=dict)
    #: Per sample: did it keep the lesion (``harmonize.apply.HarmonizedSample``: accepted,
    #: contrast_kept, reason). A sample that lost too much contrast, or flipped its sign, is
    #: shown but cannot be accepted.
    checks: list[Any] = field(default_factory=list)

    def describe(self, index: int) -> str:
        """One line on sample ``index``: the contrast it kept, or why it is refused."""
        if not self.checks:
            return f"sample {index}"
        check = self.checks[index]
        if not check.accepted:
            return f"sample {index} refused: {check.reason}"
        line = f"sample {index}: keeps {check.contrast_kept:.0%} of the lesion's contrast"
        if check.contrast_restored:
            line += f" (the GAN alone kept {check.gan_contrast_kept:.0%}; brought within the tolerance)"
        return line


def _naive_render(scene: Scene, lesion_id: str) -> tuple[Any, np.ndarray, np.ndarray]:
    """The scene with the lesion placed but without its stored harmonization, and its mask."""
    from ..render import SceneRenderer

    renderer = SceneRenderer(scene, follow=False, without_overlay={lesion_id})
    try:
        return renderer.source, np.array(renderer.image), renderer.lesion_mask(lesion_id)
    finally:
        renderer.close()


def harmonize_lesion(
    scene: Scene,
    lesion_id: str,
    model,
    settings: HarmonizeSettings = HarmonizeSettings(),
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> HarmonizeResult:
    """Harmonize one placed lesion ``settings.samples`` times (slow: run it off the UI thread)."""
    from ..harmonize.apply import default_add_back
    from ..harmonize.apply import harmonize_lesion as harmonize_and_check
    from ..render import render_without

    record = scene.lesion(lesion_id)
    source, naive, mask = _naive_render(scene, lesion_id)
    if source.array.ndim != 2:
        raise SynthsegError("harmonization works on 2D scenes (radiographs or one slice)")
    if not mask.any():
        raise SynthsegError(f"lesion {lesion_id} has no pixels inside the image")
    scale = default_injection_scale(model) if settings.injection_scale is None else int(settings.injection_scale)
    if not 0 <= scale < model.n_scales:
        raise SynthsegError(f"injection scale must lie in 0..{model.n_scales - 1} for this model, got {scale}")
    if model.architecture == "consingan" and scale != 0:
        raise SynthsegError("ConSinGAN models take the naive paste at scale 0 only")
    add_back = settings.add_back
    if add_back == "auto":
        add_back = default_add_back(model, source.modality, record.kind)
    # The scene without this lesion: what its kept contrast is measured against (issue 15),
    # and the add-back's original on radiographs.
    original = render_without(scene, lesion_id)
    if cancel is not None:
        cancel.raise_if_cancelled()
    # A removal has no lesion to keep (its "contrast" is the real lesion it takes away): the
    # keep-the-lesion rules (contrast-preserving harmonization, refusal) apply to added lesions.
    removal = record.kind == "removal"
    checks = harmonize_and_check(
        model, naive, mask, scale, original, settings.samples, settings.seed,
        blend_margin_px=settings.margin_px, reference_image=source.array, add_back=add_back,
        contrast_tolerance=None if removal else settings.contrast_tolerance,
    )
    return HarmonizeResult(
        lesion_id=lesion_id, samples=[c.image for c in checks], naive=naive, mask=mask, injection_scale=scale,
        add_back=add_back, settings=settings, model=model, scene_revision=scene.revision,
        checks=[] if removal else checks,
    )


def accept_harmonized(scene: Scene, result: HarmonizeResult, index: int) -> LesionRecord:
    """Store sample ``index`` in the lesion's record, with the model hash, scale and seed.

    Refused when the lesion or its surroundings changed since the samples were made (they
    would no longer fit), or when the model was never saved (a record cites a model file by
    its hash).
    """
    from ..harmonize import blend_weights
    from ..lesions.place import attach_overlay

    if not 0 <= index < len(result.samples):
        raise SynthsegError(f"pick a sample 0..{len(result.samples) - 1}")
    if result.checks and not result.checks[index].accepted:
        raise SynthsegError(f"sample {index} lost the lesion and cannot be accepted: {result.checks[index].reason}")
    if result.lesion_id not in scene.lesion_ids:
        raise SynthsegError(f"lesion {result.lesion_id} is gone; harmonize again")
    _, naive_now, _ = _naive_render(scene, result.lesion_id)
    if not np.array_equal(naive_now, result.naive):
        raise SynthsegError(f"lesion {result.lesion_id} or its surroundings changed since harmonizing; harmonize again")
    if not result.model.sha256:
        raise SynthsegError("save the harmonizer model first, so the lesion can record its hash")
    sample = result.samples[index]
    weight = blend_weights(result.mask, result.settings.margin_px)
    rows, cols = np.nonzero(weight > 0)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    # The sample already holds the margin blend: the overlay replaces its box as shown.
    return attach_overlay(
        scene, result.lesion_id, sample[box], np.ones(sample[box].shape, np.float32),
        [box[0].start, box[1].start],
        provenance={
            "engine": result.model.architecture, "model_sha256": result.model.sha256,
            "injection_scale": result.injection_scale, "seed": result.settings.seed, "sample": int(index),
            "blend_margin_px": result.settings.margin_px, "add_back": result.add_back,
            "contrast_kept": float(result.checks[index].contrast_kept) if result.checks else None,
            "contrast_tolerance": None if not result.checks else result.settings.contrast_tolerance,
            "gan_contrast_kept": (float(result.checks[index].gan_contrast_kept)
                                  if result.checks and result.checks[index].contrast_restored else None),
        },
    )


def save_model_beside_scene(model, scene: Scene) -> Path:
    """Save an unsaved model in ``<scene>/harmonizers/`` under its content hash."""
    if scene.folder is None:
        raise SynthsegError("save the model first so the lesion can record its hash")
    folder = Path(scene.folder) / "harmonizers"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"_unsaved_{id(model):x}.safetensors"
    model.save(tmp)
    final = folder / f"{model.architecture}_{model.sha256[:16]}.safetensors"
    tmp.replace(final)
    return final
