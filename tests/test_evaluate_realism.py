"""Realism evaluation: lesion-set readers, crops, features, two-sample tests, FRD, report, CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from _evaluate_data import index_set, nnunet_set
from napari_synthseg.cli import main
from napari_synthseg.errors import SynthsegError
from napari_synthseg.evaluate import crop_lesion, detect_layout, read_lesion_set, split_halves
from napari_synthseg.qa.realism import FEATURE_NAMES, RealismReference, realism_features


def test_crop_is_centred_and_resampled_alike():
    mask = np.zeros((40, 40, 40), bool)
    mask[18:23, 18:23, 18:23] = True
    image = np.where(mask, 100.0, -800.0).astype(np.float32)
    # 0.5 mm voxels: a 16 mm crop at 1 mm is 16 voxels and holds the 2.5 mm cube at its centre.
    crop, crop_mask = crop_lesion(image, mask, (0.5, 0.5, 0.5), (20, 20, 20), 16.0, 1.0)
    assert crop.shape == crop_mask.shape == (16, 16, 16)
    centre = np.array(np.nonzero(crop_mask)).mean(axis=1)
    assert np.allclose(centre, 7.5, atol=0.6)
    assert crop.min() == pytest.approx(-800.0)  # outside the image: the image minimum (air)


def test_readers_detect_every_layout(tmp_path):
    index_set(tmp_path / "idx", 3, noisy=True, seed=0)
    nnunet_set(tmp_path / "nn", 2, seed=1)
    boxes = tmp_path / "cxr"
    boxes.mkdir()
    img = np.full((64, 64), 40, np.uint8)
    img[20:30, 30:42] = 200
    Image.fromarray(img).save(boxes / "a.png")
    (boxes / "boxes.csv").write_text("img_name,x,y,width,height,label\na.png,30,20,12,10,1\na.png,0,0,0,0,0\n")
    assert detect_layout(tmp_path / "idx") == "index"
    assert detect_layout(tmp_path / "nn") == "nnunet"
    assert detect_layout(boxes) == "boxes"
    idx = read_lesion_set(tmp_path / "idx", crop_mm=16, spacing_mm=1.0)
    assert len(idx) == 3 and idx.samples[0].image.shape == (16, 16, 16) and len(idx.sha256) == 64
    nn = read_lesion_set(tmp_path / "nn", crop_mm=16, spacing_mm=2.0)
    assert len(nn) == 2 and nn.samples[0].image.shape == (8, 8, 8)
    box = read_lesion_set(boxes / "boxes.csv", crop_mm=24, spacing_mm=1.0)
    assert len(box) == 1 and box.samples[0].box_only and box.samples[0].mask.sum() > 50
    with pytest.raises(SynthsegError, match="not a lesion set"):
        read_lesion_set(tmp_path / "idx" / "patches")


def test_scene_folders_are_a_lesion_set(tmp_path, shared_data):
    from napari_synthseg.io import read_image
    from napari_synthseg.lesions import procedural_nodule
    from napari_synthseg.lesions.place import place_lesion
    from napari_synthseg.scene import Scene

    image = read_image(shared_data / "ct" / "nodule_patches" / "nodule_00_ct.mha")
    for k in range(2):
        scene = Scene.create(image, tmp_path / "scenes" / f"s{k}")
        place_lesion(scene, procedural_nodule(8.0, "solid", spacing=1.0, seed=k), at_xyz=(25, 25, 25), size_mm=8.0)
    lesions = read_lesion_set(tmp_path / "scenes", crop_mm=20, spacing_mm=1.0)
    assert lesions.layout == "scenes" and len(lesions) == 2
    assert 5.0 < lesions.samples[0].diameter_mm < 11.0


def test_features_see_noise_and_the_reference_flags_it():
    rng = np.random.default_rng(0)
    from _evaluate_data import lesion_volume

    real = [realism_features(*[a.astype(np.float32) for a in lesion_volume(rng, noisy=True)], (1, 1, 1)) for _ in range(12)]
    smooth = realism_features(*[a.astype(np.float32) for a in lesion_volume(rng, noisy=False)], (1, 1, 1))
    assert set(real[0]) == set(FEATURE_NAMES)
    assert smooth["noise"] < 0.5 * min(r["noise"] for r in real)
    assert 0.6 < real[0]["sphericity"] <= 1.05 and real[0]["elongation"] > 0.8
    ref = RealismReference.fit(real)
    outside = [name for name, *_ in ref.outside(smooth)]
    assert "noise" in outside and ref.score(smooth) > ref.score(real[0])


@pytest.mark.slow
def test_realism_report_separates_smooth_fakes_and_not_real_halves(tmp_path):
    from napari_synthseg.evaluate.realism import realism_report

    real = index_set(tmp_path / "real", 16, noisy=True, seed=1)
    fake = index_set(tmp_path / "fake", 12, noisy=False, seed=2)
    r = realism_report(real, fake, tmp_path / "rep", crop_mm=16, folds=3, steps=4, batch_size=8, n_boot=100,
                       frd_backend="synthseg-features")
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    for key in ("auc", "auc_ci", "frd", "control_auc", "n_real", "n_synthetic"):
        assert key in data
    assert data["n_real"] == 16 and data["n_synthetic"] == 12 and data["frd_backend"] == "synthseg-features"
    # noise-free lesions are trivially given away by the features; the real halves are not
    assert r["feature_auc"] > 0.9
    assert r["features_test"]["features"]["noise"]["univariate_auc"] > 0.95
    assert r["control_feature_auc"] < r["feature_auc"]
    assert r["frd"] > 0
    assert (tmp_path / "rep" / "plots" / "features.png").stat().st_size > 10000
    assert (tmp_path / "rep" / "realism_reference.json").is_file()
    rows = list(csv.DictReader((tmp_path / "rep" / "features.csv").open()))
    assert len(rows) == 28 and "noise" in "| ".join((tmp_path / "rep" / "report.md").read_text().splitlines())


def test_split_halves_keeps_patients_apart(tmp_path):
    lesions = read_lesion_set(index_set(tmp_path / "r", 10, True, 0, groups=4), crop_mm=12)
    a, b = split_halves(lesions.samples)
    assert {s.group for s in a}.isdisjoint({s.group for s in b}) and a and b


def test_cli_realism_features_only_and_errors(tmp_path, capsys):
    real = index_set(tmp_path / "real", 8, noisy=True, seed=3)
    fake = index_set(tmp_path / "fake", 8, noisy=False, seed=4)
    code = main(["evaluate", "realism", str(real), str(fake), "--out", str(tmp_path / "o"), "--no-cnn", "--crop-mm", "16",
                 "--folds", "2", "--bootstrap", "50", "--frd-backend", "synthseg-features"])
    assert code == 0
    assert "realism AUC" in capsys.readouterr().out
    assert main(["evaluate", "realism", str(real), str(tmp_path / "nope"), "--out", str(tmp_path / "o2")]) == 2
    assert "lesion set not found" in capsys.readouterr().err


@pytest.mark.slow
def test_frd_score_backend_when_installed(tmp_path):
    from napari_synthseg.evaluate.frd import frd_score_available
    from napari_synthseg.evaluate.realism import realism_report

    if not frd_score_available():
        pytest.skip("frd-score / pyradiomics not installed (optional)")
    real = index_set(tmp_path / "real", 8, noisy=True, seed=5)
    fake = index_set(tmp_path / "fake", 8, noisy=False, seed=6)
    r = realism_report(real, fake, tmp_path / "rep", crop_mm=16, folds=2, cnn=False, control=False, n_boot=20,
                       frd_backend="frd-score")
    assert r["frd_backend"] == "frd-score" and r["frd"] == r["frd"]
