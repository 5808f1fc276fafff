"""Which cases an export writes: accepted synthetic scenes, real sources, splits by patient.

Rules (recorded in the manifest):

* A **synthetic case** is a scene with at least one accepted lesion whose image-level QA
  status is not rejected/flagged. Only its accepted lesions are rendered and labelled.
* A **real case** is a distinct source image (by sha256) of the scenes, written unmodified.
  Its labels come from the scene mask ``"annotation"`` when one exists (else it is a negative).
* **Splits** are made over patients (``source.patient_id``, else the source sha256), so the
  real image and all synthetic images built on it, and every image of the same patient, land
  in the same split: no leakage.
* ``real_fraction`` keeps that fraction of the real training cases (val/test keep all real
  cases); ``synthetic_ratio`` adds ``round(ratio * n_real_train)`` synthetic training cases
  (LINOP's +50 % / +100 %). Synthetic cases go to the training split only unless
  ``synthetic_in="all"``: validation and test then measure on real images.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import SynthsegError
from ..qa.review import image_status
from ..scene import Scene

SPLITS = ("train", "val", "test")
ANNOTATION_MASK = "annotation"


@dataclass
class Case:
    """One exported image."""

    case_id: str
    kind: str  # "synthetic" | "real"
    scene: str  # scene folder (for real cases: a scene on that source)
    patient: str
    source_sha256: str
    split: str = "train"
    lesion_ids: list[str] = field(default_factory=list)
    ndim: int = 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Case:
        return cls(**data)


@dataclass
class ExportPlan:
    cases: list[Case]
    options: dict
    excluded: dict
    patients: dict[str, list[str]]

    def counts(self) -> dict:
        out: dict = {}
        for c in self.cases:
            out.setdefault(c.split, {}).setdefault(c.kind, 0)
            out[c.split][c.kind] += 1
        return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-") or "case"


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def parse_split(text: str | Sequence[float] | None) -> tuple[float, float, float]:
    """'0.8,0.1,0.1' -> fractions of patients in train, val, test (normalised)."""
    if text is None:
        return (1.0, 0.0, 0.0)
    if isinstance(text, str):
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise SynthsegError(f"--split takes train,val[,test] fractions like 0.8,0.1,0.1, got {text!r}") from None
    else:
        values = [float(v) for v in text]
    if not 1 <= len(values) <= 3 or any(v < 0 or not math.isfinite(v) for v in values) or sum(values) <= 0:
        raise SynthsegError(f"--split takes 1 to 3 non-negative fractions (train,val,test), got {text!r}")
    values = values + [0.0] * (3 - len(values))
    total = sum(values)
    return tuple(v / total for v in values)  # type: ignore[return-value]


def assign_splits(patients: Sequence[str], fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Patient -> split, deterministic for a seed; every split with a non-zero share gets a patient
    when there are enough patients."""
    order = sorted(set(patients), key=lambda p: _rank(seed, p))
    n = len(order)
    counts = [int(math.floor(f * n)) for f in fractions]
    for i, f in enumerate(fractions):
        if f > 0 and counts[i] == 0 and n - sum(counts) > 0:
            counts[i] = 1
    rest = n - sum(counts)
    # Remaining patients by largest fractional part, train first on ties.
    remainders = sorted(range(3), key=lambda i: -(fractions[i] * n - math.floor(fractions[i] * n)))
    for i in remainders:
        if rest <= 0:
            break
        if fractions[i] > 0:
            counts[i] += 1
            rest -= 1
    while sum(counts) > n:  # the minimum-one rule over-filled: take from the largest
        counts[counts.index(max(counts))] -= 1
    out, start = {}, 0
    for split, count in zip(SPLITS, counts):
        for p in order[start:start + count]:
            out[p] = split
        start += count
    for p in order[start:]:
        out[p] = "train"
    return out


def patient_of(scene: Scene) -> str:
    return scene.source.patient_id or f"sha256:{scene.source.sha256[:16]}"


def plan_export(
    scene_folders: Sequence[str | os.PathLike],
    split: str | Sequence[float] | None = None,
    real_fraction: float = 0.0,
    synthetic_ratio: float | None = None,
    synthetic_in: str = "train",
    seed: int = 0,
) -> ExportPlan:
    """Decide which scenes and sources become which cases in which split (no pixels read)."""
    fractions = parse_split(split)
    if not 0.0 <= real_fraction <= 1.0:
        raise SynthsegError(f"--real-fraction must be between 0 and 1, got {real_fraction}")
    if synthetic_ratio is not None and synthetic_ratio < 0:
        raise SynthsegError(f"--synthetic-ratio must be >= 0, got {synthetic_ratio}")
    if synthetic_ratio is not None and real_fraction == 0:
        raise SynthsegError("--synthetic-ratio is relative to the real cases: also give --real-fraction > 0")
    if synthetic_in not in ("train", "all"):
        raise SynthsegError(f"synthetic_in must be 'train' or 'all', got {synthetic_in!r}")

    synthetic: list[Case] = []
    real: dict[str, Case] = {}
    excluded: dict[str, Any] = {"scenes_without_accepted_lesions": [], "scenes_rejected": [], "lesions_not_accepted": 0}
    used_ids: set[str] = set()

    def unique(name: str) -> str:
        base, i = name, 1
        while name in used_ids:
            i += 1
            name = f"{base}-{i}"
        used_ids.add(name)
        return name

    for folder in scene_folders:
        scene = Scene.open(folder)
        patient = patient_of(scene)
        sha = scene.source.sha256
        ndim = len(scene.source.geometry["shape"])
        if sha not in real:
            real[sha] = Case("", "real", str(folder), patient, sha, ndim=ndim)
        elif ANNOTATION_MASK in scene.masks and ANNOTATION_MASK not in Scene.open(real[sha].scene).masks:
            real[sha].scene = str(folder)
        accepted = [r.id for r in scene.lesions if r.status == "accepted"]
        excluded["lesions_not_accepted"] += len(scene.lesions) - len(accepted)
        if image_status(scene) in ("rejected", "flagged"):
            excluded["scenes_rejected"].append(str(folder))
            continue
        if not accepted:
            excluded["scenes_without_accepted_lesions"].append(str(folder))
            continue
        synthetic.append(Case("", "synthetic", str(folder), patient, sha, lesion_ids=accepted, ndim=ndim))

    patients = sorted({c.patient for c in synthetic} | {c.patient for c in real.values()})
    split_of = assign_splits(patients, fractions, seed)
    for case in list(synthetic) + list(real.values()):
        case.split = split_of[case.patient]

    chosen: list[Case] = []
    real_train = sorted((c for c in real.values() if c.split == "train"), key=lambda c: _rank(seed, c.source_sha256))
    n_real_train = int(round(real_fraction * len(real_train)))
    if real_fraction > 0 and real_train and n_real_train == 0:
        n_real_train = 1
    chosen += real_train[:n_real_train]
    if real_fraction > 0:
        chosen += [c for c in real.values() if c.split != "train"]

    syn_pool = [c for c in synthetic if synthetic_in == "all" or c.split == "train"]
    syn_pool.sort(key=lambda c: _rank(seed, c.scene))
    if synthetic_ratio is not None:
        wanted = int(round(synthetic_ratio * n_real_train))
        train_pool = [c for c in syn_pool if c.split == "train"]
        if wanted > len(train_pool):
            raise SynthsegError(
                f"--synthetic-ratio {synthetic_ratio:g} needs {wanted} accepted synthetic training scenes "
                f"but there are {len(train_pool)}; lower the ratio or review more scenes"
            )
        syn_pool = train_pool[:wanted] + [c for c in syn_pool if c.split != "train"]
    chosen += syn_pool
    excluded["synthetic_scenes_not_used"] = len(synthetic) - len(syn_pool)

    chosen.sort(key=lambda c: (SPLITS.index(c.split), c.kind, c.scene, c.source_sha256))
    for case in chosen:
        if case.kind == "synthetic":
            case.case_id = unique(f"syn-{_safe(Path(case.scene).name)}")
        else:
            case.case_id = unique(f"real-{case.source_sha256[:12]}")
    if not chosen:
        raise SynthsegError(
            "nothing to export: no scene has accepted lesions (review them first: synthseg review / synthseg qa)"
        )
    by_split: dict[str, list[str]] = {s: sorted({p for p, v in split_of.items() if v == s}) for s in SPLITS}
    options = {
        "split": list(fractions),
        "real_fraction": real_fraction,
        "synthetic_ratio": synthetic_ratio,
        "synthetic_in": synthetic_in,
        "seed": seed,
    }
    return ExportPlan(chosen, options, excluded, by_split)
