"""Exports checked with their own ecosystems and against independently built label maps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import SimpleITK as sitk
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from _disk_renderer import lesion_mask, make_cxr_scenes, render_disks
from napari_synthseg.cli import main
from napari_synthseg.errors import SynthsegError
from napari_synthseg.export import export_dataset, plan_export
from napari_synthseg.io import read_image
from napari_synthseg.scene import LesionRecord, Scene

TESTS = Path(__file__).resolve().parent
RENDERER = "_disk_renderer:render_disks"


@pytest.fixture(scope="module")
def cxr_files(shared_data):
    return sorted((shared_data / "cxr" / "nih_nodule").glob("*.png"))


@pytest.fixture
def scenes(tmp_path, cxr_files):
    return make_cxr_scenes(tmp_path / "scenes", cxr_files[:3], per_source=2)


def reference(folder: Path):
    """Independent expectation: accepted lesions' disks only, from the records themselves."""
    scene = Scene.open(folder)
    image = scene.load_image()
    labels = np.zeros(image.shape, np.int32)
    pixels = image.array.astype(np.float32)
    for rec in scene.lesions:
        if rec.status != "accepted":
            continue
        mask, profile = lesion_mask(image, rec)
        labels[mask] = rec.label
        pixels += rec.params["contrast"] * profile
    return image, labels, np.clip(np.rint(pixels), 0, 255).astype(np.uint8), scene


def nnunet_integrity(folder: Path) -> None:
    """The checks of nnunetv2's verify_dataset_integrity, rewritten here (no nnunetv2 needed)."""
    ds = json.loads((folder / "dataset.json").read_text())
    for key in ("labels", "channel_names", "numTraining", "file_ending"):
        assert key in ds
    ending = ds["file_ending"]
    images = sorted(p.name[: -len(ending)] for p in (folder / "imagesTr").glob(f"*{ending}"))
    assert all(name.endswith("_0000") for name in images)  # one channel
    cases = [name[:-5] for name in images]
    assert len(cases) == ds["numTraining"]
    values = sorted(ds["labels"].values())
    assert values[0] == 0 and np.all(np.diff(values) == 1)  # consecutive from background 0
    for case in cases:
        img_path = folder / "imagesTr" / f"{case}_0000{ending}"
        lab_path = folder / "labelsTr" / f"{case}{ending}"
        assert lab_path.exists(), case
        img, lab = sitk.ReadImage(str(img_path)), sitk.ReadImage(str(lab_path))
        assert img.GetSize() == lab.GetSize()
        assert np.allclose(img.GetSpacing(), lab.GetSpacing())
        arr = sitk.GetArrayFromImage(img)
        assert not np.isnan(arr.astype(np.float32)).any()
        assert set(np.unique(sitk.GetArrayFromImage(lab))) <= set(values)


def test_nnunet_export_matches_scene_labels(scenes, tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    res = export_dataset(scenes[0].parent, out, fmt="nnunet", name="Cxr", dataset_id=7, renderer=RENDERER,
                         workers=2)
    ds = res.path
    assert ds.name == "Dataset007_Cxr"
    nnunet_integrity(ds)
    manifest = json.loads((ds / "manifest.json").read_text())
    assert manifest["counts"] == {"train": {"synthetic": 6}}
    assert manifest["excluded"]["lesions_not_accepted"] == 6
    for case in manifest["cases"]:
        image, labels, pixels, scene = reference(Path(case["scene"]))
        got_labels = cv2.imread(str(ds / case["label"]), cv2.IMREAD_UNCHANGED)
        got_image = cv2.imread(str(ds / case["image"]), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(got_labels, (labels > 0).astype(np.uint8))
        np.testing.assert_array_equal(got_image, pixels)  # rejected lesion not rendered either
        sidecar = json.loads((ds / case["sidecar"]).read_text())
        assert sidecar["source"]["sha256"] == scene.source.sha256
        assert [r["id"] for r in sidecar["lesions"]] == ["L0001", "L0003"]
        assert sidecar["lesions"][0]["params"] == {"contrast": 30.0} and sidecar["software"].startswith("napari")
        assert sidecar["geometry"]["spacing"] == [0.35, 0.35]
    assert not list(tmp_path.glob("raw/.*partial*"))


def _nnunet_python_path() -> str | None:
    """Where nnunetv2 imports from: this environment (scripts/setup.sh installs it with --no-deps
    beside the pinned CPU torch) or a throwaway ``pip install --no-deps --target`` folder."""
    import importlib.util

    if os.environ.get("SYNTHSEG_NNUNET_SITE"):
        return os.environ["SYNTHSEG_NNUNET_SITE"]
    return "" if importlib.util.find_spec("nnunetv2") is not None else None


@pytest.mark.skipif(_nnunet_python_path() is None,
                    reason="nnunetv2 is not installed (scripts/setup.sh installs it with --no-deps)")
def test_nnunetv2_verify_dataset_integrity_and_split_location(scenes, tmp_path, monkeypatch):
    """nnU-Net's own check of the exported dataset, and nnU-Net's own idea of where the trainer
    reads splits_final.json (nnUNet_preprocessed/DatasetXXX_Name/), where the export put it."""
    raw, pre = tmp_path / "nnUNet_raw", tmp_path / "nnUNet_preprocessed"
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)  # default: beside nnUNet_raw
    res = export_dataset(scenes[0].parent, raw, fmt="nnunet", renderer=RENDERER, workers=1, real_fraction=1.0,
                         split="0.7,0.3")
    assert res.splits_final == str(pre / "Dataset501_Synthseg" / "splits_final.json")
    code = ("import json, os, sys\n"
            "from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity\n"
            "from nnunetv2.paths import nnUNet_preprocessed\n"
            "from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name\n"
            "if __name__ == '__main__':\n"
            "    verify_dataset_integrity(sys.argv[1], 1)\n"
            "    # nnUNetTrainer.do_split reads join(preprocessed_dataset_folder_base, 'splits_final.json')\n"
            "    path = os.path.join(nnUNet_preprocessed, maybe_convert_to_dataset_name(501), 'splits_final.json')\n"
            "    print('SPLITS', path, len(json.load(open(path))))\n")
    site = _nnunet_python_path()
    env = {**os.environ, "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(pre),
           "nnUNet_results": str(tmp_path / "nnUNet_results")}
    if site:
        env["PYTHONPATH"] = site
    run = subprocess.run([sys.executable, "-c", code, str(res.path)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "verify_dataset_integrity Done" in run.stdout
    assert f"SPLITS {res.splits_final} 1" in run.stdout


def test_coco_masks_decode_to_scene_labels(scenes, tmp_path):
    Scene.open(scenes[0]).set_decision("L0002", "accepted", by="test")  # a "mass": two categories
    res = export_dataset(scenes[0].parent, tmp_path / "coco", fmt="coco", classes="kind", renderer=RENDERER,
                         workers=1)
    coco = COCO(str(res.path / "annotations" / "instances_train.json"))
    cats = {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())}
    assert cats == {"mass": 1, "nodule": 2}  # one class per accepted kind, sorted
    manifest = json.loads((res.path / "manifest.json").read_text())
    scene_of = {c["case_id"]: Path(c["scene"]) for c in manifest["cases"]}
    n_ann = 0
    for img in coco.loadImgs(coco.getImgIds()):
        _, labels, pixels, scene = reference(scene_of[img["case_id"]])
        np.testing.assert_array_equal(cv2.imread(str(res.path / img["file_name"]), cv2.IMREAD_UNCHANGED), pixels)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        assert sorted(a["label_value"] for a in anns) == sorted(set(np.unique(labels)) - {0})
        for ann in anns:
            n_ann += 1
            expected = labels == ann["label_value"]
            np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), expected)
            assert ann["area"] == expected.sum()
            ys, xs = np.nonzero(expected)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            rec = scene.lesion(ann["lesion_id"])
            assert ann["category_id"] == cats[rec.kind] and rec.status == "accepted"
            assert mask_utils.area(ann["segmentation"]) == expected.sum()
    assert n_ann == 13


def test_csv_boxes_in_pixels_and_mm(scenes, tmp_path):
    res = export_dataset(scenes[:2], tmp_path / "csv", fmt="csv", renderer=RENDERER, workers=1)
    px = np.genfromtxt(res.path / "boxes_px.csv", delimiter=",", names=True, dtype=None, encoding="utf-8")
    mm = np.genfromtxt(res.path / "boxes_mm.csv", delimiter=",", names=True, dtype=None, encoding="utf-8")
    assert len(px) == 4 and list(px.dtype.names[:6]) == ["image", "x", "y", "width", "height", "label"]
    manifest = json.loads((res.path / "manifest.json").read_text())
    scene_of = {c["case_id"]: Path(c["scene"]) for c in manifest["cases"]}
    for row_px, row_mm in zip(px, mm):
        _, labels, _, scene = reference(scene_of[row_px["case_id"]])
        expected = labels == scene.lesion(row_px["lesion_id"]).label
        ys, xs = np.nonzero(expected)
        assert [row_px["x"], row_px["y"], row_px["width"], row_px["height"]] == [
            xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        np.testing.assert_allclose([row_mm["x"], row_mm["width"]], [row_px["x"] * 0.35, row_px["width"] * 0.35])


def test_nifti_3d_keeps_geometry(tmp_path, shared_data):
    ct = read_image(shared_data / "ct" / "nodule_patches" / "nodule_00_ct.mha")
    scene = Scene.create(ct, tmp_path / "scenes" / "ct0", patient_id="P1")
    rec = scene.add_lesion(LesionRecord(center_mm=tuple(ct.index_to_physical((25, 25, 25))), size_mm=8,
                                        params={"contrast": 300.0}))
    scene.set_decision(rec.id, "accepted", by="test")
    for fmt in ("nifti", "nnunet"):
        res = export_dataset(tmp_path / "scenes", tmp_path / fmt, fmt=fmt, renderer=RENDERER, workers=1) \
            if fmt == "nifti" else export_dataset(tmp_path / "scenes", tmp_path, fmt=fmt, renderer=RENDERER, workers=1)
        manifest = json.loads((res.path / "manifest.json").read_text())
        case = manifest["cases"][0]
        assert case["image"].endswith(".nii.gz")
        img = sitk.ReadImage(str(res.path / case["image"]))
        lab = sitk.ReadImage(str(res.path / case["label"]))
        for got in (img, lab):
            np.testing.assert_allclose(got.GetSpacing(), ct.spacing)
            np.testing.assert_allclose(got.GetOrigin(), ct.origin, atol=1e-4)
            np.testing.assert_allclose(got.GetDirection(), ct.direction, atol=1e-6)
        expected_image, expected_labels = render_disks(Scene.open(tmp_path / "scenes" / "ct0"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(lab), (expected_labels > 0) * (1 if fmt == "nnunet" else rec.label))
        np.testing.assert_allclose(sitk.GetArrayFromImage(img), expected_image)


def test_png_export_refuses_3d_and_lossy_endings(tmp_path, scenes):
    with pytest.raises(SynthsegError, match="not a lossless format"):
        export_dataset(scenes, tmp_path / "x", fmt="nifti", file_ending=".jpg", renderer=RENDERER, workers=1)
    assert not (tmp_path / "x").exists()


def _cli(*args, env=None, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(TESTS), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "napari_synthseg.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_9_leaves_no_dataset_and_rerun_resumes(tmp_path, cxr_files):
    folders = make_cxr_scenes(tmp_path / "scenes", cxr_files[:8], per_source=1)
    out = tmp_path / "raw"
    out.mkdir()
    args = ["export", str(tmp_path / "scenes"), "--format", "nnunet", "--out", str(out),
            "--renderer", "_disk_renderer:render_slow", "--workers", "2"]
    proc = _cli(*args, env={"SYNTHSEG_TEST_RENDER_SLEEP": "0.4"})
    partial = out / ".Dataset501_Synthseg.partial"
    deadline = time.time() + 60
    while time.time() < deadline and len(list((partial / ".done").glob("*.json"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done_before = len(list((partial / ".done").glob("*.json")))
    assert 3 <= done_before < len(folders)
    assert not (out / "Dataset501_Synthseg").exists()  # no half dataset
    time.sleep(0.5)  # workers die with their parent (PR_SET_PDEATHSIG)
    rerun = _cli(*args, env={"SYNTHSEG_TEST_RENDER_SLEEP": "0"})
    stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    assert "resumed" in stdout
    ds = out / "Dataset501_Synthseg"
    assert not partial.exists()
    nnunet_integrity(ds)
    manifest = json.loads((ds / "manifest.json").read_text())
    assert len(manifest["cases"]) == len(folders)
    for case in manifest["cases"]:
        _, labels, pixels, _ = reference(Path(case["scene"]))
        np.testing.assert_array_equal(cv2.imread(str(ds / case["label"]), cv2.IMREAD_UNCHANGED), labels > 0)
        np.testing.assert_array_equal(cv2.imread(str(ds / case["image"]), cv2.IMREAD_UNCHANGED), pixels)


def test_force_semantics(scenes, tmp_path, capsys):
    target = tmp_path / "ds"
    args = ["export", str(scenes[0].parent), "--format", "csv", "--out", str(target), "--renderer", RENDERER,
            "--workers", "1"]
    assert main(args) == 0
    (target / "sentinel.txt").write_text("old")
    assert main(args) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (target / "sentinel.txt").exists()  # untouched
    assert main([*args, "--force"]) == 0
    assert not (target / "sentinel.txt").exists() and (target / "boxes_px.csv").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_splits_by_patient_real_fraction_and_ratio(tmp_path, cxr_files, monkeypatch):
    # 8 sources, 4 patients (two images each), 2 scenes per source.
    folders = make_cxr_scenes(tmp_path / "scenes", cxr_files[:8], per_source=2,
                              patient_ids=["A", "A", "B", "B", "C", "C", "D", "D"])
    plan = plan_export(folders, split="0.5,0.25,0.25", real_fraction=0.5, synthetic_ratio=1.5, seed=3)
    split_of_patient: dict[str, set] = {}
    for case in plan.cases:
        split_of_patient.setdefault(case.patient, set()).add(case.split)
    assert all(len(s) == 1 for s in split_of_patient.values())  # no patient in two splits
    assert sorted(len(v) for v in plan.patients.values()) == [1, 1, 2]
    counts = plan.counts()
    assert counts["train"] == {"real": 2, "synthetic": 3}  # 50 % of 4 real, +150 %
    assert counts["val"] == {"real": 2} and counts["test"] == {"real": 2}  # val/test stay real
    with pytest.raises(SynthsegError, match="needs 10 accepted synthetic"):
        plan_export(folders, split="0.5,0.25,0.25", real_fraction=1.0, synthetic_ratio=2.5, seed=3)
    # The exported splits agree with the plan, and the nnU-Net fold keeps patients apart.
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    res = export_dataset(folders, tmp_path / "nnUNet_raw", fmt="nnunet", split="0.5,0.25,0.25", real_fraction=0.5,
                         synthetic_ratio=1.5, seed=3, renderer=RENDERER, workers=2)
    folds = json.loads((tmp_path / "nnUNet_preprocessed" / res.path.name / "splits_final.json").read_text())
    assert json.loads((res.path / "splits_final.json").read_text()) == folds  # the raw copy agrees
    fold = folds[0]
    manifest = json.loads((res.path / "manifest.json").read_text())
    patient = {c["case_id"]: c["patient"] for c in manifest["cases"]}
    assert {patient[c] for c in fold["train"]}.isdisjoint({patient[c] for c in fold["val"]})
    assert len(list((res.path / "imagesTs").iterdir())) == 2
    assert manifest["options"]["real_fraction"] == 0.5 and manifest["options"]["synthetic_ratio"] == 1.5


def test_only_accepted_scenes_and_images(scenes, tmp_path):
    s0 = Scene.open(scenes[0])
    for rec in s0.lesions:
        s0.set_decision(rec.id, "rejected", by="test")
    s1 = Scene.open(scenes[1])
    s1.set_meta("qa_image", {"status": "rejected", "by": "test"})
    plan = plan_export(scenes)
    used = {Path(c.scene) for c in plan.cases}
    assert scenes[0] not in used and scenes[1] not in used and len(used) == 4
    assert plan.excluded["scenes_without_accepted_lesions"] == [str(scenes[0])]
    assert plan.excluded["scenes_rejected"] == [str(scenes[1])]


def test_real_renderer_only_accepted_lesions_reach_pixels(tmp_path, shared_data):
    """With napari_synthseg.render (the default renderer): rejected lesions leave no trace."""
    from napari_synthseg.lesions import load_ct_patch, procedural_cxr_nodule
    from napari_synthseg.lesions.place import place_lesion
    from napari_synthseg.render import render_scene

    image = read_image(shared_data / "cxr/nih_nodule/00002361_008.png", spacing=0.41)
    scene = Scene.create(image, tmp_path / "scenes" / "real-render", patient_id="P9")
    solid = procedural_cxr_nodule(12.0, "solid", target_spacing=image.scale, seed=2)
    ct_nodule = load_ct_patch(shared_data / "ct/nodule_patches/nodule_05_ct.mha")
    a = place_lesion(scene, solid, at_xyz=(300, 400), blend="alpha")
    b = place_lesion(scene, ct_nodule, at_xyz=(700, 420), blend="poisson")
    c = place_lesion(scene, solid, at_xyz=(320, 700), blend="additive", size_mm=20.0)
    scene.set_decision(a.id, "accepted", by="test")
    scene.set_decision(b.id, "rejected", by="test")
    scene.set_decision(c.id, "accepted", by="test")
    full = render_scene(Scene.open(scene.folder))
    res = export_dataset(tmp_path / "scenes", tmp_path / "nifti", fmt="nifti", workers=1)
    case = json.loads((res.path / "manifest.json").read_text())["cases"][0]
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(res.path / case["label"])))
    pixels = sitk.GetArrayFromImage(sitk.ReadImage(str(res.path / case["image"])))
    expected = np.where(np.isin(full.labels, [a.label, c.label]), full.labels, 0)
    np.testing.assert_array_equal(labels, expected)
    rejected_area = full.labels == b.label
    assert rejected_area.sum() > 20
    np.testing.assert_allclose(pixels[rejected_area], image.array[rejected_area])  # untouched source
    assert np.abs(pixels[expected > 0] - image.array[expected > 0]).mean() > 1.0  # accepted ones drawn
    sidecar = json.loads((res.path / case["label"].replace("labels/", "provenance/").replace(".nii.gz", ".json")).read_text())
    assert sidecar["renderer"] == "napari_synthseg.render.compose:render_scene"
    assert [r["id"] for r in sidecar["lesions"]] == [a.id, c.id]


def test_cancel_keeps_partial_and_next_run_resumes(scenes, tmp_path):
    from napari_synthseg.errors import CancelledError
    from napari_synthseg.utils.progress import CancelToken

    token = CancelToken()

    def progress(step, total, message):
        if step >= 2:
            token.cancel()

    target = tmp_path / "nifti"
    with pytest.raises(CancelledError):
        export_dataset(scenes, target, fmt="nifti", renderer=RENDERER, workers=1, progress=progress, cancel=token)
    assert not target.exists()
    assert len(list((tmp_path / ".nifti.partial" / ".done").glob("*.json"))) == 2
    res = export_dataset(scenes, target, fmt="nifti", renderer=RENDERER, workers=1)
    assert res.resumed == 2 and res.written == len(scenes) - 2
    assert len(list((target / "images").iterdir())) == len(scenes)
    assert not (tmp_path / ".nifti.partial").exists()
