"""A lesion generator that learns from real lesions: mask-conditioned rectified flow for CT nodules.

* :class:`LesionGeneratorNet` / :class:`LesionGeneratorConfig` (``network``): MONAI's
  DiffusionModelUNet as a rectified-flow inpainter (noisy cube, context, region, mean HU; class
  embedding for solid / part-solid / ground-glass, and ``empty`` = healthy fill);
* :func:`train_lesion_generator` / :class:`GeneratorTrainConfig` (``train``): train-side-only
  training with augmentation, EMA, resume, progress/cancel and AMP on CUDA;
* :class:`ShapeModel` (``shapes``): new nodule masks of a requested diameter and class;
* :class:`LesionGenerator` (``sample``): a loaded model that fills a region in its own context;
* :class:`GeneratedFiller` (``healthy_fill``): the ``empty`` class as the fill method
  ``generated`` (removing real nodules from CT);
* :func:`generate_lesion` (``sample``): a :class:`~napari_synthseg.lesions.LesionPatch` made in
  a target CT's own context (or a neutral lung context for radiographs, then projected).

See docs/generator.md and docs/model_cards/lesion_generator_small.md.
"""

from .classes import GENERATOR_CLASSES, NODULE_CLASSES, classify_nodule
from .network import ARCHITECTURE, LesionGeneratorConfig, LesionGeneratorNet
from .shapes import ShapeModel, fit_shape_model, sphericity
from .train import GeneratorTrainConfig, attach_histograms, strip_training_state, train_lesion_generator

__all__ = [
    "ARCHITECTURE",
    "GENERATOR_CLASSES",
    "GeneratorTrainConfig",
    "LesionGeneratorConfig",
    "LesionGeneratorNet",
    "NODULE_CLASSES",
    "ShapeModel",
    "classify_nodule",
    "fit_shape_model",
    "sphericity",
    "attach_histograms",
    "strip_training_state",
    "train_lesion_generator",
]

from .healthy_fill import GeneratedFiller  # registers get_filler("generated")
from .sample import BUILTIN_MODELS, LesionGenerator, generate_lesion, get_generator, resolve_model_path

__all__ += ["BUILTIN_MODELS", "GeneratedFiller", "LesionGenerator", "generate_lesion", "get_generator",
            "resolve_model_path"]
