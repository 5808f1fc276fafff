"""Learned inpainting: healthy fill, lesion fill and outpainting with one small CPU-fast network.

* :class:`InpaintNet` / :class:`InpainterConfig` - the generator (gated-conv U-Net + FFC blocks);
* :func:`train_inpainter` / :class:`TrainConfig` - training from a folder of images, with resume;
* :class:`Inpainter` - a loaded model: normalisation, crop-to-mask, tiled inference, samples;
* :class:`LearnedFiller` - the same model behind :mod:`napari_synthseg.fill`'s interface
  (``get_filler("learned", model_path=..., mode=...)``);
* :func:`inpaint_samples` - N seeded samples with any learned or classical method;
* :mod:`.masks` - training/outpaint hole generators.

The package ships ``builtin:cxr_inpainter_small`` (healthy fill) and ``builtin:cxr_outpainter_small``
(outpainting); plain ``builtin`` picks the one for the mode (model cards in docs/model_cards/).
"""

from .filler import LearnedFiller  # registers get_filler("learned")
from .infer import BUILTIN_MODELS, Inpainter, builtin_model_path
from .network import ARCHITECTURE, MODES, InpainterConfig, InpaintNet
from .samples import inpaint_samples
from .train import TrainConfig, train_inpainter

__all__ = [
    "ARCHITECTURE",
    "BUILTIN_MODELS",
    "MODES",
    "InpaintNet",
    "Inpainter",
    "InpainterConfig",
    "LearnedFiller",
    "TrainConfig",
    "builtin_model_path",
    "inpaint_samples",
    "train_inpainter",
]
