"""Robust realism of harmonization: several training seeds, nodules and samples in one run.

Same setup and metric as ``bench_harmonize.py`` (patch SWD on 3 Laplacian levels between the
changed area, lesion + 12 px margin, and the real tissue 16..48 px from the lesion; lower is
better). Every method is scored as a *ratio to the naive paste of the same case*, so the
spread between nodules does not hide the spread between methods. One "case" is one nodule at
one place; each GAN is trained ``--train-seeds`` times (fast preset) and sampled ``--samples``
times per case.

Blend variants are computed here from the raw GAN output (no retraining):
- ``replace m``: NODE21-style weighted replacement, weight 1 on the lesion and a cosine ramp to
  0 over ``m`` px (what :func:`harmonize` does);
- ``detail``: keep the naive image and swap only its fine detail (image minus Gaussian, sigma
  2 px) for the GAN's inside the same ramp;
- ``coarse``: keep the naive image's fine detail and take only the GAN's coarse part
  (sigma 2 px);
- ``original``: NODE21's add-back of the original image for radiographs: the GAN's coarse part
  plus the fine detail of the image without the lesion (the anatomy behind it), what
  ``harmonize(..., add_back="original")`` does and the default on CXR scenes.

Also scored once per case: Poisson blending and the ablation "original add-back without a GAN"
(the naive paste's coarse part plus the original's fine detail), which tells how much of the
``original`` rows is the GAN's doing.

Run: .venv/bin/python benchmarks/bench_harmonize_realism.py --train-seeds 0 --json out.json
     (one process per seed in parallel; then --combine a.json b.json prints the table)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_harmonize as bh

from napari_synthseg.harmonize import preset, train_harmonizer
from napari_synthseg.harmonize.apply import _detail, _generate, _sample_seed, blend_weights
from napari_synthseg.harmonize.networks import ConSinGAN, resize
from napari_synthseg.io import read_image
from napari_synthseg.render.poisson import poisson_blend

NITER = int(os.environ.get("BENCH_NITER", "0"))  # smoke tests only
NODULES = [f"nodule_{i:02d}" for i in (8, 13, 15, 17, *range(8), 9, 10, 11, 12, 14, 16, 18, 19)]
MAX_CASES = 12


def raw_samples(model, naive_img, scale, n, seed):
    r, c, h, w = model.roi
    x = torch.from_numpy(model.normalize(naive_img[r : r + h, c : c + w]))[None, None]
    x = resize(x, model.module.shapes[-1])
    outs = []
    for k in range(n):
        g = torch.Generator().manual_seed(_sample_seed(seed, k))
        with torch.no_grad():
            o = resize(_generate(model, x, scale, g).float(), (h, w))
        outs.append(model.denormalize(o[0, 0].numpy()).astype(np.float64))
    return outs


def blends(naive_img, mask, raw, clean):
    r, c, h, w = bh.ROI
    base = naive_img[r : r + h, c : c + w].astype(np.float64)
    behind = clean[r : r + h, c : c + w].astype(np.float64)
    m = mask[r : r + h, c : c + w]
    out = {}
    for name, margin, how in (("replace 12", 12, "replace"), ("replace 6", 6, "replace"),
                              ("detail 12", 12, "detail"), ("coarse 12", 12, "coarse"),
                              ("original 12", 12, "original"), ("original 6", 6, "original")):
        wgt = blend_weights(m, margin)
        if how == "replace":
            target = raw
        elif how == "detail":
            target = base - _detail(base) + _detail(raw)
        elif how == "coarse":
            target = raw - _detail(raw) + _detail(base)
        else:  # NODE21: add back the original image (the anatomy behind the lesion)
            target = raw - _detail(raw) + _detail(behind)
        img = naive_img.astype(np.float64).copy()
        img[r : r + h, c : c + w] = base + wgt * (target - base)
        out[name] = img
    return out


def original_without_gan(naive_img, mask, clean, margin):
    """Ablation: the naive paste's coarse part plus the original's fine detail, no GAN."""
    r, c, h, w = bh.ROI
    base = naive_img[r : r + h, c : c + w].astype(np.float64)
    behind = clean[r : r + h, c : c + w].astype(np.float64)
    wgt = blend_weights(mask[r : r + h, c : c + w], margin)
    img = naive_img.astype(np.float64).copy()
    img[r : r + h, c : c + w] = base + wgt * (_detail(behind) - _detail(base))
    return img


def cases(clean, pixel_mm):
    r0, c0, h, w = bh.ROI
    region = clean[r0 : r0 + h, c0 : c0 + w].astype(np.float64)
    smooth = ndimage.gaussian_filter(clean.astype(np.float64), 8.0)
    out = []
    for name in NODULES:
        cy, cx = bh.CENTRES[len(out) % len(bh.CENTRES)]
        proj, pmask = bh.projected_nodule(name, pixel_mm)
        if max(pmask.shape) > 80:
            continue
        gain = region.std() / proj.max()
        ph, pw = pmask.shape
        top, left = r0 + cy - ph // 2, c0 + cx - pw // 2
        mask = np.zeros(clean.shape, bool)
        mask[top : top + ph, left : left + pw] = pmask
        tumour = np.zeros(clean.shape)
        tumour[top : top + ph, left : left + pw] = proj
        source = smooth + gain * tumour
        naive = clean.astype(np.float64).copy()
        naive[mask] = source[mask]
        out.append((f"{name}@{cy},{cx}", naive, mask, source))
        if len(out) == MAX_CASES:
            break
    return out


def run(seeds, samples, out_json, archs=("singan", "consingan"), changes=None, gains=(1.0,)):
    cxr = read_image(bh.CXR)
    clean = cxr.array
    r0, c0, h, w = bh.ROI
    std = float(clean[r0 : r0 + h, c0 : c0 + w].std())
    cs = cases(clean, float(cxr.spacing[0]))
    rows = []  # (method, seed, case, ratio)
    for name, naive, mask, source in cs:
        base = bh.realism(naive, mask, std)
        rows.append(("clean (floor)", -1, name, bh.realism(clean, mask, std) / base))
        poisson = poisson_blend(clean.astype(np.float64), source, mask)
        rows.append(("Poisson (render.poisson)", -1, name, bh.realism(poisson, mask, std) / base))
        for margin in (12, 6):
            abl = original_without_gan(naive, mask, clean, margin)
            rows.append((f"ablation: original add-back {margin} without a GAN", -1, name,
                         bh.realism(abl, mask, std) / base))
    for seed in seeds:
        for arch in archs:
            t0 = time.perf_counter()
            ch = dict(changes or {})
            if NITER:
                ch["niter"] = NITER
            model = train_harmonizer(clean, config=preset(arch, "fast", **ch), roi=bh.ROI, seed=seed)
            amps0 = list(model.noise_amp)
            print(f"trained {arch} seed {seed} in {time.perf_counter() - t0:.0f} s", flush=True)
            n = model.n_scales
            scales = [0] if isinstance(model.module, ConSinGAN) else [n - 3, n - 2, n - 1]
            for name, naive, mask, _ in cs:
                base = bh.realism(naive, mask, std)
                for gain, s in [(g, s) for g in gains for s in scales]:
                    # noise gain: scale every stage's noise amplitude except the coarsest input
                    model.noise_amp = [amps0[0]] + [a * gain for a in amps0[1:]]
                    vals: dict[str, list[float]] = {}
                    for raw in raw_samples(model, naive, s, samples, 1 + seed):
                        for bname, img in blends(naive, mask, raw, clean).items():
                            vals.setdefault(bname, []).append(bh.realism(img, mask, std))
                    label = "SinGAN fast" if arch == "singan" else "ConSinGAN fast"
                    sc = f", scale {s}/{n - 1}" if arch == "singan" else ""
                    if changes:
                        sc += " [" + ",".join(f"{k}={v}" for k, v in changes.items()) + "]"
                    if gain != 1.0:
                        sc += f", noise x{gain:g}"
                    for bname, v in vals.items():
                        rows.append((f"{label}{sc}, {bname}", seed, name, float(np.mean(v)) / base))
        Path(out_json).write_text(json.dumps(rows))
    return rows


def table(rows):
    by: dict[str, list] = {}
    for method, seed, _case, ratio in rows:
        by.setdefault(method, []).append((seed, ratio))
    print("| method | ratio to naive, mean ± sd over seed x case | per-seed means | n | cases better than naive |")
    print("|---|---|---|---|---|")
    for method, vals in by.items():
        r = np.array([v[1] for v in vals])
        seeds = sorted({v[0] for v in vals})
        per_seed = [np.mean([v[1] for v in vals if v[0] == s]) for s in seeds]
        print(f"| {method} | {r.mean():.2f} ± {r.std(ddof=1) if len(r) > 1 else 0:.2f} | "
              f"{', '.join(f'{p:.2f}' for p in per_seed)} | {len(r)} | {int((r < 1).sum())}/{len(r)} |")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-seeds", default="0")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="harmonize_realism.json")
    ap.add_argument("--combine", nargs="*")
    ap.add_argument("--archs", default="singan,consingan")
    ap.add_argument("--changes", default="", help="preset changes, e.g. niter=400,lr_scale=0.5")
    ap.add_argument("--noise-gains", default="1")
    args = ap.parse_args(argv)
    if args.combine:
        rows, seen = [], set()
        for f in args.combine:
            for row in json.loads(Path(f).read_text()):
                key = tuple(row[:3])
                if key not in seen:
                    seen.add(key)
                    rows.append(row)
        table(rows)
        return 0
    torch.set_num_threads(args.threads)
    changes = {}
    for kv in filter(None, args.changes.split(",")):
        k, v = kv.split("=")
        try:
            changes[k] = float(v) if "." in v else int(v)
        except ValueError:
            changes[k] = v
    rows = run([int(s) for s in args.train_seeds.split(",")], args.samples, args.json,
               args.archs.split(","), changes, [float(g) for g in args.noise_gains.split(",")])
    table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
