"""DatasetGAN: a StyleGAN2-style generator plus few-shot pixel classifiers on its features.

Train a generator on unlabelled images (:mod:`.train`), label a few of its samples by hand,
fit an ensemble of MLP pixel classifiers on the generator's activations (:mod:`.features`,
:mod:`.classifier`) and generate as many labelled pairs as needed (:mod:`.sampling`).
Qt-free; the napari flow is in ``widgets/datasetgan_widget.py``.
"""

from .classifier import (
    DEFAULT_CLASSES,
    FitConfig,
    PixelClassifierConfig,
    PixelEnsemble,
    Prediction,
    fit_ensemble,
    load_classifier,
    predict_features,
    save_classifier,
)
from .features import FeatureStore, feature_channels, image_and_features
from .generator import Discriminator, GanConfig, Generator, seeded_inputs
from .sampling import generate_pairs, predict_seed, read_labelled_samples, sample_images, write_samples
from .train import TrainConfig, load_generator, load_image_folder, train_generator

__all__ = [
    "DEFAULT_CLASSES",
    "Discriminator",
    "FeatureStore",
    "FitConfig",
    "GanConfig",
    "Generator",
    "PixelClassifierConfig",
    "PixelEnsemble",
    "Prediction",
    "TrainConfig",
    "feature_channels",
    "fit_ensemble",
    "generate_pairs",
    "image_and_features",
    "load_classifier",
    "load_generator",
    "load_image_folder",
    "predict_features",
    "predict_seed",
    "read_labelled_samples",
    "sample_images",
    "save_classifier",
    "seeded_inputs",
    "train_generator",
    "write_samples",
]
