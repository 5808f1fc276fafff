"""The LIDC real-nodule library: import time, and placing from it vs placing a procedural nodule.

1. ``LesionLibrary.import_index`` of the 895 LIDC nodules (by reference), with 1 reader thread
   (reference) and with the default (CPU count) threads; target: under a minute.
2. Drawing + placing one lesion (``place_lesion``, alpha, no visibility gate, the same random
   sites), median over ``--n`` placements, in the shared CT (5 mm) and a CXR:
   ``procedural`` generates a seeded procedural nodule; ``library`` picks by size (and class) and
   reads the referenced patch (first read; the library caches the last 256 items, so a batch's
   repeats are cheaper). Target: library / procedural <= 1.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_library.py [--n 30]``
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from napari_synthseg.constraints import organ_constraint
from napari_synthseg.errors import SynthsegError
from napari_synthseg.io import read_image
from napari_synthseg.lesions import (
    LesionLibrary,
    procedural_cxr_nodule,
    procedural_nodule,
)
from napari_synthseg.lesions.place import place_lesion
from napari_synthseg.scene import Scene

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
        library = LesionLibrary(tmp / "libNone")
        for name, image in (("CT 5 mm", read_image(DATA / "ct/lung_pet_ct_dx_A0001/dicom")),
                            ("CXR 8-bit", read_image(DATA / "cxr/nih_nodule/00004132_006.png", spacing=(0.34, 0.34)))):
            allowed = organ_constraint(image.array, image.scale, image.modality)
            cands = np.argwhere(allowed)
            scene = Scene.create(image, tmp / "scene", overwrite=True)
            per = {"procedural": [], "library": []}
            rng = np.random.default_rng(args.seed)
            for _ in range(args.n):
                at = tuple(float(v) for v in cands[int(rng.integers(len(cands)))][::-1])
                size = float(rng.uniform(6, 20))
                seed = int(rng.integers(2**31 - 1))
                for source in ("procedural", "library"):
                    start = time.perf_counter()
                    if source == "library":
                        patch = library.get(library.pick(size, seed))
                    elif image.ndim == 3:
                        patch = procedural_nodule(size, "solid", spacing=min(1.0, max(0.25, size / 12.0)),
                                                  lobulation=0.3, spiculation=0.2, seed=seed)
                    else:
                        patch = procedural_cxr_nodule(size, "solid", target_spacing=image.scale, lobulation=0.3,
                                                      spiculation=0.2, seed=seed)
                    try:
                        record = place_lesion(scene, patch, at_xyz=at, size_mm=size, blend="alpha", min_inside=0.0)
                    except SynthsegError:
                        continue
                    per[source].append(time.perf_counter() - start)
                    scene.remove_lesion(record.id)
            tp, tl = np.median(per["procedural"]), np.median(per["library"])
            rows.append((f"{name}: draw + place, procedural (reference)", len(per["procedural"]), tp, 1.0))
            rows.append((f"{name}: draw + place, library", len(per["library"]), tl, tl / tp))
    print(f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print("| step | n | seconds (median per lesion; total for import) | ratio to reference |")
    print("|---|---:|---:|---:|")
    for step, n, seconds, ratio in rows:
        print(f"| {step} | {n} | {seconds:.3f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
