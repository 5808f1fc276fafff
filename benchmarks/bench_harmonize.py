"""Harmonization benchmark: speed of the `paper` vs `fast` presets, and realism.

Setup (NODE21-like): a 256x256 px region of the shared NODE21 control CXR (c3883, 16-bit,
0.127 mm/px, right lower lung field). Shared CT nodule patches (LIDC via NODE21, 1 mm voxels)
are projected as the line integral of (HU+1000)/1000 over the nodule mask along numpy axis 1,
resampled to the CXR pixel size and pasted naively at 4 places of the region: inside the
mask the CXR is replaced by its local mean (Gaussian, sigma 8 px) plus the scaled projection
(peak = 1 standard deviation of the region), i.e. ``M*tumour + (1-M)*clean``.

Speed: seconds per training iteration per scale, and the projected total (iterations x s/it
summed over scales). `fast` is also trained end to end. `paper` is timed on a few scales per
channel width (2 iterations, the second counted) and projected to the other scales of the same
width by padded area (conv cost is linear in pixels at fixed width), because a single
iteration at SinGAN's 250 px / 128-channel scales takes minutes on this CPU.

Realism: sliced Wasserstein distance (SWD, 64 directions) between 5x5 patches of 3 Laplacian
pyramid levels, taken from the changed area (lesion + blend margin) and from the real tissue
around it (a ring 4..36 px beyond the margin), intensities divided by the region's standard
deviation. Lower is better; "clean" (no lesion at all) is the floor. "contrast kept" is the
mean added intensity on the lesion relative to the naive paste (1 = lesion kept, 0 = erased).

Run: .venv/bin/python benchmarks/bench_harmonize.py [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from napari_synthseg.harmonize import harmonize, preset, pyramid_shapes, train_harmonizer
from napari_synthseg.harmonize.networks import singan_nfc
from napari_synthseg.io import read_image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CXR = DATA / "cxr" / "node21" / "c3883.mha"
ROI = (480, 150, 256, 256)  # row, col, height, width
NODULES = ["nodule_08", "nodule_13", "nodule_15", "nodule_17"]
CENTRES = [(70, 100), (70, 190), (186, 100), (186, 190)]  # in the region
MARGIN = 12


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def projected_nodule(name: str, pixel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    ct = read_image(DATA / "ct" / "nodule_patches" / f"{name}_ct.mha")
    seg = read_image(DATA / "ct" / "nodule_patches" / f"{name}_seg.mha").array > 0
    hu = ct.array.astype(np.float64)
    density = np.clip((hu + 1000.0) / 1000.0, 0, None) * seg
    voxel_mm = float(ct.spacing[1])
    proj = density.sum(axis=1) * voxel_mm  # mm of water-equivalent path
    zoom = float(ct.spacing[0]) / pixel_mm
    proj = ndimage.zoom(proj, zoom, order=1)
    mask = proj > 0.05 * proj.max()
    mask = ndimage.binary_fill_holes(ndimage.binary_opening(mask, iterations=1))
    rows, cols = np.nonzero(mask)
    sl = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    return proj[sl] * mask[sl], mask[sl]


def scenarios(clean: np.ndarray, pixel_mm: float):
    """(naive image, lesion mask) for each nodule/place; everything in full-image coordinates."""
    r0, c0, h, w = ROI
    region = clean[r0 : r0 + h, c0 : c0 + w].astype(np.float64)
    smooth = ndimage.gaussian_filter(clean.astype(np.float64), 8.0)
    out = []
    for name, (cy, cx) in zip(NODULES, CENTRES):
        proj, pmask = projected_nodule(name, pixel_mm)
        gain = region.std() / proj.max()
        ph, pw = pmask.shape
        top, left = r0 + cy - ph // 2, c0 + cx - pw // 2
        mask = np.zeros(clean.shape, bool)
        mask[top : top + ph, left : left + pw] = pmask
        tumour = np.zeros(clean.shape)
        tumour[top : top + ph, left : left + pw] = proj
        source = smooth + gain * tumour  # the lesion as a patch, defined everywhere
        naive = clean.astype(np.float64).copy()
        naive[mask] = source[mask]
        info = np.iinfo(clean.dtype)
        out.append((name, np.clip(np.rint(naive), info.min, info.max).astype(clean.dtype), mask, source))
    return out


# --------------------------------------------------------------------------------------------
# realism
# --------------------------------------------------------------------------------------------


def laplacian_levels(x: np.ndarray, levels: int = 3) -> list[np.ndarray]:
    out, cur = [], x
    for _ in range(levels):
        low = ndimage.gaussian_filter(cur, 1.0)
        out.append(cur - low)
        cur = low[::2, ::2]
    return out


def patches(level: np.ndarray, mask: np.ndarray, k: int = 5) -> np.ndarray:
    r = k // 2
    rows, cols = np.nonzero(mask)
    keep = (rows >= r) & (cols >= r) & (rows < level.shape[0] - r) & (cols < level.shape[1] - r)
    rows, cols = rows[keep], cols[keep]
    offs = np.arange(-r, r + 1)
    return level[rows[:, None, None] + offs[None, :, None], cols[:, None, None] + offs[None, None, :]].reshape(len(rows), -1)


def swd(a: np.ndarray, b: np.ndarray, n_dir: int = 64, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(a.shape[1], n_dir))
    d /= np.linalg.norm(d, axis=0, keepdims=True)
    q = np.linspace(0, 1, 256)
    pa = np.quantile(a @ d, q, axis=0)
    pb = np.quantile(b @ d, q, axis=0)
    return float(np.mean(np.abs(pa - pb)))


def realism(image: np.ndarray, mask: np.ndarray, std: float, within: float = MARGIN) -> float:
    """Patch SWD between the pixels closer than ``within`` px to the lesion and the ring."""
    r0, c0, h, w = ROI
    reg = image[r0 : r0 + h, c0 : c0 + w].astype(np.float64) / std
    m = mask[r0 : r0 + h, c0 : c0 + w]
    dist = ndimage.distance_transform_edt(~m)
    changed = dist < within
    ring = (dist >= MARGIN + 4) & (dist < MARGIN + 36)
    total = 0.0
    for lvl, lap in enumerate(laplacian_levels(reg)):
        f = 2**lvl
        total += swd(patches(lap, changed[::f, ::f]), patches(lap, ring[::f, ::f]))
    return total / 3.0


def contrast_kept(out: np.ndarray, naive: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> float:
    added = float(np.mean(out[mask].astype(np.float64) - clean[mask]))
    ref = float(np.mean(naive[mask].astype(np.float64) - clean[mask]))
    return added / ref if ref else float("nan")


# --------------------------------------------------------------------------------------------
# speed
# --------------------------------------------------------------------------------------------


def paper_timing(arch: str, region_image: np.ndarray) -> tuple[list[float], list[str], float]:
    """Seconds/iteration per scale for `paper` (measured or projected) and the projected total."""
    cfg = preset(arch, "paper")
    shapes = pyramid_shapes(cfg, (ROI[2], ROI[3]))
    n = len(shapes)
    if arch == "singan":
        width = [singan_nfc(cfg, k) for k in range(n)]
        pad = (cfg.ker_size - 1) * cfg.num_layer // 2
    else:
        width = [cfg.nfc] * n
        pad = cfg.num_layer
    # Measure every scale of the narrow widths and the two smallest scales of the widest
    # (128-channel SinGAN scales of 180..250 px take minutes per iteration here).
    measure = set()
    for wdt in sorted(set(width)):
        ks = [k for k in range(n) if width[k] == wdt]
        measure.update(ks[:2] if (wdt >= 128 and len(ks) > 2) else ks)
    iterations = [2 if k in measure else 0 for k in range(n)]
    model = train_harmonizer(region_image, config=cfg, iterations=iterations, seed=0)
    spi = model.provenance["seconds_per_iteration"]
    area = [(s[0] + 2 * pad) * (s[1] + 2 * pad) for s in shapes]
    per_scale, how = [], []
    for k in range(n):
        if k in measure:
            per_scale.append(spi[k])
            how.append("measured")
        else:
            ref = min((m for m in measure if width[m] == width[k]), key=lambda m: abs(area[m] - area[k]))
            per_scale.append(spi[ref] * area[k] / area[ref])
            how.append(f"from scale {ref}")
    return per_scale, how, cfg.niter * float(np.sum(per_scale))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    ap.add_argument("--quick", action="store_true", help="fast presets at 1/4 of their iterations")
    ap.add_argument("--skip-paper", action="store_true")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--singan-scales", default="", help="injection scales for SinGAN, comma-separated")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not CXR.exists():
        print(f"shared data missing: {CXR}", file=sys.stderr)
        return 1
    cxr = read_image(CXR)
    clean = cxr.array
    pixel_mm = float(cxr.spacing[0])
    r0, c0, h, w = ROI
    std = float(clean[r0 : r0 + h, c0 : c0 + w].std())
    print(f"# CXR {CXR.name} {clean.shape} {clean.dtype}, region rows {r0}..{r0 + h - 1} cols {c0}..{c0 + w - 1}, "
          f"torch threads {args.threads}, {torch.__version__}")

    # ---------------- speed ----------------
    speed_rows = []
    models = {}
    for arch in ("singan", "consingan"):
        cfg = preset(arch, "fast")
        if args.quick:
            cfg = dataclasses.replace(cfg, niter=max(1, cfg.niter // 4))
        t0 = time.perf_counter()
        model = train_harmonizer(clean, config=cfg, roi=ROI, seed=0)
        wall = time.perf_counter() - t0
        spi = model.provenance["seconds_per_iteration"]
        models[arch] = model
        fast_proj = preset(arch, "fast").niter * float(np.sum(spi))
        row = {"arch": arch, "fast_scales": len(spi), "fast_spi": float(np.mean(spi)),
               "fast_projected": fast_proj, "fast_wall": wall, "fast_niter": cfg.niter}
        if not args.skip_paper:
            per_scale, how, paper_proj = paper_timing(arch, clean[r0 : r0 + h, c0 : c0 + w])
            row.update(paper_scales=len(per_scale), paper_spi=float(np.mean(per_scale)),
                       paper_projected=paper_proj, paper_detail=list(zip(per_scale, how)))
        speed_rows.append(row)
        print(row, flush=True)

    print("\n## Speed (256x256 px region)\n")
    print("| arch | preset | scales | iterations/scale | mean s/iteration | projected total | measured end to end | paper / fast |")
    print("|---|---|---|---|---|---|---|---|")
    for row in speed_rows:
        if "paper_projected" in row:
            print(f"| {row['arch']} | paper | {row['paper_scales']} | {preset(row['arch'], 'paper').niter} | "
                  f"{row['paper_spi']:.3f} | {row['paper_projected'] / 60:.1f} min | not run | |")
        ratio = row.get("paper_projected", float("nan")) / row["fast_projected"]
        print(f"| {row['arch']} | fast | {row['fast_scales']} | {preset(row['arch'], 'fast').niter} | "
              f"{row['fast_spi']:.3f} | {row['fast_projected']:.0f} s | {row['fast_wall']:.0f} s "
              f"({row['fast_niter']} it/scale) | {ratio:.0f}x |")

    # ---------------- realism ----------------
    cases = scenarios(clean, pixel_mm)
    n_sg = models["singan"].n_scales
    sg_scales = [int(s) for s in args.singan_scales.split(",") if s] or [n_sg - 3, n_sg - 2]
    results: dict[str, list[tuple[float, float]]] = {}

    def add(name, out, naive, mask):
        results.setdefault(name, []).append(
            (realism(out, mask, std), realism(out, mask, std, 3), contrast_kept(out, naive, clean, mask))
        )

    poisson = None
    try:
        from napari_synthseg.render.poisson import poisson_blend as poisson
    except ImportError:
        pass
    timing: dict[str, list[float]] = {}
    for _name, naive, mask, source in cases:
        add("clean (no lesion, floor)", clean, naive, mask)
        add("naive paste", naive, naive, mask)
        if poisson is not None:
            t0 = time.perf_counter()
            out = poisson(clean, source, mask)
            timing.setdefault("Poisson", []).append(time.perf_counter() - t0)
            add("Poisson (render.poisson)", out, naive, mask)
        for s in sg_scales:
            t0 = time.perf_counter()
            outs = harmonize(models["singan"], naive, mask, s, args.samples, seed=1, blend_margin_px=MARGIN)
            timing.setdefault(f"SinGAN s{s}", []).append((time.perf_counter() - t0) / args.samples)
            for out in outs:
                add(f"SinGAN fast, injection scale {s}/{n_sg - 1}", out, naive, mask)
        t0 = time.perf_counter()
        outs = harmonize(models["consingan"], naive, mask, 0, args.samples, seed=1, blend_margin_px=MARGIN)
        timing.setdefault("ConSinGAN", []).append((time.perf_counter() - t0) / args.samples)
        for out in outs:
            add("ConSinGAN fast", out, naive, mask)

    base = np.mean([v[0] for v in results["naive paste"]])
    base3 = np.mean([v[1] for v in results["naive paste"]])
    print(f"\n## Realism ({len(cases)} nodules x {args.samples} samples, margin {MARGIN} px)\n")
    print("| method | SWD, blend area (lesion + margin) | vs naive | SWD, lesion + 3 px | vs naive | contrast kept |")
    print("|---|---|---|---|---|---|")
    for name, vals in results.items():
        r = np.array([v[0] for v in vals])
        r3 = np.array([v[1] for v in vals])
        c = np.array([v[2] for v in vals])
        print(f"| {name} | {r.mean():.4f} ± {r.std():.4f} | {r.mean() / base:.2f} | "
              f"{r3.mean():.4f} ± {r3.std():.4f} | {r3.mean() / base3:.2f} | {np.nanmean(c):.2f} |")
    print("\nseconds per harmonized sample: " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in timing.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
