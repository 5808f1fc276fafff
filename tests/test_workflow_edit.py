"""The Qt-free workflow layer: one lesion spec and one edit job for CLI, widgets and batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_synthseg.errors import SynthsegError
from napari_synthseg.io import MedicalImage, write_image
from napari_synthseg.scene import scene_store
from napari_synthseg.workflow.edit import SceneSource, default_scene_folder, new_session, open_session
from napari_synthseg.workflow.spec import (
    DEFAULT_PLACE,
    BlendMode,
    LesionSourceKind,
    LesionSpec,
    PlaceSettings,
    ProceduralKind,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cxr_path(tmp_path):
    yy, xx = np.mgrid[:128, :128]
    array = (2000 + 400 * np.sin(xx / 9.0) + 300 * np.cos(yy / 13.0)).astype(np.uint16)
    src = MedicalImage(array=array, spacing=(0.5, 0.5), origin=(0.0, 0.0), direction=(1, 0, 0, 1), modality="CXR")
    return write_image(src, tmp_path / "cxr.mha")


def test_spec_parses_every_form_once(tmp_path):
    spec = LesionSpec.parse("procedural:part-solid")
    assert spec.source is LesionSourceKind.PROCEDURAL and spec.kind is ProceduralKind.PART_SOLID
    assert LesionSpec.parse(spec.text()) == spec
    assert LesionSpec.parse("procedural").kind is ProceduralKind.SOLID
    with pytest.raises(SynthsegError, match="nodule type must be one of solid, part-solid, ground-glass"):
        LesionSpec.parse("procedural:glass")
    with pytest.raises(SynthsegError, match="lesion not found"):
        LesionSpec.parse(str(tmp_path / "nothing.mha"))
    with pytest.raises(SynthsegError, match="neither a lesion library"):
        LesionSpec.parse(str(tmp_path))


def test_settings_validate_each_field_with_its_name():
    assert PlaceSettings(blend="poisson").blend is BlendMode.POISSON
    with pytest.raises(SynthsegError, match="blend must be one of alpha, additive, poisson"):
        PlaceSettings(blend="overlay")
    with pytest.raises(SynthsegError, match="lesion size"):
        PlaceSettings(size_mm=-5)
    with pytest.raises(SynthsegError, match="contrast"):
        PlaceSettings(contrast=float("nan"))
    with pytest.raises(SynthsegError, match="spiculation"):
        PlaceSettings(spiculation=3)


def test_session_edits_apply_one_at_a_time(cxr_path, tmp_path):
    session = new_session(SceneSource(str(cxr_path)), tmp_path / "scene")
    rec = session.place("procedural:solid", DEFAULT_PLACE.with_changes(size_mm=8.0, seed=4), at_xyz=(60, 60))
    assert rec.source["type"] == "procedural" and rec.source["placed_by"] == "editor"
    session.resize(rec.id, 12.0)
    # one out-of-range value is refused alone and names itself; the other edits still apply
    with pytest.raises(SynthsegError, match="contrast"):
        session.set_contrast(rec.id, -1.0)
    session.set_blend(rec.id, "poisson")
    session.move_to_index(rec.id, (70.0, 64.0))
    got = session.record(rec.id)
    assert got.size_mm == 12.0 and got.blend["mode"] == "poisson" and got.blend["contrast"] == 1.0
    assert session.index_of(rec.id) == pytest.approx((70.0, 64.0))
    assert "12.0 mm" in session.describe(rec.id)
    assert session.scene.undo_label == f"move {rec.id}"
    session.delete(rec.id)
    assert session.scene.lesions == []
    session.undo()
    assert session.scene.lesion_ids == [rec.id]


def test_session_shares_the_live_scene(cxr_path, tmp_path):
    session = new_session(SceneSource(str(cxr_path)), tmp_path / "scene")
    other = open_session(tmp_path / "scene", actor="qa")
    assert other.scene is session.scene is scene_store.open(tmp_path / "scene")
    with pytest.raises(SynthsegError, match="already holds a scene"):
        new_session(SceneSource(str(cxr_path)), tmp_path / "scene")


def test_cli_and_session_make_the_same_record(cxr_path, tmp_path):
    """The same calls give the same records whichever way they are made."""
    session = new_session(SceneSource(str(cxr_path)), tmp_path / "by_session", actor="cli")
    session.apply_constraint_choice("none")
    settings = PlaceSettings(size_mm=9.0, blend="additive", contrast=1.5, seed=7)
    via_session = session.place("procedural:ground-glass", settings, at_xyz=(50, 70))
    result = subprocess.run(
        [sys.executable, "-m", "napari_synthseg.cli", "place", str(cxr_path), "--lesion", "procedural:ground-glass",
         "--at", "50,70", "--size-mm", "9", "--blend", "additive", "--contrast", "1.5", "--seed", "7",
         "--constraint", "none", "--out", str(tmp_path / "by_cli")],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    via_cli = json.loads((tmp_path / "by_cli" / "scene.json").read_text())["lesions"][0]
    ignore = {"created", "modified"}
    assert {k: v for k, v in via_cli.items() if k not in ignore} == {
        k: v for k, v in via_session.to_dict().items() if k not in ignore
    }


def test_default_scene_folder_goes_where_it_can_be_saved(tmp_path):
    image = tmp_path / "a" / "img.png"
    image.parent.mkdir()
    assert default_scene_folder([str(image)]) == tmp_path / "a" / "img_scene"
    assert default_scene_folder([str(image)], sample_dir=image.parent) == Path.home() / "synthseg-scenes" / "img_scene"
