"""Export speed: 1024² radiograph scenes -> nnU-Net v2 PNG layout.

Run: .venv/bin/python benchmarks/bench_export.py [--cases 200] [--repeat 2]

Prints (1) PNG encode time and size per zlib level for one 1024² CXR, (2) cases/s of
``export_dataset`` with 1 and 2 worker processes against a reference implementation in the
same process (serial, ``napari_synthseg.io.write_image`` for every file, i.e. SimpleITK's
PNG writer at its default compression), and (3) peak memory for 50 vs N cases, each run in a
fresh process, to show memory does not grow with the number of cases.

The renderer is a cheap stand-in (smooth disks drawn in each lesion's bounding box), so
the numbers measure the export itself, not lesion synthesis.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SYNTHSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
CACHE = Path(tempfile.gettempdir()) / "synthseg-bench-export-scenes"


def render_boxes(scene):
    """Stand-in renderer: a smooth disk per lesion, computed only inside its bounding box."""
    image = scene.load_image()
    out = image.array.astype(np.float32)
    labels = np.zeros(image.shape, np.int32)
    sy, sx = image.scale
    for rec in scene.lesions:
        cx, cy = image.physical_to_index(rec.center_mm)
        r = rec.size_mm / 2.0
        y0, y1 = int(max(0, cy - r / sy - 1)), int(min(image.shape[0], cy + r / sy + 2))
        x0, x1 = int(max(0, cx - r / sx - 1)), int(min(image.shape[1], cx + r / sx + 2))
        yy, xx = np.mgrid[y0:y1, x0:x1]
        r2 = ((yy - cy) * sy) ** 2 + ((xx - cx) * sx) ** 2
        inside = r2 <= r * r
        out[y0:y1, x0:x1] += 30.0 * np.sqrt(np.clip(1 - r2 / (r * r), 0, 1))
        labels[y0:y1, x0:x1][inside] = rec.label
    return out, labels


def make_scenes(n: int) -> Path:
    from napari_synthseg.io import read_image
    from napari_synthseg.scene import LesionRecord, Scene

    root = CACHE / f"n{n}"
    if (root / ".complete").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    files = sorted((DATA / "cxr" / "nih_nodule").glob("*.png"))
    rng = np.random.default_rng(0)
    images = [read_image(f, spacing=(0.35, 0.35)) for f in files]
    for i in range(n):
        image = images[i % len(images)]
        scene = Scene.create(image, root / f"scene{i:04d}", patient_id=files[i % len(files)].stem.split("_")[0])
        scene.autosave = False
        with scene.batch("place"):
            for _ in range(2):
                x, y = rng.integers(200, 824, 2)
                rec = scene.add_lesion(LesionRecord(center_mm=tuple(image.index_to_physical((x, y))),
                                                    size_mm=float(rng.uniform(6, 20))))
                scene.set_decision(rec.id, "accepted", by="bench")
        scene.save()
    (root / ".complete").write_text("")
    return root


def reference_export(scenes: Path, out: Path) -> None:
    """A straightforward serial export with the shared image writer (the comparison)."""
    from napari_synthseg.io import write_image
    from napari_synthseg.scene import Scene

    for d in ("imagesTr", "labelsTr"):
        (out / d).mkdir(parents=True)
    for folder in sorted(p.parent for p in scenes.glob("*/scene.json")):
        scene = Scene.open(folder)
        image, labels = render_boxes(scene)
        src = scene.load_image()
        pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        write_image(pixels, out / "imagesTr" / f"{folder.name}_0000.png", like=src)
        write_image((labels > 0).astype(np.uint8), out / "labelsTr" / f"{folder.name}.png", like=src)
        (out / f"{folder.name}.json").write_text(json.dumps([r.to_dict() for r in scene.lesions]))


def one_run(kind: str, n: int, workers: int, level: int) -> dict:
    """Measured in a fresh process so peak memory is this run's own."""
    from napari_synthseg.export import export_dataset

    scenes = make_scenes(n)
    out = Path(tempfile.mkdtemp(prefix="bench-export-"))
    t0 = time.perf_counter()
    c0 = os.times()
    if kind == "reference":
        reference_export(scenes, out / "ref")
    else:
        export_dataset(scenes, out, fmt="nnunet", renderer=render_boxes, workers=workers, png_compression=level)
    dt = time.perf_counter() - t0
    c1 = os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system) + (c1.children_user - c0.children_user) + (
        c1.children_system - c0.children_system)
    size = sum(p.stat().st_size for p in out.rglob("*.png"))
    shutil.rmtree(out)
    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    rss_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {"seconds": dt, "cases_per_s": n / dt, "cpu_ms_per_case": 1000 * cpu / n, "mb_png": size / 1e6, "rss_main_mb": rss_self,
            "rss_worker_mb": rss_child}


def spawn(kind: str, n: int, workers: int, level: int) -> dict:
    cmd = [sys.executable, __file__, "--one", kind, "--cases", str(n), "--workers", str(workers), "--level", str(level)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def png_levels() -> None:
    img = cv2.imread(str(sorted((DATA / "cxr" / "nih_nodule").glob("*.png"))[0]), cv2.IMREAD_UNCHANGED)
    print("\nPNG encode of one 1024x1024 uint8 CXR (OpenCV), best of 5")
    print("| zlib level | strategy | ms / image | kB |")
    print("|---:|---|---:|---:|")
    for level in (0, 1, 3, 6, 9):
        for strategy, sname in ((cv2.IMWRITE_PNG_STRATEGY_DEFAULT, "default"), (cv2.IMWRITE_PNG_STRATEGY_RLE, "RLE")):
            if level == 0 and sname == "RLE":
                continue
            times = []
            for _ in range(5):
                t = time.perf_counter()
                ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, level,
                                                     cv2.IMWRITE_PNG_STRATEGY, strategy])
                times.append(time.perf_counter() - t)
            print(f"| {level} | {sname} | {1000 * min(times):.1f} | {len(buf) / 1024:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--one", choices=["reference", "export"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--level", type=int, default=1)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one, args.cases, args.workers, args.level)))
        return
    n = args.cases
    t = time.perf_counter()
    make_scenes(n)
    make_scenes(50)
    print(f"scenes ready ({time.perf_counter() - t:.0f} s; cached in {CACHE})")
    png_levels()

    def best(kind, workers=1, level=1, cases=n):
        runs = [spawn(kind, cases, workers, level) for _ in range(args.repeat)]
        return min(runs, key=lambda r: r["seconds"])

    ref = best("reference")
    rows = [("reference: serial, io.write_image (SimpleITK PNG)", ref)]
    for workers, level in ((1, 1), (2, 1), (2, 6)):
        rows.append((f"export_dataset workers={workers}, PNG level {level} RLE", best("export", workers, level)))
    print(f"\nnnU-Net PNG export of {n} cases of 1024x1024 (2 lesions each), best of {args.repeat}")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| implementation | cases/s (wall) | x reference | CPU ms / case | cases/s on 2 idle cores (2000/CPU ms) "
          "| PNG MB | peak RSS main MB | peak RSS worker MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['cases_per_s']:.1f} | {r['cases_per_s'] / ref['cases_per_s']:.2f} | "
              f"{r['cpu_ms_per_case']:.0f} | {2000 / r['cpu_ms_per_case']:.0f} | "
              f"{r['mb_png']:.0f} | {r['rss_main_mb']:.0f} | {r['rss_worker_mb']:.0f} |")
    small = best("export", 2, 1, 50)
    big = rows[2][1]
    print(f"\nMemory vs cases (workers=2): 50 cases main {small['rss_main_mb']:.0f} MB / worker "
          f"{small['rss_worker_mb']:.0f} MB; {n} cases main {big['rss_main_mb']:.0f} MB / worker "
          f"{big['rss_worker_mb']:.0f} MB")


if __name__ == "__main__":
    main()
