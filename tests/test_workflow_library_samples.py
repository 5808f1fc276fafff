"""The editor's two Qt-free jobs: browsing a real-lesion library (filters, cached thumbnails,
choosing one to place) and several seeded generated samples at one site (preview without
changing the scene, accept one as an ordinary generated lesion)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_synthseg.errors import CancelledError, SynthsegError
from napari_synthseg.io import read_image
from napari_synthseg.io.lesion_index import read_lesion_index
from napari_synthseg.lesions.library import LesionLibrary
from napari_synthseg.scene import Scene
from napari_synthseg.utils.progress import CancelToken
from napari_synthseg.workflow import library_browser as browser
from napari_synthseg.workflow.edit import EditSession
from napari_synthseg.workflow.generated_samples import sample_seeds
from napari_synthseg.workflow.spec import LesionSourceKind, LesionSpec, PlaceSettings


def make_small_library(shared_data, folder, n=8):
    """A library of the first ``n`` shared LIDC nodules, imported by reference."""
    entries = read_lesion_index(shared_data / "ct" / "lidc_nodules")[:n]
    table = folder / "set"
    table.mkdir(parents=True)
    with open(table / "index.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ct_file", "seg_file", "diameter_mm", "lidc_series_uid", "nodule_index"])
        for e in entries:
            writer.writerow([e.image_path, e.mask_path, e.diameter_mm, e.group, e.index_in_group])
    library = LesionLibrary(folder / "lib")
    library.import_index(table, workers=1)
    return library


@pytest.fixture
def library(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    browser.clear_thumbnail_memory()
    return make_small_library(shared_data, tmp_path)


def test_browse_filters_by_class_and_diameter(library):
    everything = browser.browse_library(library.folder)
    assert len(everything) == len(library) == 8
    assert [e.diameter_mm for e in everything] == sorted(e.diameter_mm for e in everything)
    rows = {r["id"]: r for r in library.list()}
    for entry in everything:
        assert entry.nodule_class == rows[entry.lesion_id]["nodule_class"]
        assert entry.caption.startswith(f"{entry.diameter_mm:.1f} mm\n")
    for cls in ("solid", "part-solid", "ground-glass"):
        shown = browser.browse_library(library.folder, cls)
        assert {e.lesion_id for e in shown} == {i for i, r in rows.items() if r["nodule_class"] == cls}
    diameters = sorted(e.diameter_mm for e in everything)
    lo, hi = diameters[2], diameters[5]
    shown = browser.browse_library(library.folder, "any", lo, hi)
    assert {e.lesion_id for e in shown} == {e.lesion_id for e in everything if lo <= e.diameter_mm <= hi}
    with pytest.raises(SynthsegError, match="nodule class"):
        browser.browse_library(library.folder, "cavitary")
    with pytest.raises(SynthsegError, match="diameter range"):
        browser.browse_library(library.folder, "any", 10, 5)
    with pytest.raises(SynthsegError, match="not a lesion library"):
        browser.browse_library(library.folder.parent)


def test_thumbnails_are_made_once_and_cached_on_disk(library, monkeypatch):
    ids = [e.lesion_id for e in browser.browse_library(library.folder)]
    steps = []
    pictures = dict(browser.library_thumbnails(library.folder, ids, progress=lambda s, t, m: steps.append((s, t))))
    assert list(pictures) == ids and steps[-1] == (len(ids), len(ids))
    for rgb in pictures.values():
        assert rgb.shape == (browser.THUMBNAIL_PX, browser.THUMBNAIL_PX, 3) and rgb.dtype == np.uint8
        assert rgb.std() > 5  # a picture, not a blank
    assert len(list(browser.thumbnail_cache_dir().rglob("*.npy"))) == len(ids)

    # a new session (memory cleared) reads them from disk: no item is loaded again
    browser.clear_thumbnail_memory()

    def no_loading(*args, **kwargs):
        raise AssertionError("thumbnail made again instead of read from the cache")

    monkeypatch.setattr(browser, "lesion_thumbnail", no_loading)
    again = dict(browser.library_thumbnails(library.folder, ids))
    assert all(np.array_equal(again[i], pictures[i]) for i in ids)

    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        list(browser.library_thumbnails(library.folder, ids, cancel=token))


def test_a_broken_item_gets_a_cross_not_an_error(library, tmp_path):
    ids = [e.lesion_id for e in browser.browse_library(library.folder)]
    meta_path = library.folder / f"{ids[0]}.json"
    meta = json.loads(meta_path.read_text())
    meta["reference"]["image"] = str(tmp_path / "gone.mha")
    meta_path.write_text(json.dumps(meta))
    pictures = dict(browser.library_thumbnails(library.folder, ids[:2]))
    assert tuple(pictures[ids[0]][0, 0]) == (220, 40, 40)
    assert pictures[ids[1]].std() > 5


def test_choosing_a_thumbnail_names_that_item_at_its_own_size(library, shared_data, tmp_path):
    entry = browser.browse_library(library.folder)[3]
    choice = browser.choose_library_lesion(library.folder, entry.lesion_id)
    spec = LesionSpec.parse(choice.spec_text)
    assert spec.source is LesionSourceKind.LIBRARY_ITEM and spec.item_id == entry.lesion_id
    assert choice.size_mm == round(entry.diameter_mm, 1)
    with pytest.raises(SynthsegError, match="not in the library"):
        browser.choose_library_lesion(library.folder, "ref-ct-nodule-000000000000")
    # placing the choice puts exactly that real nodule into a radiograph (projected)
    image = read_image(shared_data / "cxr" / "node21" / "c3883.mha")
    session = EditSession(Scene.create(image, tmp_path / "scene"), "test")
    record = session.place(spec, PlaceSettings(size_mm=choice.size_mm, seed=1), at_xyz=(400, 500))
    assert record.source["type"] == "library" and record.source["id"] == entry.lesion_id
    assert record.size_mm == choice.size_mm


# ---- generated samples -------------------------------------------------------------------------


@pytest.fixture
def ct_session(shared_data, tmp_path):
    image = read_image(shared_data / "ct" / "nodule_patches" / "nodule_00_ct.mha")
    return EditSession(Scene.create(image, tmp_path / "scene"), "test")


def _state(scene):
    return json.dumps(scene.to_dict(), sort_keys=True, default=str)


@pytest.mark.slow
def test_samples_side_by_side_leave_the_scene_alone_and_accept_one(ct_session, tmp_path):
    session = ct_session
    before = _state(session.scene)
    settings = PlaceSettings(size_mm=7.0, seed=0, blend="alpha")
    steps = []
    candidates = session.preview_generated("generated:part-solid", settings, sample_seeds(11, 2),
                                           at_xyz=(12, 14, 13), progress=lambda s, t, m: steps.append((s, t, m)))
    assert _state(session.scene) == before and not session.scene.can_undo  # nothing placed
    assert [c.seed for c in candidates] == [11, 12] and steps[-1][:2] == (2, 2)
    for c in candidates:
        assert c.record.seed == c.seed and c.record.source["seed"] == c.seed
        assert c.record.source["type"] == "generated" and c.record.source["class"] == "part-solid"
        assert c.picture.shape == (72, 72, 3) and c.after.ndim == 2  # CT: the axial slice through the site
        assert not np.array_equal(c.after, c.before)  # the lesion shows in its picture
    assert len({c.picture.tobytes() for c in candidates}) == 2  # the samples differ

    chosen = candidates[1]
    record = session.accept_generated(chosen)
    assert session.scene.lesion_ids == [record.id] and record.seed == 12
    assert "seed 12" in session.scene.undo_label

    # the accepted lesion is the one `place` makes with that seed: deterministic
    other = EditSession(Scene.create(session.image, tmp_path / "direct"), "test")
    direct = other.place("generated:part-solid", settings.with_changes(seed=12), at_xyz=(12, 14, 13))
    assert direct.assets == record.assets and direct.center_mm == record.center_mm
    assert direct.source["mean_hu"] == record.source["mean_hu"]

    # moving it re-generates it in its new context from the same seed
    moved = session.move(record.id, at_xyz=(36, 35, 37))
    assert moved.source["regenerated"] is True and moved.source["seed"] == 12
    assert session.undo() and session.undo() and session.scene.lesions == []


def test_samples_refuse_bad_requests_before_any_work(ct_session):
    session = ct_session
    settings = PlaceSettings(size_mm=7.0)
    with pytest.raises(SynthsegError, match="generated lesions"):
        session.preview_generated("procedural:solid", settings, [1, 2], at_xyz=(12, 14, 13))
    with pytest.raises(SynthsegError, match="distinct seeds"):
        session.preview_generated("generated:solid", settings, [1, 1], at_xyz=(12, 14, 13))
    with pytest.raises(SynthsegError, match="1 to 8 samples"):
        sample_seeds(0, 9)
    with pytest.raises(SynthsegError, match="outside"):
        session.preview_generated("generated:solid", settings, [1], at_xyz=(500, 14, 13))
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        session.preview_generated("generated:solid", settings, [1, 2], at_xyz=(12, 14, 13), cancel=token)
    assert session.scene.lesions == []


@pytest.mark.slow
def test_samples_in_a_radiograph_show_the_projected_nodule(shared_data, tmp_path):
    image = read_image(shared_data / "cxr" / "node21" / "c3883.mha")
    session = EditSession(Scene.create(image, tmp_path / "cxr"), "test")
    candidates = session.preview_generated("generated:solid", PlaceSettings(size_mm=14.0, contrast=2.0),
                                           [5, 6], at_xyz=(400, 500))
    for c in candidates:
        assert c.after.shape == c.before.shape and c.after.ndim == 2
        assert c.record.params["units"] == "attenuation"  # projected through the CT-to-CXR path
        changed = np.abs(c.after - c.before)
        assert changed.max() > 0 and changed[changed.shape[0] // 2, changed.shape[1] // 2] > 0
    record = session.accept_generated(candidates[0])
    assert record.source["seed"] == 5 and session.scene.lesion_ids == [record.id]
