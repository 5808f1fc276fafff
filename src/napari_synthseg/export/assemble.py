"""Dataset-level files written after all cases: dataset.json, COCO JSON, CSV boxes, manifest."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..errors import SynthsegError
from .plan import SPLITS, ExportPlan, _rank

CHANNEL_NAMES = {"CT": "CT", "CXR": "CXR", "MR": "MRI"}


def class_names(class_map: dict[str, int]) -> dict[str, int]:
    """nnU-Net/COCO class table: name -> value (background 0, then consecutive)."""
    if "*" in class_map:
        return {"background": 0, "lesion": 1}
    return {"background": 0, **{k: v for k, v in sorted(class_map.items(), key=lambda kv: kv[1])}}


def nnunet_dataset_json(plan: ExportPlan, summaries: list[dict], class_map: dict, ending: str,
                        modality: str, name: str) -> dict:
    """dataset.json as nnU-Net v2 reads it (numTraining counts imagesTr: train + val)."""
    n_train = sum(1 for s in summaries if s["case"]["split"] != "test")
    n_test = sum(1 for s in summaries if s["case"]["split"] == "test")
    return {
        "name": name,
        "description": "Synthetic lesions made with napari-synthseg; see manifest.json for provenance",
        "channel_names": {"0": CHANNEL_NAMES.get(modality, modality or "image")},
        "labels": class_names(class_map),
        "numTraining": n_train,
        "numTest": n_test,
        "file_ending": ending,
        "reference": "napari-synthseg",
        "release": __version__,
    }


def nnunet_splits(summaries: list[dict], folds: int = 1, seed: int = 0,
                  synthetic_in: str = "train") -> list[dict] | None:
    """splits_final.json: nnU-Net's folds, always by patient.

    ``folds == 1``: one fold, the export's train/val split (None without a validation split).
    ``folds >= 2``: cross-validation over the patients of all training-set cases (train + val
    split), patients dealt to ``folds`` groups in a seeded order. Fold k validates on group k's
    cases and trains on the other groups'; with ``synthetic_in == "train"`` validation holds real
    images only, and group k's synthetic images are left out of fold k altogether (they are
    built on its validation patients).
    """
    cases = [s["case"] for s in summaries if s["case"]["split"] in ("train", "val")]
    if folds <= 1:
        train = sorted(c["case_id"] for c in cases if c["split"] == "train")
        val = sorted(c["case_id"] for c in cases if c["split"] == "val")
        return [{"train": train, "val": val}] if val else None
    patients = sorted({c["patient"] for c in cases}, key=lambda p: _rank(seed, f"fold:{p}"))
    if len(patients) < folds:
        raise SynthsegError(f"{folds} nnU-Net folds need at least {folds} patients; this export has {len(patients)}")
    group = {p: i % folds for i, p in enumerate(patients)}
    out = []
    for k in range(folds):
        val = sorted(c["case_id"] for c in cases
                     if group[c["patient"]] == k and (synthetic_in == "all" or c["kind"] == "real"))
        if not val:
            raise SynthsegError(f"nnU-Net fold {k} has no validation case: validation uses real images "
                                "(add them with --real-fraction, or --synthetic-in all)")
        train = sorted(c["case_id"] for c in cases if group[c["patient"]] != k)
        out.append({"train": train, "val": val})
    return out


def coco_files(summaries: list[dict], class_map: dict) -> dict[str, dict]:
    """``annotations/instances_<split>.json`` contents, one per split with cases."""
    names = class_names(class_map)
    categories = [{"id": v, "name": k, "supercategory": "lesion"} for k, v in names.items() if v > 0]
    out: dict[str, dict] = {}
    ann_id = 0
    for split in SPLITS:
        cases = [s for s in summaries if s["case"]["split"] == split]
        if not cases:
            continue
        images, anns = [], []
        for image_id, s in enumerate(sorted(cases, key=lambda s: s["case"]["case_id"]), start=1):
            h, w = s["shape"]
            images.append({
                "id": image_id, "file_name": s["image"], "width": w, "height": h,
                "case_id": s["case"]["case_id"], "kind": s["case"]["kind"],
                "pixel_spacing_mm": s["spacing"],
            })
            for inst in s["instances"]:
                ann_id += 1
                x, y, bw, bh = inst["bbox_px"]
                anns.append({
                    "id": ann_id, "image_id": image_id, "category_id": inst["class"],
                    "segmentation": inst["rle"], "area": float(inst["area_px"]),
                    "bbox": [float(x), float(y), float(bw), float(bh)], "iscrowd": 0,
                    "lesion_id": inst["lesion_id"], "lesion_kind": inst["kind"], "label_value": inst["label"],
                    "area_mm2": inst.get("area_mm2"),
                })
        out[split] = {
            "info": {"description": "napari-synthseg export", "version": __version__,
                     "date_created": datetime.now(timezone.utc).isoformat(timespec="seconds")},
            "licenses": [],
            "images": images,
            "annotations": anns,
            "categories": categories,
        }
    return out


CSV_COLUMNS = ["image", "x", "y", "width", "height", "label", "split", "case_id", "lesion_id", "kind"]


def csv_boxes(summaries: list[dict], unit: str) -> str:
    """NODE21-style boxes: one row per lesion, one row of zeros (label 0) per negative image."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for s in sorted(summaries, key=lambda s: s["case"]["case_id"]):
        c = s["case"]
        if not s["instances"]:
            writer.writerow([s["image"], 0, 0, 0, 0, 0, c["split"], c["case_id"], "", ""])
        for inst in s["instances"]:
            box = inst["bbox_px"] if unit == "px" else inst["bbox_mm"]
            writer.writerow([s["image"], *box[:4], inst["class"], c["split"], c["case_id"],
                             inst["lesion_id"], inst["kind"]])
    return buf.getvalue()


def manifest(plan: ExportPlan, summaries: list[dict], fmt: str, ending: str, class_map: dict,
             renderer: str, scenes_dir: str, extra: dict) -> dict:
    by_id = {s["case"]["case_id"]: s for s in summaries}
    return {
        "software": f"napari-synthseg {__version__}",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "format": fmt,
        "file_ending": ending,
        "scenes_dir": scenes_dir,
        "renderer": renderer,
        "options": plan.options,
        "classes": class_names(class_map),
        "counts": plan.counts(),
        "patients": plan.patients,
        "excluded": plan.excluded,
        "cases": [
            {
                **{k: c.to_dict()[k] for k in ("case_id", "kind", "split", "patient", "source_sha256", "scene")},
                "n_lesions": len(by_id[c.case_id]["instances"]),
                "lesions_not_drawn": by_id[c.case_id]["not_drawn"],
                "image": by_id[c.case_id]["image"],
                "label": by_id[c.case_id]["label"],
                "sidecar": f"provenance/{c.case_id}.json",
            }
            for c in plan.cases
        ],
        **extra,
    }


def dumps(data) -> str:
    return json.dumps(data, indent=1)


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
