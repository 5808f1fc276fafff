"""PNG figures for the reports (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def feature_grid(path: Path, panels: dict[str, dict[str, Sequence[float]]], notes: dict[str, str] | None = None,
                 columns: int = 4) -> Path:
    """Every feature's distributions side by side, one panel per feature, in one PNG (one
    savefig instead of one per feature: matplotlib's rendering dominates the report's time)."""
    plt = _pyplot()
    names = list(panels)
    rows = max(1, -(-len(names) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), dpi=80, squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        finite = {k: np.asarray(v, float)[np.isfinite(np.asarray(v, float))] for k, v in panels[name].items()}
        all_values = np.concatenate([v for v in finite.values() if v.size] or [np.zeros(1)])
        lo, hi = np.quantile(all_values, [0.01, 0.99]) if all_values.size > 1 else (all_values[0] - 1, all_values[0] + 1)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 25)
        for label, values in finite.items():
            ax.hist(np.clip(values, bins[0], bins[-1]), bins=bins, alpha=0.55, density=True, label=f"{label} ({values.size})")
        note = (notes or {}).get(name, "")
        ax.set_title(name + (f"  {note}" if note else ""), fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def roc_curves(path: Path, curves: dict[str, tuple[Sequence[int], Sequence[float]]], title: str) -> Path:
    """ROC curves (sklearn) of several labelled score sets in one figure."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=100)
    for label, (y, s) in curves.items():
        if len(set(np.asarray(y).tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc_score(y, s):.2f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def line_plot(path: Path, series: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str,
              title: str, logx: bool = False) -> Path:
    """One line per named (x, y) series."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=100)
    for label, (x, y) in series.items():
        ax.plot(x, y, marker="o", ms=3, label=label)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def bar_plot(path: Path, labels: Sequence[str], values: Sequence[float], errors: Sequence[tuple[float, float]] | None,
             ylabel: str, title: str) -> Path:
    """Bars with optional (low, high) CI whiskers."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(labels) + 1.5), 3.6), dpi=100)
    x = np.arange(len(labels))
    v = np.asarray(values, float)
    yerr = None
    if errors is not None:
        lo = np.array([max(0.0, vi - e[0]) if np.isfinite(e[0]) else 0.0 for vi, e in zip(v, errors)])
        hi = np.array([max(0.0, e[1] - vi) if np.isfinite(e[1]) else 0.0 for vi, e in zip(v, errors)])
        yerr = np.vstack([lo, hi])
    ax.bar(x, np.nan_to_num(v), yerr=yerr, capsize=3, color="#4c72b0")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
