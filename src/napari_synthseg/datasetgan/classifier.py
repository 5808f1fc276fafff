"""An ensemble of small MLP pixel classifiers on generator features (DatasetGAN's decoder).

Each member sees one pixel's feature vector and predicts its class. Members differ by
initialisation and minibatch order only, as in DatasetGAN; their disagreement (Jensen-Shannon
divergence of the members' class distributions) says which generated images the ensemble is
unsure about, so those can be dropped from a generated data set.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SynthsegError
from ..models import LoadedModel, load_model, register_architecture, save_model
from ..utils.progress import CancelToken, ProgressCallback, report
from .features import FeatureStore, feature_channels, image_and_features
from .generator import Generator

CLASSIFIER_ARCH = "datasetgan-pixel-ensemble"
DEFAULT_CLASSES = ("background", "lung", "heart", "nodule")


@dataclass
class PixelClassifierConfig:
    """Ensemble architecture, and what it must be paired with.

    Parameters
    ----------
    in_features : int
        Feature vector length (must equal the generator's, see :func:`feature_channels`).
    class_names : list of str
        Class ``k`` is label value ``k``; class 0 is background.
    hidden : tuple of int
        Hidden layer widths of each MLP.
    ensemble_size : int
        Number of members.
    generator_sha256 : str
        sha256 of the generator file the features came from; a classifier only works with it.
    image_size : int
        Side length of the generator's images (pixels).
    truncation_psi : float
        Truncation the labelled samples were drawn with.
    """

    in_features: int
    class_names: tuple = DEFAULT_CLASSES
    hidden: tuple = (128, 32)
    ensemble_size: int = 5
    dropout: float = 0.1
    generator_sha256: str = ""
    image_size: int = 0
    truncation_psi: float = 1.0

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


@dataclass
class FitConfig:
    """How to fit the ensemble.

    ``max_per_class`` caps pixels per class per labelled image (class-balanced subsampling);
    ``epochs`` passes over the stored pixels per member.
    """

    epochs: int = 3
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-4
    max_per_class: int = 2000
    seed: int = 0
    min_labelled: int = 2


def _mlp(cin: int, hidden: tuple, cout: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(cin, h), nn.ReLU(inplace=True), nn.BatchNorm1d(h)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        cin = h
    layers.append(nn.Linear(cin, cout))
    return nn.Sequential(*layers)


class PixelEnsemble(nn.Module):
    """features (N, C) -> member logits (M, N, K), after per-channel standardisation."""

    # buffers registered in __init__
    feat_mean: torch.Tensor
    feat_std: torch.Tensor

    def __init__(self, config: PixelClassifierConfig):
        super().__init__()
        self.config = config
        self.register_buffer("feat_mean", torch.zeros(config.in_features))
        self.register_buffer("feat_std", torch.ones(config.in_features))
        self.members = nn.ModuleList(
            _mlp(config.in_features, tuple(config.hidden), config.n_classes, config.dropout)
            for _ in range(config.ensemble_size)
        )

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.feat_mean) / self.feat_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalise(x)
        return torch.stack([m(x) for m in self.members])


register_architecture(CLASSIFIER_ARCH, PixelClassifierConfig)(PixelEnsemble)


@dataclass
class Prediction:
    """One image's prediction.

    Attributes
    ----------
    labels : uint8 (H, W)
        Argmax of the ensemble mean.
    probabilities : float32 (K, H, W)
        Ensemble mean class probabilities.
    uncertainty : float32 (H, W)
        Jensen-Shannon divergence across members, in nats (0 = all agree; at most log M).
    """

    labels: np.ndarray
    probabilities: np.ndarray
    uncertainty: np.ndarray

    @property
    def score(self) -> float:
        """Image-level uncertainty: mean pixel JSD (nats)."""
        return float(self.uncertainty.mean())


def jensen_shannon(member_probs: torch.Tensor) -> torch.Tensor:
    """Generalised JSD of M distributions: H(mean p) - mean H(p_m). (M, N, K) -> (N,)."""
    eps = 1e-12
    mean = member_probs.mean(0)
    h_mean = -(mean * (mean + eps).log()).sum(-1)
    h_each = -(member_probs * (member_probs + eps).log()).sum(-1).mean(0)
    return (h_mean - h_each).clamp_min(0)


@torch.no_grad()
def predict_features(ensemble: PixelEnsemble, features: torch.Tensor, chunk: int = 16384) -> Prediction:
    """Classify every pixel of one image's features (C, H, W), in pixel chunks."""
    ensemble.eval()
    c, h, w = features.shape
    if c != ensemble.config.in_features:
        raise SynthsegError(
            f"classifier expects {ensemble.config.in_features} features per pixel but the generator "
            f"gives {c}; the classifier was fitted on another generator"
        )
    flat = features.reshape(c, h * w)
    dev = ensemble.feat_mean.device
    probs: np.ndarray = np.empty((ensemble.config.n_classes, h * w), np.float32)
    jsd = np.empty(h * w, np.float32)
    for i in range(0, h * w, chunk):
        x = flat[:, i : i + chunk].T.to(dev)
        p = F.softmax(ensemble(x).float(), dim=-1)
        probs[:, i : i + chunk] = p.mean(0).T.cpu().numpy()
        jsd[i : i + chunk] = jensen_shannon(p).cpu().numpy()
    probs = probs.reshape(-1, h, w)
    return Prediction(probs.argmax(0).astype(np.uint8), probs, jsd.reshape(h, w))


def validate_labels(
    labels: list[np.ndarray], class_names, size: int, min_labelled: int = 2, names: list[str] | None = None
) -> None:
    """Refuse label sets a classifier cannot learn from, with one line saying what to fix."""
    n_classes = len(class_names)
    if len(labels) < min_labelled:
        raise SynthsegError(
            f"labels on {len(labels)} sample(s); label at least {min_labelled} samples before fitting"
        )
    seen: set[int] = set()
    for i, lab in enumerate(labels):
        name = names[i] if names else f"label map {i}"
        if lab.shape != (size, size):
            raise SynthsegError(
                f"{name} is {lab.shape[0]}x{lab.shape[1]} but the generator makes {size}x{size} images"
            )
        values = np.unique(lab)
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise SynthsegError(
                f"{name} holds label {int(values.max())} but only {n_classes} classes "
                f"({', '.join(class_names)}) are defined"
            )
        seen.update(int(v) for v in values)
    missing = [class_names[k] for k in range(n_classes) if k not in seen]
    if missing:
        raise SynthsegError(
            f"class {', '.join(missing)} is not labelled on any sample; paint it on at least one "
            "sample or remove it from the classes"
        )


def fit_ensemble(
    G: Generator,
    seeds: list[int],
    labels: list[np.ndarray],
    class_names=DEFAULT_CLASSES,
    generator_sha256: str = "",
    truncation_psi: float = 1.0,
    config: PixelClassifierConfig | None = None,
    fit: FitConfig | None = None,
    device: torch.device | str | None = None,
    temp_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> tuple[PixelEnsemble, dict]:
    """Fit the ensemble on labelled samples of ``G``.

    Parameters
    ----------
    seeds : list of int
        Sample seeds the label maps belong to (see :mod:`.sampling`).
    labels : list of (H, W) int arrays
        Full label maps, value k = ``class_names[k]``.
    config : PixelClassifierConfig, optional
        Architecture; ``in_features``, ``class_names``, ``generator_sha256``, ``image_size`` and
        ``truncation_psi`` are filled in from the other arguments.

    Returns
    -------
    ensemble, provenance dict (seeds, pixel counts, seconds).
    """
    fit = fit or FitConfig()
    class_names = tuple(class_names)
    if len(seeds) != len(labels):
        raise ValueError("one seed per label map")
    validate_labels(labels, class_names, G.config.size, fit.min_labelled)
    cin = feature_channels(G)
    base = config or PixelClassifierConfig(in_features=cin)
    cfg = PixelClassifierConfig(
        in_features=cin,
        class_names=class_names,
        hidden=tuple(base.hidden),
        ensemble_size=base.ensemble_size,
        dropout=base.dropout,
        generator_sha256=generator_sha256,
        image_size=G.config.size,
        truncation_psi=float(truncation_psi),
    )
    t0 = time.perf_counter()
    total_work = len(labels) + cfg.ensemble_size * fit.epochs
    with FeatureStore(cin, fit.max_per_class, fit.seed, temp_dir) as store:
        for i, (seed, lab) in enumerate(zip(seeds, labels)):
            if cancel is not None:
                cancel.raise_if_cancelled()
            _, feats = image_and_features(G, int(seed), truncation_psi)
            store.add(feats, np.asarray(lab))
            del feats
            report(progress, i + 1, total_work, f"features of sample {seed}")
        mean, std = store.channel_stats()
        x_all, y_all = store.arrays()
        torch.manual_seed(fit.seed)
        ensemble = PixelEnsemble(cfg)
        ensemble.feat_mean.copy_(torch.from_numpy(mean))
        ensemble.feat_std.copy_(torch.from_numpy(std))
        dev = torch.device(device) if device is not None else torch.device("cpu")
        ensemble.to(dev)
        rows = store.rows
        counts = np.bincount(np.asarray(y_all), minlength=cfg.n_classes).astype(np.float64)
        # Balanced sampling caps frequent classes but cannot create rare pixels; weight the rest.
        weights = torch.tensor(
            np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / cfg.n_classes, 0.0) ** 0.5,
            dtype=torch.float32,
            device=dev,
        )
        step = len(labels)
        losses = []
        for m, member in enumerate(ensemble.members):
            member.train()
            opt = torch.optim.AdamW(member.parameters(), lr=fit.lr, weight_decay=fit.weight_decay)
            rng = np.random.default_rng(fit.seed * 1000 + m)
            for epoch in range(fit.epochs):
                order = rng.permutation(rows)
                # Sorted blocks of a random permutation read the memmap near-sequentially.
                for b in range(0, rows, fit.batch_size):
                    if cancel is not None and b % (fit.batch_size * 32) == 0:
                        cancel.raise_if_cancelled()
                    idx = np.sort(order[b : b + fit.batch_size])
                    if idx.size < 2:
                        continue
                    x = torch.from_numpy(np.asarray(x_all[idx], dtype=np.float32)).to(dev)
                    y = torch.from_numpy(np.asarray(y_all[idx], dtype=np.int64)).to(dev)
                    logits = member(ensemble.normalise(x))
                    loss = F.cross_entropy(logits, y, weight=weights)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                losses.append(float(loss.detach()))
                step += 1
                report(progress, step, total_work, f"member {m + 1}/{cfg.ensemble_size} epoch {epoch + 1}: loss {losses[-1]:.3f}")
            member.eval()
        provenance = {
            "kind": "datasetgan pixel classifier ensemble",
            "generator_sha256": generator_sha256,
            "seeds": [int(s) for s in seeds],
            "labelled_samples": len(labels),
            "pixels": int(rows),
            "pixels_per_class": {class_names[k]: int(v) for k, v in store.class_counts.items()},
            "fit": {k: getattr(fit, k) for k in fit.__dataclass_fields__},
            "final_losses": [round(v, 4) for v in losses[-cfg.ensemble_size :]],
            "seconds": round(time.perf_counter() - t0, 1),
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
        }
    ensemble.eval()
    return ensemble, provenance


def save_classifier(ensemble: PixelEnsemble, path: str | Path, provenance: dict | None = None) -> Path:
    return save_model(ensemble, ensemble.config, path, provenance=provenance)


def load_classifier(
    path: str | Path, generator: LoadedModel | None = None, device: torch.device | str | None = "cpu"
) -> LoadedModel:
    """Load an ensemble; with ``generator`` given, refuse a pair that does not belong together."""
    loaded = load_model(path, expected=CLASSIFIER_ARCH, device=device)
    if generator is not None:
        check_pair(generator, loaded, Path(path).name)
    return loaded


def check_pair(generator: LoadedModel, classifier: LoadedModel, name: str = "classifier") -> None:
    cfg: PixelClassifierConfig = classifier.config
    G: Generator = generator.module  # type: ignore[assignment]
    cin = feature_channels(G)
    if cfg.in_features != cin or cfg.image_size != G.config.size:
        raise SynthsegError(
            f"{name} was fitted on a generator with {cfg.in_features} features at {cfg.image_size} px, "
            f"this one has {cin} at {G.config.size} px; fit a classifier for this generator"
        )
    if cfg.generator_sha256 and generator.sha256 and cfg.generator_sha256 != generator.sha256:
        raise SynthsegError(
            f"{name} was fitted on generator {cfg.generator_sha256[:12]}, not on this one "
            f"({generator.sha256[:12]}); use the generator it was fitted on or fit again"
        )


__all__ = [
    "CLASSIFIER_ARCH",
    "DEFAULT_CLASSES",
    "FitConfig",
    "PixelClassifierConfig",
    "PixelEnsemble",
    "Prediction",
    "check_pair",
    "fit_ensemble",
    "jensen_shannon",
    "load_classifier",
    "predict_features",
    "save_classifier",
    "validate_labels",
]
