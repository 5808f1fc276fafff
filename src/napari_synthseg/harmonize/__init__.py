"""One-image harmonization with SinGAN and ConSinGAN (Qt-free).

Train a generator pyramid on a region of the image a lesion is pasted into
(:func:`train_harmonizer`), then re-generate the naive paste from a chosen scale and blend the
result back only around the lesion (:func:`harmonize`). Lesions are removed by a naive fill and
the same harmonization (:func:`remove_lesion`). Models save as safetensors
(:meth:`Harmonizer.save` / :meth:`Harmonizer.load`).
"""

from .apply import (
    MIN_CONTRAST_KEPT,
    HarmonizedSample,
    blend_weights,
    choose_harmonizer,
    contrast_kept,
    harmonize,
    harmonize_lesion,
    naive_removal,
    remove_lesion,
    uses_hypersignal_model,
)
from .config import PRESETS, ConSinGANConfig, SinGANConfig, preset, pyramid_shapes
from .model import Harmonizer, image_sha256
from .networks import ConSinGAN, PatchDiscriminator, SinGAN
from .train import select_region, train_harmonizer

__all__ = [
    "MIN_CONTRAST_KEPT",
    "PRESETS",
    "ConSinGAN",
    "ConSinGANConfig",
    "Harmonizer",
    "PatchDiscriminator",
    "SinGAN",
    "SinGANConfig",
    "blend_weights",
    "choose_harmonizer",
    "HarmonizedSample",
    "contrast_kept",
    "harmonize",
    "harmonize_lesion",
    "image_sha256",
    "naive_removal",
    "preset",
    "pyramid_shapes",
    "remove_lesion",
    "select_region",
    "train_harmonizer",
    "uses_hypersignal_model",
]
