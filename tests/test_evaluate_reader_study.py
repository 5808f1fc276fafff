"""Reader study: blinded case set, answers saved at once and resumable, scoring, napari widget."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _evaluate_data import index_set
from napari_synthseg.cli import main
from napari_synthseg.errors import SynthsegError
from napari_synthseg.evaluate.reader_study import ReaderSession, make_reader_study, rating, score_reader_study


@pytest.fixture
def study(tmp_path):
    real = index_set(tmp_path / "real", 6, noisy=True, seed=0)
    fake = index_set(tmp_path / "fake", 6, noisy=False, seed=1)
    out = tmp_path / "study"
    info = make_reader_study(real, fake, out, n=8, crop_mm=16)
    return out, info


def test_case_set_is_balanced_blinded_and_the_key_kept_apart(study, tmp_path):
    out, info = study
    key_path = tmp_path / "study.key.json"
    assert info["key_path"] == str(key_path) and key_path.is_file()
    cases = sorted(p.name for p in (out / "cases").iterdir())
    assert cases == [f"case_{i:03d}.mha" for i in range(1, 9)]
    text = " ".join(p.read_text() for p in out.rglob("*.json"))
    assert "synthetic\"" not in text.replace("real or synthetic", "") and "fake" not in text and "truth" not in text
    key = json.loads(key_path.read_text())["cases"]
    assert sorted(v["truth"] for v in key.values()) == ["real"] * 4 + ["synthetic"] * 4
    from napari_synthseg.io import read_image

    img = read_image(out / "cases" / "case_001.mha")
    assert img.array.dtype == np.uint8 and img.shape == (16, 16, 16)
    with pytest.raises(SynthsegError, match="not empty"):
        make_reader_study(tmp_path / "real", tmp_path / "fake", out, n=8, crop_mm=16)
    with pytest.raises(SynthsegError, match="even"):
        make_reader_study(tmp_path / "real", tmp_path / "fake", tmp_path / "s2", n=7, crop_mm=16)


def test_answers_are_saved_at_once_resumable_and_scored(study, tmp_path):
    out, _ = study
    key = json.loads((tmp_path / "study.key.json").read_text())["cases"]
    session = ReaderSession(out, "alice")
    first = session.next_case()
    session.answer(first, "real", 3)
    assert ReaderSession(out, "alice").next_case() != first  # a new session resumes
    # alice is always right with full confidence; bob always says real
    while (case := session.next_case()) is not None:
        session.answer(case, key[case]["truth"], 5)
    session.answer(first, key[first]["truth"], 5)  # a changed answer: the last one counts
    bob = ReaderSession(out, "bob")
    for case in bob.cases[:6]:
        bob.answer(case, "real", 2)
    result = score_reader_study(out, n_boot=50)
    alice = result["readers"]["alice"]
    assert alice["accuracy"] == 1.0 and alice["auc"] == 1.0 and alice["complete"]
    assert result["readers"]["bob"]["sensitivity"] == 0.0 and result["readers"]["bob"]["specificity"] == 1.0
    assert result["readers"]["bob"]["n"] == 6 and not result["readers"]["bob"]["complete"]
    assert result["pooled"]["n"] == 14 and 0.5 <= result["pooled"]["accuracy"] < 1.0
    assert (tmp_path / "study.score" / "report.md").is_file()
    assert [rating("real", 5), rating("real", 1), rating("synthetic", 1), rating("synthetic", 5)] == [1, 5, 6, 10]
    with pytest.raises(SynthsegError):
        ReaderSession(out, "../evil")


def test_cli_reader_study_and_score(tmp_path, capsys):
    real = index_set(tmp_path / "real", 4, noisy=True, seed=0)
    fake = index_set(tmp_path / "fake", 4, noisy=False, seed=1)
    assert main(["evaluate", "reader-study", str(real), str(fake), "--n", "4", "--out", str(tmp_path / "st"),
                 "--crop-mm", "16", "--key", str(tmp_path / "k" / "key.json")]) == 0
    assert "keep it away from readers" in capsys.readouterr().out
    assert main(["evaluate", "reader-study-score", str(tmp_path / "st"), "--key", str(tmp_path / "k" / "key.json")]) == 2
    assert "no answers" in capsys.readouterr().err
    s = ReaderSession(tmp_path / "st", "carol")
    s.answer(s.next_case(), "synthetic", 4)
    assert main(["evaluate", "reader-study-score", str(tmp_path / "st"), "--key", str(tmp_path / "k" / "key.json"),
                 "--bootstrap", "20"]) == 0
    assert "carol: 1 answered" in capsys.readouterr().out


def test_widget_answers_by_keyboard_and_resumes(make_napari_viewer, qtbot, study, tmp_path, artifacts_dir):
    from qtpy.QtCore import Qt

    from napari_synthseg.widgets.reader_study_widget import ReaderStudyWidget

    out, _ = study
    viewer = make_napari_viewer()
    widget = ReaderStudyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Reader study", area="right")
    widget.start(out, "dana")
    first = widget.case
    layer = viewer.layers["case"]
    assert layer.data.shape == (16, 16, 16) and viewer.dims.current_step[0] == 8
    assert tuple(layer.contrast_limits) == (0, 255)
    widget.setFocus()
    qtbot.keyClick(widget, Qt.Key_S)
    assert widget.pending == "synthetic"
    qtbot.keyClick(widget, Qt.Key_Backspace)
    assert widget.pending is None
    qtbot.keyClick(widget, Qt.Key_R)
    qtbot.keyClick(widget, Qt.Key_4)
    assert widget.case != first
    lines = (out / "answers" / "dana.csv").read_text().splitlines()
    assert lines[1].startswith(f"{first},real,4,")  # on disk at once
    # the same keys reach the widget from the viewer canvas (napari key bindings)
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, Qt.Key_S)
    assert widget.pending == "synthetic"
    qtbot.keyClick(canvas, Qt.Key_2)
    assert len((out / "answers" / "dana.csv").read_text().splitlines()) == 3
    qtbot.keyClick(widget, Qt.Key_S)
    assert "how sure" in widget.prompt.text()
    viewer.window._qt_window.grab().save(str(artifacts_dir / "reader_study_widget.png"))
    # a new widget (a restarted napari) resumes at the third case
    again = ReaderStudyWidget(viewer, study=out, reader="dana")
    assert again.session.done == 2 and again.case == widget.case
    assert "case 3 of 8" in again.status.text()
