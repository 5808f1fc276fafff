"""How visible are CXR lesions at their default contrast? Procedural vs real (projected LIDC).

At the same random sites inside the lung fields of the shared CXRs (two 8-bit NIH, the 16-bit
NODE21 control), for sizes 8-25 mm, place (no visibility gate) and measure QA's CNR against the
local background (``render.visibility``):

* ``library, NODE21 contrast`` - a real LIDC nodule projected (NODE21 route) with NODE21's
  contrast matching (``contrast="node21"``): the reference, real nodules as NODE21 inserts them;
* ``library, contrast 1`` - the same nodule at its physical projected attenuation;
* ``procedural, contrast 1`` - ``procedural_cxr_nodule`` at its default.

Prints the median CNR and the share at or above ``MIN_CNR`` (visible) per source, and the ratio
of the procedural median to the reference. Run:
``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cxr_visibility.py [--n 40] [--library LIB]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from napari_synthseg.constraints import organ_constraint
from napari_synthseg.errors import SynthsegError
from napari_synthseg.io import read_image
from napari_synthseg.lesions import LesionLibrary, procedural_cxr_nodule
from napari_synthseg.lesions.place import place_lesion
from napari_synthseg.render.compose import composite
from napari_synthseg.render.placement import place
from napari_synthseg.render.visibility import MIN_CNR, lesion_cnr
from napari_synthseg.scene import Scene

DATA = REPO.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="sites per image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--library")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    cnrs = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        library = LesionLibrary(args.library) if args.library else LesionLibrary(tmp / "lib")
        if not args.library:
            library.import_index(DATA / "ct/lidc_nodules")
        for name, spacing in (("nih_nodule/00004132_006.png", (0.34, 0.34)), ("nih_nodule/00012604_002.png", (0.39, 0.39)),
                              ("node21/c3883.mha", None)):
            image = read_image(DATA / "cxr" / name, spacing=spacing)
            allowed = organ_constraint(image.array, image.scale, image.modality)
            cands = np.argwhere(allowed)
            scene = Scene.create(image, tmp / "scene", overwrite=True)
            for _ in range(args.n):
                at = tuple(float(v) for v in cands[int(rng.integers(len(cands)))][::-1])
                size = float(rng.uniform(8, 25))
                real = library.get(library.pick(size, rng))
                seed = int(rng.integers(2**31 - 1))
                kind = ("solid", "part-solid", "ground-glass")[int(rng.integers(3))]
                proc = procedural_cxr_nodule(size, kind, target_spacing=image.scale, lobulation=0.3, spiculation=0.2,
                                             seed=seed)
                for label, patch, contrast in (("library, NODE21 contrast", real, "node21"),
                                               ("library, contrast 1", real, 1.0),
                                               ("procedural, contrast 1", proc, 1.0)):
                    try:
                        record = place_lesion(scene, patch, at_xyz=at, size_mm=size, blend="alpha", contrast=contrast,
                                              min_inside=0.0)
                    except SynthsegError:
                        continue
                    cnr = record.params["visibility"]["cnr"]
                    cnrs[label].append(np.nan if cnr is None else cnr)
                    # QA's plain definition (ring mean and std, no detrending) on the same render
                    placed = place(scene, record, image)
                    box = tuple(slice(max(0, b.start - 20), min(n, b.stop + 20)) for b, n in zip(placed.box, image.shape))
                    canvas = np.array(image.array[box], np.float32)
                    derived = composite(canvas, None, box, placed, image.scale)
                    lesion = np.zeros(canvas.shape, bool)
                    local = tuple(slice(d.start - b.start, d.stop - b.start) for d, b in zip(derived.box, box))
                    lesion[local] = derived.label
                    cnrs[f"{label} plain"].append(lesion_cnr(canvas, lesion, image.scale, detrend=False)[0])
                    cnrs[f"{label} factor"].append(record.blend["contrast"])
                    scene.remove_lesion(record.id)
    ref = float(np.nanmedian(cnrs["library, NODE21 contrast"]))
    print(f"| source | lesions | median CNR (detrended) | visible (>= {MIN_CNR:g}) | median CNR (QA plain) | visible (plain) "
          "| median contrast factor | CNR / reference |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label in ("library, NODE21 contrast", "library, contrast 1", "procedural, contrast 1"):
        values = np.asarray(cnrs[label], float)
        plain = np.asarray(cnrs[label + " plain"], float)
        med = float(np.nanmedian(values))
        print(f"| {label} | {len(values)} | {med:.2f} | {np.mean(values >= MIN_CNR) * 100:.0f} % | "
              f"{np.nanmedian(plain):.2f} | {np.mean(plain >= MIN_CNR) * 100:.0f} % | "
              f"{np.median(cnrs[label + ' factor']):.2f} | {med / ref:.2f} |")


if __name__ == "__main__":
    main()
