"""The LIDC real-nodule library: import time, and placing from it vs placing a procedural nodule.

1. ``LesionLibrary.import_index`` of the 895 LIDC nodules (by reference), with 1 reader thread
   (reference) and with the default (CPU count) threads; target: under a minute.
2. Drawing + placing one lesion through the lesion spec (``LesionSpec.resolve`` +
   ``place_lesion``, alpha, no visibility gate, the same random sites and sizes), median over
   ``--n`` placements, in the shared CT (5 mm) and a CXR: ``procedural`` generates a seeded
   procedural nodule; ``library`` picks by size, reads the referenced patch and removes its vessel
   attachments (first draw of each item: the sizes are random over 895 nodules; the library keeps
   the last 256 prepared items, so a batch's repeats are cheaper). Target: library / procedural
   <= 1.1 (issue 15: "as fast as placing a procedural nodule").
3. A 5 mm donor placed at 37 mm in the CT: the transform onto the image grid of the whole
   donor cube (the old path) against the donor cropped to the nodule before scaling (the
   ``to_image_grid`` default for records since issue 15): seconds and peak traced memory.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_library.py [--n 30]``
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from napari_synthseg.constraints import organ_constraint
from napari_synthseg.errors import SynthsegError
from napari_synthseg.io import read_image
from napari_synthseg.lesions import LesionLibrary, load_ct_patch
from napari_synthseg.lesions.place import place_lesion
from napari_synthseg.render.placement import to_image_grid
from napari_synthseg.scene import Scene
from napari_synthseg.workflow.spec import LesionSpec, PlaceSettings

DATA = REPO.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        times = {}
        for workers in (1, None):
            start = time.perf_counter()
            lib = LesionLibrary(tmp / f"lib{workers}")
            ids = lib.import_index(DATA / "ct/lidc_nodules", workers=workers)
            times[workers] = time.perf_counter() - start
            rows.append((f"import 895 nodules, {workers or min(8, os.cpu_count() or 1)} thread(s)", len(ids),
                         times[workers], times[workers] / times[1]))
        library_dir = tmp / "libNone"
        library = LesionLibrary(library_dir)
        for name, image in (("CT 5 mm", read_image(DATA / "ct/lung_pet_ct_dx_A0001/dicom")),
                            ("CXR 8-bit", read_image(DATA / "cxr/nih_nodule/00004132_006.png", spacing=(0.34, 0.34)))):
            allowed = organ_constraint(image.array, image.scale, image.modality)
            cands = np.argwhere(allowed)
            scene = Scene.create(image, tmp / "scene", overwrite=True)
            per: dict[str, list[float]] = {"procedural": [], "library": []}
            rng = np.random.default_rng(args.seed)
            specs = {"procedural": LesionSpec.parse("procedural:solid"), "library": LesionSpec.parse(str(library_dir))}
            for _ in range(args.n):
                at = tuple(float(v) for v in cands[int(rng.integers(len(cands)))][::-1])
                size = float(rng.uniform(6, 20))
                seed = int(rng.integers(2**31 - 1))
                settings = PlaceSettings(size_mm=size, seed=seed, lobulation=0.3, spiculation=0.2)
                for source in ("procedural", "library"):
                    start = time.perf_counter()
                    resolved = specs[source].resolve(image, settings)
                    try:
                        record = place_lesion(scene, resolved.patch, at_xyz=at, size_mm=size, blend="alpha",
                                              min_inside=0.0, seed=seed, source=resolved.source)
                    except SynthsegError:
                        continue
                    per[source].append(time.perf_counter() - start)
                    scene.remove_lesion(record.id)
            tp, tl = np.median(per["procedural"]), np.median(per["library"])
            rows.append((f"{name}: draw + place, procedural (reference)", len(per["procedural"]), tp, 1.0))
            rows.append((f"{name}: draw + place, library (first draw)", len(per["library"]), tl, tl / tp))
        # 3. a small donor far above its size
        # the whole 50 mm donor cube, as a CT patch source (`--lesion PATCH.mha`) loads it
        reference = library.metadata(library.find(5.0, k=1)[0])["reference"]
        donor = load_ct_patch(reference["image"], reference["mask"])
        scale = 37.0 / donor.diameter_mm()
        spacing = read_image(DATA / "ct/lung_pet_ct_dx_A0001/dicom").scale
        ref = None
        for label, margin in (("whole donor cube (old)", None), ("cropped to the nodule (new)", 3.0)):
            tracemalloc.start()
            start = time.perf_counter()
            out, _ = to_image_grid(donor, scale, 0.0, spacing, margin_mm=margin)
            seconds = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            ref = ref or (seconds, peak)
            rows.append((f"5 mm donor at 37 mm, {label}: grid {'x'.join(map(str, out.shape))}, peak MiB {peak:.0f}",
                         1, seconds, seconds / ref[0]))
    load = os.getloadavg()[0]
    print(f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"load average {load:.2f}")
    print("| step | n | seconds (median per lesion; total for import) | ratio to reference |")
    print("|---|---:|---:|---:|")
    for step, n, seconds, ratio in rows:
        print(f"| {step} | {n} | {seconds:.3f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
