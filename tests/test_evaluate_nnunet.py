"""The nnU-Net route: one dataset per arm with our split where nnU-Net reads it; collect scores predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from _evaluate_data import index_set
from napari_synthseg.cli import main


@pytest.mark.slow
def test_nnunet_arms_split_commands_and_collect(tmp_path, capsys):
    real = index_set(tmp_path / "real", 6, noisy=True, seed=0, groups=3)
    fake = index_set(tmp_path / "fake", 4, noisy=False, seed=1)
    test = index_set(tmp_path / "test", 3, noisy=True, seed=2)
    out = tmp_path / "nn"
    assert main(["evaluate", "downstream", "--real", str(real), "--synthetic", f"proc={fake}", "--test", str(test),
                 "--nnunet", str(out), "--ratios", "0.5", "--folds", "3", "--dataset-id", "701"]) == 0
    printed = capsys.readouterr().out
    assert "nnUNetv2_plan_and_preprocess -d 701 702 703 -c 3d_fullres" in printed
    assert "nnUNetv2_train 702 3d_fullres 0" in printed and "synthseg evaluate collect" in printed
    raw = out / "nnUNet_raw"
    names = sorted(p.name for p in raw.iterdir())
    assert names == ["Dataset701_Synthseg-real", "Dataset702_Synthseg-real-plus-procx0p5", "Dataset703_Synthseg-proc-only"]
    mixed = raw / names[1]
    ds = json.loads((mixed / "dataset.json").read_text())
    assert ds["numTraining"] == 9 and ds["file_ending"] == ".nii.gz" and ds["channel_names"] == {"0": "CT"}
    assert len(list((mixed / "imagesTr").iterdir())) == 9 and len(list((mixed / "imagesTs").iterdir())) == 3
    img = sitk.ReadImage(str(mixed / "imagesTr" / "real_0000_0000.nii.gz"))
    lab = sitk.ReadImage(str(mixed / "labelsTr" / "real_0000.nii.gz"))
    assert img.GetSize() == lab.GetSize() == (48, 48, 48)
    splits = json.loads((out / "nnUNet_preprocessed" / names[1] / "splits_final.json").read_text())
    assert len(splits) == 3
    plan = json.loads((out / "evaluation_plan.json").read_text())
    for fold in splits:
        assert all(c.startswith("real_") for c in fold["val"])  # synthetic lesions always train
        assert not set(fold["train"]) & set(fold["val"])
    # Pretend nnU-Net ran: a perfect arm, an arm that finds nothing, and one missing.
    for arm, run, perfect in (("real", "fold0", True), ("real", "fold1", True), ("real+procx0.5", "fold0", False)):
        folder = out / "predictions" / arm / run
        folder.mkdir(parents=True)
        for case in plan["test_cases"]:
            label = sitk.ReadImage(str(out / "test" / "labels" / f"{case['case']}.nii.gz"))
            array = sitk.GetArrayFromImage(label) if perfect else np.zeros(label.GetSize()[::-1], np.uint8)
            pred = sitk.GetImageFromArray(array.astype(np.uint8))
            pred.CopyInformation(label)
            sitk.WriteImage(pred, str(folder / f"{case['case']}.nii.gz"))
    assert main(["evaluate", "collect", str(out), "--bootstrap", "20"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report" / "report.json").read_text())
    arms = {a["name"]: a for a in report["arms"]}
    assert arms["real"]["dice"] == 1.0 and arms["real"]["sensitivity"] == 1.0 and len(arms["real"]["per_seed"]) == 2
    assert arms["real+procx0.5"]["dice"] == 0.0 and arms["real+procx0.5"]["sensitivity"] == 0.0
    assert "proc-only" not in arms and "missing predictions: proc-only" in printed
    assert report["route"] == "nnunet" and (out / "report" / "report.html").is_file()
    assert main(["evaluate", "collect", str(tmp_path)]) == 2
