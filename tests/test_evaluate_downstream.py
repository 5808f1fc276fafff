"""Downstream evaluation: arms, lesion-level scoring and FROC, the tiny end-to-end run and CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _evaluate_data import index_set
from napari_synthseg.cli import main
from napari_synthseg.errors import SynthsegError
from napari_synthseg.evaluate.downstream import Arm, compare_arms, patch_voxels, plan_arms
from napari_synthseg.evaluate.lesion_sets import LesionSample
from napari_synthseg.evaluate.scoring import froc, score_case, size_bin
from napari_synthseg.evaluate.stats import auc_with_ci, bootstrap_two_level


def _sample(mask: np.ndarray, diameter: float = 8.0) -> LesionSample:
    return LesionSample(np.zeros(mask.shape, np.float32), mask, (1.0,) * mask.ndim, "c", "c", diameter)


def test_plan_arms_and_selection_is_seeded_and_sized():
    arms = plan_arms(["proc", "trans"], ratios=(0.5, 1.0), real_fractions=(0.25, 1.0))
    names = [a.name for a in arms]
    assert names == ["real", "real0.25", "real+procx0.5", "real+procx1", "proc-only", "real+transx0.5",
                     "real+transx1", "trans-only"]
    real = [_sample(np.zeros((2, 2), bool)) for _ in range(8)]
    synth = {"proc": [_sample(np.zeros((2, 2), bool)) for _ in range(6)]}
    r, s = Arm("real+procx0.5", "real+synthetic", synthetic="proc", ratio=0.5).select(real, synth, seed=0)
    assert len(r) == 8 and len(s) == 4
    r, s = Arm("real+procx1", "real+synthetic", synthetic="proc", ratio=1.0).select(real, synth, seed=0)
    assert len(s) == 6  # capped at the synthetic set's size
    a = Arm("real0.25", "real-fraction", real_fraction=0.25)
    assert len(a.select(real, synth, 0)[0]) == 2
    assert [id(x) for x in a.select(real, synth, 0)[0]] == [id(x) for x in a.select(real, synth, 0)[0]]
    with pytest.raises(SynthsegError):
        plan_arms(["p"], ratios=(-1,))
    assert patch_voxels(16, 1.0) == 32 and patch_voxels(40, 1.0) == 48


def test_score_case_counts_hits_misses_and_false_positives():
    gt = np.zeros((32, 32, 32), bool)
    gt[14:19, 14:19, 14:19] = True          # centred lesion, ~6 mm
    gt[2:4, 2:4, 2:4] = True                # a small neighbour the model misses
    prob = np.zeros(gt.shape, np.float32)
    prob[14:19, 14:19, 14:18] = 0.9         # hits the centred lesion
    prob[25:28, 25:28, 25:28] = 0.3         # a false positive candidate below 0.5
    score = score_case(prob, _sample(gt, diameter=7.0))
    assert score.detected == [True, False] or score.detected == [False, True]
    assert sorted(score.lesion_diameters)[1] == 7.0  # the centred lesion keeps the table's diameter
    assert score.fp_probs == [pytest.approx(0.3)]
    assert 0.7 < score.dice < 0.95
    value, fps, sens = froc([score, score])
    assert 0.0 < value <= 0.5 and sens.max() == pytest.approx(0.5)
    assert [size_bin(d) for d in (3, 6, 12, 30)] == ["<6 mm", "6-10 mm", "10-20 mm", ">20 mm"]


def test_bootstraps():
    m = np.array([[0.5, 0.7, 0.6], [0.55, 0.65, 0.6]])
    v, lo, hi = bootstrap_two_level(m, 200)
    assert lo <= v <= hi and v == pytest.approx(m.mean())
    auc, lo, hi = auc_with_ci([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], 100)
    assert auc == 1.0 and lo == 1.0


def _arm(name, dice, detected, diameters=(4.0, 8.0, 15.0), seeds=(0, 1, 2)):
    return {"name": name, "outcomes": {"seeds": list(seeds), "dice": dice, "detected": detected,
                                       "lesion_diameters": list(diameters)}}


def test_compare_arms_pairs_seeds_and_cases():
    rng = np.random.default_rng(0)
    # a large spread between test cases that both arms share, and a constant +0.05 gain
    base = rng.uniform(0.1, 0.9, (3, 3))
    detected_base = [[0, 0, 1], [1, 0, 1], [0, 0, 1]]
    detected_better = [[1, 1, 1], [1, 0, 1], [1, 1, 1]]
    arms = [_arm("real", base.tolist(), detected_base),
            _arm("real+genx1", (base + 0.05).tolist(), detected_better),
            # seeds in another order and only two of them: paired by seed value, not by row
            _arm("real+transx1", (base[[2, 0]] - 0.02).tolist(), [detected_base[2], detected_base[0]], seeds=(2, 0))]
    gen, trans = compare_arms(arms, "real", n_boot=200)
    assert gen["delta_dice"] == pytest.approx(0.05)
    assert gen["delta_dice_ci"] == pytest.approx([0.05, 0.05])  # the shared spread cancels
    # two lesions below 10 mm, three seeds: 1/6 -> 5/6
    assert gen["delta_sensitivity_small"] == pytest.approx(4 / 6) and gen["n_small"] == 2
    assert trans["n_seeds"] == 2 and trans["delta_dice"] == pytest.approx(-0.02)
    assert trans["delta_sensitivity"] == pytest.approx(0.0)
    with pytest.raises(SynthsegError, match="no arm"):
        compare_arms(arms, "missing")
    other = _arm("real+otherx1", base.tolist(), detected_base, diameters=(4.0, 8.0, 16.0))
    with pytest.raises(SynthsegError, match="other test cases"):
        compare_arms(arms + [other], "real")


def test_compare_reports_across_runs_sharing_the_baseline(tmp_path, capsys):
    rng = np.random.default_rng(1)
    base = rng.uniform(0.2, 0.8, (3, 3))
    detected = [[0, 1, 1], [1, 1, 1], [0, 1, 1]]

    def write(folder, arms):
        folder.mkdir()
        (folder / "report.json").write_text(json.dumps({"kind": "synthseg-downstream-report", "arms": arms}))
        return folder

    one = write(tmp_path / "gen", [_arm("real", base.tolist(), detected),
                                   _arm("real+genx1", (base + 0.04).tolist(), detected)])
    two = write(tmp_path / "trans", [_arm("real", base.tolist(), detected),
                                     _arm("real+transx1", (base + 0.01).tolist(), detected)])
    assert main(["evaluate", "compare", str(one), str(two / "report.json"), "--baseline", "real+transx1",
                 "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "real+genx1: Dice +0.030 [+0.030, +0.030]" in out and "real: Dice -0.010" in out
    # a baseline that differs between runs is renamed, not silently merged
    three = write(tmp_path / "other", [_arm("real", (base - 0.1).tolist(), detected)])
    assert main(["evaluate", "compare", str(one), str(three), "--bootstrap", "20"]) == 0
    assert "real@other: Dice -0.100" in capsys.readouterr().out
    old = write(tmp_path / "old", [{"name": "real", "dice": 0.5}])
    assert main(["evaluate", "compare", str(old)]) == 2
    assert "no per-case outcomes" in capsys.readouterr().err
    assert main(["evaluate", "compare", str(tmp_path / "missing")]) == 2


def test_compare_pools_the_seeds_of_an_arm_run_again_with_other_seeds(tmp_path, capsys):
    from napari_synthseg.evaluate.downstream import load_report_arms

    rng = np.random.default_rng(2)
    base = rng.uniform(0.2, 0.8, (3, 4))
    detected = [[0, 1, 1, 1], [1, 1, 0, 1], [0, 1, 1, 1]]
    gains = np.array([[0.06], [0.02], [0.07]])  # per seed
    datasets = {"real": {"sha256": "r" * 64}, "test": {"sha256": "t" * 64},
                "synthetic": {"gen": {"sha256": "g" * 64}}}

    def write(folder, seeds, steps=1600, real_sha="r" * 64):
        rows = list(seeds)
        ds = dict(datasets, real={"sha256": real_sha})
        arms = [dict(_arm("real", base[rows].tolist(), [detected[i] for i in rows], (4.0, 8.0, 15.0, 22.0), seeds),
                     kind="real", ratio=0.0, real_fraction=1.0, synthetic_set=None, per_seed=[{"seed": i} for i in seeds]),
                dict(_arm("real+genx1", (base[rows] + gains[rows]).tolist(), [detected[i] for i in rows],
                          (4.0, 8.0, 15.0, 22.0), seeds),
                     kind="real+synthetic", ratio=1.0, real_fraction=1.0, synthetic_set="gen",
                     per_seed=[{"seed": i} for i in seeds])]
        folder.mkdir()
        (folder / "report.json").write_text(json.dumps({
            "kind": "synthseg-downstream-report", "arms": arms, "datasets": ds,
            "settings": {"steps": steps, "seeds": list(seeds), "n_boot": 1000, "device": "cpu"}}))
        return folder

    first, later = write(tmp_path / "s01", (0, 1)), write(tmp_path / "s2", (2,))
    arms = load_report_arms([first, later])
    assert [a["name"] for a in arms] == ["real", "real+genx1"]
    assert [a["outcomes"]["seeds"] for a in arms] == [[0, 1, 2], [0, 1, 2]]
    assert arms[1]["dice"] == pytest.approx((base + gains).mean()) and "dice_ci" not in arms[1]
    assert main(["evaluate", "compare", str(first), str(later), "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "real+genx1: seeds 0, 1, 2 pooled from" in out
    assert f"real+genx1: Dice {gains.mean():+.3f}" in out and "(3 seeds)" in out

    # Not pooled: the same seed run again (other outcomes), another budget, another real set.
    again = write(tmp_path / "again", (1,))
    other_steps = write(tmp_path / "steps800", (2,), steps=800)
    other_real = write(tmp_path / "real10", (2,), real_sha="x" * 64)
    for folder in (again, other_steps, other_real):
        names = [a["name"] for a in load_report_arms([first, folder])]
        assert names == ["real", "real+genx1", f"real@{folder.name}", f"real+genx1@{folder.name}"], names


@pytest.mark.slow
def test_downstream_tiny_run_writes_the_report(tmp_path, capsys):
    real = index_set(tmp_path / "real", 4, noisy=True, seed=0)
    fake = index_set(tmp_path / "fake", 4, noisy=False, seed=1)
    test = index_set(tmp_path / "test", 3, noisy=True, seed=2)
    code = main(["evaluate", "downstream", "--real", str(real), "--synthetic", f"proc={fake}", "--test", str(test),
                 "--out", str(tmp_path / "rep"), "--steps", "2", "--seeds", "0", "--ratios", "1", "--crop-mm", "32",
                 "--test-crop-mm", "32", "--batch-size", "2", "--bootstrap", "20", "--features", "4,4,8,8,16,4"])
    assert code == 0
    out = capsys.readouterr().out
    assert "real+procx1: Dice" in out
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [a["name"] for a in data["arms"]] == ["real", "real+procx1", "proc-only"]
    for arm in data["arms"]:
        assert {"dice", "dice_ci", "sensitivity", "sensitivity_by_size", "froc"} <= set(arm)
        assert 0.0 <= arm["dice"] <= 1.0
    assert data["arms"][1]["n_synthetic"] == [4] and data["arms"][2]["n_real"] == [0]
    assert [c["arm"] for c in data["paired"]] == ["real+procx1", "proc-only"]
    gain = data["paired"][0]
    dice = np.array(data["arms"][1]["outcomes"]["dice"]) - np.array(data["arms"][0]["outcomes"]["dice"])
    assert gain["delta_dice"] == pytest.approx(dice.mean()) and gain["n_seeds"] == 1
    assert "(paired)" in out and "Gain over `real`" in (tmp_path / "rep" / "report.md").read_text()
    assert len(data["datasets"]["test"]["sha256"]) == 64 and data["settings"]["steps"] == 2
    assert (tmp_path / "rep" / "report.html").read_text().startswith("<!doctype html>")
    assert (tmp_path / "rep" / "plots" / "dice.png").stat().st_size > 1000


def test_downstream_user_errors(tmp_path, capsys):
    test = index_set(tmp_path / "test", 2, noisy=True, seed=2)
    assert main(["evaluate", "downstream", "--test", str(test), "--out", str(tmp_path / "o")]) == 2
    assert "synthetic-only" in capsys.readouterr().err
    assert main(["evaluate", "downstream", "--real", str(test), "--test", str(test), "--out", str(tmp_path / "o"),
                 "--steps", "0"]) == 2
    assert main(["evaluate", "downstream", "--real", str(test), "--test", str(test), "--out", str(tmp_path / "o"),
                 "--features", "1,2"]) == 2


def _dataset_2d(folder, n, seed, noisy=True):
    from _evaluate_data import write_mha

    rng = np.random.default_rng(seed)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    yy, xx = np.mgrid[:40, :40]
    for i in range(n):
        r = rng.uniform(3, 6)
        mask = (yy - 20) ** 2 + (xx - 20) ** 2 <= r * r
        image = rng.normal(100, 10, (40, 40))
        image[mask] = 180 + (rng.normal(0, 15, int(mask.sum())) if noisy else 0)
        write_mha(image.astype(np.int16), folder / "imagesTr" / f"c{i}_0000.mha", (0.5, 0.5))
        write_mha(mask.astype(np.uint8), folder / "labelsTr" / f"c{i}.mha", (0.5, 0.5))
    return folder


@pytest.mark.slow
def test_downstream_runs_in_2d(tmp_path):
    from napari_synthseg.evaluate.downstream import downstream_report

    real, fake, test = (_dataset_2d(tmp_path / n, 3, s, n != "fake") for s, n in enumerate(("real", "fake", "test")))
    r = downstream_report(real, {"flat": fake}, test, tmp_path / "rep", steps=2, seeds=(0,), ratios=(1.0,),
                          crop_mm=16, spacing_mm=0.5, batch_size=2, n_boot=10)
    assert [a["name"] for a in r["arms"]] == ["real", "real+flatx1", "flat-only"]
    assert r["settings"]["patch_voxels"] == 32 and r["n_test"] == 3
