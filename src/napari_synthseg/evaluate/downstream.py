"""``downstream_report``: do synthetic lesions make a segmenter better on real ones?

The same segmenter (:mod:`.segmenter`, MONAI ``BasicUNet``) is trained with the same budget in
several *arms* that differ only in their training lesions, then scored on real TEST lesions that
no arm trains on (:mod:`.scoring`):

``real``
    All real training lesions.
``real+<name>x<ratio>``
    The real lesions plus ``ratio`` × as many synthetic lesions of set ``<name>`` (LINOP's
    +50 %, +100 %); fewer when the synthetic set is smaller (the report states the count).
``<name>-only``
    Only the synthetic lesions of set ``<name>`` (Hu et al.).
``real<fraction>``
    A ``fraction`` (e.g. 0.125 ... 0.5) of the real lesions (LINOP's data-efficiency curve).

Each arm runs once per training seed; subsets are drawn with that seed. Dice, lesion-level
sensitivity (overall, below 10 mm and by size bin) and FROC come with 95 % bootstrap CIs that
resample both the training seeds and the test cases.

Every arm is also compared with the ``real`` arm *paired*: the same training seeds and the same
test cases, so the CI of the gain (:func:`compare_arms`) is much narrower than two separate CIs
side by side, which overlap long before a gain is doubtful.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np

from ..errors import SynthsegError
from ..utils.atomic import atomic_write_text
from ..utils.progress import CancelToken, ProgressCallback, report
from . import plots
from .lesion_sets import LesionSample, LesionSet
from .realism import LesionSetLike, as_lesion_set
from .report import environment, fmt, fmt_ci, markdown_to_html, write_json
from .scoring import FROC_FP_RATES, SIZE_BINS, CaseScore, froc, score_case, size_bin
from .segmenter import SegmenterConfig, predict, train_segmenter
from .stats import bootstrap_statistic, bootstrap_two_level
from .two_sample import intensity_window

log = logging.getLogger(__name__)

SyntheticSets = Union[LesionSetLike, Mapping[str, LesionSetLike]]

#: Lesions below this diameter count as "small" (the issue's and LUNA16's < 10 mm).
SMALL_LESION_MM = 10.0


@dataclass(frozen=True)
class Arm:
    """One way of composing the training set."""

    name: str
    kind: str  # "real", "real+synthetic", "synthetic-only", "real-fraction"
    real_fraction: float = 1.0
    synthetic: str | None = None
    ratio: float | None = None

    def select(self, real: Sequence[LesionSample], synthetic: Mapping[str, Sequence[LesionSample]],
               seed: int) -> tuple[list[LesionSample], list[LesionSample]]:
        """(real, synthetic) training lesions of this arm for training seed ``seed``."""
        key = int.from_bytes(hashlib.sha256(f"{self.name}:{seed}".encode()).digest()[:4], "big")
        rng = np.random.default_rng(key)
        n_real = 0 if self.kind == "synthetic-only" else max(1, int(round(self.real_fraction * len(real))))
        chosen_real = [real[i] for i in sorted(rng.permutation(len(real))[:n_real])]
        chosen_synth: list[LesionSample] = []
        if self.synthetic is not None:
            pool = synthetic[self.synthetic]
            n = len(pool) if self.kind == "synthetic-only" else min(len(pool), int(round((self.ratio or 0) * len(chosen_real))))
            chosen_synth = [pool[i] for i in sorted(rng.permutation(len(pool))[:n])]
        return chosen_real, chosen_synth


def plan_arms(synthetic_names: Sequence[str], ratios: Sequence[float] = (0.5, 1.0),
              real_fractions: Sequence[float] = (), synthetic_only: bool = True, include_real: bool = True) -> list[Arm]:
    """The arms of a comparison, in report order."""
    arms = [Arm("real", "real")] if include_real else []
    for f in sorted(set(real_fractions)):
        if not 0 < f <= 1:
            raise SynthsegError(f"real fractions lie in (0, 1], got {f}")
        if f < 1:
            arms.append(Arm(f"real{f:g}", "real-fraction", real_fraction=f))
    for name in synthetic_names:
        for ratio in ratios:
            if ratio <= 0:
                raise SynthsegError(f"synthetic ratios must be positive, got {ratio}")
            arms.append(Arm(f"real+{name}x{ratio:g}", "real+synthetic", synthetic=name, ratio=ratio))
        if synthetic_only:
            arms.append(Arm(f"{name}-only", "synthetic-only", synthetic=name))
    if not arms:
        raise SynthsegError("no arms to train: give real lesions, ratios or synthetic-only")
    return arms


def arms_for(real_samples: Sequence, synthetic_names: Sequence[str], ratios: Sequence[float],
             real_fractions: Sequence[float], synthetic_only: bool) -> list[Arm]:
    """The arms that can run with what was given: without real lesions, synthetic-only ones."""
    arms = plan_arms(list(synthetic_names), ratios, real_fractions if real_samples else (), synthetic_only,
                     include_real=bool(real_samples))
    if not real_samples:
        arms = [a for a in arms if a.kind == "synthetic-only"]
    return arms


def as_synthetic_sets(synthetic: SyntheticSets | None, read) -> dict[str, LesionSet]:
    if synthetic is None:
        return {}
    if isinstance(synthetic, Mapping):
        items = list(synthetic.items())
    else:
        items = [("synthetic", synthetic)]
    out = {}
    for name, value in items:
        if not name or not all(c.isalnum() or c in "-_" for c in name):
            raise SynthsegError(f"synthetic set names are letters, digits, - and _; got {name!r}")
        out[name] = read(value)
    return out


def patch_voxels(crop_mm: float, spacing_mm: float) -> int:
    """Training patch edge in voxels: ``crop_mm`` rounded up to a multiple of 16, at least 32
    (BasicUNet pools four times and instance norm needs more than one voxel at the bottom)."""
    n = int(round(crop_mm / spacing_mm))
    return max(32, int(math.ceil(n / 16.0)) * 16)


def _context_mm(crop_mm: float, spacing_mm: float) -> float:
    # The context crop is 1.5x the training patch, rounded up to a multiple of 16 voxels so the
    # UNet's four poolings divide it.
    n = patch_voxels(crop_mm, spacing_mm)
    return int(math.ceil(1.5 * n / 16.0) * 16) * spacing_mm


def downstream_report(
    real: LesionSetLike,
    synthetic: SyntheticSets | None,
    test: LesionSetLike,
    out: str | os.PathLike,
    *,
    steps: int = 300,
    seeds: Sequence[int] = (0, 1, 2),
    ratios: Sequence[float] = (0.5, 1.0),
    real_fractions: Sequence[float] = (),
    synthetic_only: bool = True,
    crop_mm: float = 32.0,
    spacing_mm: float = 1.0,
    batch_size: int = 4,
    features: Sequence[int] = (8, 8, 16, 32, 64, 8),
    learning_rate: float = 2e-3,
    n_boot: int = 1000,
    test_crop_mm: float | None = None,
    limit: int | None = None,
    device: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> dict:
    """Train every arm with every seed, score on TEST, write the report folder ``out``.

    Parameters
    ----------
    real, test : path, LesionSet or sequence of LesionSample
        Real training lesions and real test lesions (patients must not overlap; the caller's
        split decides, e.g. :func:`napari_synthseg.io.lesion_index.split_by_group`). Paths
        are read as context crops of 1.5 × ``crop_mm`` (rounded up to 16 voxels).
    synthetic : lesion set, mapping name -> lesion set, or None
        Synthetic training lesions; several named sets give several arms each.
    steps : int
        Training steps per arm and seed (the fixed budget).
    seeds : sequence of int
        Training seeds (≥ 3 for a CI over training runs).
    ratios : sequence of float
        Synthetic lesions per real lesion for the ``real+`` arms.
    real_fractions : sequence of float
        Fractions < 1 of the real lesions for the data-efficiency arms.
    synthetic_only : bool
        Add a ``<name>-only`` arm per synthetic set.
    crop_mm, spacing_mm : float
        Training patch edge and pixel size, mm.
    batch_size, features, learning_rate
        The segmenter (``BasicUNet`` features) and its optimiser.
    n_boot : int
        Bootstrap resamples.
    test_crop_mm : float, optional
        Edge of the test crops (default: the training context, 1.5 × ``crop_mm`` rounded up to
        16 voxels; must be a multiple of 16 voxels). Smaller is faster and leaves fewer places
        for false positives.
    limit : int, optional
        Read at most this many lesions per set (tests).
    device : str, optional
        Torch device (default :func:`napari_synthseg.models.device.select_device`: cuda, mps, cpu).

    Returns
    -------
    dict
        The report (also ``out/report.json``): ``arms`` with ``dice``, ``dice_ci``,
        ``sensitivity``, ``sensitivity_ci``, ``sensitivity_by_size``, ``froc``, ``froc_ci``...
    """
    from ..models.device import select_device

    if steps < 1:
        raise SynthsegError(f"--steps must be at least 1, got {steps}")
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise SynthsegError("give at least one training seed")
    dev = select_device(device)
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    context = _context_mm(crop_mm, spacing_mm)
    patch = patch_voxels(crop_mm, spacing_mm)

    def read(value, size=context):
        return as_lesion_set(value, size, spacing_mm, limit, None, cancel)

    real_set = read(real) if real is not None else None
    synth_sets = as_synthetic_sets(synthetic, read)
    test_size = context if test_crop_mm is None else float(test_crop_mm)
    if int(round(test_size / spacing_mm)) % 16:
        raise SynthsegError(f"the test crop must be a multiple of 16 voxels, got {test_size:g} mm at {spacing_mm:g} mm")
    test_set = read(test, test_size)
    real_samples = real_set.samples if real_set is not None else []
    arms = arms_for(real_samples, list(synth_sets), ratios, real_fractions, synthetic_only)
    if not arms:
        raise SynthsegError("without real training lesions only synthetic-only arms can run; give --synthetic")
    ndims = {s.ndim for s in test_set.samples} | {s.ndim for s in real_samples} | {
        s.ndim for ls in synth_sets.values() for s in ls.samples}
    if len(ndims) > 1:
        raise SynthsegError("the real, synthetic and test lesions mix 2D and 3D")
    window = intensity_window(real_samples or test_set.samples)
    config = SegmenterConfig(features=tuple(int(f) for f in features), steps=steps, batch_size=batch_size,
                             learning_rate=learning_rate, patch=patch)
    synth_samples = {k: v.samples for k, v in synth_sets.items()}
    total = len(arms) * len(seeds) * steps
    done = 0
    arm_reports = []
    froc_curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    started = time.perf_counter()
    for arm in arms:
        per_seed = []
        cases_by_seed: list[list[CaseScore]] = []
        for seed in seeds:
            train_real, train_synth = arm.select(real_samples, synth_samples, seed)
            train = train_real + train_synth
            if not train:
                raise SynthsegError(f"arm {arm.name} has no training lesions")
            base = done

            def on_step(step, base=base, arm=arm, seed=seed):
                if step % 10 == 0 or step == steps:
                    report(progress, base + step, total, f"{arm.name} seed {seed}: step {step}/{steps}")

            t0 = time.perf_counter()
            model, loss = train_segmenter(train, window, config, seed, dev, on_step, cancel)
            probs = predict(model, test_set.samples, window, dev)
            cases = [score_case(p, s) for p, s in zip(probs, test_set.samples)]
            done += steps
            cases_by_seed.append(cases)
            f_score, _fps, _sens = froc(cases)
            detected = [d for c in cases for d in c.detected]
            per_seed.append({"seed": seed, "n_real": len(train_real), "n_synthetic": len(train_synth),
                             "dice": float(np.mean([c.dice for c in cases])),
                             "sensitivity": float(np.mean(detected)) if detected else None, "froc": f_score,
                             "final_loss": loss, "seconds": round(time.perf_counter() - t0, 1)})
        arm_reports.append(summarise_arm(arm, per_seed, cases_by_seed, n_boot, seeds[0]))
        froc_curves[arm.name] = pooled_froc(cases_by_seed)

    paired = compare_arms(arm_reports, "real", n_boot, seeds[0]) if any(a["name"] == "real" for a in arm_reports) else []
    result = {
        "kind": "synthseg-downstream-report",
        "arms": arm_reports,
        "paired": paired,
        "n_test": len(test_set),
        "n_real": len(real_samples),
        "n_synthetic": {k: len(v) for k, v in synth_sets.items()},
        "datasets": {"real": real_set.describe() if real_set else None,
                     "synthetic": {k: v.describe() for k, v in synth_sets.items()}, "test": test_set.describe()},
        "settings": {"steps": steps, "seeds": seeds, "ratios": list(ratios), "real_fractions": list(real_fractions),
                     "synthetic_only": synthetic_only, "crop_mm": crop_mm, "patch_voxels": patch, "context_mm": context, "test_crop_mm": test_size,
                     "spacing_mm": spacing_mm, "window": list(window), "segmenter": {
                         "model": "monai.networks.nets.BasicUNet", **config.to_dict()},
                     "loss": "monai.losses.DiceCELoss(sigmoid=True)", "optimiser": "Adam",
                     "augmentation": "random patch position inside the context crop, random flips",
                     "detection_threshold": 0.5, "froc_fp_rates": list(FROC_FP_RATES), "n_boot": n_boot,
                     "size_bins": [b[2] for b in SIZE_BINS], "device": str(dev), "limit": limit},
        "environment": environment(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_downstream_report(out, result, froc_curves)
    report(progress, total, total, f"wrote {out}")
    return result


def write_downstream_report(out: Path, result: dict, froc_curves: dict) -> dict:
    """Plots, ``report.json``, ``report.md`` and ``report.html`` of a downstream result."""
    (out / "plots").mkdir(parents=True, exist_ok=True)
    result["plots"] = _plots(out, result, froc_curves)
    write_json(out / "report.json", result)
    markdown = _markdown(result)
    atomic_write_text(out / "report.md", markdown)
    atomic_write_text(out / "report.html", markdown_to_html(markdown, "Downstream report"))
    return result


def pooled_froc(cases_by_seed: list[list[CaseScore]]) -> tuple[np.ndarray, np.ndarray]:
    # Pooling every seed's candidates over seeds x images gives the seed-averaged curve.
    _score, fps, sens = froc([c for cases in cases_by_seed for c in cases])
    return fps, sens


def load_report_arms(reports: Sequence[str | os.PathLike]) -> list[dict]:
    """The arms of several downstream reports (folders or ``report.json`` files), for
    :func:`compare_arms` across runs on the same test set.

    An arm name met again (the ``real`` baseline of every run) is kept once when its outcomes
    are the same. When the runs trained it the same way on the same data (settings other than
    the seeds, and the datasets' checksums, equal) with **other seeds**, its seeds are pooled:
    a later run that adds seeds 2 to a run of seeds 0 and 1 gives a three-seed comparison.
    Otherwise it is renamed ``name@<folder>``.

    Raises
    ------
    SynthsegError
        For a missing or unreadable report, or one written before per-case outcomes were kept.
    """
    import json

    arms: list[dict] = []
    seen: dict[str, dict] = {}
    for item in reports:
        path = Path(item)
        path = path / "report.json" if path.is_dir() else path
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SynthsegError(f"cannot read the downstream report {path}: {exc}") from None
        if data.get("kind") != "synthseg-downstream-report":
            raise SynthsegError(f"{path} is not a downstream report")
        for arm in data["arms"]:
            if "outcomes" not in arm:
                raise SynthsegError(f"{path}: arm {arm['name']!r} has no per-case outcomes (a report from before "
                                    "they were kept); run it again")
            arm = dict(arm, recipe=_arm_recipe(data, arm), reports=[str(path.parent)])
            name = arm["name"]
            if name in seen:
                earlier = seen[name]
                if earlier["outcomes"] == arm["outcomes"]:
                    continue
                if _can_pool(earlier, arm):
                    pooled = _pool_seeds(earlier, arm)
                    arms[arms.index(earlier)] = seen[name] = pooled
                    continue
                arm = dict(arm, name=f"{name}@{path.parent.name}")
            seen[arm["name"]] = arm
            arms.append(arm)
    return arms


# Settings that do not change how an arm is trained or scored: which seeds and which other arms
# a run had, the bootstrap's resample count, and the device (seeds from a GPU run are seeds too).
_NOT_RECIPE = ("seeds", "ratios", "real_fractions", "synthetic_only", "n_boot", "device")


def _arm_recipe(report: Mapping[str, Any], arm: Mapping[str, Any]) -> str | None:
    """What must match for two runs' seeds of ``arm`` to be pooled (None: the report lacks it)."""
    import json

    settings, datasets = report.get("settings"), report.get("datasets")
    if not settings or not datasets:
        return None
    synthetic = arm.get("synthetic_set")
    recipe = {
        "settings": {k: v for k, v in settings.items() if k not in _NOT_RECIPE},
        "arm": {k: arm.get(k) for k in ("kind", "ratio", "real_fraction")},
        "real": (datasets.get("real") or {}).get("sha256"),
        "test": (datasets.get("test") or {}).get("sha256"),
        "synthetic": ((datasets.get("synthetic") or {}).get(synthetic) or {}).get("sha256") if synthetic else None,
    }
    return json.dumps(recipe, sort_keys=True, default=str)


def _can_pool(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    oa, ob = a["outcomes"], b["outcomes"]
    return (a.get("recipe") is not None and a.get("recipe") == b.get("recipe")
            and not set(oa["seeds"]) & set(ob["seeds"])
            and np.allclose(np.asarray(oa["lesion_diameters"], float), np.asarray(ob["lesion_diameters"], float)))


def _pool_seeds(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict:
    """``a`` with ``b``'s seeds added (outcome rows and per-seed summaries; the CIs of the
    single runs no longer apply and are dropped)."""
    oa, ob = a["outcomes"], b["outcomes"]
    outcomes = {"seeds": [*oa["seeds"], *ob["seeds"]], "dice": [*oa["dice"], *ob["dice"]],
                "detected": [*oa["detected"], *ob["detected"]], "lesion_diameters": oa["lesion_diameters"]}
    dice = np.asarray(outcomes["dice"], float)
    kept = {k: v for k, v in a.items() if not k.endswith("_ci")}
    return dict(kept, outcomes=outcomes, per_seed=[*a.get("per_seed", []), *b.get("per_seed", [])],
                dice=float(np.nanmean(dice)) if dice.size else math.nan,
                reports=[*a.get("reports", []), *b.get("reports", [])])


def summarise_arm(arm: Arm, per_seed: list[dict], cases_by_seed: list[list[CaseScore]], n_boot: int, seed: int) -> dict:
    dice = np.array([[c.dice for c in cases] for cases in cases_by_seed])
    detected = np.array([[float(d) for c in cases for d in c.detected] for cases in cases_by_seed])
    diameters = np.array([d for c in cases_by_seed[0] for d in c.lesion_diameters])
    d_mean, d_lo, d_hi = bootstrap_two_level(dice, n_boot, seed)
    s_mean, s_lo, s_hi = bootstrap_two_level(detected, n_boot, seed) if detected.size else (math.nan,) * 3
    small = np.flatnonzero(diameters < SMALL_LESION_MM)
    small_v, small_lo, small_hi = (bootstrap_two_level(detected[:, small], n_boot, seed) if small.size
                                   else (math.nan,) * 3)
    by_size: dict[str, dict[str, Any]] = {}
    bins = np.array([size_bin(d) for d in diameters])
    for _lo, _hi, name in SIZE_BINS:
        cols = np.flatnonzero(bins == name)
        if cols.size == 0:
            by_size[name] = {"sensitivity": None, "ci": None, "n": 0}
            continue
        v, lo, hi = bootstrap_two_level(detected[:, cols], n_boot, seed)
        by_size[name] = {"sensitivity": v, "ci": [lo, hi], "n": int(cols.size)}
    froc_seeds = [s["froc"] for s in per_seed]
    n_cases = len(cases_by_seed[0])

    def froc_resample(idx: np.ndarray) -> float:
        # Same resampled cases for every seed, then the mean over seeds.
        return float(np.nanmean([froc([cases[i] for i in idx])[0] for cases in cases_by_seed]))

    f_lo, f_hi = bootstrap_statistic(froc_resample, n_cases, max(50, n_boot // 5), seed)
    return {
        "name": arm.name,
        "kind": arm.kind,
        "synthetic_set": arm.synthetic,
        "ratio": arm.ratio,
        "real_fraction": arm.real_fraction if arm.kind != "synthetic-only" else 0.0,
        "n_real": [s["n_real"] for s in per_seed],
        "n_synthetic": [s["n_synthetic"] for s in per_seed],
        "dice": d_mean,
        "dice_ci": [d_lo, d_hi],
        "dice_seed_sd": float(np.std([s["dice"] for s in per_seed])),
        "sensitivity": s_mean,
        "sensitivity_ci": [s_lo, s_hi],
        "sensitivity_by_size": by_size,
        "sensitivity_small": small_v,
        "sensitivity_small_ci": [small_lo, small_hi],
        "n_small": int(small.size),
        "froc": float(np.nanmean(froc_seeds)),
        "froc_ci": [f_lo, f_hi],
        "per_seed": per_seed,
        # per seed (rows, in per_seed's order) and test case / lesion (columns): what a paired
        # comparison between arms, also of two reports on the same test set, needs
        "outcomes": {"seeds": [s["seed"] for s in per_seed], "dice": dice.tolist(), "detected": detected.tolist(),
                     "lesion_diameters": diameters.tolist()},
    }


def _paired_delta(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    if a.size == 0:
        return (math.nan,) * 3
    return bootstrap_two_level(a - b, n_boot, seed)


def compare_arms(arms: Sequence[Mapping[str, Any]], baseline: str = "real", n_boot: int = 1000,
                 seed: int = 0) -> list[dict]:
    """Paired gains of every arm over ``baseline``: Dice, sensitivity, sensitivity below 10 mm.

    Parameters
    ----------
    arms : sequence of dict
        Arm reports with ``outcomes`` (``downstream_report``'s ``arms``; arms of two reports
        on the same test set and seeds can be mixed, e.g. a baseline run once and reused).
    baseline : str
        Name of the arm to compare with.
    n_boot, seed : int
        Bootstrap resamples and their seed.

    Returns
    -------
    list of dict
        One entry per other arm: ``delta_dice``, ``delta_dice_ci``, ``delta_sensitivity``,
        ``delta_sensitivity_ci``, ``delta_sensitivity_small``, ``delta_sensitivity_small_ci``
        and the number of seeds paired. The CI resamples the *pairs* (same seed, same test
        case), so the variation both arms share cancels.

    Raises
    ------
    SynthsegError
        If ``baseline`` is missing, lacks outcomes, or an arm was scored on other test cases.
    """
    by_name = {a["name"]: a for a in arms}
    if baseline not in by_name or "outcomes" not in by_name[baseline]:
        raise SynthsegError(f"no arm {baseline!r} with per-case outcomes to compare with")
    base = by_name[baseline]["outcomes"]
    out = []
    for arm in arms:
        if arm["name"] == baseline or "outcomes" not in arm:
            continue
        o = arm["outcomes"]
        seeds = [s for s in o["seeds"] if s in base["seeds"]]
        if not seeds:
            continue
        rows_a = [o["seeds"].index(s) for s in seeds]
        rows_b = [base["seeds"].index(s) for s in seeds]
        dice_a, dice_b = np.asarray(o["dice"], float)[rows_a], np.asarray(base["dice"], float)[rows_b]
        det_a, det_b = np.asarray(o["detected"], float)[rows_a], np.asarray(base["detected"], float)[rows_b]
        diameters = np.asarray(base["lesion_diameters"], float)
        if dice_a.shape != dice_b.shape or det_a.shape != det_b.shape or not np.allclose(
                np.asarray(o["lesion_diameters"], float), diameters):
            raise SynthsegError(f"arm {arm['name']!r} was scored on other test cases than {baseline!r}")
        small = np.flatnonzero(diameters < SMALL_LESION_MM)
        dd = _paired_delta(dice_a, dice_b, n_boot, seed)
        ds = _paired_delta(det_a, det_b, n_boot, seed)
        dsm = _paired_delta(det_a[:, small], det_b[:, small], n_boot, seed)
        out.append({"arm": arm["name"], "baseline": baseline, "n_seeds": len(seeds),
                    "delta_dice": dd[0], "delta_dice_ci": [dd[1], dd[2]],
                    "delta_sensitivity": ds[0], "delta_sensitivity_ci": [ds[1], ds[2]],
                    "delta_sensitivity_small": dsm[0], "delta_sensitivity_small_ci": [dsm[1], dsm[2]],
                    "n_small": int(small.size)})
    return out


def _plots(out: Path, result: dict, froc_curves: dict) -> list[str]:
    arms = result["arms"]
    names = [a["name"] for a in arms]
    files = []
    plots.bar_plot(out / "plots" / "dice.png", names, [a["dice"] for a in arms], [tuple(a["dice_ci"]) for a in arms],
                   "Dice on real test lesions", "Dice per arm (95 % CI over seeds and cases)")
    files.append("plots/dice.png")
    plots.bar_plot(out / "plots" / "sensitivity.png", names, [a["sensitivity"] for a in arms],
                   [tuple(a["sensitivity_ci"]) for a in arms], "lesion sensitivity at p>0.5", "Lesion-level sensitivity")
    files.append("plots/sensitivity.png")
    series = {n: (fps, sens) for n, (fps, sens) in froc_curves.items() if len(fps) > 1}
    if series:
        clipped = {n: (np.clip(f, 1 / 16, 16), s) for n, (f, s) in series.items()}
        plots.line_plot(out / "plots" / "froc.png", clipped, "false positives per image", "sensitivity", "FROC (pooled seeds)",
                        logx=True)
        files.append("plots/froc.png")
    fraction_arms = [a for a in arms if a["kind"] in ("real", "real-fraction")]
    if len(fraction_arms) > 1:
        fraction_arms.sort(key=lambda a: a["real_fraction"])
        plots.line_plot(out / "plots" / "real_fraction.png", {"real only": (
            [a["real_fraction"] for a in fraction_arms], [a["dice"] for a in fraction_arms])},
            "fraction of real training lesions", "Dice", "Data efficiency", logx=True)
        files.append("plots/real_fraction.png")
    return files


def _markdown(r: dict) -> str:
    s = r["settings"]
    lines = [
        "# Downstream report",
        "",
        f"{r['n_test']} real test lesions; {r['n_real']} real training lesions; synthetic sets: "
        + (", ".join(f"{k} ({v})" for k, v in r["n_synthetic"].items()) or "none") + ".",
        s.get("summary") or (
            f"Every arm trains `BasicUNet` (features {s['segmenter']['features']}) for {s['steps']} steps × batch "
            f"{s['segmenter']['batch_size']} on {s['crop_mm']:g} mm patches at {s['spacing_mm']:g} mm, seeds {s['seeds']}, "
            f"on {s['device']}. CIs: 95 % bootstrap over training seeds and test cases."),
        "",
        "| arm | real | synthetic | Dice [95 % CI] | sensitivity [95 % CI] | FROC [95 % CI] | "
        + " | ".join(b[2] for b in SIZE_BINS) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(SIZE_BINS),
    ]
    for a in r["arms"]:
        sizes = " | ".join(
            f"{fmt(a['sensitivity_by_size'][b[2]]['sensitivity'], 2)} (n={a['sensitivity_by_size'][b[2]]['n']})"
            for b in SIZE_BINS)
        lines.append(f"| {a['name']} | {a['n_real'][0]} | {a['n_synthetic'][0]} | {fmt_ci(a['dice'], a['dice_ci'])} | "
                     f"{fmt_ci(a['sensitivity'], a['sensitivity_ci'])} | {fmt_ci(a['froc'], a['froc_ci'])} | {sizes} |")
    small = [a for a in r["arms"] if a.get("n_small")]
    if small:
        lines += ["", f"Sensitivity below {SMALL_LESION_MM:g} mm ({small[0]['n_small']} lesions): " + "; ".join(
            f"{a['name']} {fmt_ci(a['sensitivity_small'], a['sensitivity_small_ci'])}" for a in small) + "."]
    if r.get("paired"):
        lines += ["", f"## Gain over `{r['paired'][0]['baseline']}` (paired: same seeds, same test cases)", "",
                  f"| arm | Δ Dice [95 % CI] | Δ sensitivity [95 % CI] | Δ sensitivity < {SMALL_LESION_MM:g} mm [95 % CI] |",
                  "|---|---|---|---|"]
        for c in r["paired"]:
            lines.append(f"| {c['arm']} | {fmt_ci(c['delta_dice'], c['delta_dice_ci'])} | "
                         f"{fmt_ci(c['delta_sensitivity'], c['delta_sensitivity_ci'])} | "
                         f"{fmt_ci(c['delta_sensitivity_small'], c['delta_sensitivity_small_ci'])} |")
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in r["plots"]]
    lines += ["", "## Datasets", ""]
    ds = r["datasets"]
    for label, d in [("real", ds["real"]), ("test", ds["test"])] + [(f"synthetic {k}", v) for k, v in ds["synthetic"].items()]:
        if d:
            lines.append(f"- {label}: `{d['path']}` ({d['layout']}, {d['n']} lesions, sha256 `{d['sha256']}`)")
    lines += ["", "## Settings", "", "```", *(f"{k}: {v}" for k, v in s.items()), "```",
              f"napari-synthseg {r['environment']['napari_synthseg']}, torch {r['environment']['torch']} "
              f"({r['environment'].get('torch_threads', '?')} threads), {r['environment']['created']}, "
              f"{r['seconds']} s"]
    return "\n".join(lines) + "\n"
