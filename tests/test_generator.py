"""The learned lesion generator: class rule, mask shape model, training (tiny, a few steps),
save/load/resume/cancel, sampling in the target's own context, and ``place --lesion generated``."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_synthseg.errors import CancelledError, SynthsegError
from napari_synthseg.generator import (
    ARCHITECTURE,
    GeneratorTrainConfig,
    LesionGenerator,
    LesionGeneratorConfig,
    classify_nodule,
    fit_shape_model,
    generate_lesion,
    sphericity,
    train_lesion_generator,
)
from napari_synthseg.io.lesion_index import read_lesion_index, split_by_group
from napari_synthseg.models import load_extra_tensors, load_model
from napari_synthseg.utils.progress import CancelToken

TINY = LesionGeneratorConfig(patch=16, channels=(8, 8, 16), attention_levels=(False, False, False))
LIMIT = 20


@pytest.fixture(scope="module")
def tiny_model(lidc, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "tiny.safetensors"
    steps = []
    train_lesion_generator(lidc, out, model_config=TINY,
                           train_config=GeneratorTrainConfig(steps=3, batch=2, limit=LIMIT, checkpoint_every=0,
                                                             threads=1),
                           progress=lambda s, t, m: steps.append((s, t, m)))
    assert any(m.startswith("loss") for _, _, m in steps)
    return out


def test_class_rule_reads_mean_hu_inside_the_mask():
    mask = np.zeros((8, 8, 8), bool)
    mask[2:6, 2:6, 2:6] = True
    hu = np.full(mask.shape, -850.0)
    for value, expected in ((40.0, "solid"), (-450.0, "part-solid"), (-700.0, "ground-glass")):
        hu[mask] = value
        assert classify_nodule(hu, mask) == expected
    with pytest.raises(SynthsegError):
        classify_nodule(hu, np.zeros_like(mask))


def test_sphericity_of_a_ball_and_a_slab():
    zz, yy, xx = np.mgrid[-12:13, -12:13, -12:13]
    ball = zz ** 2 + yy ** 2 + xx ** 2 <= 10 ** 2
    assert 0.85 < sphericity(ball, (1, 1, 1)) <= 1.05
    slab = np.zeros((20, 20, 20), bool)
    slab[9:11, 2:18, 2:18] = True
    assert sphericity(slab, (1, 1, 1)) < 0.6


def test_shape_model_gives_new_masks_of_the_requested_size(lidc):
    train, _ = split_by_group(read_lesion_index(lidc))
    model = fit_shape_model(train[:LIMIT])
    rng = np.random.default_rng(0)
    masks = [model.sample_mask(d, "solid", 1.0, rng) for d in (6.0, 10.0, 18.0)]
    for d, m in zip((6.0, 10.0, 18.0), masks):
        eq = (6 * m.sum() / math.pi) ** (1 / 3)
        assert abs(eq - d) / d < 0.15, (d, eq)
        assert ndi.label(m)[1] == 1
    a = model.sample_mask(10.0, "solid", 1.0, np.random.default_rng(1), shape=(24, 24, 24))
    b = model.sample_mask(10.0, "solid", 1.0, np.random.default_rng(2), shape=(24, 24, 24))
    assert (a != b).any()  # seeds give different shapes
    # each mask draws its own border roughness: an explicit one is used as given
    from napari_synthseg.generator.shapes import sphericity

    smooth = model.sample_mask(10.0, "solid", 1.0, np.random.default_rng(1), shape=(24, 24, 24), roughness=0.0)
    rough = model.sample_mask(10.0, "solid", 1.0, np.random.default_rng(1), shape=(24, 24, 24), roughness=2.0)
    assert sphericity(smooth, (1, 1, 1)) > sphericity(rough, (1, 1, 1)) + 0.05
    def spread(roughness):
        return np.std([sphericity(model.sample_mask(8.0, "solid", 1.0, np.random.default_rng(s), roughness=roughness),
                                  (1, 1, 1)) for s in range(30)])

    assert spread(None) > 1.5 * spread(0.8)  # measured 0.085 vs 0.031 (real masks: 0.079)
    # round trip through the model file's tensors
    from napari_synthseg.generator.shapes import ShapeModel

    again = ShapeModel.from_tensors(model.to_tensors())
    c = again.sample_mask(10.0, "solid", 1.0, np.random.default_rng(1), shape=(24, 24, 24))
    assert np.array_equal(a, c)


def test_training_uses_only_the_train_side_and_saves_a_loadable_model(tiny_model, lidc):
    loaded = load_model(tiny_model, expected=ARCHITECTURE)
    prov = loaded.provenance
    assert prov["steps"] == 3
    train, test = split_by_group(read_lesion_index(lidc))
    used = train[:LIMIT]
    expected = hashlib.sha256("".join(sorted(e.name for e in used)).encode()).hexdigest()
    assert prov["data"]["combined_sha256"] == expected
    assert prov["data"]["split"]["side"] == "train"
    assert not {e.group for e in used} & {e.group for e in test}
    extras = load_extra_tensors(tiny_model)
    assert any(k.startswith("shape/") for k in extras)
    assert any(k.startswith("raw/") for k in extras)
    # the class statistics come from the data: solid nodules are denser than ground glass
    stats = loaded.config.class_mean_hu
    assert stats[1][0] > stats[3][0]


def test_resume_continues_and_cancel_saves(tiny_model, tmp_path):
    import shutil

    path = tmp_path / "resume.safetensors"
    shutil.copy(tiny_model, path)
    lidc_dir = load_model(tiny_model).provenance["data"]["library"]
    train_lesion_generator(lidc_dir, path, resume=True,
                           train_config=GeneratorTrainConfig(steps=5, batch=2, limit=LIMIT, threads=1,
                                                             checkpoint_every=0))
    assert load_model(path).provenance["steps"] == 5
    with pytest.raises(SynthsegError, match="already has 5 steps"):
        train_lesion_generator(lidc_dir, path, resume=True,
                               train_config=GeneratorTrainConfig(steps=5, batch=2, limit=LIMIT))
    token = CancelToken()
    token.cancel()
    fresh = tmp_path / "cancelled.safetensors"
    with pytest.raises(CancelledError):
        train_lesion_generator(lidc_dir, fresh, model_config=TINY, cancel=token,
                               train_config=GeneratorTrainConfig(steps=5, batch=2, limit=LIMIT))


def test_generated_nodule_keeps_the_target_context(tiny_model, shared_data):
    from napari_synthseg.io import read_image

    image = read_image(shared_data / "ct" / "nodule_patches" / "nodule_00_ct.mha")
    assert image.scale == (1.0, 1.0, 1.0)
    index_xyz = np.array([12.0, 14.0, 13.0])  # a corner of the cube, away from its nodule
    center = image.index_to_physical(index_xyz)
    patch, source = generate_lesion(image, center, 6.0, "solid", seed=5, model=tiny_model)
    assert patch.ndim == 3 and patch.units == "HU" and patch.kind == "solid"
    assert abs(patch.diameter_mm() - 6.0) < 1.0
    assert source["type"] == "generated" and source["seed"] == 5 and source["class"] == "solid"
    assert source["model_sha256"] == load_model(tiny_model).sha256
    from napari_synthseg.generator.sample import SAMPLER_REVISION

    assert source["sampler_revision"] == SAMPLER_REVISION == 2
    # outside the generation region the patch is the target's own voxels (1 mm grid on 1 mm
    # voxels, centred on a voxel: the cube's voxels are the image's)
    region = ndi.binary_dilation(patch.mask, structure=np.ones((3, 3, 3)), iterations=1)
    box_center = np.array([(s.start + s.stop - 1) / 2.0 for s in ndi.find_objects(patch.mask.astype(np.uint8))[0]])
    offset = np.rint(index_xyz[::-1] - box_center).astype(int)
    target = np.asarray(image.array, np.float32)[tuple(slice(o, o + n) for o, n in zip(offset, patch.shape))]
    assert np.allclose(patch.absolute[~region], target[~region], atol=1e-3)
    assert np.allclose(patch.absolute - patch.intensity, target, atol=1e-3)
    # the same seed reproduces the lesion; another seed does not
    again, _ = generate_lesion(image, center, 6.0, "solid", seed=5, model=tiny_model)
    other, _ = generate_lesion(image, center, 6.0, "solid", seed=6, model=tiny_model)
    assert np.array_equal(again.absolute, patch.absolute)
    assert not np.array_equal(other.absolute, patch.absolute) or not np.array_equal(other.mask, patch.mask)


def test_generator_refuses_bad_requests(tiny_model, shared_data):
    gen = LesionGenerator(tiny_model)
    cube = np.full((16, 16, 16), -850.0, np.float32)
    with pytest.raises(SynthsegError, match="empty"):
        gen.fill([cube], [np.zeros(cube.shape, bool)], ["solid"], [-100.0], [0])
    with pytest.raises(SynthsegError, match="unknown nodule class"):
        generate_lesion(None, None, 6.0, "cavitary", model=tiny_model)
    with pytest.raises(SynthsegError, match="larger than the generator"):
        generate_lesion(None, None, 60.0, "solid", model=tiny_model)
    with pytest.raises(SynthsegError, match="not found"):
        generate_lesion(None, None, 6.0, "solid", model=tiny_model.parent / "missing.safetensors")


def test_healthy_fill_class_runs(tiny_model):
    gen = LesionGenerator(tiny_model)
    cube = np.full((16, 16, 16), -850.0, np.float32)
    mask = np.zeros(cube.shape, bool)
    mask[6:10, 6:10, 6:10] = True
    (out,) = gen.fill([cube], [mask], ["empty"], [-850.0], [0], steps=4)
    region = ndi.binary_dilation(mask, structure=np.ones((3, 3, 3)))
    assert np.array_equal(out[~region], cube[~region])
    assert np.isfinite(out).all()


def test_cli_place_generated_in_ct_and_cxr(tiny_model, shared_data, tmp_path):
    from napari_synthseg.cli import main
    from napari_synthseg.scene import Scene

    ct = shared_data / "ct" / "nodule_patches" / "nodule_00_ct.mha"
    rc = main(["place", str(ct), "--lesion", f"generated:part-solid@{tiny_model}", "--at", "12,14,13",
               "--size-mm", "6", "--seed", "2", "--constraint", "none",
               "--out", str(tmp_path / "ct_scene")])
    assert rc == 0
    record = Scene.open(tmp_path / "ct_scene").lesions[0]
    assert record.source["type"] == "generated" and record.source["class"] == "part-solid"
    assert record.source["seed"] == 2 and record.seed == 2
    assert record.source["mask_asset"] == record.assets["mask"]
    assert main(["render", str(tmp_path / "ct_scene"), str(tmp_path / "ct_out")]) == 0

    cxr = shared_data / "cxr" / "node21" / "c3883.mha"
    rc = main(["place", str(cxr), "--lesion", f"generated:solid@{tiny_model}", "--at", "400,500", "--size-mm", "8",
               "--constraint", "none", "--out", str(tmp_path / "cxr_scene")])
    assert rc == 0
    record = Scene.open(tmp_path / "cxr_scene").lesions[0]
    assert record.params["units"] == "attenuation"  # projected through the CT-to-CXR path
    assert record.source["type"] == "generated"
    assert main(["place", str(cxr), "--lesion", f"generated:nonsense@{tiny_model}", "--at", "400,500",
                 "--out", str(tmp_path / "bad")]) == 2
    assert main(["place", str(cxr), "--lesion", "generated:solid@/no/such/model.safetensors", "--at", "400,500",
                 "--out", str(tmp_path / "bad2")]) == 2


def test_cli_train_lesion_generator(lidc, tmp_path, capsys):
    from napari_synthseg.cli import main

    out = tmp_path / "cli.safetensors"
    rc = main(["train-lesion-generator", "--library", str(lidc), "--out", str(out), "--steps", "2",
               "--batch", "2", "--patch", "16", "--channels", "8,8,16", "--limit", "12", "--threads", "1",
               "--crop", "12"])
    assert rc == 0
    assert "2 steps" in capsys.readouterr().out
    assert main(["train-lesion-generator", "--library", str(lidc), "--out", str(tmp_path / "x.pt")]) == 2


def test_moving_a_generated_ct_lesion_regenerates_it_in_the_new_context(tiny_model, shared_data, tmp_path):
    from napari_synthseg.io import read_image
    from napari_synthseg.render.placement import record_patch
    from napari_synthseg.scene import Scene
    from napari_synthseg.workflow.edit import EditSession
    from napari_synthseg.workflow.spec import LesionSpec, PlaceSettings

    image = read_image(shared_data / "ct" / "nodule_patches" / "nodule_00_ct.mha")
    session = EditSession(Scene.create(image, tmp_path / "scene"), actor="test")
    spec = LesionSpec.parse(f"generated:ground-glass@{tiny_model}")
    record = session.place(spec, PlaceSettings(size_mm=6.0, seed=4), at_xyz=(12, 14, 13))
    before = record_patch(session.scene, record)
    moved = session.move(record.id, at_xyz=(36, 35, 37))
    assert moved.source["regenerated"] is True and moved.source["seed"] == 4
    assert moved.source["class"] == "ground-glass" and moved.source["mean_hu"] == record.source["mean_hu"]
    after = record_patch(session.scene, moved)
    assert np.array_equal(after.mask, before.mask)  # same seed: same shape at the same size
    # the background it carries is now the image around the new site, not the old one
    box_center = np.array([(s.start + s.stop - 1) / 2.0 for s in ndi.find_objects(after.mask.astype(np.uint8))[0]])
    # (a box centre on a half voxel lands on either neighbour: the renderer's rounding rule)
    import itertools

    volume = np.asarray(image.array, np.float32)
    start = np.floor(np.array([37, 35, 36]) - box_center).astype(int)
    windows = [volume[tuple(slice(o, o + n) for o, n in zip(start + np.array(d), after.shape))]
               for d in itertools.product((0, 1), repeat=3)]
    target = next((w for w in windows if w.shape == after.shape
                   and np.allclose(after.absolute - after.intensity, w, atol=1e-3)), None)
    assert target is not None, "the regenerated patch does not carry the new site's voxels"
    assert not np.allclose(before.absolute - before.intensity, target, atol=1.0)
    # moved back, it is the first render again: same context, mask, mean HU and flow noise
    back = record_patch(session.scene, session.move(record.id, at_xyz=(12, 14, 13)))
    np.testing.assert_allclose(back.absolute, before.absolute, atol=0.01)  # the record keeps the mean HU to 0.01
    # resizing remakes it at the new size (same seed)
    resized = session.resize(record.id, 9.0)
    assert abs(record_patch(session.scene, resized).diameter_mm() - 9.0) < 1.5
    assert session.undo() and session.scene.lesion(record.id).size_mm == moved.size_mm


def test_builtin_model_is_shipped_and_samples(shared_data):
    from napari_synthseg.generator import BUILTIN_MODELS
    from napari_synthseg.generator.sample import resolve_model_path
    from napari_synthseg.io import read_image

    path = resolve_model_path("builtin")
    assert path.name == BUILTIN_MODELS["lesion_generator_small"]
    assert path.stat().st_size < 5_000_000
    loaded = load_model(path, expected=ARCHITECTURE)
    prov = loaded.provenance
    assert prov["data"]["split"]["side"] == "train" and prov["steps"] > 0
    gen = LesionGenerator("builtin")
    assert gen.contexts is not None and gen.contexts.shape[1:] == (32, 32, 32)
    image = read_image(shared_data / "ct" / "nodule_patches" / "nodule_00_ct.mha")
    patch, source = generate_lesion(image, image.index_to_physical(np.array([24.0, 24.0, 24.0])), 8.0, "solid",
                                    seed=1, steps=2)
    assert source["model_sha256"] == loaded.sha256 and patch.mask.any()
    with pytest.raises(SynthsegError, match="unknown built-in"):
        resolve_model_path("builtin:nope")


def test_cli_generate_lesion_stores_seeded_samples(tiny_model, shared_data, tmp_path, capsys):
    from napari_synthseg.cli import main
    from napari_synthseg.lesions import LesionLibrary

    ct = shared_data / "ct" / "nodule_patches" / "nodule_00_ct.mha"
    rc = main(["generate-lesion", str(ct), "--at", "12,14,13", "--size-mm", "6", "--class", "ground-glass",
               "--samples", "2", "--seed", "7", "--steps", "2", "--model", str(tiny_model),
               "--library", str(tmp_path / "lib")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "seed 7" in out and "seed 8" in out
    library = LesionLibrary(tmp_path / "lib")
    assert len(library) == 2
    items = [library.get(meta["id"]) for meta in library.list()]
    assert all(it.units == "HU" and it.kind == "ground-glass" and it.ndim == 3 for it in items)
    assert not np.array_equal(items[0].mask, items[1].mask) or not np.array_equal(items[0].absolute, items[1].absolute)
    assert main(["generate-lesion", str(ct), "--at", "12,14,13", "--samples", "0",
                 "--library", str(tmp_path / "lib")]) == 2


def _noisy_lung(sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (-850.0 + sigma * rng.standard_normal((24, 24, 24))).astype(np.float32)


def test_noise_matching_brings_a_noisy_fill_down_to_the_scans_noise():
    from napari_synthseg.generator.sample import match_context_noise
    from napari_synthseg.render.noise import lesion_noise

    cube = _noisy_lung(20.0)
    region = np.zeros(cube.shape, bool)
    region[8:16, 8:16, 8:16] = True
    cube[region] = _noisy_lung(80.0, seed=1)[region]  # a fill 4x noisier than its context
    out = match_context_noise(cube, region)
    ring = (ndi.distance_transform_edt(~region) <= 4) & ~region
    want = lesion_noise(cube, ring)
    assert lesion_noise(cube, region) > 3 * want
    assert abs(lesion_noise(out, region) - want) < 0.5 * want  # close to the scan's level
    assert np.array_equal(out[~region], cube[~region])  # the context is untouched
    assert abs(float(out[region].mean()) - float(cube[region].mean())) < 5.0  # smoothing keeps the level


def test_noise_matching_never_adds_noise_or_touches_a_quiet_fill():
    from napari_synthseg.generator.sample import match_context_noise

    cube = _noisy_lung(30.0)
    region = np.zeros(cube.shape, bool)
    region[8:16, 8:16, 8:16] = True
    cube[region] = -850.0  # quieter than the context: left for placement's noise matching
    assert np.array_equal(match_context_noise(cube, region), cube)
    assert np.array_equal(match_context_noise(cube, np.zeros(cube.shape, bool)), cube)


def test_fill_applies_its_corrections_to_the_raw_flow_sample(tiny_model):
    from napari_synthseg.generator.sample import correct_sample

    gen = LesionGenerator(tiny_model)
    cube = (-850.0 + 20.0 * np.random.default_rng(0).standard_normal((16, 16, 16))).astype(np.float32)
    mask = np.zeros(cube.shape, bool)
    mask[6:10, 6:10, 6:10] = True
    region = ndi.binary_dilation(mask, structure=np.ones((3, 3, 3)))
    for cls, mean_hu in (("empty", -850.0), ("solid", -100.0)):
        (raw,) = gen.fill([cube], [mask], [cls], [mean_hu], [0], steps=2, match_noise=False, calibrate_mean=False,
                          match_histogram=False)
        (default,) = gen.fill([cube], [mask], [cls], [mean_hu], [0], steps=2)
        # histogram control: the donor fill() picks for the mask's equivalent diameter and the seed
        target = gen.histogram_target(cls, (6 * mask.sum() / math.pi) ** (1 / 3), mean_hu, 0)
        assert (target is None) == (cls == "empty")
        expected = correct_sample(raw, cube, mask, region, cls, mean_hu, histogram=target)
        np.testing.assert_allclose(default, np.clip(expected, -1024, 1000), atol=1e-3)
        assert np.array_equal(default[~region], cube[~region])
    # with histogram control a nodule is not smoothed: the rim around the mask is the
    # calibrated flow sample; without it the 0.5-voxel Gaussian applies
    from napari_synthseg.generator.sample import calibrate_to_mean_hu

    (raw,) = gen.fill([cube], [mask], ["solid"], [-100.0], [0], steps=2, match_noise=False, calibrate_mean=False,
                      match_histogram=False)
    calibrated = calibrate_to_mean_hu(raw, cube, mask, region, -100.0)
    rim = region & ~mask
    (with_table,) = gen.fill([cube], [mask], ["solid"], [-100.0], [0], steps=2)
    (without_table,) = gen.fill([cube], [mask], ["solid"], [-100.0], [0], steps=2, match_histogram=False)
    np.testing.assert_allclose(with_table[rim], np.clip(calibrated, -1024, 1000)[rim], atol=1e-3)
    assert not np.allclose(without_table[rim], np.clip(calibrated, -1024, 1000)[rim], atol=1.0)
    # the nodule's mean HU is the requested one after calibration (within the factor bounds)
    (solid,) = gen.fill([cube], [mask], ["solid"], [-500.0], [3], steps=2, match_noise=False, match_histogram=False)
    (solid_raw,) = gen.fill([cube], [mask], ["solid"], [-500.0], [3], steps=2, match_noise=False,
                            calibrate_mean=False, match_histogram=False)
    gap_raw = abs(float(solid_raw[mask].mean()) + 500.0)
    assert abs(float(solid[mask].mean()) + 500.0) < max(1.0, 0.75 * gap_raw) or gap_raw < 1.0


def test_mean_calibration_scales_the_contrast_and_respects_its_bounds():
    from napari_synthseg.generator.sample import calibrate_to_mean_hu

    context = np.full((12, 12, 12), -800.0, np.float32)
    mask = np.zeros(context.shape, bool)
    mask[4:8, 4:8, 4:8] = True
    region = ndi.binary_dilation(mask)
    cube = context.copy()
    cube[mask] = -400.0  # +400 HU of contrast; rim half way
    cube[region & ~mask] = -600.0
    out = calibrate_to_mean_hu(cube, context, mask, region, -200.0)  # needs 1.5x the contrast
    assert float(out[mask].mean()) == pytest.approx(-200.0, abs=0.01)
    assert float(out[region & ~mask].mean()) == pytest.approx(-500.0, abs=0.01)  # the rim scales too
    assert np.array_equal(out[~region], context[~region])
    assert float(calibrate_to_mean_hu(cube, context, mask, region, 2000.0)[mask].mean()) == pytest.approx(0.0)  # 2x
    assert np.array_equal(calibrate_to_mean_hu(cube, context, mask, region, -900.0), cube)  # below the lung: kept
    assert np.array_equal(calibrate_to_mean_hu(context, context, mask, region, -200.0), context)  # nothing drawn


def test_generated_healthy_fill_is_a_fill_method_for_ct(tiny_model, lidc):
    from napari_synthseg.io import read_image
    from napari_synthseg.workflow.fillers import fill_methods, filler

    assert "generated" in fill_methods()
    entry = read_lesion_index(lidc)[0]
    image = read_image(entry.image_path)
    mask = np.asarray(read_image(entry.mask_path).array) != 0
    fill = filler("generated", model=tiny_model, steps=4)
    a = fill.fill(image.array, mask, spacing=image.scale, seed=3)
    b = fill.fill(image.array, mask, spacing=image.scale, seed=3)
    c = fill.fill(image.array, mask, spacing=image.scale, seed=4)
    np.testing.assert_array_equal(a, b)  # seeded: a record's fill renders the same every time
    assert np.abs(a - c)[mask].max() > 0
    np.testing.assert_array_equal(a[~mask], np.asarray(image.array, np.float32)[~mask])
    assert np.isfinite(a).all() and -1024 <= a[mask].min() and a[mask].max() <= 1000
    assert fill.provenance["model_sha256"] == hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    with pytest.raises(SynthsegError, match="CT volumes"):
        fill.fill(np.zeros((32, 32), np.float32), np.pad(np.ones((4, 4), bool), 14), seed=0)


def test_cli_remove_with_the_generators_healthy_fill(lidc, tmp_path):
    import json

    from napari_synthseg.cli import main
    from napari_synthseg.io import read_image

    entry = read_lesion_index(lidc)[0]
    out = tmp_path / "removed.mha"
    assert main(["remove", str(entry.image_path), "--mask", str(entry.mask_path), "--method", "generated",
                 "--seed", "2", "--out", str(out)]) == 0
    mask = np.asarray(read_image(entry.mask_path).array) != 0
    before = np.asarray(read_image(entry.image_path).array, np.float32)
    after = np.asarray(read_image(out).array, np.float32)
    np.testing.assert_array_equal(after[~mask], before[~mask])
    # a solid nodule became lung: the mask's mean drops by hundreds of HU
    assert after[mask].mean() < before[mask].mean() - 200
    side = json.loads(out.with_name(out.name + ".provenance.json").read_text())
    assert side["model"]["kind"] == "generator" and len(side["model"]["sha256"]) == 64
    assert main(["remove", str(entry.image_path), "--mask", str(entry.mask_path), "--method", "nonsense",
                 "--out", str(tmp_path / "x.mha")]) == 2


def test_histogram_table_picks_a_seeded_donor_of_the_class_and_maps_ranks():
    from napari_synthseg.generator.histograms import QUANTILES, HistogramTable, match_histogram

    rng = np.random.default_rng(0)
    n = 30
    table = HistogramTable(np.sort(rng.normal(-100, 150, (n, len(QUANTILES))), axis=1).astype(np.float32),
                           np.array([1, 2] * 15), rng.uniform(4, 20, n).astype(np.float32),
                           rng.normal(-200, 100, n).astype(np.float32))
    again = HistogramTable.from_tensors(table.to_tensors())
    np.testing.assert_array_equal(again.quantiles, table.quantiles)
    donors = {table.donor(2, 8.0, -150.0, seed) for seed in range(40)}
    assert all(table.classes[d] == 2 for d in donors)
    assert 1 < len(donors) <= 5  # the seed picks among the five nearest
    assert table.donor(2, 8.0, -150.0, 7) == table.donor(2, 8.0, -150.0, 7)
    assert table.donor(3, 8.0, -150.0, 7) is None  # no donor of that class
    target = table.target(table.donor(1, 8.0, -150.0, 0), -42.0)
    assert float(np.trapezoid(target, QUANTILES)) == pytest.approx(-42.0, abs=1e-6)

    cube = rng.normal(0, 1, (12, 12, 12)).astype(np.float32)
    mask = np.zeros(cube.shape, bool)
    mask[3:9, 3:9, 3:9] = True
    out = match_histogram(cube, mask, target)
    np.testing.assert_array_equal(out[~mask], cube[~mask])
    np.testing.assert_allclose(np.quantile(out[mask], QUANTILES), target, atol=5.0)  # of a 600 HU range
    # the layout is the model's: the voxel order inside the mask is kept
    assert np.array_equal(np.argsort(out[mask], kind="stable"), np.argsort(cube[mask], kind="stable"))


def test_default_mean_hu_comes_from_train_side_nodules_of_the_class_and_size(tiny_model):
    from napari_synthseg.generator.sample import MEAN_HU_POOL

    gen = LesionGenerator(tiny_model)
    table = gen.histograms
    assert table is not None
    solid = np.flatnonzero(table.classes == 1)
    draws = {gen.default_mean_hu("solid", np.random.default_rng([s, 1]), 7.0) for s in range(30)}
    assert draws <= {float(m) for m in table.means_hu[solid]}
    nearest = solid[np.argsort(np.abs(np.log(table.diameters_mm[solid] / 7.0)), kind="stable")[:MEAN_HU_POOL]]
    assert draws <= {float(m) for m in table.means_hu[nearest]}
    # without a size (or a table) it falls back to the class statistics the network was trained on
    mean, std = gen.config.class_mean_hu[1]
    fallback = [gen.default_mean_hu("solid", np.random.default_rng(s)) for s in range(200)]
    assert abs(np.mean(fallback) - mean) < 4 * std / np.sqrt(200) + 1e-6
    gen.histograms = None
    assert gen.default_mean_hu("solid", np.random.default_rng(3), 7.0) == gen.default_mean_hu(
        "solid", np.random.default_rng(3))


def test_trained_file_carries_the_histogram_table_and_fill_uses_it(tiny_model, lidc, tmp_path):
    from napari_synthseg.generator import attach_histograms
    from napari_synthseg.models import save_model

    gen = LesionGenerator(tiny_model)
    assert gen.histograms is not None and 0 < len(gen.histograms) <= LIMIT
    cube = np.full((16, 16, 16), -850.0, np.float32)
    mask = np.zeros(cube.shape, bool)
    mask[5:11, 5:11, 5:11] = True
    (with_hist,) = gen.fill([cube], [mask], ["solid"], [-60.0], [5], steps=2, match_noise=False)
    (without,) = gen.fill([cube], [mask], ["solid"], [-60.0], [5], steps=2, match_noise=False, match_histogram=False)
    assert float(with_hist[mask].mean()) == pytest.approx(-60.0, abs=2.0)
    target = gen.histogram_target("solid", (6 * mask.sum() / math.pi) ** (1 / 3), -60.0, 5)
    assert target is not None and gen.histogram_target("empty", 6.0, -800.0, 5) is None
    np.testing.assert_allclose(np.quantile(with_hist[mask], np.linspace(0, 1, 33)), target, atol=2.0)
    assert not np.allclose(with_hist[mask], without[mask])
    # a file from before the table: attach_histograms adds it from the same train side
    loaded = load_model(tiny_model)
    bare = tmp_path / "bare.safetensors"
    save_model(loaded.module, loaded.config, bare, provenance=loaded.provenance,
               extra_tensors={k: v for k, v in load_extra_tensors(tiny_model).items() if not k.startswith("hist/")})
    assert LesionGenerator(bare).histograms is None
    attach_histograms(bare, lidc)
    again = LesionGenerator(bare)
    assert again.histograms is not None and len(again.histograms) == len(gen.histograms)
    np.testing.assert_allclose(again.histograms.quantiles, gen.histograms.quantiles, atol=1e-3)
