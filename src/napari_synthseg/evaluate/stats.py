"""Bootstrap confidence intervals (percentile method) for the numbers every report states."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

#: Bootstrap resamples used unless a caller asks otherwise.
N_BOOT = 1000


def _finite(values) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    return a[np.isfinite(a)]


def bootstrap_mean(values: Sequence[float], n_boot: int = N_BOOT, seed: int = 0, alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` and its (1 - alpha) percentile bootstrap CI."""
    a = _finite(values)
    if a.size == 0:
        return math.nan, math.nan, math.nan
    if a.size == 1:
        return float(a[0]), float(a[0]), float(a[0])
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(a.mean()), float(lo), float(hi)


def bootstrap_statistic(
    statistic: Callable[[np.ndarray], float], n: int, n_boot: int = N_BOOT, seed: int = 0, alpha: float = 0.05,
    strata: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile CI of ``statistic(indices)`` over resamples of ``range(n)`` (within ``strata``)."""
    rng = np.random.default_rng(seed)
    values = []
    groups = [np.arange(n)] if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    for _ in range(n_boot):
        idx = np.concatenate([g[rng.integers(0, g.size, size=g.size)] for g in groups if g.size])
        v = statistic(idx)
        if math.isfinite(v):
            values.append(v)
    if not values:
        return math.nan, math.nan
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def auc_with_ci(labels: Sequence[int], scores: Sequence[float], n_boot: int = N_BOOT, seed: int = 0,
                alpha: float = 0.05) -> tuple[float, float, float]:
    """ROC AUC (sklearn) and its stratified bootstrap CI: (auc, low, high); NaN for one class."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    if len(np.unique(y)) < 2:
        return math.nan, math.nan, math.nan
    auc = float(roc_auc_score(y, s))
    lo, hi = bootstrap_statistic(lambda i: float(roc_auc_score(y[i], s[i])), y.size, n_boot, seed, alpha, strata=y)
    return auc, lo, hi


def proportion_with_ci(successes: int, total: int, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
    """A proportion and its bootstrap CI (NaN when ``total`` is 0)."""
    if total <= 0:
        return math.nan, math.nan, math.nan
    values = np.zeros(total)
    values[:successes] = 1.0
    return bootstrap_mean(values, n_boot, seed)


def bootstrap_two_level(matrix: np.ndarray, n_boot: int = N_BOOT, seed: int = 0, alpha: float = 0.05,
                        statistic: Callable[[np.ndarray], float] | None = None) -> tuple[float, float, float]:
    """(mean, low, high) of a (training seeds x test cases) matrix, resampling both seeds and cases.

    The CI then covers both sources of variation a user meets: another training run and another
    set of test patients. NaN entries (undefined values) are ignored.
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim == 1:
        m = m[None]
    stat = statistic or (lambda a: float(np.nanmean(a)) if np.isfinite(a).any() else math.nan)
    value = stat(m)
    if m.size == 0 or not np.isfinite(m).any():
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        rows = rng.integers(0, m.shape[0], size=m.shape[0])
        cols = rng.integers(0, m.shape[1], size=m.shape[1])
        v = stat(m[np.ix_(rows, cols)])
        if math.isfinite(v):
            values.append(v)
    if not values:
        return value, math.nan, math.nan
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return value, float(lo), float(hi)
