"""Insertion that respects the target image (issue 15): attachments, blur matching, centring,
projected outlines. Each table has its reference computed in the same run.

1. Vessel attachments: real nodules 05 and 16 of ``ct/nodule_patches`` placed into a thin-slice
   (0.8 x 0.8 x 1 mm) noisy lung at the same site, for each blend: the donor patch as loaded
   (reference, the pre-issue rule), ``attachments="remove"`` and ``"keep"``. Counted: voxels
   outside the nodule (its blend mask grown by one voxel) changed by > 200 HU, the label's size
   and its pieces; the render's label-truth check runs on every scene.
2. Blur matching: a sharp 14 mm procedural nodule placed into a CT whose structures are blurred
   in-plane by sigma = 1.5 / 2.5 px: the 10-90 % edge rise (px) of the radial profile of the
   target's own round structures (reference) and of the lesion without and with matching.
3. Centring: a disc with a 57 px tail placed at a point; distance (px) of the placed mask's
   centroid from the point with the box anchor (reference, the old rule) and the centroid anchor.
4. Projected outlines: a 12 mm sphere at 1 mm voxels projected into a 0.14 mm radiograph; RMS
   radial deviation (px) of the mask outline from a circle, thresholded-linear (reference, the old
   rule) vs the smoothed signed distance.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_insertion.py``
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from napari_synthseg.io import MedicalImage, read_image, write_image
from napari_synthseg.lesions import LesionPatch, load_ct_patch, procedural_nodule, project_ct_lesion
from napari_synthseg.lesions.attachments import apply_attachments
from napari_synthseg.lesions.item import resample_mask
from napari_synthseg.lesions.place import place_lesion
from napari_synthseg.render.compose import render_scene
from napari_synthseg.render.placement import place
from napari_synthseg.scene import Scene

DATA = REPO.parent / "shared" / "data"


def _saved(array, spacing_xyz, path) -> MedicalImage:
    ndim = array.ndim
    write_image(MedicalImage(array=np.asarray(array, np.float32), spacing=tuple(spacing_xyz), origin=(0.0,) * ndim,
                             direction=tuple(np.eye(ndim).ravel()), modality="CT" if ndim == 3 else "CXR"), path)
    return read_image(path)


def _edge_width_px(plane, centre, r_max=22) -> float:
    yy, xx = np.indices(plane.shape)
    r = np.hypot(yy - centre[0], xx - centre[1]).ravel()
    near = r < r_max
    bins = np.round(r[near] / 0.5).astype(int)
    counts = np.bincount(bins)
    sums = np.bincount(bins, weights=plane.ravel()[near])
    radius = np.flatnonzero(counts) * 0.5
    prof = sums[counts > 0] / counts[counts > 0]
    norm = (prof - prof[-6:].mean()) / (prof[:6].mean() - prof[-6:].mean())
    return float(radius[np.argmax(norm < 0.1)] - radius[np.argmax(norm < 0.9)])


def _roughness(mask) -> float:
    from skimage import measure

    contour = max(measure.find_contours(mask.astype(float), 0.5), key=len)
    cy, cx = np.argwhere(mask).mean(axis=0)
    r = np.hypot(contour[:, 0] - cy, contour[:, 1] - cx)
    return float(np.sqrt(np.mean((r - np.sqrt(mask.sum() / np.pi)) ** 2)))


def attachments(tmp: Path) -> list[tuple]:
    volume = -850.0 + np.random.default_rng(0).normal(0.0, 20.0, (60, 90, 90))
    image = _saved(volume, (0.8, 0.8, 1.0), tmp / "thin.mha")
    rows = []
    for name in ("nodule_05", "nodule_16"):
        raw = load_ct_patch(DATA / "ct" / "nodule_patches" / f"{name}_ct.mha")
        for blend in ("alpha", "additive", "poisson"):
            ref = None
            for mode in ("as loaded (reference)", "remove", "keep"):
                patch = raw if mode.startswith("as") else apply_attachments(raw, mode)
                scene = Scene.create(image, tmp / f"{name}-{blend}-{mode[:4]}")
                record = place_lesion(scene, patch, at_xyz=(45.0, 45.0, 30.0), blend=blend, min_inside=0.0)
                result = render_scene(scene)  # raises if a label disagrees with the image
                placed = place(scene, record, image)
                nodule = np.zeros(image.shape, bool)
                nodule[placed.patch_box] = placed.mask
                changed = np.abs(result.image - image.array.astype(np.float32))
                bright = int(((changed > 200) & ~ndi.binary_dilation(nodule)).sum())
                label = int((result.labels > 0).sum())
                ref = ref or label
                rows.append((name, blend, mode, bright, label, label / ref, ndi.label(result.labels > 0)[1]))
    return rows


def blur(tmp: Path) -> list[tuple]:
    rows = []
    patch = procedural_nodule(14.0, "solid", spacing=0.35, lobulation=0.0, spiculation=0.0, seed=2)
    for sigma in (1.5, 2.5):
        shape = (10, 160, 160)
        yy, xx = np.mgrid[: shape[1], : shape[2]]
        plane = np.full(shape[1:], -850.0, np.float32)
        centres = [(45, 45), (45, 115), (115, 45), (115, 115), (80, 30), (30, 80), (130, 80)]
        for cy, cx in centres:
            plane[(yy - cy) ** 2 + (xx - cx) ** 2 <= 100] = 40.0
        volume = ndi.gaussian_filter(np.repeat(plane[None], shape[0], 0), (0, sigma, sigma))
        volume += np.random.default_rng(0).normal(0, 3.0, shape).astype(np.float32)
        image = _saved(volume, (0.7, 0.7, 2.0), tmp / f"soft{sigma}.mha")
        target = float(np.mean([_edge_width_px(image.array[5], c) for c in centres[:4]]))
        rows.append((sigma, "target's own structures (reference)", target, 1.0, "-"))
        for match in (False, True):
            scene = Scene.create(image, tmp / f"blur{sigma}{match}")
            record = place_lesion(scene, patch, at_xyz=(80.0, 80.0, 5.0), blend="alpha", min_inside=0.0,
                                  match_noise=False, match_sharpness=match)
            result = render_scene(scene)
            ys, xs = np.nonzero(result.labels[5])
            width = _edge_width_px(result.image[5], (ys.mean(), xs.mean()))
            psf = record.blend.get("psf")
            rows.append((sigma, f"lesion, matching {'on' if match else 'off'}", width, width / target,
                         "-" if psf is None else f"{psf['target_sigma_px']} / {psf['lesion_sigma_px']} -> {psf['sigma_px']}"))
    return rows


def centring(tmp: Path) -> list[tuple]:
    grid = np.indices((41, 81))
    mask = ((grid[0] - 20) ** 2 + (grid[1] - 20) ** 2 <= 144) | ((np.abs(grid[0] - 20) <= 1) & (grid[1] > 20) & (grid[1] < 78))
    patch = LesionPatch(intensity=mask * np.float32(200.0), mask=mask, spacing=(1.0, 1.0), kind="extracted", units="image")
    image = _saved(np.full((200, 240), 100.0), (1.0, 1.0), tmp / "flat.mha")
    rows = []
    for anchor in ("box", "centroid"):
        scene = Scene.create(image, tmp / f"anchor-{anchor}")
        record = place_lesion(scene, patch, at_xyz=(120.0, 100.0), blend="additive", min_inside=0.0, anchor=anchor)
        placed = place(scene, record, image)
        centroid = (np.argwhere(placed.mask) + np.asarray(placed.offset)).mean(axis=0)[::-1]
        rows.append((anchor, float(np.hypot(*(centroid - (120.0, 100.0))))))
    return rows


def outlines() -> list[tuple]:
    z, y, x = np.indices((21, 21, 21)) - 10
    mask = z ** 2 + y ** 2 + x ** 2 <= 36
    hu = np.where(mask, 0.0, -850.0).astype(np.float32)
    patch = LesionPatch(intensity=hu + 850.0, mask=mask, spacing=(1.0, 1.0, 1.0), kind="ct-nodule", absolute=hu, units="HU")
    old = resample_mask(np.asarray(mask.any(axis=1)), (1.0, 1.0), (0.14, 0.14))
    new = project_ct_lesion(patch, target_spacing=0.14).mask
    ref = _roughness(old)
    return [("thresholded-linear (reference)", ref, 1.0, int(old.sum())),
            ("smoothed signed distance", _roughness(new), _roughness(new) / ref, int(new.sum()))]


def main() -> None:
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        att, bl, ce = attachments(tmp), blur(tmp), centring(tmp)
    out = outlines()
    print(f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.2f}")
    print("\n1. attachments\n| nodule | blend | donor | voxels > 200 HU outside the nodule | label voxels | label / reference | label pieces |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name, blend, mode, bright, label, ratio, pieces in att:
        print(f"| {name} | {blend} | {mode} | {bright} | {label} | {ratio:.2f} | {pieces} |")
    print("\n2. blur matching\n| target blur (px) | what | 10-90 % edge rise (px) | ratio to target | psf target / lesion -> blur (px) |")
    print("|---:|---|---:|---:|---|")
    for sigma, what, width, ratio, psf in bl:
        print(f"| {sigma} | {what} | {width:.2f} | {ratio:.2f} | {psf} |")
    print("\n3. centring a tailed lesion\n| anchor | centroid off the requested point (px) |\n|---|---:|")
    for anchor, off in ce:
        print(f"| {anchor}{' (reference, old rule)' if anchor == 'box' else ''} | {off:.1f} |")
    print("\n4. projected outline (12 mm sphere, 1 mm -> 0.14 mm)\n| mask resampling | RMS radial deviation (px) | ratio | area (px) |")
    print("|---|---:|---:|---:|")
    for what, rough, ratio, area in out:
        print(f"| {what} | {rough:.3f} | {ratio:.2f} | {area} |")


if __name__ == "__main__":
    main()
