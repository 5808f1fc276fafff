"""QA numbers against hand-built images, rules -> recorded decisions, contact sheet, review CLI."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy import ndimage as ndi

from _disk_renderer import make_cxr_scenes, render_disks
from napari_synthseg.cli import main
from napari_synthseg.errors import SynthsegError
from napari_synthseg.qa import (
    STATUS_COLORS,
    SheetEntry,
    apply_rules,
    contact_sheet,
    lesion_metrics,
    parse_rules,
    qa_scene,
)
from napari_synthseg.scene import Scene


def _disk(shape, center, radius_mm, spacing):
    yy, xx = np.indices(shape)
    return ((yy - center[0]) * spacing[0]) ** 2 + ((xx - center[1]) * spacing[1]) ** 2 <= radius_mm**2


def test_contrast_cnr_area_with_anisotropic_spacing():
    rng = np.random.default_rng(0)
    spacing = (0.5, 0.25)  # rows are twice as tall as columns are wide
    original = 100.0 + rng.normal(0, 5.0, (200, 300)).astype(np.float32)
    mask = _disk(original.shape, (100, 150), 5.0, spacing)
    synthetic = original + 20.0 * mask
    m = lesion_metrics(original, synthetic, mask, spacing, source_range=(0, 255), ring_mm=4.0)
    # The mask and the ring share the same noise: contrast ~ +20, CNR ~ 20 / 5.
    assert m.contrast == pytest.approx(20.0, abs=1.0)
    assert m.cnr == pytest.approx(4.0, rel=0.15)
    assert m.added == pytest.approx(20.0, abs=1e-3)
    assert m.area_mm2 == pytest.approx(mask.sum() * 0.5 * 0.25)
    assert m.area_mm2 == pytest.approx(math.pi * 25.0, rel=0.03)
    assert m.equivalent_diameter_mm == pytest.approx(10.0, rel=0.02)
    assert m.volume_mm3 is None and m.range_ok
    # The ring is 4 mm wide in mm, not in pixels: its outer edge is ~ 5 + 0.25 + 4 mm from the centre.
    dist = ndi.distance_transform_edt(~mask, sampling=spacing)
    expected_ring = int(((dist > 0.25) & (dist <= 4.25)).sum())
    assert m.ring_pixels == expected_ring


def test_gradient_ratio_separates_hard_from_blended_edges():
    spacing = (0.4, 0.4)
    original = np.full((160, 160), 50.0, np.float32)
    original += np.linspace(0, 20, 160, dtype=np.float32)[None, :]  # some anatomy gradient
    mask = _disk(original.shape, (80, 80), 6.0, spacing)
    hard = original + 40.0 * mask
    soft = original + 40.0 * ndi.gaussian_filter(mask.astype(np.float32), 3.0)
    m_hard = lesion_metrics(original, hard, mask, spacing)
    m_soft = lesion_metrics(original, soft, mask, spacing)
    assert m_hard.gradient_ratio > 5 * m_soft.gradient_ratio
    assert m_hard.gradient_ratio > 10
    # A seam: a step in the ring (a pasted square's border) raises the ring gradient change.
    seam = hard.copy()
    seam[55:105, 55:105] += 15.0
    m_seam = lesion_metrics(original, seam, mask, spacing)
    assert m_hard.ring_gradient_change == pytest.approx(1.0, abs=0.05)
    assert m_seam.ring_gradient_change > 2.0


def test_range_check_and_3d_volume():
    spacing = (2.0, 1.0, 1.0)
    zz, yy, xx = np.indices((20, 40, 40))
    ball = ((zz - 10) * 2.0) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 36
    original = np.full(ball.shape, -800.0, np.float32)
    original[0, 0, 0] = 400.0  # source range -800..400 HU
    ok = original + 600.0 * ball  # -200 HU inside: within range
    bad = original + 1500.0 * ball  # 700 HU: above the source's maximum
    m_ok = lesion_metrics(original, ok, ball, spacing)
    m_bad = lesion_metrics(original, bad, ball, spacing)
    assert m_ok.range_ok and m_ok.out_of_range_fraction == 0.0
    assert not m_bad.range_ok
    assert m_bad.out_of_range_fraction == pytest.approx(ball.sum() / (ball.sum() + m_bad.ring_pixels))
    assert m_ok.volume_mm3 == pytest.approx(ball.sum() * 2.0) and m_ok.area_mm2 is None
    assert m_ok.equivalent_diameter_mm == pytest.approx(12.0, rel=0.1)


RULES = """
rules:
  - name: out-of-range
    when: {range_ok: false}
    status: rejected
  - name: faint
    when: {cnr: {lt: 0.8}}
    status: rejected
    reason: too faint
  - name: big
    when: {equivalent_diameter_mm: {gt: 10}}
    status: flagged
default: accepted
"""


@pytest.fixture
def cxr_scenes(tmp_path, shared_data):
    files = sorted((shared_data / "cxr" / "nih_nodule").glob("*.png"))[:2]
    return make_cxr_scenes(tmp_path / "scenes", files, per_source=1, decisions=("placed", "placed", "placed", "placed"))


def test_rules_record_decisions_with_rule_names(cxr_scenes, tmp_path):
    scene = Scene.open(cxr_scenes[0])
    # Lesion 2 faint (contrast 0.5), lesion 3 large (13 mm), lesion 4 saturating (+400 on uint8).
    scene.update_lesion("L0002", params={"contrast": 0.5})
    scene.update_lesion("L0004", params={"contrast": 400.0})
    scene.set_decision("L0001", "rejected", by="user:alice", reason="looks fake")
    qa = qa_scene(scene, render_disks)
    rules = parse_rules(__import__("yaml").safe_load(RULES), source="RULES.yaml")
    decided = apply_rules(scene, qa.metrics, rules)
    assert "L0001" not in decided  # a person's decision is kept
    reopened = Scene.open(cxr_scenes[0])  # decisions are saved at once
    by = {r.id: (r.status, r.decision["by"]) for r in reopened.lesions}
    assert by["L0001"] == ("rejected", "user:alice")
    assert by["L0002"] == ("rejected", "rule:RULES.yaml#faint")
    assert by["L0003"] == ("flagged", "rule:RULES.yaml#big")
    assert by["L0004"] == ("rejected", "rule:RULES.yaml#out-of-range")
    assert "too faint" in reopened.lesion("L0002").decision["reason"]
    # overwrite re-decides the person's lesion too (it is a bright 7 mm nodule: accepted).
    apply_rules(reopened, qa.metrics, rules, overwrite=True)
    assert reopened.lesion("L0001").decision["by"] == "rule:RULES.yaml#default"


@pytest.mark.parametrize(
    "text, message",
    [
        ("rules: [{name: a, when: {cnrr: {lt: 1}}, status: rejected}]", "unknown metric"),
        ("rules: [{name: a, when: {cnr: {less: 1}}, status: rejected}]", "unknown operator"),
        ("rules: [{name: a, when: {cnr: {lt: 1}}, status: maybe}]", "needs status"),
        ("rules: [{name: a, when: {cnr: {between: [1]}}, status: flagged}]", "between takes"),
        ("default: yes-please", "default must be"),
    ],
)
def test_bad_rules_give_one_line_errors(text, message):
    with pytest.raises(SynthsegError, match=message):
        parse_rules(__import__("yaml").safe_load(text), source="R.yaml")


def test_review_cli_rules_and_accept_all(cxr_scenes, tmp_path, capsys):
    rules = tmp_path / "RULES.yaml"
    rules.write_text(RULES)
    sheet = tmp_path / "sheet.png"
    scenes_dir = str(cxr_scenes[0].parent)
    code = main(["review", scenes_dir, "--rules", str(rules), "--renderer", "_disk_renderer:render_disks",
                 "--sheet", str(sheet)])
    assert code == 0
    out = capsys.readouterr().out
    assert "2 scenes" in out
    statuses = [r.status for f in cxr_scenes for r in Scene.open(f).lesions]
    assert "placed" not in statuses and "flagged" in statuses  # 11 mm and 13 mm lesions are "big"
    assert cv2.imread(str(sheet)) is not None
    # accept-all only touches undecided lesions
    scene = Scene.open(cxr_scenes[0])
    scene.set_decision("L0001", "placed", by="test")
    # (the minimum-visibility rule renders the scenes: these use the test's disk renderer)
    assert main(["review", scenes_dir, "--accept-all", "--renderer", "_disk_renderer:render_disks"]) == 0
    rec = Scene.open(cxr_scenes[0]).lesion("L0001")
    assert rec.status == "accepted" and rec.decision["by"].startswith("cli:accept-all")
    # issue 15: accept-all flags a lesion too faint to see unless --no-visibility-rule
    for rule, expected in ((True, "flagged"), (False, "accepted")):
        scene = Scene.open(cxr_scenes[0])
        scene.update_lesion("L0002", params={"contrast": 0.05})  # made faint (CNR < 1)
        scene.set_decision("L0002", "placed", by="test")
        argv = ["review", scenes_dir, "--accept-all", "--renderer", "_disk_renderer:render_disks"]
        assert main(argv + ([] if rule else ["--no-visibility-rule"])) == 0
        rec = Scene.open(cxr_scenes[0]).lesion("L0002")
        assert rec.status == expected, (rule, rec.decision)
        if rule:
            assert "visibility rule: CNR" in rec.decision["reason"]
    assert main(["review", scenes_dir, "--rules", str(tmp_path / "missing.yaml")]) == 2
    assert "rules file not found" in capsys.readouterr().err


def test_contact_sheet_colours_outlines_by_decision(cxr_scenes, artifacts_dir):
    scene = Scene.open(cxr_scenes[0])
    for lesion_id, status in zip(scene.lesion_ids, ("accepted", "rejected", "flagged", "placed")):
        if status != "placed":
            scene.set_decision(lesion_id, status, by="test")
    qa = qa_scene(scene, render_disks)
    path = artifacts_dir / "qa_contact_sheet.png"
    sheet = contact_sheet([SheetEntry(cxr_scenes[0].name, qa.rendered, qa.metrics)], path, columns=2,
                          title="test batch")
    assert sheet.shape[2] == 3 and cv2.imread(str(path)).shape == sheet.shape
    tile_h = 160 + 30 + 6
    for i, status in enumerate(("accepted", "rejected", "flagged", "placed")):
        r, c = divmod(i, 2)
        y0, x0 = 26 + 6 + r * tile_h, 6 + c * (2 * 160 + 2 + 6)
        right_half = sheet[y0:y0 + 160, x0 + 162:x0 + 322].reshape(-1, 3).astype(int)
        colour = np.array(STATUS_COLORS[status])
        close = np.abs(right_half - colour).sum(axis=1) < 60
        assert close.sum() > 20, status  # the outline is drawn in the decision's colour
        left_half = sheet[y0:y0 + 160, x0:x0 + 160].reshape(-1, 3)
        assert (left_half[:, 0] == left_half[:, 1]).all()  # the original crop has no outline
