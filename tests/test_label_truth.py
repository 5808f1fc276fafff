"""The label is what changed (issue 15): every blend mode, 2D and 3D, thick and thin slices,
procedural and real lesions; fragments; the render and export checks fail loudly."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from napari_synthseg.errors import SynthsegError
from napari_synthseg.io import read_image
from napari_synthseg.lesions import (
    LesionPatch,
    load_ct_patch,
    procedural_cxr_nodule,
    procedural_nodule,
)
from napari_synthseg.lesions.place import place_lesion
from napari_synthseg.render import SceneRenderer
from napari_synthseg.render.compose import render_scene
from napari_synthseg.render.placement import box_kernel, slab_integrate
from napari_synthseg.render.truth import (
    LABEL_TOLERANCE,
    MIN_FRAGMENT_VOXELS,
    check_label_truth,
    measure_lesion_truth,
)
from napari_synthseg.scene import Scene

BLENDS = ("alpha", "additive", "poisson")


def _grow(box, margin, shape):
    return tuple(slice(max(0, b.start - m), min(n, b.stop + m)) for b, m, n in zip(box, margin, shape))


def _assert_truth(scene, records, margin):
    """Measure each lesion from the pixels alone (no lesion's box overlaps another's)."""
    renderer = SceneRenderer(scene, follow=False)
    renderer.check()
    source = np.asarray(renderer.base, np.float32)
    for record in records:
        region = _grow(renderer.derived[record.id].box, margin, source.shape)
        truth = measure_lesion_truth(source, renderer.image, renderer.labels, record.label, region)
        assert truth.outside_voxels == 0, (record.blend, truth)
        assert truth.changed_in_label > 0 and truth.contrast > 0, (record.blend, truth)
        assert truth.fragments == 0, (record.blend, truth)
    return renderer


@pytest.fixture(scope="module")
def thick_ct(shared_data):
    return read_image(shared_data / "ct/lung_pet_ct_dx_A0001/dicom")


@pytest.fixture
def ct_scene(thick_ct, tmp_path):
    return Scene.create(thick_ct, tmp_path / "ct")


@pytest.fixture
def thin_ct_scene(thick_ct, tmp_path):
    """A 1.25 mm-slice CT: a crop of the shared series resampled in z (linear)."""
    crop = thick_ct.array[20:44, 150:390, 60:300].astype(np.float32)
    image = sitk.GetImageFromArray(crop)
    image.SetSpacing((thick_ct.scale[2], thick_ct.scale[1], thick_ct.scale[0]))
    out_size = (crop.shape[2], crop.shape[1], int(crop.shape[0] * thick_ct.scale[0] / 1.25))
    thin = sitk.Resample(image, out_size, sitk.Transform(), sitk.sitkLinear, (0.0, 0.0, 0.0),
                         (thick_ct.scale[2], thick_ct.scale[1], 1.25), (1, 0, 0, 0, 1, 0, 0, 0, 1), -1000.0)
    path = tmp_path / "thin_ct.mha"
    sitk.WriteImage(sitk.Cast(sitk.Round(thin), sitk.sitkInt16), str(path))
    return Scene.create(read_image(path, modality="CT"), tmp_path / "thin")


@pytest.fixture(scope="module")
def ct_nodule(shared_data):
    return load_ct_patch(shared_data / "ct/nodule_patches/nodule_05_ct.mha")


def test_box_kernel_integrates_a_slab():
    assert np.allclose(box_kernel(1.0), [1.0])
    assert np.allclose(box_kernel(3.0), [1 / 3] * 3)
    k = box_kernel(5.0)
    assert len(k) == 5 and np.isclose(k.sum(), 1.0)
    k = box_kernel(2.0)  # half pixels at each end
    assert np.allclose(k, [0.25, 0.5, 0.25])
    line = np.zeros((1, 1, 20), np.float32)
    line[..., 8:12] = 1.0
    assert np.isclose(slab_integrate(line, (1, 1, 4.0)).sum(), 4.0)  # integration keeps the total


@pytest.mark.parametrize("blend", BLENDS)
def test_thick_ct_slices_label_every_changed_slice(ct_scene, ct_nodule, blend):
    # the case: a 9 mm additive nodule centred on one slice of a 5 mm series changed the
    # neighbouring slices by up to +449 HU where the label had 0 voxels
    procedural = procedural_nodule(9.0, "solid", spacing=0.5, lobulation=0.3, spiculation=0.3, seed=3)
    records = [
        place_lesion(ct_scene, procedural, at_xyz=(150, 250, 40), size_mm=9.0, blend=blend),
        place_lesion(ct_scene, ct_nodule, at_xyz=(370, 250, 34), size_mm=12.0, blend=blend),
    ]
    renderer = _assert_truth(ct_scene, records, margin=(3, 20, 20))
    source = np.asarray(renderer.base, np.float32)
    changed = np.abs(renderer.image - source)
    for record in records:
        mine = renderer.labels == record.label
        zs = np.nonzero(mine.any(axis=(1, 2)))[0]
        # every slice the lesion changed by more than the tolerance carries label
        peak = changed[mine].max()
        box = renderer.derived[record.id].box
        over = (changed[box] > LABEL_TOLERANCE * peak) & (renderer.labels[box] == 0)
        changed_slices = np.nonzero(over.any(axis=(1, 2)))[0]
        assert changed_slices.size == 0
        assert zs.size >= 2  # the partial-volume neighbour slice is labelled too


@pytest.mark.parametrize("blend", BLENDS)
def test_thin_ct_slices(thin_ct_scene, ct_nodule, blend):
    image = thin_ct_scene.load_image()
    assert image.scale[0] == pytest.approx(1.25)
    records = [
        place_lesion(thin_ct_scene, procedural_nodule(8.0, "part-solid", spacing=0.5, spiculation=0.4, seed=5),
                     at_xyz=(60, 110, 45), blend=blend),
        place_lesion(thin_ct_scene, ct_nodule, at_xyz=(175, 110, 45), size_mm=10.0, blend=blend),
    ]
    _assert_truth(thin_ct_scene, records, margin=(8, 15, 15))


@pytest.mark.parametrize("cxr", ["cxr/nih_nodule/00004132_006.png", "cxr/node21/c3883.mha"])
@pytest.mark.parametrize("blend", BLENDS)
def test_cxr_every_blend(shared_data, tmp_path, ct_nodule, cxr, blend):
    spacing = (0.34, 0.34) if cxr.endswith(".png") else None
    image = read_image(shared_data / cxr, spacing=spacing)
    scene = Scene.create(image, tmp_path / "cxr")
    h, w = image.shape
    procedural = procedural_cxr_nodule(12.0, "solid", target_spacing=image.scale, spiculation=0.5, seed=2)
    records = [
        place_lesion(scene, procedural, at_xyz=(int(w * 0.3), int(h * 0.45)), blend=blend, contrast=2.0),
        place_lesion(scene, ct_nodule, at_xyz=(int(w * 0.7), int(h * 0.45)), size_mm=15.0, blend=blend),
    ]
    _assert_truth(scene, records, margin=(30, 30))


def test_detached_fragments_are_dropped_from_label_and_image(ct_scene):
    image = ct_scene.load_image()
    mask = np.zeros((3, 30, 30), bool)
    mask[:, 8:22, 8:22] = True
    mask[1, 26, 26] = True  # a 1-voxel speck, detached
    mask[1, 2:4, 2:4] = True  # a 4-voxel one
    intensity = np.where(mask, 800.0, 0.0).astype(np.float32)
    patch = LesionPatch(intensity=intensity, mask=mask, spacing=image.scale, kind="solid", units="HU")
    record = place_lesion(ct_scene, patch, at_xyz=(150, 250, 40), blend="additive",
                          match_sharpness=False)  # exact specks: no blur matching to the scan
    renderer = SceneRenderer(ct_scene, follow=False)
    derived = renderer.derived[record.id]
    assert derived.dropped_voxels == 5
    source = np.asarray(renderer.base, np.float32)
    mine = renderer.labels == record.label
    from scipy import ndimage as ndi

    assert ndi.label(mine, structure=ndi.generate_binary_structure(3, 1))[1] == 1
    # the specks' pixels are the source's again
    changed = np.abs(renderer.image - source) > 0
    assert not np.any(changed & ~mine)
    renderer.check()
    # configurable: keep every piece
    ct_scene.update_lesion(record.id, blend=dict(record.blend, min_fragment_voxels=1))
    renderer = SceneRenderer(ct_scene, follow=False)
    assert renderer.derived[record.id].dropped_voxels == 0
    assert MIN_FRAGMENT_VOXELS == 10


def test_check_fails_on_a_label_that_disagrees(ct_scene, ct_nodule):
    record = place_lesion(ct_scene, ct_nodule, at_xyz=(150, 250, 40), blend="additive")
    result = render_scene(ct_scene)
    source = np.asarray(result.source.array, np.float32)
    assert check_label_truth(source, result.image, result.labels, result.allowances()).ok
    erased = result.labels.copy()
    erased[erased == record.label] = 0
    report = check_label_truth(source, result.image, erased, result.allowances())
    assert not report.ok and report.outside_voxels > 0
    with pytest.raises(SynthsegError, match="label disagrees with the image"):
        report.raise_if_bad("export")
    # a label over pixels that did not change
    ghost = result.labels.copy()
    ghost[5:7, 10:20, 10:20] = 7
    report = check_label_truth(source, result.image, ghost, result.allowances())
    assert report.unchanged_labels == [7]


def test_export_refuses_a_disagreeing_label(ct_scene, ct_nodule, monkeypatch, tmp_path):
    from napari_synthseg.export import case as export_case
    from napari_synthseg.qa.rendered import render as qa_render

    record = place_lesion(ct_scene, ct_nodule, at_xyz=(150, 250, 40), blend="additive")
    ct_scene.set_decision(record.id, "accepted", by="test")
    rendered = qa_render(ct_scene, statuses=("accepted",))
    export_case.check_export_labels(ct_scene, rendered, "case-1")  # agrees: no error
    rendered.labels[rendered.labels == record.label] = 0
    with pytest.raises(SynthsegError, match="export of case case-1"):
        export_case.check_export_labels(ct_scene, rendered, "case-1")


@pytest.mark.parametrize("blend", ["alpha", "poisson"])
def test_ct_lesions_take_on_the_target_noise(ct_scene, blend):
    from napari_synthseg.render.noise import lesion_noise

    smooth = procedural_nodule(20.0, "solid", spacing=1.0, seed=1)
    measured = {}
    for match in (False, True):
        record = place_lesion(ct_scene, smooth, at_xyz=(150, 250, 40), blend=blend, match_noise=match)
        renderer = SceneRenderer(ct_scene, follow=False)
        renderer.check()
        derived = renderer.derived[record.id]
        measured[match] = lesion_noise(renderer.image[derived.box], renderer.labels[derived.box] == record.label)
        if match:
            noise = record.blend["noise"]
            assert noise["sigma"] > 0 and noise["target_sigma"] > noise["lesion_sigma"]
            target = noise["target_sigma"]
        ct_scene.remove_lesion(record.id)
    # without matching the nodule is visibly smoother than the lung; with it, within 25 %
    assert measured[False] < 0.7 * target
    assert abs(measured[True] - target) < 0.25 * target, (measured, target)


def test_visibility_gate_refuses_or_flags_faint_lesions(ct_scene, caplog):
    lesion = procedural_nodule(10.0, "solid", spacing=1.0, seed=2)
    with pytest.raises(SynthsegError, match="too faint to see"):
        place_lesion(ct_scene, lesion, at_xyz=(150, 250, 40), blend="additive", contrast=0.005, min_cnr=1.0)
    assert not ct_scene.lesions  # refused: nothing changed
    faint = place_lesion(ct_scene, lesion, at_xyz=(150, 250, 40), blend="additive", contrast=0.005)
    assert faint.params["visibility"]["visible"] is False and "hardly visible" in caplog.text
    clear = place_lesion(ct_scene, lesion, at_xyz=(370, 250, 34), blend="alpha")
    assert clear.params["visibility"]["visible"] is True and clear.params["visibility"]["cnr"] >= 1.0
