"""Rendering scenes: exact labels, deterministic, incremental == full, bad placements refused."""

from __future__ import annotations

import numpy as np
import pytest

from napari_synthseg.errors import SynthsegError
from napari_synthseg.io import MedicalImage, read_image, write_image
from napari_synthseg.lesions import load_ct_patch, procedural_cxr_nodule, procedural_nodule
from napari_synthseg.lesions.place import edit_lesion, place_lesion, remove_real_lesion
from napari_synthseg.render import SceneRenderer, place, render_scene
from napari_synthseg.scene import Scene


@pytest.fixture
def cxr_scene(shared_data, tmp_path):
    image = read_image(shared_data / "cxr/nih_nodule/00002361_008.png", spacing=0.41)
    return Scene.create(image, tmp_path / "cxr_scene")


@pytest.fixture
def ct_scene(shared_data, tmp_path):
    image = read_image(shared_data / "ct/lung_pet_ct_dx_A0001/dicom")
    return Scene.create(image, tmp_path / "ct_scene")


@pytest.fixture
def ct_nodule(shared_data):
    return load_ct_patch(shared_data / "ct/nodule_patches/nodule_05_ct.mha")


def test_labels_are_the_placed_masks_plus_what_changed(cxr_scene, ct_nodule):
    # issue 15: the label is the blend mask plus every pixel changed by > 5 % of the contrast
    image = cxr_scene.load_image()
    solid = procedural_cxr_nodule(12.0, "solid", target_spacing=image.scale, seed=2)
    records = [
        place_lesion(cxr_scene, solid, at_xyz=(300, 400), blend="alpha"),
        place_lesion(cxr_scene, ct_nodule, at_xyz=(700, 420), blend="poisson"),
        place_lesion(cxr_scene, solid, at_xyz=(320, 700), blend="additive", size_mm=20.0),
    ]
    result = render_scene(cxr_scene)
    for record in records:
        placed = place(cxr_scene, record, image)
        expected = np.zeros(image.shape, bool)
        expected[placed.patch_box] = placed.mask
        mine = result.labels == record.label
        assert np.all(mine[expected])  # the blend mask is labelled
        changed = np.abs(result.image - image.array.astype(np.float32))
        peak = changed[expected].max()
        box = result.derived[record.id].box
        assert not np.any(((changed > 0.05 * peak) & (result.labels == 0))[box])
        # The mask's centroid lands on the requested pixel (within rounding; issue 15).
        ys, xs = np.nonzero(expected)
        assert abs(ys.mean() - image.physical_to_index(record.center_mm)[1]) <= 1
        assert abs(xs.mean() - image.physical_to_index(record.center_mm)[0]) <= 1
    assert set(np.unique(result.labels)) == {0, 1, 2, 3}
    # Pixels far from every lesion are the source's, bit for bit.
    far = np.ones(image.shape, bool)
    for record in records:
        far[place(cxr_scene, record, image).box] = False
    np.testing.assert_array_equal(result.image[far], image.array[far].astype(np.float32))


def test_size_in_mm(cxr_scene):
    image = cxr_scene.load_image()
    nodule = procedural_cxr_nodule(10.0, "solid", target_spacing=image.scale, seed=1)
    record = place_lesion(cxr_scene, nodule, at_xyz=(400, 400), size_mm=16.0)
    area_mm2 = (render_scene(cxr_scene).labels == record.label).sum() * 0.41 * 0.41
    assert abs(2 * np.sqrt(area_mm2 / np.pi) - 16.0) < 1.0


def test_render_is_deterministic_and_survives_reopen(cxr_scene, ct_nodule):
    image = cxr_scene.load_image()
    place_lesion(cxr_scene, procedural_nodule(9, "part-solid", seed=5), at_xyz=(350, 420), blend="poisson")
    place_lesion(cxr_scene, ct_nodule, at_xyz=(650, 450), blend="alpha", rotation_deg=30, contrast=1.5)
    first = render_scene(cxr_scene)
    again = render_scene(Scene.open(cxr_scene.folder))
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert not np.array_equal(first.image, image.array.astype(np.float32))


def _random_edits(scene, rng, n, size_range, positions):
    for _ in range(n):
        ids = scene.lesion_ids
        op = rng.integers(0, 5)
        if op == 0 or not ids:
            continue
        lesion = ids[rng.integers(len(ids))]
        try:
            if op == 1:
                edit_lesion(scene, lesion, at_xyz=positions(rng))
            elif op == 2:
                edit_lesion(scene, lesion, size_mm=float(rng.uniform(*size_range)))
            elif op == 3:
                edit_lesion(scene, lesion, blend={"mode": ["alpha", "additive", "poisson"][rng.integers(3)]})
            else:
                edit_lesion(scene, lesion, rotation_deg=float(rng.uniform(0, 180)), contrast=float(rng.uniform(0.5, 2)))
        except SynthsegError:
            pass  # a random move may leave the image: refused, nothing changed


def test_incremental_equals_full_render_2d(cxr_scene, ct_nodule):
    renderer = SceneRenderer(cxr_scene)
    rng = np.random.default_rng(0)
    image = cxr_scene.load_image()
    for i, (x, y) in enumerate([(300, 400), (340, 420), (700, 400), (520, 600)]):
        patch = ct_nodule if i % 2 else procedural_cxr_nodule(12, "solid", target_spacing=image.scale, seed=i)
        place_lesion(cxr_scene, patch, at_xyz=(x, y), blend=["alpha", "poisson", "additive"][i % 3])
    _random_edits(cxr_scene, rng, 25, (6, 25), lambda r: (int(r.integers(250, 750)), int(r.integers(300, 700))))
    cxr_scene.remove_lesion(cxr_scene.lesion_ids[0])
    full = render_scene(cxr_scene)
    np.testing.assert_array_equal(renderer.image, full.image)
    np.testing.assert_array_equal(renderer.labels, full.labels)


def test_incremental_equals_full_render_3d(ct_scene, ct_nodule):
    renderer = SceneRenderer(ct_scene)
    rng = np.random.default_rng(1)
    place_lesion(ct_scene, ct_nodule, at_xyz=(150, 250, 40), blend="poisson")
    place_lesion(ct_scene, procedural_nodule(12, "ground-glass", spacing=1.0, seed=3), at_xyz=(160, 255, 42), blend="alpha")
    place_lesion(ct_scene, ct_nodule, at_xyz=(350, 260, 30), blend="additive")
    _random_edits(ct_scene, rng, 8, (6, 20), lambda r: (int(r.integers(120, 400)), int(r.integers(200, 320)), int(r.integers(20, 45))))
    full = render_scene(ct_scene)
    np.testing.assert_array_equal(renderer.image, full.image)
    np.testing.assert_array_equal(renderer.labels, full.labels)


def test_undo_redo_restores_pixels(cxr_scene, ct_nodule):
    renderer = SceneRenderer(cxr_scene)
    states = [(renderer.image.copy(), renderer.labels.copy())]
    record = place_lesion(cxr_scene, ct_nodule, at_xyz=(400, 400), blend="poisson")
    states.append((renderer.image.copy(), renderer.labels.copy()))
    edit_lesion(cxr_scene, record.id, at_xyz=(420, 430))
    states.append((renderer.image.copy(), renderer.labels.copy()))
    edit_lesion(cxr_scene, record.id, size_mm=25.0, blend={"mode": "alpha"})
    states.append((renderer.image.copy(), renderer.labels.copy()))
    cxr_scene.remove_lesion(record.id)
    states.append((renderer.image.copy(), renderer.labels.copy()))
    np.testing.assert_array_equal(states[-1][0], states[0][0])
    for image, labels in reversed(states):
        np.testing.assert_array_equal(renderer.image, image)
        np.testing.assert_array_equal(renderer.labels, labels)
        cxr_scene.undo()
    for image, labels in states[1:]:
        cxr_scene.redo()
        np.testing.assert_array_equal(renderer.image, image)
        np.testing.assert_array_equal(renderer.labels, labels)


def test_bad_placements_change_nothing(cxr_scene, ct_scene, ct_nodule):
    image = cxr_scene.load_image()
    nodule = procedural_cxr_nodule(12, "solid", target_spacing=image.scale, seed=1)
    with pytest.raises(SynthsegError, match="outside the image"):
        place_lesion(cxr_scene, nodule, at_xyz=(1200, 10))
    with pytest.raises(SynthsegError, match="reaches outside the image"):
        place_lesion(cxr_scene, nodule, at_xyz=(3, 500))
    with pytest.raises(SynthsegError, match="larger than the image"):
        place_lesion(cxr_scene, nodule, at_xyz=(512, 512), size_mm=800.0)
    lungs = np.zeros(image.shape, bool)
    lungs[300:700, 200:450] = True
    cxr_scene.set_mask("constraint", lungs)
    with pytest.raises(SynthsegError, match="outside the allowed region"):
        place_lesion(cxr_scene, nodule, at_xyz=(800, 500))
    record = place_lesion(cxr_scene, nodule, at_xyz=(300, 450))
    with pytest.raises(SynthsegError, match="outside the allowed region"):
        edit_lesion(cxr_scene, record.id, at_xyz=(800, 500))
    assert cxr_scene.lesion(record.id).center_mm == record.center_mm
    flat = procedural_cxr_nodule(10, "solid", target_spacing=(1.0, 1.0), seed=1)
    with pytest.raises(SynthsegError, match="2D lesion cannot go into a 3D"):
        place_lesion(ct_scene, flat, at_xyz=(100, 100, 10))
    assert ct_scene.lesions == []
    with pytest.raises(SynthsegError, match="without projection"):
        place_lesion(cxr_scene, ct_nodule, at_xyz=(300, 450), project=False)
    with pytest.raises(SynthsegError, match="blend must be one of"):
        place_lesion(cxr_scene, nodule, at_xyz=(300, 450), blend="multiply")
    assert len(cxr_scene.lesions) == 1


def test_remove_real_lesion_is_a_record(shared_data, tmp_path):
    src = read_image(shared_data / "ct/nodule_patches/nodule_02_ct.mha")
    scene = Scene.create(src, tmp_path / "s")
    mask = read_image(shared_data / "ct/nodule_patches/nodule_02_seg.mha").array > 0
    renderer = SceneRenderer(scene)
    record = remove_real_lesion(scene, mask, method="biharmonic")
    result = renderer.image
    assert record.kind == "removal"
    assert renderer.labels.max() == 0  # a removal paints no label
    inside = result[mask]
    assert inside.mean() < src.array[mask].mean() - 300  # the solid nodule became lung
    np.testing.assert_array_equal(result[~mask], src.array[~mask].astype(np.float32))
    scene.undo()
    np.testing.assert_array_equal(renderer.image, src.array.astype(np.float32))


def test_cli_place_render_remove_extract(shared_data, tmp_path, capsys):
    from napari_synthseg.cli import main

    cxr = shared_data / "cxr/node21/c3883.mha"
    nodule = shared_data / "ct/nodule_patches/nodule_05_ct.mha"
    scene_dir = tmp_path / "scene"
    assert main(["place", str(cxr), "--lesion", str(nodule), "--at", "400,500", "--blend", "poisson",
                 "--out", str(scene_dir)]) == 0
    assert main(["place", str(scene_dir), "--lesion", "procedural:solid", "--size-mm", "8", "--at-mm", "80,60",
                 "--blend", "additive", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "L0001, L0002" in out
    import json

    data = json.loads((scene_dir / "scene.json").read_text())
    assert [rec["id"] for rec in data["lesions"]] == ["L0001", "L0002"]
    assert main(["render", str(scene_dir), str(tmp_path / "render")]) == 0
    labels = read_image(tmp_path / "render/labels.mha")
    rendered = read_image(tmp_path / "render/image.mha")
    assert set(np.unique(labels.array)) == {0, 1, 2}
    assert rendered.array.dtype == np.uint16
    np.testing.assert_allclose(labels.spacing, read_image(cxr).spacing)
    # remove + extract with a mask of the placed lesion
    mask_path = write_image((labels.array == 1).astype(np.uint8), tmp_path / "mask.mha", like=labels)
    assert main(["remove", str(tmp_path / "render/image.mha"), "--mask", str(mask_path),
                 "--out", str(tmp_path / "removed.mha")]) == 0
    assert main(["extract", str(tmp_path / "render/image.mha"), "--mask", str(mask_path),
                 "--library", str(tmp_path / "lib")]) == 0
    from napari_synthseg.lesions import LesionLibrary

    [item] = LesionLibrary(tmp_path / "lib").list()
    assert item["units"] == "image"
    # Outside the image: exit 2, scene unchanged.
    capsys.readouterr()
    assert main(["place", str(scene_dir), "--lesion", str(nodule), "--at", "5000,10"]) == 2
    assert "outside the image" in capsys.readouterr().err
    assert len(json.loads((scene_dir / "scene.json").read_text())["lesions"]) == 2


def test_node21_contrast_matching(cxr_scene, ct_nodule):
    from napari_synthseg.lesions.contrast import node21_contrast, otsu4_thresholds

    record = place_lesion(cxr_scene, ct_nodule, at_xyz=(300, 420), contrast="node21")
    blend = record.blend
    assert blend["contrast_mode"] == "node21" and blend["contrast"] >= 0.6
    # Independent recomputation from the paper's rule.
    image = cxr_scene.load_image()
    placed = place(cxr_scene, record.copy(blend=dict(blend, contrast=1.0)), image)
    box = image.array[placed.patch_box].astype(np.float32)
    thresholds = otsu4_thresholds(image.array)
    hyper = np.mean(box > thresholds[-1]) > 0.5
    i_ratio = np.mean((box + placed.residual)[placed.mask]) / np.mean(box)
    assert blend["contrast"] == pytest.approx(max(np.log(i_ratio), 0.7 if hyper else 0.6))
    assert blend["hypersignal"] == hyper
    factor, _ = node21_contrast(box, placed.residual, placed.mask, thresholds)
    assert factor == pytest.approx(blend["contrast"])


def test_kill_9_after_placing_keeps_every_lesion(shared_data, tmp_path):
    """Lesions placed through the real placement path survive SIGKILL and render identically."""
    import signal
    import subprocess
    import sys
    import textwrap

    image = read_image(shared_data / "cxr/nih_nodule/00003285_001.png", spacing=0.41)
    folder = tmp_path / "crash"
    Scene.create(image, folder)
    nodule = shared_data / "ct/nodule_patches/nodule_07_ct.mha"
    script = textwrap.dedent(
        f"""
        import os, signal
        from napari_synthseg.scene import Scene
        from napari_synthseg.lesions import load_ct_patch
        from napari_synthseg.lesions.place import place_lesion, edit_lesion
        from napari_synthseg.render import render_scene
        scene = Scene.open({str(folder)!r})
        patch = load_ct_patch({str(nodule)!r})
        for i, mode in enumerate(["alpha", "poisson", "additive", "alpha"]):
            place_lesion(scene, patch, at_xyz=(300 + 120 * i, 450), blend=mode, size_mm=8 + i)
        edit_lesion(scene, "L0002", at_xyz=(430, 520))
        import numpy as np
        np.save({str(tmp_path / "expected.npy")!r}, render_scene(scene).labels)
        print("placed", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert "placed" in result.stdout
    scene = Scene.open(folder)
    assert scene.lesion_ids == ["L0001", "L0002", "L0003", "L0004"]
    np.testing.assert_array_equal(render_scene(scene).labels, np.load(tmp_path / "expected.npy"))


def test_overlay_is_applied_and_dropped_on_edit(cxr_scene, ct_nodule):
    from napari_synthseg.lesions.place import attach_overlay

    renderer = SceneRenderer(cxr_scene)
    record = place_lesion(cxr_scene, ct_nodule, at_xyz=(400, 450), blend="alpha")
    before = renderer.image.copy()
    start = (440, 390)
    values = np.full((20, 20), 123.0, np.float32)
    weight = np.zeros((20, 20), np.float32)
    weight[5:15, 5:15] = 1.0
    attach_overlay(cxr_scene, record.id, values, weight, start, {"model_sha256": "abc", "scale": 3, "seed": 1})
    region = renderer.image[440:460, 390:410]
    assert np.all(region[5:15, 5:15] == 123.0)
    np.testing.assert_array_equal(region[:5], before[440:445, 390:410])
    np.testing.assert_array_equal(render_scene(cxr_scene).image, renderer.image)
    edit_lesion(cxr_scene, record.id, at_xyz=(410, 450))
    assert "overlay" not in cxr_scene.lesion(record.id).assets
    np.testing.assert_array_equal(render_scene(cxr_scene).image, renderer.image)
    cxr_scene.undo()
    assert np.all(renderer.image[445:455, 395:405] == 123.0)
    with pytest.raises(SynthsegError, match="outside the image"):
        attach_overlay(cxr_scene, record.id, values, weight, (1020, 0), {})


def test_cli_library_fill_list_and_place(shared_data, tmp_path, capsys):
    from napari_synthseg.cli import main

    lib = tmp_path / "lib"
    assert main(["library", "add", str(shared_data / "ct/nodule_patches/nodule_03_ct.mha"), "--library", str(lib)]) == 0
    assert main(["library", "procedural", "--library", str(lib), "--kind", "ground-glass", "--n", "2",
                 "--size-mm", "12", "--project", "0.4"]) == 0
    assert main(["library", "list", str(lib)]) == 0
    out = capsys.readouterr().out
    assert "3 items" in out and "ground-glass" in out and "attenuation" in out
    ct_id = next(line.split()[0] for line in out.splitlines() if "HU" in line)
    scene_dir = tmp_path / "scene"
    cxr = shared_data / "cxr/nih_other/00000001_000.png"
    assert main(["place", str(cxr), "--spacing", "0.75", "--lesion", str(lib / f"{ct_id}.json"),
                 "--at", "150,250", "--out", str(scene_dir)]) == 0
    scene = Scene.open(scene_dir)
    assert scene.lesions[0].source["type"] == "library" and scene.lesions[0].params["units"] == "attenuation"


@pytest.mark.parametrize("mode", ["healthy", "lesion", "outpaint"])
def test_accepted_fill_sample_becomes_a_record(cxr_scene, mode):
    from napari_synthseg.lesions.accept import accept_fill_sample

    renderer = SceneRenderer(cxr_scene)
    image = cxr_scene.load_image()
    source = np.asarray(image.array, np.float32)
    mask = np.zeros(image.shape, bool)
    mask[400:440, 300:350] = True
    sample = source.copy()
    if mode == "outpaint":
        region = np.ones(image.shape, bool)
        region[380:460, 280:370] = False
        sample[region] += 7.0
    else:
        region = mask
        sample[mask] = 200.0
    record = accept_fill_sample(cxr_scene, sample, mask, mode, {"model_sha256": "f" * 64, "seed": 4},
                                fill_mask=region if mode == "outpaint" else None)
    np.testing.assert_array_equal(renderer.image, sample)
    expected_labels = np.zeros(image.shape, np.int32) if mode == "healthy" else mask * record.label
    np.testing.assert_array_equal(renderer.labels, expected_labels)
    np.testing.assert_array_equal(render_scene(cxr_scene).image, sample)
    assert record.source["type"] == "inpaint" and record.seed == 4
    with pytest.raises(SynthsegError, match="not resized or rotated"):
        edit_lesion(cxr_scene, record.id, size_mm=12.0)
    cxr_scene.undo()
    np.testing.assert_array_equal(renderer.image, source)


def test_render_without_a_lesion_is_the_scene_after_deleting_it(cxr_scene, ct_nodule):
    """What lies behind a lesion (harmonization's add-back of the original image): the scene
    rendered without it equals the scene with it deleted, overlapping neighbours included."""
    from napari_synthseg.render import render_without

    image = cxr_scene.load_image()
    solid = procedural_cxr_nodule(14.0, "solid", target_spacing=image.scale, seed=3)
    keep = place_lesion(cxr_scene, solid, at_xyz=(400, 420), blend="alpha")
    drop = place_lesion(cxr_scene, ct_nodule, at_xyz=(412, 430), blend="additive")
    behind = render_without(cxr_scene, drop.id)
    assert not np.array_equal(behind, render_scene(cxr_scene).image)
    cxr_scene.remove_lesion(drop.id)
    np.testing.assert_array_equal(behind, render_scene(cxr_scene).image)
    assert keep.id in cxr_scene.lesion_ids
