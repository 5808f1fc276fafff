"""Issue 15, "insertion that respects the target image": vessel attachments removed or kept,
blur (PSF) matching, centroid centring, smooth projected outlines, the donor cropped before
scaling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_synthseg.io import MedicalImage, read_image, write_image
from napari_synthseg.lesions import LesionPatch, load_ct_patch, procedural_nodule, project_ct_lesion
from napari_synthseg.lesions.attachments import apply_attachments, attached_structures
from napari_synthseg.lesions.item import resample_mask
from napari_synthseg.lesions.place import place_lesion
from napari_synthseg.render.compose import render_scene
from napari_synthseg.render.placement import place, to_image_grid
from napari_synthseg.scene import Scene
from napari_synthseg.workflow.spec import LesionSpec, PlaceSettings

# real nodules of the shared set with vessels attached in their donor patch (nodule_05: 21 mm,
# nodule_16: 20 mm; both have a few hundred attached voxels within 5 mm)
ATTACHED = ("nodule_05", "nodule_16")


@pytest.fixture(scope="module")
def ct_image(shared_data):
    return read_image(shared_data / "ct" / "lung_pet_ct_dx_A0001" / "dicom")


def _saved(array: np.ndarray, spacing_xyz, path) -> MedicalImage:
    """A synthetic image written to ``path`` and read back (a scene needs a file)."""
    ndim = array.ndim
    write_image(MedicalImage(array=array.astype(np.float32), spacing=tuple(spacing_xyz), origin=(0.0,) * ndim,
                             direction=tuple(np.eye(ndim).ravel()), modality="CT" if ndim == 3 else "CXR"), path)
    return read_image(path)


def _thin_lung(tmp_path) -> MedicalImage:
    """Noisy lung parenchyma at 0.8 x 0.8 x 1 mm, where 5 mm vessel stubs are resolved."""
    volume = -850.0 + np.random.default_rng(0).normal(0.0, 20.0, (60, 90, 90))
    return _saved(volume, (0.8, 0.8, 1.0), tmp_path / "thin.mha")


def _lung_site(image, seed=0):
    from napari_synthseg.constraints import organ_constraint

    allowed = ndi.binary_erosion(organ_constraint(image.array, image.scale, image.modality), iterations=12)
    cands = np.argwhere(allowed)
    return tuple(float(v) for v in cands[np.random.default_rng(seed).integers(len(cands))][::-1])


# ---------------------------------------------------------------------------------------- 1
@pytest.mark.parametrize("name", ATTACHED)
def test_remove_takes_the_attached_vessels_out_of_the_donor(shared_data, name):
    patch = load_ct_patch(shared_data / "ct" / "nodule_patches" / f"{name}_ct.mha")
    attached, _ = attached_structures(patch.absolute, patch.mask, patch.spacing)
    assert attached.sum() > 100  # a real vessel tree touches this nodule
    removed = apply_attachments(patch, "remove")
    # nothing bright of the donor outside the nodule is transplanted: no residual there, and
    # the absolute HU there is the donor's lung background
    assert not np.any(removed.intensity[attached])
    assert np.all(removed.absolute[attached] < -500)
    assert np.any(patch.intensity[attached] > 300)  # before: vessel HU rode along in the rim
    assert removed.attachment is None
    assert removed.provenance["attachments"]["mode"] == "remove"
    kept = apply_attachments(patch, "keep")
    assert kept.attachment is not None and kept.attachment.max() == pytest.approx(1.0)
    stub = kept.attachment > 0
    assert np.all(stub <= attached)
    # the stubs fade: full opacity at the mask, none past 5 mm
    dist = ndi.distance_transform_edt(~patch.mask, sampling=patch.spacing)
    assert kept.attachment[dist > 5.0].max() == 0.0
    assert kept.intensity[stub & (dist > 3)].mean() < kept.intensity[stub & (dist <= 1.5)].mean()
    np.testing.assert_array_equal(kept.mask, patch.mask)  # the nodule's own mask is unchanged


@pytest.mark.parametrize("blend", ["alpha", "additive", "poisson"])
def test_keep_versus_remove_placed(shared_data, tmp_path, blend):
    """The same real nodule placed twice at the same site of a thin-slice lung: with 'keep' its
    vessel stubs come along (changed, labelled, attached to the nodule), with 'remove' nothing
    bright of the donor lands outside the nodule; the label truth check passes for both."""
    image = _thin_lung(tmp_path)
    path = shared_data / "ct" / "nodule_patches" / "nodule_16_ct.mha"
    stats = {}
    for mode in ("remove", "keep"):
        scene = Scene.create(image, tmp_path / f"{blend}-{mode}")
        resolved = LesionSpec.parse(str(path)).resolve(image, PlaceSettings(size_mm=None, attachments=mode))
        record = place_lesion(scene, resolved.patch, at_xyz=(45.0, 45.0, 30.0), blend=blend, min_inside=0.0,
                              source=resolved.source)
        result = render_scene(scene)  # raises if a label disagrees with the image
        placed = place(scene, record, image)
        nodule = np.zeros(image.shape, bool)
        nodule[placed.patch_box] = placed.mask
        changed = np.abs(result.image - image.array.astype(np.float32))
        outside = ~ndi.binary_dilation(nodule, iterations=1)
        stats[mode] = {"label": int((result.labels > 0).sum()),
                       "bright_outside": int(((changed > 200) & outside).sum()),
                       "pieces": ndi.label(result.labels > 0)[1]}
        assert record.source["patch"]["attachments"]["mode"] == mode
    assert stats["keep"]["label"] > 1.15 * stats["remove"]["label"], stats  # the stubs are labelled
    assert stats["keep"]["pieces"] == stats["remove"]["pieces"] == 1, stats  # attached, not fragments
    if blend != "poisson":  # Poisson carries gradients, not values: its stubs change less than 200 HU
        assert stats["keep"]["bright_outside"] > stats["remove"]["bright_outside"] + 100, stats
    if blend != "additive":  # (additive adds the nodule's own 1 mm partial-volume rim)
        assert stats["remove"]["bright_outside"] == 0, stats


def test_attachments_option_in_spec_cli_and_recipe():
    from napari_synthseg.batch.recipe import LibrarySource
    from napari_synthseg.cli import build_parser
    from napari_synthseg.errors import SynthsegError

    assert PlaceSettings().attachments.value == "remove"
    assert PlaceSettings(attachments="keep").attachments.value == "keep"
    with pytest.raises(SynthsegError):
        PlaceSettings(attachments="maybe")
    args = build_parser().parse_args(["place", "x.png", "--lesion", "procedural", "--at", "1,1", "--attachments", "keep"])
    assert args.attachments == "keep"
    assert LibrarySource(type="library", path="lib").attachments == "remove"


def test_procedural_lesions_have_no_attachments():
    patch = procedural_nodule(8.0, "solid", spacing=0.8, seed=1)
    assert apply_attachments(patch, "keep") is patch or apply_attachments(patch, "keep").attachment is None


# ---------------------------------------------------------------------------------------- 2
def _blurred_target(sigma_px: float, path, seed: int = 0) -> tuple[MedicalImage, list]:
    """A CT-like volume: lung at -850 HU with soft-tissue cylinders (+40 HU), blurred in-plane."""
    rng = np.random.default_rng(seed)
    shape = (10, 160, 160)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    plane = np.full(shape[1:], -850.0, np.float32)
    centres = [(45, 45), (45, 115), (115, 45), (115, 115), (80, 30), (30, 80), (130, 80)]
    for cy, cx in centres:
        plane[(yy - cy) ** 2 + (xx - cx) ** 2 <= 10 ** 2] = 40.0
    volume = np.repeat(plane[None], shape[0], axis=0)
    volume = ndi.gaussian_filter(volume, (0, sigma_px, sigma_px))
    volume += rng.normal(0, 3.0, shape).astype(np.float32)
    return _saved(volume, (0.7, 0.7, 2.0), path), centres


def _edge_width_px(plane: np.ndarray, centre, r_max: int = 22) -> float:
    """10-90 % rise distance (px) of the radial mean profile of a bright round object."""
    yy, xx = np.indices(plane.shape)
    r = np.hypot(yy - centre[0], xx - centre[1]).ravel()
    near = r < r_max
    bins = np.round(r[near] / 0.5).astype(int)
    counts = np.bincount(bins)
    sums = np.bincount(bins, weights=plane.ravel()[near])
    radius = np.flatnonzero(counts) * 0.5
    prof = sums[counts > 0] / counts[counts > 0]
    inside, outside = prof[:6].mean(), prof[-6:].mean()
    norm = (prof - outside) / (inside - outside)
    r90 = radius[np.argmax(norm < 0.9)]
    r10 = radius[np.argmax(norm < 0.1)]
    return float(r10 - r90)


def test_sharp_lesion_in_a_blurred_target_takes_its_edge_width(tmp_path):
    image, centres = _blurred_target(2.5, tmp_path / "soft.mha")
    target_width = np.mean([_edge_width_px(image.array[5], c) for c in centres[:4]])
    patch = procedural_nodule(14.0, "solid", spacing=0.35, lobulation=0.0, spiculation=0.0, seed=2)
    widths = {}
    for match in (False, True):
        scene = Scene.create(image, tmp_path / f"m{match}")
        record = place_lesion(scene, patch, at_xyz=(80.0, 80.0, 5.0), blend="alpha", min_inside=0.0,
                              match_noise=False, match_sharpness=match)
        result = render_scene(scene)
        ys, xs = np.nonzero(result.labels[5])
        widths[match] = _edge_width_px(result.image[5], (ys.mean(), xs.mean()))
        if match:
            psf = record.blend["psf"]
            assert psf["sigma_px"] > 1.0 and psf["target_sigma_px"] > psf["lesion_sigma_px"]
    # without matching the lesion is much sharper than the scan; with it, within 25 %
    assert widths[False] < 0.7 * target_width
    assert abs(widths[True] - target_width) < 0.25 * target_width, (widths, target_width)


def test_a_lesion_is_never_sharpened(tmp_path):
    # a sharp target (no blur) and a lesion resampled onto it: the lesion is already as soft
    image, _ = _blurred_target(0.0, tmp_path / "sharp.mha")
    scene = Scene.create(image, tmp_path / "s")
    patch = procedural_nodule(14.0, "solid", spacing=0.35, lobulation=0.0, spiculation=0.0, seed=2)
    record = place_lesion(scene, patch, at_xyz=(80.0, 80.0, 5.0), min_inside=0.0, match_noise=False)
    psf = record.blend["psf"]
    assert psf["target_sigma_px"] < psf["lesion_sigma_px"] and psf["sigma_px"] == 0.0


def test_psf_estimate_is_recorded_in_a_real_ct(ct_image, tmp_path):
    scene = Scene.create(ct_image, tmp_path / "s")
    record = place_lesion(scene, procedural_nodule(10.0, "solid", spacing=0.8, seed=0),
                          at_xyz=_lung_site(ct_image, 1), min_inside=0.0)
    psf = record.blend["psf"]
    assert 0.5 < psf["target_sigma_px"] < 2.5 and psf["lesion_sigma_px"] > 0.5
    assert psf["sigma_px"] == pytest.approx(max(psf["target_sigma_px"] ** 2 - psf["lesion_sigma_px"] ** 2, 0) ** 0.5,
                                            abs=0.01)
    render_scene(scene)


# ---------------------------------------------------------------------------------------- 3
def _tailed_patch(ndim: int) -> LesionPatch:
    shape = (41, 81) if ndim == 2 else (9, 41, 81)
    grid = np.indices(shape[-2:])
    disc = (grid[0] - 20) ** 2 + (grid[1] - 20) ** 2 <= 12 ** 2
    tail = (np.abs(grid[0] - 20) <= 1) & (grid[1] > 20) & (grid[1] < 78)
    mask2 = disc | tail
    mask = mask2 if ndim == 2 else np.repeat(mask2[None], 9, axis=0) & (np.abs(np.arange(9) - 4) <= 3)[:, None, None]
    return LesionPatch(intensity=mask * np.float32(200.0), mask=mask, spacing=(1.0,) * ndim, kind="extracted",
                       units="image" if ndim == 2 else "HU")


@pytest.mark.parametrize("ndim", [2, 3])
def test_a_tailed_lesion_is_centred_on_its_centroid(tmp_path, ndim):
    shape = (200, 240) if ndim == 2 else (20, 200, 240)
    image = _saved(np.full(shape, 100.0 if ndim == 2 else -850.0), (1.0,) * ndim, tmp_path / "flat.mha")
    scene = Scene.create(image, tmp_path / "s")
    at = (120.0, 100.0) if ndim == 2 else (120.0, 100.0, 10.0)
    record = place_lesion(scene, _tailed_patch(ndim), at_xyz=at, blend="additive", min_inside=0.0,
                          match_noise=False)
    placed = place(scene, record, image)
    idx = np.argwhere(placed.mask) + np.asarray(placed.offset)
    centroid = idx.mean(axis=0)[::-1]  # x first
    box_centre = (idx.min(axis=0) + idx.max(axis=0))[::-1] / 2.0
    assert np.all(np.abs(centroid - np.asarray(at)) <= 1.0)
    assert abs(box_centre[0] - at[0]) > 10  # the old rule put it 19 px off
    assert record.params["anchor"] == "centroid"


def test_library_and_projected_lesions_are_centred_on_their_centroid(shared_data, tmp_path):
    cxr = read_image(shared_data / "cxr" / "nih_nodule" / "00004132_006.png", spacing=(0.34, 0.34))
    patch = load_ct_patch(shared_data / "ct" / "nodule_patches" / "nodule_04_ct.mha")
    scene = Scene.create(cxr, tmp_path / "cxr")
    record = place_lesion(scene, patch, at_xyz=(300.0, 400.0), blend="additive", min_inside=0.0)
    placed = place(scene, record, cxr)
    idx = np.argwhere(placed.mask) + np.asarray(placed.offset)
    assert np.all(np.abs(idx.mean(axis=0)[::-1] - (300.0, 400.0)) <= 1.0)


def test_old_records_keep_the_box_anchor(tmp_path):
    image = _saved(np.full((200, 240), 100.0), (1.0, 1.0), tmp_path / "flat.mha")
    scene = Scene.create(image, tmp_path / "s")
    record = place_lesion(scene, _tailed_patch(2), at_xyz=(120.0, 100.0), blend="additive", min_inside=0.0,
                          anchor="box")
    placed = place(scene, record, image)
    idx = np.argwhere(placed.mask) + np.asarray(placed.offset)
    assert abs((idx[:, 1].min() + idx[:, 1].max()) / 2.0 - 120.0) <= 1.0


# ---------------------------------------------------------------------------------------- 4
def _outline_roughness(mask: np.ndarray) -> float:
    """RMS radial deviation (px) of a round mask's outline from the circle of its area: a voxel
    staircase scaled up shows as a saw-tooth around the circle."""
    from skimage import measure

    contour = max(measure.find_contours(mask.astype(float), 0.5), key=len)
    cy, cx = np.argwhere(mask).mean(axis=0)
    radius = np.sqrt(mask.sum() / np.pi)
    r = np.hypot(contour[:, 0] - cy, contour[:, 1] - cx)
    return float(np.sqrt(np.mean((r - radius) ** 2)))


def _sphere_patch(radius_mm: float = 6.0) -> LesionPatch:
    z, y, x = np.indices((21, 21, 21)) - 10
    mask = z ** 2 + y ** 2 + x ** 2 <= radius_mm ** 2
    hu = np.where(mask, 0.0, -850.0).astype(np.float32)
    return LesionPatch(intensity=hu + 850.0, mask=mask, spacing=(1.0, 1.0, 1.0), kind="ct-nodule", absolute=hu,
                       units="HU")


def test_projected_ct_lesions_have_smooth_outlines():
    patch = _sphere_patch()
    projected = project_ct_lesion(patch, target_spacing=0.14)  # 7x upsampling, as into a 2.5k CXR
    smooth = _outline_roughness(projected.mask)
    # the old rule: the 1 mm disc resampled by thresholded-linear interpolation
    disc = np.asarray(patch.mask.any(axis=1))
    blocky = _outline_roughness(resample_mask(disc, (1.0, 1.0), (0.14, 0.14)))
    assert smooth < 0.6 * blocky, (smooth, blocky)
    # same size (area within 5 %) and the values are smooth too: no 1 mm plateaus in the residual
    assert abs(projected.mask.sum() - resample_mask(disc, (1.0, 1.0), (0.14, 0.14)).sum()) < 0.05 * projected.mask.sum()
    # the residual's iso-line at half its peak is as smooth as the mask's outline
    half = projected.intensity >= 0.5 * projected.intensity.max()
    assert _outline_roughness(half) < 0.6 * blocky


# ---------------------------------------------------------------------------------------- 5
def test_small_donor_at_a_large_size_stays_small(shared_data):
    """A 5 mm donor placed at 37 mm: the patch is cropped to the nodule before scaling."""
    patch = load_ct_patch(shared_data / "ct" / "nodule_patches" / "nodule_15_ct.mha")  # 68 voxels
    scale = 37.0 / patch.diameter_mm()
    spacing = (5.0, 0.84, 0.84)
    cropped, cropped_cover = to_image_grid(patch, scale, 0.0, spacing, margin_mm=5.0)
    whole, whole_cover = to_image_grid(patch, scale, 0.0, spacing)
    assert cropped.intensity.size < 0.25 * whole.intensity.size
    # the lesion itself is the same (its partial-volume coverage and residual integrate equally;
    # the thresholded mask may gain or lose a 5 mm slice with the grid's phase)
    assert cropped_cover.sum() == pytest.approx(whole_cover.sum(), rel=0.02)
    assert cropped.intensity.sum() == pytest.approx(whole.intensity.sum(), rel=0.02)


def test_cli_place_keep_attachments_into_a_radiograph(shared_data, tmp_path):
    """`synthseg place --attachments keep`: a real nodule projected into a CXR with its vessel
    stubs (their opacity projects too); the scene records the choice and renders truthfully."""
    import json

    from napari_synthseg.cli import main

    cxr = shared_data / "cxr/node21/c3883.mha"
    nodule = shared_data / "ct/nodule_patches/nodule_16_ct.mha"
    labelled = {}
    for mode in ("remove", "keep"):
        scene_dir = tmp_path / mode
        assert main(["place", str(cxr), "--lesion", str(nodule), "--at", "400,500", "--blend", "alpha",
                     "--attachments", mode, "--out", str(scene_dir)]) == 0
        record = json.loads((scene_dir / "scene.json").read_text())["lesions"][0]
        assert record["source"]["patch"]["attachments"]["mode"] == mode
        assert ("attachment" in record["assets"]) == (mode == "keep")
        labelled[mode] = int((render_scene(Scene.open(scene_dir)).labels > 0).sum())
    assert labelled["keep"] > labelled["remove"]


def test_library_keeps_an_attachment_layer(shared_data, tmp_path):
    from napari_synthseg.lesions import LesionLibrary

    kept = apply_attachments(load_ct_patch(shared_data / "ct" / "nodule_patches" / "nodule_16_ct.mha"), "keep")
    library = LesionLibrary(tmp_path / "lib")
    back = library.get(library.add(kept))
    np.testing.assert_array_equal(back.attachment, kept.attachment)
