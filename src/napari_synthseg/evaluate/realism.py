"""``realism_report``: does a set of synthetic lesions look like a set of real ones?

The report folder holds:

``report.json``
    ``auc``/``auc_ci`` (CNN two-sample test), ``feature_auc``/``feature_auc_ci`` (random forest on
    the hand-made features), ``frd`` and ``frd_backend``, ``control_auc``/``control_auc_ci`` and
    ``control_feature_auc`` (the same tests on two patient-disjoint halves of REAL: the noise
    floor), ``n_real``, ``n_synthetic``, per-feature importance and univariate AUCs, the inputs'
    paths and sha256, every setting.
``report.md``
    The same, readable, with the plots.
``features.csv``
    Every lesion's realism features (set, name, source, features...).
``plots/features.png``, ``plots/roc.png``
    Every feature's distribution, real vs synthetic, side by side (one panel per feature, its
    univariate AUC in the title); the ROC curves.
``realism_reference.json``
    The real lesions' feature ranges: give it to ``synthseg review --rules`` to flag single
    synthetic lesions that fall outside them.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Sequence, Union


from ..errors import SynthsegError
from ..qa.realism import FEATURE_NAMES, RealismReference, realism_features
from ..utils.atomic import atomic_write_text
from ..utils.progress import CancelToken, ProgressCallback, report
from . import plots
from .frd import compute_frd
from .lesion_sets import LesionSample, LesionSet, read_lesion_set, split_halves
from .report import environment, fmt, fmt_ci, write_json
from .two_sample import CNNConfig, cnn_two_sample_test, feature_two_sample_test, intensity_window

log = logging.getLogger(__name__)

LesionSetLike = Union[str, os.PathLike, LesionSet, Sequence[LesionSample]]


def as_lesion_set(value: LesionSetLike, crop_mm: float, spacing_mm: float, limit: int | None = None,
                  progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> LesionSet:
    """A :class:`LesionSet` from a path (read at ``crop_mm``/``spacing_mm``), a set or samples."""
    if isinstance(value, LesionSet):
        return value
    if isinstance(value, (str, os.PathLike)):
        return read_lesion_set(value, crop_mm, spacing_mm, limit=limit, progress=progress, cancel=cancel)
    samples = list(value)
    if not samples:
        raise SynthsegError("an empty lesion set cannot be evaluated")
    return LesionSet(samples, "<in memory>", "samples", "")


def _features(samples: Sequence[LesionSample], cancel: CancelToken | None) -> list[dict[str, float]]:
    rows = []
    for s in samples:
        if cancel is not None:
            cancel.raise_if_cancelled()
        rows.append(realism_features(s.image, s.mask, s.spacing))
    return rows


def realism_report(
    real: LesionSetLike,
    synthetic: LesionSetLike,
    out: str | os.PathLike,
    *,
    crop_mm: float = 32.0,
    spacing_mm: float = 1.0,
    folds: int = 5,
    steps: int = 200,
    batch_size: int = 16,
    seed: int = 0,
    n_boot: int = 1000,
    frd_backend: str = "auto",
    control: bool = True,
    cnn: bool = True,
    limit: int | None = None,
    device: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> dict:
    """Compare real and synthetic lesions; write the report folder ``out`` and return report.json.

    Parameters
    ----------
    real, synthetic : path, LesionSet or sequence of LesionSample
        The lesion sets (any layout :func:`~napari_synthseg.evaluate.lesion_sets.read_lesion_set`
        reads). Paths are read as crops of ``crop_mm`` at ``spacing_mm``.
    out : path
        Report folder (created; files in it are replaced).
    folds : int
        k of the group k-fold cross-validation (lowered to what the sets allow).
    steps, batch_size : int
        Training budget of the CNN per fold.
    n_boot : int
        Bootstrap resamples for every CI.
    frd_backend : str
        ``auto``, ``frd-score`` or ``synthseg-features`` (see :mod:`.frd`).
    control : bool
        Also run the real-vs-real control (two patient-disjoint halves of REAL).
    cnn : bool
        Run the CNN test (``False``: features only, for quick checks).
    limit : int, optional
        Read at most this many lesions per set.
    device : str, optional
        Torch device (default :func:`napari_synthseg.models.device.select_device`).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(exist_ok=True)
    total = 6
    report(progress, 0, total, "reading lesion sets")
    real_set = as_lesion_set(real, crop_mm, spacing_mm, limit, None, cancel)
    synth_set = as_lesion_set(synthetic, crop_mm, spacing_mm, limit, None, cancel)
    shapes = {s.image.shape for s in real_set.samples} | {s.image.shape for s in synth_set.samples}
    if len(shapes) > 1:
        raise SynthsegError(f"the sets' crops differ in shape {sorted(shapes)}: read both at the same crop and spacing")
    if len(real_set) < 4 or len(synth_set) < 2:
        raise SynthsegError(f"need at least 4 real and 2 synthetic lesions, got {len(real_set)} and {len(synth_set)}")
    report(progress, 1, total, "realism features")
    real_rows = _features(real_set.samples, cancel)
    synth_rows = _features(synth_set.samples, cancel)
    groups = [s.group or s.name for s in real_set.samples] + [s.group or s.name for s in synth_set.samples]

    report(progress, 2, total, "feature two-sample test")
    feat = feature_two_sample_test(real_rows, synth_rows, groups, folds, seed, n_boot)
    config = CNNConfig(steps=steps, batch_size=batch_size)
    window = intensity_window(real_set.samples)
    cnn_result = None
    if cnn:
        report(progress, 3, total, "CNN two-sample test")
        cnn_result = cnn_two_sample_test(real_set.samples, synth_set.samples, folds, config, seed, n_boot, device, window,
                                         cancel=cancel)

    control_result, control_feat = None, None
    if control:
        report(progress, 4, total, "real-vs-real control")
        half_a, half_b = split_halves(real_set.samples, seed)
        if len(half_a) >= 2 and len(half_b) >= 2:
            index = {id(s): i for i, s in enumerate(real_set.samples)}
            rows_a = [real_rows[index[id(s)]] for s in half_a]
            rows_b = [real_rows[index[id(s)]] for s in half_b]
            control_groups = [s.group or s.name for s in half_a] + [s.group or s.name for s in half_b]
            control_feat = feature_two_sample_test(rows_a, rows_b, control_groups, folds, seed, n_boot)
            if cnn:
                control_result = cnn_two_sample_test(half_a, half_b, folds, config, seed, n_boot, device, window,
                                                     cancel=cancel)
        else:
            log.warning("REAL has too few patients for a control")

    report(progress, 5, total, "Fréchet radiomics distance and plots")
    frd, backend = compute_frd(real_set.samples, synth_set.samples, real_rows, synth_rows, FEATURE_NAMES, frd_backend)
    reference = RealismReference.fit(real_rows, source=str(real_set.path))
    reference.save(out / "realism_reference.json")
    _write_features_csv(out / "features.csv", real_set, synth_set, real_rows, synth_rows)
    notes = {n: f"AUC {i['univariate_auc']:.2f}" for n, i in feat.extra["features"].items() if i["univariate_auc"] is not None}
    plots.feature_grid(out / "plots" / "features.png", {
        name: {"real": [r[name] for r in real_rows], "synthetic": [r[name] for r in synth_rows]} for name in FEATURE_NAMES
    }, notes)
    plot_files = ["features.png"]
    curves = {"features (RF)": (feat.labels, feat.scores)}
    if cnn_result is not None:
        curves["CNN"] = (cnn_result.labels, cnn_result.scores)
    if control_result is not None:
        curves["control CNN (real vs real)"] = (control_result.labels, control_result.scores)
    if control_feat is not None:
        curves["control features"] = (control_feat.labels, control_feat.scores)
    plots.roc_curves(out / "plots" / "roc.png", curves, "real (0) vs synthetic (1), held-out folds")

    main = cnn_result if cnn_result is not None else feat
    control_main = control_result if control_result is not None else control_feat
    result = {
        "kind": "synthseg-realism-report",
        "auc": main.auc,
        "auc_ci": list(main.auc_ci),
        "auc_method": "cnn" if cnn_result is not None else "features",
        "feature_auc": feat.auc,
        "feature_auc_ci": list(feat.auc_ci),
        "frd": frd,
        "frd_backend": backend,
        "control_auc": control_main.auc if control_main is not None else None,
        "control_auc_ci": list(control_main.auc_ci) if control_main is not None else None,
        "control_feature_auc": control_feat.auc if control_feat is not None else None,
        "control_feature_auc_ci": list(control_feat.auc_ci) if control_feat is not None else None,
        "n_real": len(real_set),
        "n_synthetic": len(synth_set),
        "cnn": cnn_result.to_dict() if cnn_result is not None else None,
        "features_test": {k: v for k, v in feat.to_dict().items()},
        "control": {"cnn": control_result.to_dict() if control_result else None,
                    "features": control_feat.to_dict() if control_feat else None},
        "datasets": {"real": real_set.describe(), "synthetic": synth_set.describe()},
        "settings": {"crop_mm": crop_mm, "spacing_mm": spacing_mm, "folds": folds, "steps": steps,
                     "batch_size": batch_size, "seed": seed, "n_boot": n_boot, "window": list(window),
                     "frd_backend": frd_backend, "limit": limit},
        "environment": environment(),
        "plots": ["plots/roc.png"] + [f"plots/{p}" for p in plot_files],
    }
    write_json(out / "report.json", result)
    atomic_write_text(out / "report.md", _markdown(result))
    report(progress, total, total, f"wrote {out}")
    return result


def _write_features_csv(path: Path, real_set: LesionSet, synth_set: LesionSet, real_rows, synth_rows) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["set", "name", "group", "source", "box_only", *FEATURE_NAMES])
    for label, lesion_set, rows in (("real", real_set, real_rows), ("synthetic", synth_set, synth_rows)):
        for s, row in zip(lesion_set.samples, rows):
            writer.writerow([label, s.name, s.group, s.source, int(s.box_only), *(f"{row[n]:.6g}" for n in FEATURE_NAMES)])
    atomic_write_text(path, buf.getvalue())


def _markdown(r: dict) -> str:
    feats = r["features_test"]["features"]
    lines = [
        "# Realism report",
        "",
        f"Real: `{r['datasets']['real']['path']}` ({r['n_real']} lesions, sha256 `{r['datasets']['real']['sha256'][:16]}`); "
        f"synthetic: `{r['datasets']['synthetic']['path']}` ({r['n_synthetic']} lesions, sha256 "
        f"`{r['datasets']['synthetic']['sha256'][:16]}`).",
        "",
        "An AUC of 0.5 means a classifier cannot tell the sets apart; the control (two halves of the real set) "
        "shows how far from 0.5 chance alone lands with these set sizes.",
        "",
        "| test | AUC [95 % CI] | control AUC (real vs real) |",
        "|---|---|---|",
    ]
    if r["cnn"] is not None:
        ctrl = r["control"]["cnn"]
        lines.append(f"| CNN on crops ({r['cnn']['model']}) | {fmt_ci(r['cnn']['auc'], r['cnn']['auc_ci'])} | "
                     f"{fmt_ci(ctrl['auc'], ctrl['auc_ci']) if ctrl else 'n/a'} |")
    ctrl = r["control"]["features"]
    lines.append(f"| random forest on realism features | {fmt_ci(r['feature_auc'], r['feature_auc_ci'])} | "
                 f"{fmt_ci(ctrl['auc'], ctrl['auc_ci']) if ctrl else 'n/a'} |")
    lines += [
        "",
        f"Fréchet radiomics distance: **{fmt(r['frd'])}** (backend `{r['frd_backend']}`; compare runs of one backend only).",
        "",
        "## What gives the synthetic lesions away",
        "",
        "| feature | RF importance | univariate AUC | real median | synthetic median |",
        "|---|---|---|---|---|",
    ]
    for name in r["features_test"]["ranked_features"]:
        f = feats[name]
        lines.append(f"| {name} | {fmt(f['importance'])} | {fmt(f['univariate_auc'])} | {fmt(f['real_median'], 4)} | "
                     f"{fmt(f['synthetic_median'], 4)} |")
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in r["plots"]]
    s = r["settings"]
    lines += ["", "## Settings", "",
              f"- crops {s['crop_mm']} mm at {s['spacing_mm']} mm, {s['folds']}-fold group cross-validation, "
              f"CNN {s['steps']} steps × batch {s['batch_size']} per fold, seed {s['seed']}, {s['n_boot']} bootstrap resamples",
              f"- intensity window of the CNN (from the real crops): {s['window']}",
              f"- napari-synthseg {r['environment']['napari_synthseg']}, torch {r['environment']['torch']}, "
              f"{r['environment']['created']}"]
    return "\n".join(lines) + "\n"
