"""The scene model: records, masks, undo/redo, atomic autosave, crash recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_synthseg.errors import SynthsegError
from napari_synthseg.io import MedicalImage, write_image
from napari_synthseg.scene import LesionRecord, Scene


@pytest.fixture
def image(tmp_path):
    array = np.random.default_rng(0).integers(0, 4096, (64, 80)).astype(np.uint16)
    src = MedicalImage(array=array, spacing=(0.4, 0.4), origin=(0.0, 0.0), direction=(1, 0, 0, 1), modality="CXR")
    path = write_image(src, tmp_path / "cxr.mha")
    from napari_synthseg.io import read_image

    return read_image(path)


def nodule(x=10.0, y=12.0, **kw):
    return LesionRecord(kind="nodule", source={"type": "procedural"}, center_mm=(x, y), size_mm=8.0, seed=3, **kw)


def test_create_add_reopen_exactly(image, tmp_path):
    scene = Scene.create(image, tmp_path / "scene")
    a = scene.add_lesion(nodule())
    b = scene.add_lesion(nodule(20, 5, blend={"mode": "poisson"}))
    key = scene.assets.put(np.ones((5, 5), np.float32))
    scene.update_lesion(b.id, assets={"patch": key})
    scene.set_mask("constraint", np.ones(image.shape, bool))
    assert (a.id, a.label, b.id, b.label) == ("L0001", 1, "L0002", 2)
    again = Scene.open(tmp_path / "scene")
    assert again.to_dict() == scene.to_dict()
    np.testing.assert_array_equal(again.assets.get(key), np.ones((5, 5), np.float32))
    assert again.mask("constraint").dtype == bool and again.mask("constraint").all()
    assert again.source.sha256 == scene.source.sha256
    np.testing.assert_array_equal(again.load_image().array, image.array)


def test_undo_redo_round_trip(image, tmp_path):
    scene = Scene.create(image, tmp_path / "s")
    states = [scene.to_dict()["lesions"]]
    a = scene.add_lesion(nodule())
    states.append(scene.to_dict()["lesions"])
    scene.update_lesion(a.id, center_mm=(30.0, 30.0), size_mm=12.0)
    states.append(scene.to_dict()["lesions"])
    with scene.batch("two at once"):
        scene.add_lesion(nodule(5, 5))
        scene.remove_lesion(a.id)
    states.append(scene.to_dict()["lesions"])
    for expected in reversed(states[:-1]):
        scene.undo()
        assert scene.to_dict()["lesions"] == expected
    assert not scene.can_undo and scene.undo() is None
    for expected in states[1:]:
        scene.redo()
        assert scene.to_dict()["lesions"] == expected
    assert not scene.can_redo
    # History survives reopening.
    again = Scene.open(tmp_path / "s")
    again.undo()
    assert again.to_dict()["lesions"] == states[2]


def test_new_edit_clears_redo(image):
    scene = Scene.create(image)
    scene.add_lesion(nodule())
    scene.undo()
    assert scene.can_redo
    scene.add_lesion(nodule(1, 1))
    assert not scene.can_redo


def test_ids_never_reused(image):
    scene = Scene.create(image)
    a = scene.add_lesion(nodule())
    scene.remove_lesion(a.id)
    b = scene.add_lesion(nodule())
    assert b.id != a.id and b.label != a.label


def test_change_events_name_lesions(image):
    scene = Scene.create(image)
    seen = []
    scene.subscribe(seen.append)
    a = scene.add_lesion(nodule())
    scene.update_lesion(a.id, center_mm=(1.0, 2.0))
    scene.undo()
    assert [c.lesion_ids for c in seen] == [[a.id]] * 3
    assert seen[1].lesions_before[0]["center_mm"] == [10.0, 12.0]
    assert seen[2].undo and seen[2].lesions_after[0]["center_mm"] == [10.0, 12.0]


def test_failed_batch_rolls_back(image):
    scene = Scene.create(image)
    scene.add_lesion(nodule())
    before = scene.to_dict()["lesions"]
    with pytest.raises(SynthsegError):
        with scene.batch("bad"):
            scene.add_lesion(nodule(3, 3))
            scene.update_lesion("L9999", size_mm=3)
    assert scene.to_dict()["lesions"] == before


def test_decisions(image):
    scene = Scene.create(image)
    a = scene.add_lesion(nodule())
    scene.set_decision(a.id, "rejected", by="user:radiologist", reason="too faint")
    rec = scene.lesion(a.id)
    assert rec.status == "rejected" and rec.decision["by"] == "user:radiologist"
    with pytest.raises(SynthsegError, match="decision must be one of"):
        scene.set_decision(a.id, "maybe", by="user")


def test_bad_edits(image, tmp_path):
    scene = Scene.create(image, tmp_path / "s")
    with pytest.raises(SynthsegError, match="no lesion"):
        scene.update_lesion("L0042", size_mm=1)
    with pytest.raises(SynthsegError, match="blend mode"):
        scene.add_lesion(nodule(blend={"mode": "screen"}))
    with pytest.raises(SynthsegError, match="shape"):
        scene.set_mask("constraint", np.ones((3, 3), bool))
    with pytest.raises(SynthsegError, match="already holds a scene"):
        Scene.create(image, tmp_path / "s")


def test_source_changed_or_missing(image, tmp_path):
    scene = Scene.create(image, tmp_path / "s")
    src = tmp_path / "cxr.mha"
    data = bytearray(src.read_bytes())
    data[-1] ^= 0xFF
    src.write_bytes(bytes(data))
    with pytest.raises(SynthsegError, match="changed since"):
        Scene.open(tmp_path / "s").load_image()
    src.unlink()
    with pytest.raises(SynthsegError, match="missing"):
        Scene.open(tmp_path / "s").load_image()


def test_corrupt_or_foreign_scene_folder(tmp_path):
    with pytest.raises(SynthsegError, match="not a scene folder"):
        Scene.open(tmp_path)
    (tmp_path / "scene.json").write_text("{broken")
    with pytest.raises(SynthsegError, match="corrupt"):
        Scene.open(tmp_path)
    (tmp_path / "scene.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(SynthsegError, match="schema version 99"):
        Scene.open(tmp_path)


def test_kill_9_loses_no_lesion(image, tmp_path):
    """A process that places lesions and is killed with SIGKILL leaves every placed lesion on disk."""
    folder = tmp_path / "crash"
    Scene.create(image, folder)
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from napari_synthseg.scene import Scene, LesionRecord
        scene = Scene.open({str(folder)!r})
        for i in range(25):
            scene.add_lesion(LesionRecord(center_mm=(float(i), 2.0), size_mm=5.0, seed=i))
            print(i, flush=True)
        scene.update_lesion("L0003", size_mm=9.0)
        print("edited", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL
    assert "edited" in result.stdout
    scene = Scene.open(folder)
    assert len(scene.lesions) == 25
    assert scene.lesion("L0003").size_mm == 9.0
    assert not [p for p in os.listdir(folder) if ".part" in p]


@pytest.mark.parametrize("round_", range(4))
def test_kill_during_writes_keeps_last_complete_state(image, tmp_path, round_):
    """Kill at a random moment in a tight edit loop: the scene opens, is a prefix of the edits,
    and keeps its whole undo history (wave 1 dropped it when the kill fell between the
    history.json and scene.json writes)."""
    folder = tmp_path / "crash2"
    Scene.create(image, folder)
    script = textwrap.dedent(
        f"""
        from napari_synthseg.scene import Scene, LesionRecord
        scene = Scene.open({str(folder)!r})
        print("ready", flush=True)
        i = 0
        while True:
            scene.add_lesion(LesionRecord(center_mm=(float(i), 0.0), size_mm=4.0, seed=i))
            i += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    import time

    time.sleep(0.7 + 0.37 * round_)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    scene = Scene.open(folder)
    n = len(scene.lesions)
    assert n > 0
    assert [rec.center_mm[0] for rec in scene.lesions] == [float(i) for i in range(n)]
    from napari_synthseg.scene.scene import MAX_HISTORY

    steps = min(n, MAX_HISTORY)
    for k in range(steps):  # every placed lesion can be undone, newest first
        assert scene.undo() is not None, f"undo history lost after {k} of {n} steps"
    assert len(scene.lesions) == n - steps
