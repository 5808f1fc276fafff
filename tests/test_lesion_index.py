"""The real-lesion index reader and its series-level split."""

from pathlib import Path

import pytest

from napari_synthseg.errors import SynthsegError
from napari_synthseg.io.lesion_index import group_side, read_lesion_index, split_by_group


def _write_index(folder: Path, rows: list[tuple[str, str]]) -> None:
    (folder / "p").mkdir()
    lines = ["ct_file,seg_file,diameter_mm,lidc_series_uid,nodule_index"]
    for i, (series, d) in enumerate(rows):
        for kind in ("ct", "seg"):
            (folder / "p" / f"{series}_{kind}_{i}.mha").write_bytes(b"x")
        lines.append(f"p/{series}_ct_{i}.mha,p/{series}_seg_{i}.mha,{d},{series},{i}")
    (folder / "index.csv").write_text("\n".join(lines) + "\n")


def test_split_keeps_each_series_on_one_side(tmp_path):
    rows = [(f"s{i % 40}", "8") for i in range(120)]
    _write_index(tmp_path, rows)
    entries = read_lesion_index(tmp_path)
    train, test = split_by_group(entries)
    assert len(train) + len(test) == 120
    assert not {e.group for e in train} & {e.group for e in test}
    assert 0.1 < len({e.group for e in test}) / 40 < 0.45
    # order independent: the same series lands on the same side in a reversed table
    assert all(group_side(e.group) == "test" for e in test)


def test_missing_file_and_columns_are_one_clear_error(tmp_path):
    _write_index(tmp_path, [("a", "5")])
    (tmp_path / "p" / "a_seg_0.mha").unlink()
    with pytest.raises(SynthsegError, match="file not found"):
        read_lesion_index(tmp_path)
    (tmp_path / "index.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(SynthsegError, match="ct_file and seg_file"):
        read_lesion_index(tmp_path)


def test_shared_lidc_split(shared_data):
    folder = shared_data / "ct" / "lidc_nodules"
    if not folder.exists():
        pytest.skip("no LIDC nodules")
    entries = read_lesion_index(folder)
    assert len(entries) == 895
    train, test = split_by_group(entries)
    assert len(test) >= 200, len(test)
    assert not {e.group for e in train} & {e.group for e in test}
