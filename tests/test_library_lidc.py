"""The real-lesion library: importing an index.csv of CT patch + mask pairs (the LIDC nodules)
by reference, measuring class / size / HU, splitting by series, picking, thumbnails."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from napari_synthseg.errors import SynthsegError
from napari_synthseg.io.lesion_index import group_side, read_lesion_index
from napari_synthseg.lesions.library import (
    LIBRARY_ENV,
    LesionLibrary,
    default_lesion_source,
    lesion_thumbnail,
    nodule_class_from_hu,
)

LIDC = "ct/lidc_nodules"


def _small_index(shared_data, tmp_path, n=12, copy=False):
    """An index.csv over the first ``n`` LIDC rows (files copied when ``copy``)."""
    entries = read_lesion_index(shared_data / LIDC)[:n]
    folder = tmp_path / "set"
    folder.mkdir()
    with open(folder / "index.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ct_file", "seg_file", "diameter_mm", "lidc_series_uid", "nodule_index"])
        for e in entries:
            ct, seg = e.image_path, e.mask_path
            if copy:
                ct, seg = shutil.copy(ct, folder / ct.name), shutil.copy(seg, folder / seg.name)
            writer.writerow([ct, seg, e.diameter_mm, e.group, e.index_in_group])
    return folder, entries


def test_nodule_class_thresholds():
    mask = np.zeros((9, 9, 9), bool)
    mask[2:7, 2:7, 2:7] = True
    assert nodule_class_from_hu(np.full(mask.shape, 30.0), mask) == ("solid", 1.0)
    assert nodule_class_from_hu(np.full(mask.shape, -550.0), mask) == ("ground-glass", 0.0)
    hu = np.full(mask.shape, -550.0)
    hu[4, 3:6, 3:6] = 40.0  # 9 of the 27 core voxels solid
    cls, fraction = nodule_class_from_hu(hu, mask)
    assert cls == "part-solid" and fraction == pytest.approx(9 / 27)


def test_import_measures_and_splits_by_series(shared_data, tmp_path):
    folder, entries = _small_index(shared_data, tmp_path)
    lib = LesionLibrary(tmp_path / "lib")
    ids = lib.import_index(folder, workers=2)
    assert len(ids) == len(entries) == len(lib)
    assert lib.import_index(folder) == ids  # ids are content hashes: re-importing adds nothing
    assert len(lib) == len(entries)
    rows = {r["id"]: r for r in lib.list()}
    for lesion_id, entry in zip(ids, entries):
        meta = lib.metadata(lesion_id)
        assert meta["series_uid"] == entry.group
        assert meta["split"] == group_side(entry.group)
        assert meta["nodule_class"] in ("solid", "part-solid", "ground-glass")
        assert meta["annotated_diameter_mm"] == entry.diameter_mm
        assert meta["reference"]["image_sha256"] and meta["reference"]["mask_sha256"]
        assert rows[lesion_id]["volume_mm3"] > 0 and -1000 < rows[lesion_id]["mean_hu"] < 2000  # calcified nodules exceed +400
    # the equivalent diameter agrees with LUNA16's annotation to within a few mm
    diffs = [abs(lib.metadata(i)["diameter_mm"] - e.diameter_mm) for i, e in zip(ids, entries)]
    assert np.median(diffs) < 3.0

    item = lib.get(ids[0])
    assert item.ndim == 3 and item.units == "HU" and item.absolute is not None and item.mask.any()
    assert item.provenance["series_uid"] == entries[0].group
    assert item.provenance["nodule_class"] == lib.metadata(ids[0])["nodule_class"]
    assert lib.get(ids[0]) is item  # cached


def test_import_one_side_only(shared_data, tmp_path):
    folder, entries = _small_index(shared_data, tmp_path, n=30)
    lib = LesionLibrary(tmp_path / "lib")
    lib.import_index(folder, side="test")
    sides = {group_side(e.group) for e in entries}
    assert sides == {"train", "test"}  # the 30 rows hold both sides
    groups = {lib.metadata(r["id"])["series_uid"] for r in lib.list()}
    assert groups == {e.group for e in entries if group_side(e.group) == "test"}
    assert {r["split"] for r in lib.list()} == {"test"}
    with pytest.raises(SynthsegError, match="side"):
        lib.import_index(folder, side="validation")


def test_pick_by_size_class_and_split(shared_data, tmp_path):
    folder, _ = _small_index(shared_data, tmp_path, n=40)
    lib = LesionLibrary(tmp_path / "lib")
    lib.import_index(folder)
    rows = lib.list()
    for cls in {r["nodule_class"] for r in rows}:
        for seed in range(5):
            picked = lib.pick(10.0, seed, cls=cls)
            assert next(r for r in rows if r["id"] == picked)["nodule_class"] == cls
    picked = lib.pick(8.0, 0, split="train")
    assert next(r for r in rows if r["id"] == picked)["split"] == "train"
    near = [r for r in rows if abs(r["diameter_mm"] - 8.0) <= 2.0]
    assert all(abs(next(r for r in rows if r["id"] == lib.pick(8.0, s))["diameter_mm"] - 8.0) <= 2.0
               for s in range(10)) or not near
    with pytest.raises(SynthsegError, match="class"):
        lib.pick(8.0, 0, cls="calcified")


def test_changed_source_is_refused(shared_data, tmp_path):
    folder, _ = _small_index(shared_data, tmp_path, n=2, copy=True)
    lib = LesionLibrary(tmp_path / "lib")
    first = lib.import_index(folder)[0]
    ct = lib.metadata(first)["reference"]["image"]
    with open(ct, "r+b") as fh:  # flip the last byte: pixel data
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 0xFF]))
    with pytest.raises(SynthsegError, match="changed since it was imported"):
        LesionLibrary(tmp_path / "lib").get(first)


def test_thumbnail_is_rgb_uint8_with_outline(shared_data, tmp_path):
    folder, _ = _small_index(shared_data, tmp_path, n=1)
    lib = LesionLibrary(tmp_path / "lib")
    item = lib.get(lib.import_index(folder)[0])
    thumb = lesion_thumbnail(item, size=48)
    assert thumb.shape == (48, 48, 3) and thumb.dtype == np.uint8
    outline = np.all(thumb == (255, 200, 0), axis=-1)
    assert 10 < outline.sum() < 48 * 48 / 2
    from napari_synthseg.lesions import procedural_cxr_nodule

    flat = lesion_thumbnail(procedural_cxr_nodule(10.0, spacing=0.5, seed=1), size=32)
    assert flat.shape == (32, 32, 3) and flat[..., 0].std() > 0


def _generate_recipe_source(shared_data, tmp_path, capsys) -> dict:
    """The lesion source `synthseg generate` would use, from its --print-recipe output."""
    import yaml

    from napari_synthseg.cli import main

    capsys.readouterr()
    assert main(["generate", str(shared_data / "cxr/node21/c3883.mha"), "--out", str(tmp_path / "gen"),
                 "--print-recipe"]) == 0
    return yaml.safe_load(capsys.readouterr().out)["lesions"]["sources"][0]


def test_default_source_is_a_present_library(shared_data, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(LIBRARY_ENV, raising=False)
    assert default_lesion_source() == "procedural"
    assert _generate_recipe_source(shared_data, tmp_path, capsys)["type"] == "procedural"
    folder, _ = _small_index(shared_data, tmp_path, n=3)
    lib = LesionLibrary(tmp_path / "lib")
    lib.import_index(folder)
    monkeypatch.setenv(LIBRARY_ENV, str(tmp_path / "lib"))
    assert default_lesion_source() == str(tmp_path / "lib")
    from napari_synthseg.batch.recipe import LesionPlan, LibrarySource

    [source] = LesionPlan().sources
    assert isinstance(source, LibrarySource) and source.path == str(tmp_path / "lib")
    generated = _generate_recipe_source(shared_data, tmp_path, capsys)  # `generate` without --lesion
    assert generated["type"] == "library" and generated["path"] == str((tmp_path / "lib").resolve())
    monkeypatch.delenv(LIBRARY_ENV)
    assert LesionPlan().sources[0].type == "procedural"


def test_cli_import(shared_data, tmp_path, capsys):
    from napari_synthseg.cli import main

    folder, entries = _small_index(shared_data, tmp_path, n=6)
    assert main(["library", "import-lidc", str(folder), "--library", str(tmp_path / "lib")]) == 0
    out = capsys.readouterr().out
    assert f"imported {len(entries)} lesions" in out
    assert main(["library", "list", str(tmp_path / "lib")]) == 0
    assert f"{len(entries)} items" in capsys.readouterr().out
    assert main(["library", "import", str(tmp_path / "nothing"), "--library", str(tmp_path / "lib")]) == 2


@pytest.mark.slow
def test_full_lidc_import(shared_data, tmp_path):
    lib = LesionLibrary(tmp_path / "lib")
    ids = lib.import_index(shared_data / LIDC)
    assert len(ids) == 895 == len(set(ids))
    classes = {r["nodule_class"] for r in lib.list()}
    assert classes == {"solid", "part-solid", "ground-glass"}
