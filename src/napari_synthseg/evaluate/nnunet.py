"""The nnU-Net route of the downstream comparison, for users with a GPU.

:func:`write_nnunet_arms` writes one nnU-Net v2 raw dataset per arm (the same arms and lesion
subsets as :func:`~napari_synthseg.evaluate.downstream.downstream_report`, drawn with the first
seed), each with the real TEST lesions as ``imagesTs``, and our patient-grouped cross-validation
split as ``nnUNet_preprocessed/DatasetXXX_<arm>/splits_final.json`` where nnU-Net's trainer reads
it (it only creates its own when that file is absent). Validation folds hold real lesions only
(synthetic lesions always train), and no patient is on both sides of a fold. It prints the
``nnUNetv2_plan_and_preprocess`` / ``nnUNetv2_train`` / ``nnUNetv2_predict`` commands.

:func:`collect_nnunet` reads nnU-Net's predictions back (``predictions/<arm>/<run>/`` with one
``<case>.nii.gz`` per test case; ``<case>.npz`` probabilities from ``--save_probabilities`` when
present, else the binary mask stands in for the probability) and writes the same report as
the in-process route, each run folder counting as one training seed.

Cases are the same lesion-centred crops as the in-process route, written with SimpleITK
(``napari_synthseg.export`` writes rendered scenes, not crops).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import SynthsegError
from .downstream import (
    Arm,
    SyntheticSets,
    _context_mm,
    arms_for,
    as_synthetic_sets,
    pooled_froc,
    summarise_arm,
    write_downstream_report,
)
from .lesion_sets import LesionSample
from .realism import LesionSetLike, as_lesion_set
from .report import environment, write_json
from .scoring import FROC_FP_RATES, CaseScore, score_case

PLAN_FILE = "evaluation_plan.json"
ENDING = ".nii.gz"


def _dataset_name(arm: Arm) -> str:
    name = arm.name.replace("+", "-plus-").replace(".", "p")
    return re.sub(r"[^A-Za-z0-9-]", "-", f"Synthseg-{name}")


def _write_case(sample: LesionSample, image_path: Path, label_path: Path | None) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(sample.image.astype(np.float32))
    img.SetSpacing(tuple(float(v) for v in sample.spacing[::-1]))
    image_path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(image_path), useCompression=True)
    if label_path is not None:
        lab = sitk.GetImageFromArray(sample.mask.astype(np.uint8))
        lab.CopyInformation(img)
        label_path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(lab, str(label_path), useCompression=True)


def _splits(cases: list[tuple[str, str, bool]], folds: int, seed: int) -> list[dict]:
    """nnU-Net folds: (case id, group, is_real); groups never straddle a fold, val is real only."""
    from sklearn.model_selection import GroupKFold

    real = [c for c in cases if c[2]] or cases  # a synthetic-only arm validates on synthetic
    groups = sorted({c[1] for c in real})
    k = max(1, min(folds, len(groups)))
    if k < 2:
        return [{"train": [c[0] for c in cases], "val": [c[0] for c in real]}]
    rng = np.random.default_rng(seed)
    order = {g: i for i, g in enumerate(rng.permutation(groups))}
    splitter = GroupKFold(n_splits=k)
    out = []
    for _train, val in splitter.split(np.zeros(len(real)), groups=[order[c[1]] for c in real]):
        val_ids = {real[i][0] for i in val}
        val_groups = {real[i][1] for i in val}
        out.append({"train": [c[0] for c in cases if c[0] not in val_ids and c[1] not in val_groups],
                    "val": sorted(val_ids)})
    return out


def write_nnunet_arms(
    real: LesionSetLike | None,
    synthetic: SyntheticSets | None,
    test: LesionSetLike,
    out: str | os.PathLike,
    *,
    ratios: Sequence[float] = (0.5, 1.0),
    real_fractions: Sequence[float] = (),
    synthetic_only: bool = True,
    crop_mm: float = 32.0,
    spacing_mm: float = 1.0,
    dataset_id: int = 601,
    folds: int = 5,
    seed: int = 0,
    configuration: str | None = None,
    limit: int | None = None,
) -> dict:
    """Write ``out/nnUNet_raw/DatasetXXX_<arm>`` per arm plus the split; return the plan (also
    ``out/evaluation_plan.json``) with the commands to run."""
    out = Path(out)
    context = _context_mm(crop_mm, spacing_mm)

    def read(value):
        return as_lesion_set(value, context, spacing_mm, limit)

    real_set = read(real) if real is not None else None
    synth_sets = as_synthetic_sets(synthetic, read)
    test_set = read(test)
    real_samples = real_set.samples if real_set is not None else []
    arms = arms_for(real_samples, list(synth_sets), ratios, real_fractions, synthetic_only)
    if not arms:
        raise SynthsegError("no arms to write: give --real and/or --synthetic")
    if not 1 <= dataset_id <= 999 - len(arms) + 1:
        raise SynthsegError(f"nnU-Net dataset ids are 1..999; {len(arms)} arms from {dataset_id} do not fit")
    ndim = test_set.samples[0].ndim
    configuration = configuration or ("3d_fullres" if ndim == 3 else "2d")
    raw, pre = out / "nnUNet_raw", out / "nnUNet_preprocessed"
    test_cases = [f"test_{i:04d}" for i in range(len(test_set))]
    test_dir = out / "test"
    for case, sample in zip(test_cases, test_set.samples):
        _write_case(sample, test_dir / "images" / f"{case}_0000{ENDING}", test_dir / "labels" / f"{case}{ENDING}")
    plan_arms_out: list[dict[str, Any]] = []
    synth_samples = {k: v.samples for k, v in synth_sets.items()}
    for offset, arm in enumerate(arms):
        did = dataset_id + offset
        folder = raw / f"Dataset{did:03d}_{_dataset_name(arm)}"
        if folder.exists() and any(folder.iterdir()):
            raise SynthsegError(f"{folder} exists; write the nnU-Net route into a new folder")
        train_real, train_synth = arm.select(real_samples, synth_samples, seed)
        cases = []
        for prefix, samples, is_real in (("real", train_real, True), ("syn", train_synth, False)):
            for i, sample in enumerate(samples):
                case = f"{prefix}_{i:04d}"
                _write_case(sample, folder / "imagesTr" / f"{case}_0000{ENDING}", folder / "labelsTr" / f"{case}{ENDING}")
                cases.append((case, sample.group or sample.name, is_real))
        for case, sample in zip(test_cases, test_set.samples):
            _write_case(sample, folder / "imagesTs" / f"{case}_0000{ENDING}", None)
        write_json(folder / "dataset.json", {
            "name": folder.name, "description": f"napari-synthseg downstream arm {arm.name}",
            "channel_names": {"0": "CT" if _looks_like_ct(test_set.samples) else "image"},
            "labels": {"background": 0, "lesion": 1}, "numTraining": len(cases), "file_ending": ENDING,
            "reference": "napari-synthseg evaluate downstream --nnunet"})
        splits = _splits(cases, folds, seed)
        split_dir = pre / folder.name
        split_dir.mkdir(parents=True, exist_ok=True)
        write_json(split_dir / "splits_final.json", splits)
        plan_arms_out.append({"arm": arm.name, "kind": arm.kind, "synthetic_set": arm.synthetic, "ratio": arm.ratio,
                              "real_fraction": arm.real_fraction, "dataset_id": did, "dataset": folder.name,
                              "n_real": len(train_real), "n_synthetic": len(train_synth), "folds": len(splits)})
    env = (f"export nnUNet_raw={shlex.quote(str(raw.resolve()))} nnUNet_preprocessed={shlex.quote(str(pre.resolve()))} "
           f"nnUNet_results={shlex.quote(str((out / 'nnUNet_results').resolve()))}")
    ids = " ".join(str(a["dataset_id"]) for a in plan_arms_out)
    commands = [env, f"nnUNetv2_plan_and_preprocess -d {ids} -c {configuration} --verify_dataset_integrity"]
    for a in plan_arms_out:
        commands.append(f"nnUNetv2_train {a['dataset_id']} {configuration} 0")
        pred = out / "predictions" / a["arm"] / "fold0"
        commands.append(f"nnUNetv2_predict -i {shlex.quote(str((raw / a['dataset'] / 'imagesTs').resolve()))} -o "
                        f"{shlex.quote(str(pred.resolve()))} -d {a['dataset_id']} -c {configuration} -f 0 --save_probabilities")
    commands.append(f"synthseg evaluate collect {shlex.quote(str(out))} --out {shlex.quote(str(out / 'report'))}")
    plan = {"kind": "synthseg-nnunet-evaluation", "arms": plan_arms_out, "configuration": configuration,
            "test_cases": [{"case": c, "name": s.name, "diameter_mm": s.diameter_mm, "group": s.group}
                           for c, s in zip(test_cases, test_set.samples)],
            "datasets": {"real": real_set.describe() if real_set else None,
                         "synthetic": {k: v.describe() for k, v in synth_sets.items()}, "test": test_set.describe()},
            "settings": {"crop_mm": crop_mm, "context_mm": context, "spacing_mm": spacing_mm, "seed": seed,
                         "folds": folds, "ratios": list(ratios), "real_fractions": list(real_fractions),
                         "synthetic_only": synthetic_only},
            "commands": commands, "environment": environment()}
    write_json(out / PLAN_FILE, plan)
    return plan


def _looks_like_ct(samples: Sequence[LesionSample]) -> bool:
    return min(float(s.image.min()) for s in samples[:20]) < -500


def _read(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _probability(run: Path, case: str, shape: tuple[int, ...]) -> np.ndarray | None:
    npz = run / f"{case}.npz"
    if npz.is_file():
        with np.load(npz) as data:
            probs = data["probabilities"] if "probabilities" in data else data[data.files[0]]
        prob = np.asarray(probs[1] if probs.ndim == len(shape) + 1 else probs, np.float32)
        if prob.shape == shape:
            return prob
    seg = run / f"{case}{ENDING}"
    if seg.is_file():
        return (_read(seg) > 0).astype(np.float32)
    return None


def collect_nnunet(folder: str | os.PathLike, out: str | os.PathLike | None = None, n_boot: int = 1000) -> dict:
    """Score nnU-Net's predictions of every arm on the test lesions; write the downstream report."""
    folder = Path(folder)
    try:
        plan = json.loads((folder / PLAN_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SynthsegError(f"{folder} holds no {PLAN_FILE}: write it with synthseg evaluate downstream --nnunet") from None
    out = Path(out) if out else folder / "report"
    spacing = float(plan["settings"]["spacing_mm"])
    tests = []
    for entry in plan["test_cases"]:
        mask = _read(folder / "test" / "labels" / f"{entry['case']}{ENDING}") > 0
        image = np.zeros(mask.shape, np.float32)
        tests.append((entry["case"], LesionSample(image, mask, (spacing,) * mask.ndim, entry["name"], entry["name"],
                                                  float(entry["diameter_mm"]), entry["group"])))
    arm_reports, froc_curves, missing = [], {}, []
    for a in plan["arms"]:
        runs = sorted(p for p in (folder / "predictions" / a["arm"]).glob("*") if p.is_dir())
        cases_by_seed: list[list[CaseScore]] = []
        per_seed = []
        for run in runs:
            cases = []
            for case, sample in tests:
                prob = _probability(run, case, sample.mask.shape)
                if prob is None:
                    break
                cases.append(score_case(prob, sample))
            if len(cases) != len(tests):
                missing.append(f"{a['arm']}/{run.name}")
                continue
            cases_by_seed.append(cases)
            detected = [d for c in cases for d in c.detected]
            per_seed.append({"seed": run.name, "n_real": a["n_real"], "n_synthetic": a["n_synthetic"],
                             "dice": float(np.mean([c.dice for c in cases])),
                             "sensitivity": float(np.mean(detected)) if detected else None,
                             "froc": _froc_score(cases)})
        if not cases_by_seed:
            missing.append(f"{a['arm']} (no complete prediction folder)")
            continue
        arm = Arm(a["arm"], a["kind"], a["real_fraction"], a["synthetic_set"], a["ratio"])
        arm_reports.append(summarise_arm(arm, per_seed, cases_by_seed, n_boot, 0))
        froc_curves[arm.name] = pooled_froc(cases_by_seed)
    if not arm_reports:
        raise SynthsegError(f"no nnU-Net predictions found under {folder / 'predictions'}; missing: {', '.join(missing)}")
    s = plan["settings"]
    result = {
        "kind": "synthseg-downstream-report", "route": "nnunet", "arms": arm_reports, "n_test": len(tests),
        "n_real": max((a["n_real"] for a in plan["arms"]), default=0),
        "n_synthetic": {k: v["n"] for k, v in plan["datasets"]["synthetic"].items()},
        "datasets": plan["datasets"], "missing_predictions": missing,
        "settings": {**s, "configuration": plan["configuration"], "froc_fp_rates": list(FROC_FP_RATES),
                     "n_boot": n_boot, "summary": f"Every arm was trained by nnU-Net v2 ({plan['configuration']}) on "
                     f"{s['context_mm']:g} mm crops at {s['spacing_mm']:g} mm; each prediction folder counts as one run. "
                     "CIs: 95 % bootstrap over runs and test cases."},
        "environment": environment(), "seconds": 0.0,
    }
    return write_downstream_report(out, result, froc_curves)


def _froc_score(cases: list[CaseScore]) -> float:
    from .scoring import froc

    return froc(cases)[0]
