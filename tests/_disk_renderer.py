"""A renderer with known geometry for QA/export unit tests (the product's is render.render_scene).

QA numbers and export bookkeeping are checked against lesions whose pixels the test can compute
exactly; test_export.py also exports through the real renderer. Each lesion becomes a smooth disk (ball in 3D) of ``size_mm`` at ``center_mm`` with peak
``params["contrast"]`` (native units, default +40) added to the source; its label value is the
record's ``label``. Deliberately simple so tests know exactly which pixels a lesion covers.
"""

from __future__ import annotations

import numpy as np


def lesion_mask(image, rec) -> tuple[np.ndarray, np.ndarray]:
    """(mask, profile in [0, 1]) of one record on the image grid."""
    idx = image.physical_to_index(rec.center_mm)[::-1]  # numpy order
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in image.shape], indexing="ij", sparse=True)
    r2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, idx, image.scale))
    radius = rec.size_mm / 2.0
    mask = r2 <= radius * radius
    profile = np.clip(1.0 - r2 / (radius * radius), 0.0, 1.0) ** 0.5
    return mask, profile.astype(np.float32)


def render_disks(scene):
    image = scene.load_image()
    out = image.array.astype(np.float32)
    labels = np.zeros(image.shape, np.int32)
    for rec in scene.lesions:
        mask, profile = lesion_mask(image, rec)
        out += float(rec.params.get("contrast", 40.0)) * profile
        labels[mask] = rec.label
    return out, labels


def render_slow(scene):
    """render_disks, slowed down by $SYNTHSEG_TEST_RENDER_SLEEP seconds (kill -9 tests)."""
    import os
    import time

    time.sleep(float(os.environ.get("SYNTHSEG_TEST_RENDER_SLEEP", "0")))
    return render_disks(scene)


LESION_PIXELS = [(300, 420), (700, 520), (600, 650), (420, 760)]


def make_cxr_scenes(root, cxr_files, per_source=2, decisions=("accepted", "rejected", "accepted"),
                    spacing=0.35, patient_ids=None):
    """Scenes on real radiographs: ``per_source`` scenes per file, one lesion per decision."""
    from pathlib import Path

    from napari_synthseg.io import read_image
    from napari_synthseg.scene import LesionRecord, Scene

    folders = []
    for s, path in enumerate(cxr_files):
        image = read_image(path, spacing=(spacing, spacing))
        pid = patient_ids[s] if patient_ids else Path(path).stem.split("_")[0]
        for j in range(per_source):
            folder = Path(root) / f"{Path(path).stem}-{j}"
            scene = Scene.create(image, folder, patient_id=pid)
            for i, status in enumerate(decisions):
                x, y = LESION_PIXELS[i % len(LESION_PIXELS)]
                rec = scene.add_lesion(LesionRecord(
                    kind="nodule" if i % 2 == 0 else "mass",
                    center_mm=tuple(image.index_to_physical((x + 15 * j, y))),
                    size_mm=7.0 + 2 * i, params={"contrast": 30.0 + 5 * i}, seed=i))
                if status != "placed":
                    scene.set_decision(rec.id, status, by="test")
            folders.append(folder)
    return folders
