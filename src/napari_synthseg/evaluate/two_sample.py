"""Classifier two-sample tests: can a model tell real lesions from synthetic ones?

A classifier is trained k-fold (folds split by patient/series group, so a patient's lesions never
sit on both sides of a fold) and scored on its held-out folds; the pooled out-of-fold scores give
a ROC AUC with a bootstrap CI. An AUC of 0.5 means the sets are indistinguishable to that model.

Two classifiers:

- :func:`cnn_two_sample_test`: a small convolutional network (``monai.networks.nets.Classifier``)
  on the crops' pixels, windowed alike for both sets;
- :func:`feature_two_sample_test`: a random forest (scikit-learn) on the hand-made realism
  features of :mod:`napari_synthseg.qa.realism`, with each feature's importance and its own
  univariate AUC, so a user sees *what* gives the synthetic lesions away.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import SynthsegError
from ..qa.realism import FEATURE_NAMES
from ..utils.progress import CancelToken, ProgressCallback, report
from .lesion_sets import LesionSample
from .stats import auc_with_ci

log = logging.getLogger(__name__)


@dataclass
class TwoSampleResult:
    """Held-out scores of one two-sample test (label 1 = synthetic)."""

    auc: float
    auc_ci: tuple[float, float]
    labels: np.ndarray
    scores: np.ndarray
    folds: int
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"auc": _clean(self.auc), "auc_ci": [_clean(v) for v in self.auc_ci], "folds": self.folds,
                "n": int(self.labels.size), **self.extra}


def _clean(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)


def _folds(labels: np.ndarray, groups: Sequence[str], k: int, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold

    counts = np.bincount(labels, minlength=2)
    n_groups = len(set(groups))
    k = int(min(k, counts.min(), n_groups))
    if k < 2:
        raise SynthsegError(f"a two-sample test needs at least 2 lesions (from 2 patients) per set, got {counts.tolist()}")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return k, list(splitter.split(np.zeros(labels.size), labels, groups))


def _labels_groups(real: Sequence[LesionSample], synthetic: Sequence[LesionSample]):
    labels = np.array([0] * len(real) + [1] * len(synthetic), dtype=int)
    # Groups are per patient; a synthetic lesion inserted into a real patient's image shares
    # that patient's group, so pairs of the same background stay in one fold.
    groups = [s.group or s.name for s in real] + [s.group or s.name for s in synthetic]
    return labels, groups


# ---- features ---------------------------------------------------------------------------------


def feature_matrix(rows: Sequence[dict[str, float]], names: Sequence[str] = FEATURE_NAMES) -> np.ndarray:
    return np.array([[r.get(n, math.nan) for n in names] for r in rows], dtype=float)


def feature_two_sample_test(
    real_features: Sequence[dict[str, float]],
    synthetic_features: Sequence[dict[str, float]],
    groups: Sequence[str],
    folds: int = 5,
    seed: int = 0,
    n_boot: int = 1000,
    names: Sequence[str] = FEATURE_NAMES,
) -> TwoSampleResult:
    """Random-forest two-sample test on realism features; ``groups`` lists real then synthetic."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline

    x = feature_matrix(list(real_features) + list(synthetic_features), names)
    labels = np.array([0] * len(real_features) + [1] * len(synthetic_features), dtype=int)
    k, splits = _folds(labels, list(groups), folds, seed)
    scores = np.zeros(labels.size)
    importance = np.zeros(len(names))
    for train, test in splits:
        model = make_pipeline(
            SimpleImputer(strategy="median", keep_empty_features=True),
            RandomForestClassifier(n_estimators=100, min_samples_leaf=2, random_state=seed, n_jobs=1),
        )
        model.fit(x[train], labels[train])
        scores[test] = model.predict_proba(x[test])[:, 1]
        importance += model[-1].feature_importances_ / k
    auc, lo, hi = auc_with_ci(labels, scores, n_boot, seed)
    per_feature = {}
    for j, name in enumerate(names):
        col = x[:, j]
        ok = np.isfinite(col)
        single = float(roc_auc_score(labels[ok], col[ok])) if ok.sum() > 1 and len(set(labels[ok])) == 2 else math.nan
        per_feature[name] = {
            "importance": float(importance[j]),
            # Direction-free separability of this feature alone: 0.5 = same, 1.0 = disjoint.
            "univariate_auc": _clean(max(single, 1.0 - single)) if math.isfinite(single) else None,
            "real_median": _clean(float(np.nanmedian(col[labels == 0]))) if np.isfinite(col[labels == 0]).any() else None,
            "synthetic_median": _clean(float(np.nanmedian(col[labels == 1]))) if np.isfinite(col[labels == 1]).any() else None,
        }
    ranked = sorted(per_feature, key=lambda n: -per_feature[n]["importance"])
    return TwoSampleResult(auc, (lo, hi), labels, scores, k,
                           {"model": "sklearn RandomForestClassifier(100 trees)", "features": per_feature,
                            "ranked_features": ranked})


# ---- CNN --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CNNConfig:
    """The small CNN of the two-sample test (``monai.networks.nets.Classifier``)."""

    channels: tuple[int, ...] = (8, 16, 32)
    strides: tuple[int, ...] = (2, 2, 2)
    steps: int = 200
    batch_size: int = 16
    learning_rate: float = 1e-3
    num_res_units: int = 1


def intensity_window(samples: Sequence[LesionSample]) -> tuple[float, float]:
    """(low, high): the 0.5-99.5 % range of the given (real) crops, applied alike to every set."""
    values = np.concatenate([s.image.ravel()[:: max(1, s.image.size // 4096)] for s in samples])
    lo, hi = np.quantile(values, [0.005, 0.995])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def stack_inputs(samples: Sequence[LesionSample], window: tuple[float, float]) -> np.ndarray:
    lo, hi = window
    x = np.stack([np.clip((s.image - lo) / (hi - lo), 0.0, 1.0) for s in samples]).astype(np.float32)
    return x[:, None]


def _augment(batch, rng: np.random.Generator):
    import torch

    # Flips along every spatial axis and a 90 degree in-plane turn: orientation carries no
    # information about realism, and the sets are small.
    dims = list(range(2, batch.ndim))
    for d in dims:
        if rng.random() < 0.5:
            batch = torch.flip(batch, dims=[d])
    if rng.random() < 0.5:
        batch = torch.rot90(batch, k=1, dims=dims[-2:])
    return batch


def train_cnn_classifier(x: np.ndarray, y: np.ndarray, config: CNNConfig, seed: int, device, cancel: CancelToken | None = None):
    """A trained ``Classifier`` (logit output) on inputs ``x`` (N, 1, ...) and labels ``y``."""
    import torch
    from monai.networks.nets import Classifier

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = Classifier(in_shape=x.shape[1:], classes=1, channels=config.channels, strides=config.strides,
                       num_res_units=config.num_res_units).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    half = max(1, config.batch_size // 2)
    model.train()
    for step in range(config.steps):
        if cancel is not None and step % 10 == 0:
            cancel.raise_if_cancelled()
        # Balanced batches: each set gives half, whatever the set sizes.
        idx = np.concatenate([rng.choice(pos, half), rng.choice(neg, half)])
        batch = _augment(torch.from_numpy(x[idx]).to(device), rng)
        target = torch.from_numpy(y[idx].astype(np.float32)).to(device)[:, None]
        optimiser.zero_grad()
        loss = loss_fn(model(batch), target)
        loss.backward()
        optimiser.step()
    model.eval()
    return model


def predict_cnn(model, x: np.ndarray, device, batch_size: int = 32) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            batch = torch.from_numpy(x[i : i + batch_size]).to(device)
            # Test-time: average over the flips used in training, for a steadier score.
            logits = model(batch) + model(torch.flip(batch, dims=[-1]))
            out.append(torch.sigmoid(logits / 2).cpu().numpy()[:, 0])
    return np.concatenate(out) if out else np.zeros(0)


def cnn_two_sample_test(
    real: Sequence[LesionSample],
    synthetic: Sequence[LesionSample],
    folds: int = 5,
    config: CNNConfig = CNNConfig(),
    seed: int = 0,
    n_boot: int = 1000,
    device=None,
    window: tuple[float, float] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> TwoSampleResult:
    """k-fold CNN two-sample test on the crops' pixels (window from ``real`` unless given)."""
    import torch

    from ..models.device import select_device

    device = select_device(device)
    labels, groups = _labels_groups(real, synthetic)
    window = window or intensity_window(real)
    x = stack_inputs(list(real) + list(synthetic), window)
    k, splits = _folds(labels, groups, folds, seed)
    scores = np.zeros(labels.size)
    threads = torch.get_num_threads()
    for i, (train, test) in enumerate(splits):
        model = train_cnn_classifier(x[train], labels[train], config, seed + i, device, cancel)
        scores[test] = predict_cnn(model, x[test], device)
        report(progress, i + 1, k, f"CNN fold {i + 1}/{k}")
    auc, lo, hi = auc_with_ci(labels, scores, n_boot, seed)
    return TwoSampleResult(auc, (lo, hi), labels, scores, k, {
        "model": f"monai Classifier channels={list(config.channels)} strides={list(config.strides)}",
        "steps_per_fold": config.steps, "batch_size": config.batch_size, "window": list(window),
        "device": str(device), "torch_threads": threads,
    })
