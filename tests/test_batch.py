"""Batch recipes: validation, inputs and per-image spacing, resume, failures, exports, the CLI.

The distributed runs (a worker killed mid-run, `dask scheduler` + `dask worker` over tcp://) are
in test_batch_distributed.py.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from _batch_images import cheap_recipe, write_images
from napari_synthseg.batch import (
    MARKER,
    load_recipe,
    parse_recipe,
    plan_jobs,
    run_recipe,
)
from napari_synthseg.cli import main
from napari_synthseg.errors import SynthsegError
from napari_synthseg.render import render_scene
from napari_synthseg.scene import Scene


def _records(out: Path) -> dict[str, list]:
    strip = ("created", "modified", "decision")
    return {p.name: [{k: v for k, v in r.items() if k not in strip}
                     for r in json.loads((p / "scene.json").read_text())["lesions"]]
            for p in sorted((out / "scenes").iterdir())}


@pytest.mark.parametrize("change, key", [
    ({"lesions": {"count": [1, 2], "sources": [{"type": "procedural", "diamter_mm": [5, 9]}]}},
     "lesions.sources.0.diamter_mm: unknown key"),
    ({"lesions": {"sources": [{"type": "procedural", "diameter_mm": [9, 5]}]}}, "lesions.sources.0.diameter_mm"),
    ({"lesions": {"sources": [{"type": "generated-by-magic"}]}}, "lesions.sources.0"),
    ({"constraint": {"organ": "liver"}}, "constraint.organ"),
    ({"export": [{"format": "nnunet"}]}, "export writes only accepted lesions"),
    ({"scenes_per_image": 0}, "scenes_per_image"),
    ({"seeds": 3}, "seeds: unknown key"),
])
def test_bad_recipe_is_one_line_naming_the_key_exit_2(tmp_path, capsys, change, key):
    data = cheap_recipe(tmp_path / "images", tmp_path / "out", **change)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(data))
    assert main(["batch", str(tmp_path / "recipe.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "recipe.yaml" in err and key in err, err
    assert not (tmp_path / "out").exists()  # nothing started


def test_missing_stable_key_and_unreadable_inputs(tmp_path):
    with pytest.raises(SynthsegError, match="out: missing"):
        parse_recipe({"inputs": ["*.png"]})
    recipe = parse_recipe({"inputs": ["nothing/*.png"], "out": "o"}, tmp_path)
    with pytest.raises(SynthsegError, match="matches no image"):
        plan_jobs(recipe)


def test_relative_paths_resolve_against_the_recipe_folder(tmp_path, monkeypatch):
    write_images(tmp_path / "project" / "images", 2)
    data = {"inputs": ["images/*.mha"], "out": "out", "scenes_per_image": 2}
    (tmp_path / "project" / "recipe.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)  # somewhere else
    recipe = load_recipe(tmp_path / "project" / "recipe.yaml")
    jobs = plan_jobs(recipe)
    assert recipe.out_dir == (tmp_path / "project" / "out").resolve()
    assert [j.name for j in jobs] == ["00000_img000_s00", "00000_img000_s01", "00001_img001_s00", "00001_img001_s01"]


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "spacing_mm", "modality", "patient_id"])
        writer.writeheader()
        writer.writerows(rows)


def test_csv_spacing_rules_patients_failures_and_real_library(tmp_path, shared_data, capsys):
    """A stored spacing is kept; PNGs take the CSV's, then the default; none known -> that image fails."""
    write_images(tmp_path / "png", 3, fmt=".png")
    mha = write_images(tmp_path / "mha", 1, spacing=0.8)[0]
    (tmp_path / "broken.png").write_bytes(b"not a png")
    _write_csv(tmp_path / "images.csv", [
        {"path": "png/img000.png", "spacing_mm": "0.35", "modality": "CXR", "patient_id": "P1"},
        {"path": "png/img001.png", "spacing_mm": "", "modality": "CXR", "patient_id": "P2"},
        {"path": str(mha), "spacing_mm": "0.2", "modality": "CXR", "patient_id": "P2"},
        {"path": "broken.png", "spacing_mm": "0.3", "modality": "CXR", "patient_id": "P3"},
    ])
    lidc = shared_data / "ct" / "lidc_nodules"
    data = cheap_recipe(tmp_path, tmp_path / "out", inputs="images.csv", defaults={"spacing_mm": 0.5})
    data["lesions"]["sources"] = [{"type": "library", "path": str(lidc), "diameter_mm": [8, 10], "blend": ["alpha"]}]
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(data))
    assert main(["batch", str(tmp_path / "recipe.yaml"), "--scheduler", "synchronous"]) == 1  # one image failed
    out = capsys.readouterr().out
    assert "failed: " in out and "broken.png" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    scenes = {Path(s["image"]).name: s for s in summary["scenes"]}
    assert scenes["img000.png"]["spacing_mm"] == [0.35, 0.35] and scenes["img000.png"]["spacing_source"] == "csv"
    assert scenes["img001.png"]["spacing_mm"] == [0.5, 0.5] and scenes["img001.png"]["spacing_source"] == "default"
    assert scenes["img000.mha"]["spacing_mm"] == [0.8, 0.8] and scenes["img000.mha"]["spacing_source"] == "file"
    assert "CSV spacing (0.2,) is ignored" in (tmp_path / "out" / "logs" / f"{scenes['img000.mha']['scene']}.log").read_text()
    assert summary["counts"]["failed"] == 1 and summary["failed"][0]["image"].endswith("broken.png")
    assert "cannot read broken.png" in (tmp_path / "out" / "logs" / f"{summary['failed'][0]['scene']}.log").read_text()
    assert summary["counts"]["built"] == 3 and summary["counts"]["spacing_from"] == {"csv": 1, "default": 1, "file": 1}
    for s in summary["scenes"]:
        for lesion in s["lesions"]:
            assert lesion["source"]["type"] == "lesion_index" and lesion["source"]["split"] == "train"
    from napari_synthseg.io.lesion_index import group_side

    groups = {lesion["source"]["group"] for s in summary["scenes"] for lesion in s["lesions"]}
    assert groups and all(group_side(g) == "train" for g in groups)  # held-out LIDC series never drawn
    folder = tmp_path / "out" / "scenes" / scenes["img001.png"]["scene"]
    assert Scene.open(folder).source.patient_id == "P2"
    # Without CSV or default spacing a PNG is refused, not treated as 1 mm per pixel.
    data.pop("defaults")
    recipe = parse_recipe(data, tmp_path)
    with pytest.raises(SynthsegError, match="made by another recipe"):  # never mix two recipes' scenes
        run_recipe(recipe, "synchronous")
    shutil.rmtree(tmp_path / "out")
    summary = run_recipe(recipe, "synchronous")
    errors = {Path(f["image"]).name: f["error"] for f in summary["failed"]}
    assert "stores no pixel spacing" in errors["img001.png"]


def test_resume_after_lost_scenes_gives_the_same_result(tmp_path):
    write_images(tmp_path / "images", 6)
    recipe = parse_recipe(cheap_recipe(tmp_path / "images", tmp_path / "out", scenes_per_image=1))
    first = run_recipe(recipe, "synchronous")
    before = _records(tmp_path / "out")
    scenes = sorted((tmp_path / "out" / "scenes").iterdir())
    shutil.rmtree(scenes[1])
    shutil.rmtree(scenes[4])
    (scenes[2] / MARKER).unlink()  # a folder without its marker is not done: rebuilt in place
    (tmp_path / "out" / "scenes" / ".tmp-00003_img003_s00-deadbeef").mkdir()  # left by a killed worker
    import fcntl

    with open(tmp_path / "out" / ".batch.lock", "w") as held:  # another run holds the folder
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(SynthsegError, match="another synthseg batch is running"):
            run_recipe(recipe, "synchronous")
    again = run_recipe(recipe, "synchronous")
    assert again["counts"]["built"] == 3 and again["counts"]["resumed"] == 3 and again["counts"]["failed"] == 0
    assert _records(tmp_path / "out") == before
    assert again["counts"]["lesions"] == first["counts"]["lesions"]
    assert not [p for p in (tmp_path / "out" / "scenes").iterdir() if p.name.startswith(".")]


def test_batch_exports_nnunet_with_patient_split_where_nnunet_reads_it(tmp_path, monkeypatch):
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    write_images(tmp_path / "images", 6)
    _write_csv(tmp_path / "images.csv", [
        {"path": f"images/img{i:03d}.mha", "spacing_mm": "", "modality": "CXR", "patient_id": f"P{i // 2}"}
        for i in range(6)])
    data = cheap_recipe(tmp_path, tmp_path / "out", inputs="images.csv", scenes_per_image=2,
                        review={"accept": "all"},
                        export=[{"format": "nnunet", "split": [0.34, 0.33, 0.33], "dataset_id": 12, "name": "Tiny",
                                 "real_fraction": 1.0},
                                {"format": "csv"}])
    summary = run_recipe(parse_recipe(data, tmp_path), "synchronous")
    nnunet = next(e for e in summary["exports"] if e["format"] == "nnunet")
    assert nnunet["status"] == "written"
    splits = tmp_path / "out" / "nnUNet_preprocessed" / "Dataset012_Tiny" / "splits_final.json"
    assert nnunet["splits_final"] == str(splits) and splits.exists()
    fold = json.loads(splits.read_text())[0]
    assert json.loads((tmp_path / "out" / "nnUNet_raw" / "Dataset012_Tiny" / "splits_final.json").read_text())[0] == fold
    manifest = json.loads((tmp_path / "out" / "nnUNet_raw" / "Dataset012_Tiny" / "manifest.json").read_text())
    patient = {c["case_id"]: c["patient"] for c in manifest["cases"]}
    assert fold["train"] and fold["val"]
    assert {patient[c] for c in fold["train"]}.isdisjoint({patient[c] for c in fold["val"]})
    assert (tmp_path / "out" / "export_csv" / "boxes_mm.csv").exists()
    # A rerun with nothing new leaves the exports as they are.
    again = run_recipe(parse_recipe(data, tmp_path), "synchronous")
    assert [e["status"] for e in again["exports"]] == ["up to date", "up to date"]


@pytest.mark.slow
def test_example_recipe_runs_as_it_is_on_sample_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["batch", "--example"]) == 0
    text = capsys.readouterr().out
    Path("recipe.yaml").write_text(text)
    assert "#" in text and load_recipe("recipe.yaml").inputs  # commented, and valid as printed
    assert main(["batch", "recipe.yaml", "--scheduler", "synchronous"]) == 0
    summary = json.loads((tmp_path / "synthseg_batch_out" / "summary.json").read_text())
    assert summary["counts"]["built"] == 3 and summary["counts"]["failed"] == 0 and summary["counts"]["lesions"] >= 3
    assert [e["status"] for e in summary["exports"]] == ["written", "written"]
    assert (tmp_path / "synthseg_batch_out" / "nnUNet_raw" / "Dataset501_Synthseg" / "dataset.json").exists()


@pytest.mark.slow
def test_generate_shortcut_same_scenes_on_a_local_cluster_and_in_process(shared_data, tmp_path, capsys):
    """Real NIH radiographs (PNG: --spacing applies), lesions inside the organ constraint."""
    images = sorted((shared_data / "cxr" / "nih_nodule").glob("*.png"))[:2]
    common = [*map(str, images), "--per-image", "2", "--size-mm", "8-14", "--spacing", "0.4", "--seed", "7"]
    assert main(["generate", *common, "--out", str(tmp_path / "a"), "--workers", "2"]) == 0
    import psutil

    # No worker outlives the run (multiprocessing's resource tracker is the interpreter's own).
    deadline = time.monotonic() + 10
    while (left := [p for p in psutil.Process().children(recursive=True)
                    if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                    and "resource_tracker" not in " ".join(p.cmdline())]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, [" ".join(p.cmdline())[:120] for p in left]
    assert main(["generate", *common, "--out", str(tmp_path / "b"), "--scheduler", "synchronous"]) == 0
    assert "4 lesions" in capsys.readouterr().out
    assert _records(tmp_path / "a") == _records(tmp_path / "b")
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["workers"] == 2 and summary["counts"]["spacing_from"] == {"default": 2}
    for folder in sorted((tmp_path / "a" / "scenes").iterdir()):
        scene = Scene.open(folder)
        assert len(scene.lesions) == 2 and scene.load_image().spacing == (0.4, 0.4)
        labels, constraint = render_scene(scene).labels, scene.mask("constraint")
        assert labels.any() and np.all(constraint[labels > 0])


@pytest.mark.slow
def test_review_rules_inline_and_harmonize_per_image_model(tmp_path):
    """Rules decide right after placing (reasons counted); {stem} picks each image's harmonizer."""
    import torch

    from napari_synthseg.harmonize import preset, train_harmonizer
    from napari_synthseg.io import read_image

    paths = write_images(tmp_path / "images", 2)
    torch.set_num_threads(1)
    config = preset("singan", "fast", niter=2, min_size=16, max_size=32, train_crop=16, nfc=8, scale_factor=0.5,
                    max_nfc=8)
    (tmp_path / "models").mkdir()
    for path in paths:
        train_harmonizer(read_image(path).array, config=config, seed=3).save(tmp_path / "models" / f"{path.stem}.safetensors")
    rules = {"rules": [{"name": "small", "when": {"equivalent_diameter_mm": {"lt": 7.0}}, "status": "rejected",
                        "reason": "too small to learn from"}], "default": "accepted"}
    data = cheap_recipe(tmp_path / "images", tmp_path / "out", scenes_per_image=2,
                        harmonize={"model": "models/{stem}.safetensors", "scale": 1, "margin_px": 4},
                        review={"rules": rules})
    summary = run_recipe(parse_recipe(data, tmp_path), "synchronous")
    counts = summary["counts"]
    assert counts["failed"] == 0 and counts["built"] == 4
    assert counts["harmonized"] + sum(summary["rejects"]["harmonize"].values()) == counts["lesions"]
    assert counts["harmonized"] > 0
    assert counts["review"]["accepted"] + counts["review"]["rejected"] == counts["lesions"]
    assert summary["rejects"]["review"].get("rejected: small", 0) == counts["review"]["rejected"]
    seen = {"accepted": 0, "rejected": 0, "overlay": 0}
    for folder in (tmp_path / "out" / "scenes").iterdir():
        for rec in Scene.open(folder).lesions:
            seen[rec.status] += 1
            seen["overlay"] += "overlay" in rec.assets
    assert seen == {"accepted": counts["review"]["accepted"], "rejected": counts["review"]["rejected"],
                    "overlay": counts["harmonized"]}


def test_ct_patch_folder_and_lesion_library_sources_through_the_shared_spec(tmp_path, shared_data):
    """Folders of CT patches and lesion libraries resolve through workflow.spec (sha256 provenance)."""
    from napari_synthseg.lesions import LesionLibrary, load_ct_patch

    write_images(tmp_path / "images", 2)
    patches = tmp_path / "patches"
    patches.mkdir()
    for name in ("nodule_05_ct.mha", "nodule_05_seg.mha"):
        shutil.copy(shared_data / "ct" / "nodule_patches" / name, patches / name)
    library = LesionLibrary(tmp_path / "library")
    library.add(load_ct_patch(patches / "nodule_05_ct.mha"))
    data = cheap_recipe(tmp_path / "images", tmp_path / "out", lesions={"count": 1, "sources": [
        {"type": "library", "path": "patches", "weight": 1, "diameter_mm": [8, 10], "class": "mass"},
        {"type": "library", "path": "library", "weight": 1, "diameter_mm": [8, 10]}]}, scenes_per_image=3)
    summary = run_recipe(parse_recipe(data, tmp_path), "synchronous")
    assert summary["counts"]["failed"] == 0 and summary["counts"]["lesions"] == 6
    sources = [lesion["source"] for s in summary["scenes"] for lesion in s["lesions"]]
    assert {s["type"] for s in sources} == {"ct_patch", "library"}
    assert all(len(s["sha256"]) == 64 and s["placed_by"] == "batch" for s in sources)
    by_class = summary["counts"]["lesions_by_class"]
    assert by_class["mass"] == sum(s["type"] == "ct_patch" for s in sources)


@pytest.mark.slow
def test_inpainted_lesions_from_a_lesion_fill_model(tmp_path):
    """LINOP-style source: a lesion-shaped hole filled by a model trained for lesion fill."""
    import SimpleITK as sitk
    import torch

    from napari_synthseg.inpaint import InpainterConfig, TrainConfig, train_inpainter
    from napari_synthseg.inpaint.masks import blob_mask

    torch.set_num_threads(1)
    train = write_images(tmp_path / "train", 3)
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    for path in train:  # a bright disc to learn, and its mask
        image = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(image)
        mask = blob_mask(arr.shape, rng, radius=6.0, irregularity=0.0)
        arr[mask] += 500
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(image)
        sitk.WriteImage(out, str(path))
        sitk.WriteImage(sitk.GetImageFromArray(mask.astype(np.uint8)), str(tmp_path / "masks" / f"{path.stem}_mask.mha"))
    model = tmp_path / "lesion_fill.safetensors"
    train_inpainter([tmp_path / "train"], model, masks_dir=tmp_path / "masks",
                    model_config=InpainterConfig(base_channels=8, bottleneck_channels=16, n_ffc_blocks=1,
                                                 modes=("healthy", "lesion")),
                    train_config=TrainConfig(steps=3, batch=2, crop=48, checkpoint_every=0), device="cpu")
    write_images(tmp_path / "images", 2)
    data = cheap_recipe(tmp_path / "images", tmp_path / "out", lesions={"count": 1, "sources": [
        {"type": "inpainted", "model": "lesion_fill.safetensors", "diameter_mm": [6, 8], "class": "mass"}]})
    summary = run_recipe(parse_recipe(data, tmp_path), "synchronous")
    assert summary["counts"]["failed"] == 0 and summary["counts"]["lesions"] == 2
    assert summary["counts"]["lesions_by_class"] == {"mass": 2}
    for folder in (tmp_path / "out" / "scenes").iterdir():
        scene = Scene.open(folder)
        (record,) = scene.lesions
        assert record.source["type"] == "inpainted" and record.source["mode"] == "lesion"
        assert len(record.source["model_sha256"]) == 64
        assert render_scene(scene).labels.any()
    # A model without lesion fill is refused before the run (exit 2 on the command line).
    healthy_only = tmp_path / "healthy.safetensors"
    train_inpainter([tmp_path / "train"], healthy_only,
                    model_config=InpainterConfig(base_channels=8, bottleneck_channels=16, n_ffc_blocks=1,
                                                 modes=("healthy",)),
                    train_config=TrainConfig(steps=1, batch=2, crop=48, checkpoint_every=0), device="cpu")
    data["lesions"]["sources"][0]["model"] = "healthy.safetensors"
    with pytest.raises(SynthsegError, match="lesions.sources.0: .*not 'lesion'"):
        plan_jobs(parse_recipe(data, tmp_path))


@pytest.mark.slow
def test_generated_lesions_as_a_batch_source(tmp_path):
    """Issue 16's generator as a recipe source: made at the drawn site, recorded with model and seed."""
    write_images(tmp_path / "images", 1, size=128)
    data = cheap_recipe(tmp_path / "images", tmp_path / "out", lesions={"count": 1, "sources": [
        {"type": "generated", "kinds": ["solid"], "diameter_mm": [8, 10], "blend": ["alpha"],
         "contrast": [1, 1]}]})
    summary = run_recipe(parse_recipe(data, tmp_path), "synchronous")
    assert summary["counts"]["failed"] == 0, summary
    [scene] = summary["scenes"]
    [lesion] = scene["lesions"]
    assert lesion["source"]["type"] == "generated" and lesion["source"]["placed_by"] == "batch"
    assert len(lesion["source"]["model_sha256"]) == 64


def test_recipe_lesion_count_is_bounded(tmp_path):
    write_images(tmp_path / "images", 1)
    data = cheap_recipe(tmp_path / "images", tmp_path / "out", lesions={"count": [1, 100000]})
    with pytest.raises(SynthsegError, match="count"):
        parse_recipe(data, tmp_path)
