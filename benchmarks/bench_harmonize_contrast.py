"""Contrast-preserving harmonization (issue 15): does the lesion keep its contrast, and at what
cost in realism? Both measured in one run, against the previous default in the same run.

Three arms on the same trained models, lesions and noise seeds:

* ``previous``: the workflow default before this change: the GAN pass with the radiograph
  add-back ``original`` (the GAN's coarse part plus the fine detail of the image without the
  lesion), no contrast step (``HarmonizeSettings(contrast_tolerance=None)``);
* ``keep-rescale`` (the new default, ``HarmonizeSettings()``) and ``keep-blend``:
  contrast-preserving harmonization, the same GAN pass, then a sample whose lesion kept a
  fraction of the naive contrast outside ``1 ± CONTRAST_TOLERANCE`` is moved onto the bound by
  re-scaling its own lesion (``rescale``) or by a blend with the no-GAN add-back (``blend``).

Measures (per sample): the fraction of the naive contrast kept (``harmonize.contrast_kept``:
mean change inside the lesion vs the naive paste, against the image without it); accepted by the
workflow's rule (>= ``MIN_CONTRAST_KEPT``, same sign) or refused with its reason; realism as the
project's yardstick from ``bench_harmonize_realism.py`` (patch SWD on 3 Laplacian levels between
the lesion + 12 px and the tissue ring 16..48 px away; lower is better) as a ratio to the naive
paste of the same case; the spread of one request's samples (mean |sample 0 - sample 1| inside the
lesion, grey levels).

Parts (``--part``):

``realism``: the realism benchmark's setup (NODE21 16-bit CXR c3883, 256 px region, 10 shared CT
  nodules projected and pasted naively, each GAN trained with the ``fast`` preset per
  ``--train-seeds``), through ``harmonize.harmonize`` with the workflow's injection scale, margin
  and add-back.
``scenes``: the label benchmark's setup (``bench_label_truth.py --harmonize``): ``--lesions`` LIDC
  library nodules (10-20 mm, NODE21 contrast, alpha, visibility gate) placed in the shared NODE21
  and NIH CXRs, a harmonizer trained around each (fast preset, ``--iters`` per scale; SinGAN and
  ConSinGAN in turn), both arms through the workflow job ``workflow.harmonize.harmonize_lesion``
  with 4 samples; one accepted sample per lesion is stored with ``accept_harmonized`` and the
  scene rendered (the render re-derives the label from what changed and raises if it disagrees).

Run: ``OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_harmonize_contrast.py --part realism``
     and ``--part scenes`` (two processes side by side).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import bench_harmonize as bh
import bench_harmonize_realism as bhr

from napari_synthseg.errors import SynthsegError
from napari_synthseg.harmonize import MIN_CONTRAST_KEPT, contrast_kept, harmonize, preset, train_harmonizer
from napari_synthseg.harmonize.apply import DEFAULT_CONTRAST_METHOD, default_add_back
from napari_synthseg.io import read_image
from napari_synthseg.workflow.harmonize import (
    HarmonizeSettings,
    accept_harmonized,
    default_injection_scale,
    harmonize_lesion,
    save_model_beside_scene,
)

# arm -> (contrast_tolerance, contrast_method); DEFAULT_ARM is what the workflow's defaults do
ARMS = {"previous": (None, "rescale"), "keep-blend": (HarmonizeSettings().contrast_tolerance, "blend"),
        "keep-rescale": (HarmonizeSettings().contrast_tolerance, "rescale")}
DEFAULT_ARM = f"keep-{DEFAULT_CONTRAST_METHOD}"
NITER = int(os.environ.get("BENCH_NITER", "0"))  # smoke runs only


def realism_at(image: np.ndarray, mask: np.ndarray, box: tuple[slice, slice], std: float) -> float:
    """``bench_harmonize.realism`` on any box (that one is fixed to its benchmark's region)."""
    reg = image[box].astype(np.float64) / std
    m = mask[box]
    dist = ndimage.distance_transform_edt(~m)
    changed = dist < bh.MARGIN
    ring = (dist >= bh.MARGIN + 4) & (dist < bh.MARGIN + 36)
    total = 0.0
    for lvl, lap in enumerate(bh.laplacian_levels(reg)):
        f = 2**lvl
        total += bh.swd(bh.patches(lap, changed[::f, ::f]), bh.patches(lap, ring[::f, ::f]))
    return total / 3.0


def accepted(kept: float) -> bool:
    return bool(np.isfinite(kept) and kept >= MIN_CONTRAST_KEPT)


def part_realism(seeds, samples, archs) -> list[dict]:
    cxr = read_image(bh.CXR)
    clean = cxr.array
    r0, c0, h, w = bh.ROI
    box = (slice(r0, r0 + h), slice(c0, c0 + w))
    std = float(clean[box].std())
    cases = bhr.cases(clean, float(cxr.spacing[0]))
    settings = HarmonizeSettings()
    rows = []
    for seed in seeds:
        for arch in archs:
            t0 = time.perf_counter()
            changes = {"niter": NITER} if NITER else {}
            model = train_harmonizer(clean, config=preset(arch, "fast", **changes), roi=bh.ROI, seed=seed)
            print(f"trained {arch} seed {seed} in {time.perf_counter() - t0:.0f} s", flush=True)
            scale = default_injection_scale(model)
            add_back = default_add_back(model, "CXR")
            for case, (name, naive, mask, _) in enumerate(cases):
                naive_cast = naive.astype(clean.dtype) if np.issubdtype(clean.dtype, np.integer) else naive
                base = realism_at(naive_cast, mask, box, std)
                contrast = float(np.mean(naive_cast[mask].astype(np.float64) - clean[mask]))
                for arm, (tol, method) in ARMS.items():
                    imgs = harmonize(model, naive_cast, mask, scale, samples, seed=100 * seed + case,
                                     blend_margin_px=settings.margin_px, reference_image=clean, add_back=add_back,
                                     original_image=clean, contrast_tolerance=tol, contrast_method=method)
                    kept = [contrast_kept(clean, naive_cast, img, mask) for img in imgs]
                    real = [realism_at(img, mask, box, std) / base for img in imgs]
                    spread = float(np.abs(imgs[0].astype(np.float64) - imgs[1])[mask].mean()) if samples > 1 else 0.0
                    rows.append(dict(part="realism", arch=arch, seed=seed, case=name, arm=arm, kept=kept,
                                     realism=float(np.mean(real)), spread=spread, rel_spread=spread / abs(contrast),
                                     reasons=[]))
                    print(f"  {arch} seed {seed} {name} {arm}: kept " + ", ".join(f"{k:.2f}" for k in kept)
                          + f"; realism {rows[-1]['realism']:.2f}; spread {spread:.1f}", flush=True)
    return rows


def part_scenes(n, iters, seed) -> list[dict]:
    import bench_label_truth as blt

    from napari_synthseg.constraints import organ_constraint
    from napari_synthseg.harmonize import harmonize_lesion as harmonize_and_check
    from napari_synthseg.lesions import LesionLibrary
    from napari_synthseg.lesions.place import place_lesion
    from napari_synthseg.render import SceneRenderer, render_without
    from napari_synthseg.render.compose import render_scene
    from napari_synthseg.scene import Scene

    rng = np.random.default_rng(seed)
    rows = []
    label_checks = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        library = LesionLibrary(folder / "lib")
        library.import_index(blt.DATA / "ct/lidc_nodules")
        print(f"library: {len(library)} nodules ({time.perf_counter() - t0:.0f} s)", flush=True)
        cxrs = [("node21/c3883.mha", None), ("nih_nodule/00004132_006.png", (0.34, 0.34))]
        for k in range(n):
            name, spacing = cxrs[k % len(cxrs)]
            image = read_image(blt.DATA / "cxr" / name, spacing=spacing)
            allowed = organ_constraint(image.array, image.scale, image.modality)
            cands = np.argwhere(allowed)
            scene = Scene.create(image, folder / f"h{k}", overwrite=True)
            record = None
            for _ in range(40):
                at = tuple(float(v) for v in cands[int(rng.integers(len(cands)))][::-1])
                size = float(rng.uniform(10, 20))
                try:
                    record = place_lesion(scene, library.get(library.pick(size, rng)), at_xyz=at, size_mm=size,
                                          contrast="node21", blend="alpha", min_cnr=blt.MIN_CNR)
                    break
                except SynthsegError:
                    continue
            if record is None:
                continue
            renderer = SceneRenderer(scene, follow=False)
            naive, mask = np.array(renderer.image), renderer.lesion_mask(record.id)
            renderer.close()
            arch = ("singan", "consingan")[k % 2]
            try:
                model = train_harmonizer(np.asarray(image.array), lesion_mask=mask, seed=k,
                                         config=preset(arch, "fast", niter=iters, region_size=192))
            except SynthsegError as exc:
                print(f"  lesion {k}: skipped ({exc})", flush=True)
                continue
            save_model_beside_scene(model, scene)
            rr, cc = np.nonzero(mask)
            pad = bh.MARGIN + 40
            box = (slice(max(0, rr.min() - pad), rr.max() + pad + 1), slice(max(0, cc.min() - pad), cc.max() + pad + 1))
            std = float(np.asarray(image.array, np.float64)[box].std())
            base = realism_at(naive, mask, box, std)
            # the workflow job with its defaults is the "keep" arm; the other arms get the very
            # inputs it uses (naive render, the scene without the lesion, its add-back and scale)
            settings = HarmonizeSettings(seed=k)
            result = harmonize_lesion(scene, record.id, model, settings)
            original = render_without(scene, record.id)
            contrast = float(np.mean(naive[mask].astype(np.float64) - original[mask]))
            for arm, (tol, method) in ARMS.items():
                checks = harmonize_and_check(
                    model, naive, mask, result.injection_scale, original, settings.samples, settings.seed,
                    blend_margin_px=settings.margin_px, reference_image=np.asarray(image.array),
                    add_back=result.add_back, contrast_tolerance=tol, contrast_method=method)
                if arm == DEFAULT_ARM:
                    assert all(np.array_equal(c.image, s) for c, s in zip(checks, result.samples))
                kept = [c.contrast_kept for c in checks]
                assert all(c.accepted == accepted(c.contrast_kept) for c in checks)
                reasons = [c.reason.split(" (")[0] for c in checks if not c.accepted]
                assert all(reasons), "a refused sample without its reason"
                real = [realism_at(c.image, mask, box, std) / base for c in checks]
                spread = float(np.abs(checks[0].image.astype(np.float64) - checks[1].image)[mask].mean())
                rows.append(dict(part="scenes", arch=arch, seed=k, case=f"{name}#{k}", arm=arm, kept=kept,
                                 realism=float(np.mean(real)), spread=spread, rel_spread=spread / abs(contrast),
                                 reasons=reasons))
                print(f"  lesion {k} {arch} {name} {arm}: kept " + ", ".join(f"{v:.2f}" for v in kept)
                      + f"; realism {rows[-1]['realism']:.2f}; spread {spread:.1f}"
                      + (f"; refused: {reasons}" if reasons else ""), flush=True)
            good = [i for i, c in enumerate(result.checks) if c.accepted]
            if good:
                accept_harmonized(scene, result, good[0])
                render_scene(scene)  # raises if the re-derived label disagrees with the image
                label_checks += 1
    print(f"label checks on stored (accepted) samples passed: {label_checks}")
    return rows


def bootstrap_ci(values: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [float(np.mean(rng.choice(values, len(values)))) for _ in range(n)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def table(rows: list[dict]) -> None:
    by = defaultdict(list)
    for row in rows:
        by[(row["part"], row["arch"], row["arm"])].append(row)
        by[(row["part"], "all", row["arm"])].append(row)
    order = list(ARMS)
    print()
    print(f"| part | engine | arm | samples | kept >= {MIN_CONTRAST_KEPT:g}, same sign (accepted) | kept in "
          "[0.75, 1.25] | median kept (min-max) | realism, ratio to naive (mean ± sd over cases) | "
          "spread of one request: grey levels (share of the lesion's contrast) |")
    print("|---|---|---|---:|---:|---:|---|---|---:|")
    for (part, arch, arm), group in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1] == "all", kv[0][1],
                                                                         order.index(kv[0][2]))):
        kept = np.array([k for row in group for k in row["kept"]])
        ok = np.array([accepted(k) for k in kept])
        band = np.isfinite(kept) & (kept >= 0.75 - 1e-3) & (kept <= 1.25 + 1e-3)
        real = np.array([row["realism"] for row in group])
        spread = np.mean([row["spread"] for row in group])
        rel = np.mean([row["rel_spread"] for row in group])
        print(f"| {part} | {arch} | {arm} | {len(kept)} | {100 * ok.mean():.0f} % | {100 * band.mean():.0f} % | "
              f"{np.nanmedian(kept):.2f} ({np.nanmin(kept):.2f}-{np.nanmax(kept):.2f}) | "
              f"{real.mean():.3f} ± {real.std(ddof=1) if len(real) > 1 else 0:.3f} | {spread:.1f} ({100 * rel:.1f} %) |")
    print()
    print("Paired realism, arm / previous per case (same model, lesion, noise; < 1 = more realistic):")
    print("| part | engine | arm | cases | ratio mean | 95 % CI (bootstrap) | cases worse by > 2 % |")
    print("|---|---|---|---:|---:|---|---:|")
    pairs = defaultdict(list)
    for row in rows:
        pairs[(row["part"], row["arch"], row["seed"], row["case"])].append(row)
    ratios = defaultdict(list)
    for (part, arch, _, _), two in pairs.items():
        arms = {r["arm"]: r["realism"] for r in two}
        for arm in order[1:]:
            if arm in arms and "previous" in arms:
                ratios[(part, arch, arm)].append(arms[arm] / arms["previous"])
                ratios[(part, "all", arm)].append(arms[arm] / arms["previous"])
    for (part, arch, arm), values in sorted(ratios.items(), key=lambda kv: (kv[0][0], kv[0][1] == "all", kv[0][1],
                                                                             order.index(kv[0][2]))):
        v = np.array(values)
        lo, hi = bootstrap_ci(v)
        print(f"| {part} | {arch} | {arm} | {len(v)} | {v.mean():.3f} | {lo:.3f}-{hi:.3f} | {int((v > 1.02).sum())} |")
    reasons = defaultdict(int)
    for row in rows:
        for reason in row["reasons"]:
            reasons[(row["arm"], reason)] += 1
    print(f"refused, by arm and reason: {dict(reasons) or 'none'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["realism", "scenes", "both"], default="both")
    ap.add_argument("--train-seeds", default="0,1", help="realism part: GAN training seeds")
    ap.add_argument("--archs", default="singan,consingan")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--lesions", type=int, default=16, help="scenes part: lesions (one harmonizer each)")
    ap.add_argument("--iters", type=int, default=40, help="scenes part: training iterations per scale")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f"default (workflow) arm: {DEFAULT_ARM}", flush=True)
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    if args.part in ("realism", "both"):
        rows += part_realism([int(s) for s in args.train_seeds.split(",")], args.samples, args.archs.split(","))
    if args.part in ("scenes", "both"):
        rows += part_scenes(args.lesions, args.iters, args.seed)
    table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
