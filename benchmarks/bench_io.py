"""Opening the 64-slice CT series: time against a bare SimpleITK.ImageSeriesReader, and peak memory
on the way into a napari layer.

Targets (issue: foundation): time <= 1.2x the bare reader in the same run; peak memory <= 2.5x the
volume's size. Run: ``python benchmarks/bench_io.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
SERIES = REPO.parent / "shared" / "data" / "ct" / "lung_pet_ct_dx_A0001" / "dicom"


def bare_reader(folder: Path):
    """The reference: what a script with SimpleITK alone does to get a numpy volume."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def ours(folder: Path):
    from napari_synthseg.io import read_image

    return read_image(folder).array


def best_of(func, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func(SERIES)
        times.append(time.perf_counter() - start)
    return min(times)


MEMORY_PROBE = r"""
import json, resource, sys
def rss():  # current resident set size in bytes
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()
import napari.layers, numpy, SimpleITK
from napari_synthseg.io import read_image
from napari_synthseg._napari import image_layer_data
before = rss()
image = read_image(sys.argv[1])
data, kwargs, kind = image_layer_data(image)
layer = napari.layers.Image(data, **kwargs)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"before": before, "peak": peak, "nbytes": int(layer.data.nbytes)}))
"""


def peak_memory() -> dict:
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(SERIES)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if not SERIES.is_dir():
        sys.exit(f"shared data not found: {SERIES}")
    ours(SERIES), bare_reader(SERIES)  # warm the file cache and imports
    t_bare = t_ours = float("inf")
    for _ in range(args.repeats):  # interleave so load changes hit both alike
        t_bare = min(t_bare, best_of(bare_reader, 1))
        t_ours = min(t_ours, best_of(ours, 1))
    mem = peak_memory()
    ratio_mem = (mem["peak"] - mem["before"]) / mem["nbytes"]
    print(f"{'measure':44s} {'ours':>10s} {'reference':>10s} {'ratio':>7s} {'target':>8s}")
    print(f"{f'open 64x512x512 CT series (s, best of {args.repeats})':44s} {t_ours:10.3f} {t_bare:10.3f} {t_ours / t_bare:7.2f} {'<= 1.2':>8s}")
    print(f"{'peak memory into napari / volume size':44s} {(mem['peak'] - mem['before']) / 2**20:9.1f}M {mem['nbytes'] / 2**20:9.1f}M {ratio_mem:7.2f} {'<= 2.5':>8s}")


if __name__ == "__main__":
    main()
