"""Healthy-fill speed: napari_synthseg fillers (cropped to the mask) vs. the same library call
on the whole image (the reference), in one process.

Run: .venv/bin/python benchmarks/bench_fill.py [--repeats N]
Prints a table: image, lesion, method, ours (ms), reference (ms), speed-up (reference/ours),
and the max |difference| between the two results inside the mask (native units).
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
from skimage.restoration import inpaint_biharmonic

from napari_synthseg.fill import get_filler


def _best(fn, repeats):
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _image(shape, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    # 12-bit-like radiograph: smooth anatomy-scale gradient plus texture.
    img = 1500 + 800 * np.sin(xx / shape[1] * 3) * np.cos(yy / shape[0] * 2)
    img += cv2.GaussianBlur(rng.normal(0, 60, shape).astype(np.float32), (0, 0), 3)
    return img.astype(np.float32)


def _disc(shape, centre, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r * r


def _ref_telea(img, mask):
    # Same scale normalisation as ours (see fill/classical.py), on the whole image.
    known = img[~mask]
    lo, hi = float(known.min()), float(known.max())
    s = 65535.0 / (hi - lo)
    src = ((img - lo) * s).astype(np.float32)
    return cv2.inpaint(src, mask.astype(np.uint8), 5.0, cv2.INPAINT_TELEA) / s + lo


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    rows = []
    for size in (512, 2048):
        img = _image((size, size))
        for r in (10, 40):
            mask = _disc(img.shape, (size // 2, size // 3), r)
            for name, ref in (("biharmonic", lambda: inpaint_biharmonic(img.astype(np.float64), mask)),
                              ("telea", lambda: _ref_telea(img, mask))):
                filler = get_filler(name)
                t_ours, ours = _best(lambda: filler.fill(img, mask), args.repeats)
                t_ref, refout = _best(ref, args.repeats)
                diff = float(np.abs(ours[mask] - refout[mask]).max())
                rows.append((f"{size}x{size}", f"r={r}px", name, t_ours * 1e3, t_ref * 1e3,
                             t_ref / t_ours, diff))
    print(f"{'image':>10} {'lesion':>7} {'method':>10} {'ours ms':>9} {'ref ms':>9} "
          f"{'speed-up':>8} {'max|diff|':>9}")
    for row in rows:
        print(f"{row[0]:>10} {row[1]:>7} {row[2]:>10} {row[3]:9.1f} {row[4]:9.1f} "
              f"{row[5]:8.1f} {row[6]:9.3f}")


if __name__ == "__main__":
    main()
