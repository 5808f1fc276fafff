"""The lesion editor's library strip and generated samples: what a user waits for.

1. Library thumbnails (``workflow.library_browser.library_thumbnails``) for ``--items`` LIDC
   nodules imported by reference: cold (each item read from its source files), from the disk
   cache (a new session), and from memory; reference: one ``library.get`` + ``lesion_thumbnail``
   per item measured in the same run (what the strip would cost without its caches).
2. Generated samples (``EditSession.preview_generated``, the shipped generator) of ``--samples``
   seeds at one site in the shared CT (nodule_00 cube) and the NODE21 CXR, against placing the same
   seeds one by one with ``EditSession.place`` (reference: the samples must cost no more than
   placing them would).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_editor_library_samples.py``
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from napari_synthseg.generator import get_generator
from napari_synthseg.io import read_image
from napari_synthseg.io.lesion_index import read_lesion_index
from napari_synthseg.lesions.library import LesionLibrary, lesion_thumbnail
from napari_synthseg.scene import Scene
from napari_synthseg.workflow import library_browser as browser
from napari_synthseg.workflow.edit import EditSession
from napari_synthseg.workflow.spec import PlaceSettings

DATA = REPO.parent / "shared" / "data"


def _library(folder: Path, n: int) -> LesionLibrary:
    entries = read_lesion_index(DATA / "ct" / "lidc_nodules")[:n]
    table = folder / "set"
    table.mkdir(parents=True)
    with open(table / "index.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ct_file", "seg_file", "diameter_mm", "lidc_series_uid", "nodule_index"])
        for e in entries:
            writer.writerow([e.image_path, e.mask_path, e.diameter_mm, e.group, e.index_in_group])
    library = LesionLibrary(folder / "lib")
    library.import_index(table)
    return library


def bench_thumbnails(tmp: Path, n: int) -> list[tuple[str, float, float]]:
    os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")
    library = _library(tmp, n)
    ids = [e.lesion_id for e in browser.browse_library(library.folder)]
    t0 = time.perf_counter()
    for lesion_id in ids:  # reference: no cache at all (fresh library object: no item cache)
        lesion_thumbnail(LesionLibrary(library.folder).get(lesion_id), browser.THUMBNAIL_PX)
    reference = (time.perf_counter() - t0) / len(ids)
    rows = []
    browser.clear_thumbnail_memory()
    for what in ("cold (first session)", "disk cache (new session)", "memory cache"):
        if what.startswith("disk"):
            browser.clear_thumbnail_memory()
        t0 = time.perf_counter()
        list(browser.library_thumbnails(LesionLibrary(library.folder).folder, ids))
        per_item = (time.perf_counter() - t0) / len(ids)
        rows.append((what, per_item * 1000, per_item / reference))
    rows.insert(0, ("reference: get + lesion_thumbnail", reference * 1000, 1.0))
    return rows


def bench_samples(tmp: Path, count: int) -> list[tuple[str, float, float, float]]:
    get_generator("builtin")  # loading torch and the model is paid once per session
    rows = []
    cases = (("CT nodule_00 (1 mm)", DATA / "ct" / "nodule_patches" / "nodule_00_ct.mha", (12, 14, 13), 8.0),
             ("CXR NODE21 c3883", DATA / "cxr" / "node21" / "c3883.mha", (380, 420), 16.0))
    for name, path, site, size in cases:
        image = read_image(path)
        session = EditSession(Scene.create(image, tmp / f"s_{len(rows)}"), "bench")
        settings = PlaceSettings(size_mm=size, contrast=2.0)
        seeds = list(range(100, 100 + count))
        t0 = time.perf_counter()
        session.preview_generated("generated:solid", settings, seeds, at_xyz=site)
        samples = time.perf_counter() - t0
        reference_session = EditSession(Scene.create(image, tmp / f"r_{len(rows)}"), "bench")
        t0 = time.perf_counter()
        for seed in seeds:
            reference_session.place("generated:solid", settings.with_changes(seed=seed), at_xyz=site)
        reference = time.perf_counter() - t0
        rows.append((name, samples, samples / count, samples / reference))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        print(f"\n## Library thumbnails ({args.items} LIDC nodules by reference)\n")
        print("| path | ms per thumbnail | ratio vs reference |")
        print("|---|---:|---:|")
        for what, ms, ratio in bench_thumbnails(tmp / "thumbs", args.items):
            print(f"| {what} | {ms:.1f} | {ratio:.3f} |")
        print(f"\n## Generated samples ({args.samples} seeds at one site, shipped generator)\n")
        print("| image | samples s | s per sample | ratio vs placing the seeds one by one |")
        print("|---|---:|---:|---:|")
        for name, total, each, ratio in bench_samples(tmp / "samples", args.samples):
            print(f"| {name} | {total:.1f} | {each:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
