"""The realism quality gate in ``synthseg review --rules``: lesions outside the real range are flagged."""

from __future__ import annotations

import pytest

from napari_synthseg.cli import main
from napari_synthseg.errors import SynthsegError
from napari_synthseg.qa import load_rules, parse_rules
from napari_synthseg.qa.realism import RealismReference, realism_features


@pytest.fixture
def reference(tmp_path, shared_data):
    from napari_synthseg.evaluate import read_lesion_set

    real = read_lesion_set(shared_data / "ct" / "lidc_nodules", crop_mm=32, limit=40)
    ref = RealismReference.fit([realism_features(s.image, s.mask, s.spacing) for s in real.samples], source="lidc")
    return ref.save(tmp_path / "ref" / "realism_reference.json")


def _scenes(tmp_path, shared_data):
    from napari_synthseg.io import read_image
    from napari_synthseg.lesions import procedural_nodule
    from napari_synthseg.lesions.place import place_lesion
    from napari_synthseg.scene import Scene

    image = read_image(shared_data / "ct" / "nodule_patches" / "nodule_03_ct.mha")
    scene = Scene.create(image, tmp_path / "scenes" / "s0")
    # A sharp, noise-free procedural ball in lung, what the realism features single out. Blur
    # matching (the default) softens it into the scan's own sharpness and noise, after which this
    # ball is inside the real range of every feature, so it is switched off here.
    place_lesion(scene, procedural_nodule(9.0, "solid", spacing=1.0, seed=0), at_xyz=(12, 12, 25), size_mm=9.0,
                 match_sharpness=False)
    return tmp_path / "scenes"


def test_review_flags_unrealistic_lesions_with_the_reason(tmp_path, shared_data, reference, capsys):
    scenes = _scenes(tmp_path, shared_data)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "realism:\n  reference: ref/realism_reference.json\n"
        "rules:\n  - name: unrealistic\n    when: {realism_outliers: {ge: 1}}\n    status: flagged\n"
        "    reason: outside the real lesions' range\n"
        "default: accepted\n"
    )
    assert main(["review", str(scenes), "--rules", str(rules)]) == 0
    assert "1 flagged" in capsys.readouterr().out
    from napari_synthseg.scene import Scene

    rec = Scene.open(scenes / "s0").lesions[0]
    assert rec.status == "flagged"
    reason = rec.to_dict()["decision"]["reason"] if "decision" in rec.to_dict() else str(rec.to_dict())
    assert "outside the real range" in reason and "(real " in reason and "elongation=" in reason


def test_realism_rules_need_a_reference(tmp_path, reference):
    with pytest.raises(SynthsegError, match="realism"):
        parse_rules({"rules": [{"name": "x", "when": {"realism_score": {"gt": 3}}, "status": "flagged"}]})
    with pytest.raises(SynthsegError, match="realism features"):
        parse_rules({"realism": {"reference": str(reference), "features": ["nope"]}, "rules": []})
    (tmp_path / "r.yaml").write_text(f"realism: {{reference: {reference}, features: [noise]}}\nrules: []\n")
    ruleset = load_rules(tmp_path / "r.yaml")
    assert ruleset.realism_reference.n == 40 and ruleset.realism_features == ["noise"]
    status, _by, reason = ruleset.decide({}, {"realism_outliers": 0})
    assert status == "accepted"
