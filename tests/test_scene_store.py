"""One live scene per folder, and saves that never silently undo another program's decisions."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_synthseg.io import MedicalImage, read_image, write_image
from napari_synthseg.scene import LesionRecord, Scene, SceneConflictError, SceneStore


@pytest.fixture
def image(tmp_path):
    array = np.random.default_rng(0).integers(0, 4096, (64, 80)).astype(np.uint16)
    src = MedicalImage(array=array, spacing=(0.4, 0.4), origin=(0.0, 0.0), direction=(1, 0, 0, 1), modality="CXR")
    return read_image(write_image(src, tmp_path / "cxr.mha"))


def nodule(x=10.0, y=12.0):
    return LesionRecord(kind="nodule", source={"type": "procedural"}, center_mm=(x, y), size_mm=8.0, seed=3)


@pytest.fixture
def two_lesions(image, tmp_path):
    folder = tmp_path / "scene"
    scene = Scene.create(image, folder)
    scene.add_lesion(nodule())
    scene.add_lesion(nodule(20, 5))
    return folder


def _on_disk(folder):
    data = json.loads((folder / "scene.json").read_text())
    return {rec["id"]: rec for rec in data["lesions"]}


def test_lost_update_from_the_issue_cannot_happen(two_lesions):
    """QA rejects L0001, then the editor (holding an older copy) resizes L0002: both stay."""
    editor = Scene.open(two_lesions)  # e.g. the lesion editor, opened before QA's decision
    qa = Scene.open(two_lesions)  # e.g. a QA review in another process
    qa.set_decision("L0001", "rejected", by="reader", reason="too faint")
    editor.update_lesion("L0002", size_mm=14.0)
    disk = _on_disk(two_lesions)
    assert disk["L0001"]["status"] == "rejected"  # wave 1 wrote "placed" back here
    assert disk["L0002"]["size_mm"] == 14.0
    # the editor's copy took in QA's decision while merging, and its undo still works
    assert editor.lesion("L0001").status == "rejected"
    editor.undo()
    disk = _on_disk(two_lesions)
    assert disk["L0002"]["size_mm"] == 8.0 and disk["L0001"]["status"] == "rejected"


def test_editing_the_same_lesion_twice_is_refused_and_shows_the_saved_version(two_lesions):
    first, second = Scene.open(two_lesions), Scene.open(two_lesions)
    seen = []
    second.subscribe(seen.append)
    first.set_decision("L0001", "accepted", by="reader")
    with pytest.raises(SceneConflictError, match="L0001 was changed by another program"):
        second.update_lesion("L0001", size_mm=3.0)
    assert second.lesion("L0001").status == "accepted" and second.lesion("L0001").size_mm == 8.0
    assert _on_disk(two_lesions)["L0001"]["size_mm"] == 8.0
    assert seen and "L0001" in seen[-1].lesion_ids  # listeners re-render the saved version
    second.update_lesion("L0001", size_mm=3.0)  # after the reload, editing works again
    assert _on_disk(two_lesions)["L0001"]["size_mm"] == 3.0


def test_lesions_added_by_two_programs_both_survive_with_distinct_ids(two_lesions):
    a, b = Scene.open(two_lesions), Scene.open(two_lesions)
    a.add_lesion(nodule(30, 30))
    added = b.add_lesion(nodule(40, 40))
    disk = _on_disk(two_lesions)
    assert sorted(disk) == ["L0001", "L0002", "L0003", "L0004"]
    assert disk["L0004"]["center_mm"] == [40.0, 40.0]
    assert b.lesion("L0004").center_mm == (40.0, 40.0)
    assert len({rec["label"] for rec in disk.values()}) == 4
    assert added.id in ("L0003", "L0004")  # the id handed out before the merge
    b.undo()  # undoes its own (renumbered) lesion, not the other program's
    assert sorted(_on_disk(two_lesions)) == ["L0001", "L0002", "L0003"]


def test_two_processes_editing_one_folder_lose_nothing(two_lesions):
    script = textwrap.dedent(
        f"""
        from napari_synthseg.scene import Scene, SceneConflictError
        scene = Scene.open({str(two_lesions)!r})
        import sys
        which = sys.argv[1]
        for i in range(15):
            if which == "a":
                scene.set_decision("L0001", ["accepted", "flagged"][i % 2], by="a")
            else:
                scene.update_lesion("L0002", size_mm=5.0 + i)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, w]) for w in ("a", "b")]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    disk = _on_disk(two_lesions)
    assert disk["L0001"]["status"] == "accepted" or disk["L0001"]["status"] == "flagged"
    assert disk["L0001"]["decision"]["by"] == "a"
    assert disk["L0002"]["size_mm"] == 19.0
    revision = json.loads((two_lesions / "scene.json").read_text())["revision"]
    assert revision == 2 + 30


def test_store_hands_out_one_live_scene_per_folder(two_lesions, image, tmp_path):
    store = SceneStore()
    editor = store.open(two_lesions)
    qa = store.open(str(two_lesions) + "/")
    assert editor is qa
    changes = []
    editor.subscribe(changes.append)
    qa.set_decision("L0001", "rejected", by="reader")
    assert changes and editor.lesion("L0001").status == "rejected"
    # starting over in an open folder closes the old object: it can no longer write there
    fresh = store.create(image, two_lesions, overwrite=True)
    assert fresh is store.open(two_lesions) and not fresh.lesions
    with pytest.raises(Exception, match="replaced by a newer one"):
        editor.update_lesion("L0002", size_mm=3.0)
    with pytest.raises(Exception, match="is open"):
        store.create(image, two_lesions)


def test_live_scene_takes_in_what_another_program_saved(two_lesions):
    store = SceneStore()
    live = store.open(two_lesions)
    other = Scene.open(two_lesions)
    other.remove_lesion("L0002")
    changes = []
    live.subscribe(changes.append)
    again = store.open(two_lesions)  # reopening refreshes
    assert again is live and live.lesion_ids == ["L0001"]
    assert changes and changes[-1].lesion_ids == ["L0002"]


def test_kill_between_history_and_scene_write_keeps_undo_history(two_lesions, monkeypatch):
    scene = Scene.open(two_lesions)
    scene.update_lesion("L0001", size_mm=11.0)
    import napari_synthseg.scene.scene as scene_module

    real_write = scene_module.atomic_write_text

    def die_before_scene_json(path, text):
        if str(path).endswith("scene.json"):
            raise KeyboardInterrupt("killed")
        real_write(path, text)

    monkeypatch.setattr(scene_module, "atomic_write_text", die_before_scene_json)
    with pytest.raises(KeyboardInterrupt):
        scene.update_lesion("L0002", size_mm=12.0)
    monkeypatch.setattr(scene_module, "atomic_write_text", real_write)
    again = Scene.open(two_lesions)
    assert again.lesion("L0002").size_mm == 8.0  # the unsaved step is not there ...
    assert again.undo_label == "edit lesion" and len(again._undo) == 3  # ... and the history is kept
    again.undo()
    assert again.lesion("L0001").size_mm == 8.0
    # the same after a killed undo
    monkeypatch.setattr(scene_module, "atomic_write_text", die_before_scene_json)
    with pytest.raises(KeyboardInterrupt):
        again.undo()
    monkeypatch.setattr(scene_module, "atomic_write_text", real_write)
    third = Scene.open(two_lesions)
    assert len(third._undo) == 2 and len(third._redo) == 1
    third.redo()
    assert third.lesion("L0001").size_mm == 11.0
