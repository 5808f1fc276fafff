"""Lesion generator benchmark: speed, realism on held-out series, healthy fill, mask shapes.

Run: .venv/bin/python benchmarks/bench_generator.py [--model builtin] [--n 60] [--steps 16]
     [--evaluate OUT [--no-cnn]] [--no-speed | --speed-only] | --downstream OUT [--no-transplanted]

Everything here uses only the *test* side of the fixed series-level LIDC split
(``napari_synthseg.io.lesion_index.split_by_group``), which the generator never saw.

1. Speed: one 32^3 nodule generated in a CT context (DDIM-free rectified flow, ``--steps``
   steps, 1 thread) vs one procedural 10 mm nodule (the reference) in the same process.
2. Realism: for each held-out nodule (equivalent diameter <= 16 mm: 1 mm grid), the 32^3 cube
   around it is the *real* sample. The nodule is removed (biharmonic, the mask grown by 1 voxel)
   and three fakes are made at the same place and size: the generator (class and mask of the
   real nodule, mean HU drawn for the class), a procedural nodule (same class and diameter,
   alpha-blended, 1 mm feather) and a transplanted real nodule: the train-side *library*
   nodule of the nearest size (``transplanted``, the issue's "transplanted library nodules"),
   alpha-blended with its own surroundings. The row ``transplanted_heldout`` takes the donor
   from another held-out series instead (the first four passes' reference): its donors are
   the real set's own nodules, so its feature distribution is nearly the real one re-drawn and
   its FRD is not a fair reference (docs/benchmarks.md, fifth pass). A two-sample
   classifier (hand features of the central region, standardised logistic regression,
   5-fold cross-validation grouped by series) scores each fake against the real cubes: AUC 0.5
   = indistinguishable. Also a Frechet distance between the feature distributions.
3. Healthy fill: in each held-out cube a nodule-shaped region on lung away from the nodule is
   filled by the generator's ``empty`` class and by biharmonic; the same classifier scores each
   against the untouched cube.
4. Mask shapes: equivalent diameter and sphericity of masks from the shape model vs the real
   held-out masks they were requested for, and each sampled mask's best IoU with any real
   train-side mask of similar size (copies would score ~1).

5. Usefulness (``--downstream OUT``, a separate run): real-50 vs real-50 + generated vs
   real-50 + transplanted with ``synthseg evaluate downstream`` at issue 14's CPU budget, on the
   lesions ``benchmarks/bench_evaluation.py --phase prepare`` made (see :func:`downstream`).

Sections 2-3 score the generator twice from the same flow samples: ``generated`` = the default
sampler (with ``generator.sample.correct_sample``'s corrections, including histogram control when the
model file carries the table), ``generated_nohist`` = the same without histogram control (the
second pass's sampler), ``generated_raw`` = without any correction.

The classifier is this script's own (sklearn): ``synthseg evaluate realism`` was not in the
code base when this was measured (docs/benchmarks.md says so).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy import linalg
from scipy import ndimage as ndi
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from napari_synthseg.evaluate.lesion_sets import LesionSample
from napari_synthseg.fill import get_filler
from napari_synthseg.generator import get_generator, sphericity
from napari_synthseg.generator.classes import classify_nodule
from napari_synthseg.generator.data import mask_center, read_patch, resample_cube
from napari_synthseg.generator.network import generation_region
from napari_synthseg.generator.sample import correct_sample
from napari_synthseg.io.lesion_index import read_lesion_index, split_by_group
from napari_synthseg.lesions import procedural_nodule
from napari_synthseg.render.placement import feather_alpha

P = 32
LIBRARY = "../shared/data/ct/lidc_nodules"


def _best(fn, repeats=3):
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def features(cube: np.ndarray, radius: float) -> np.ndarray:
    """Hand features of the central ball (radius + 3 voxels) of a 32^3 HU cube."""
    c = (P - 1) / 2.0
    zz, yy, xx = np.mgrid[:P, :P, :P]
    dist = np.sqrt((zz - c) ** 2 + (yy - c) ** 2 + (xx - c) ** 2)
    ball = dist <= radius + 3
    shell = (dist > radius + 3) & (dist <= radius + 7)
    v = cube[ball]
    grad = np.sqrt(sum(g ** 2 for g in np.gradient(cube)))
    lap = ndi.laplace(cube)
    hi = ndi.gaussian_filter(cube, 1.0)
    fine = cube - hi
    return np.array([
        v.mean(), v.std(), *np.percentile(v, [5, 25, 50, 75, 95]),
        np.mean(v > -300), np.mean(v > -600),
        grad[ball].mean(), grad[ball].std(), np.abs(lap[ball]).mean(),
        fine[ball].std(), fine[shell].std() if shell.any() else 0.0,
        cube[shell].mean() if shell.any() else 0.0,
        ((v - v.mean()) ** 3).mean() / (v.std() ** 3 + 1e-6),
    ])


def two_sample_auc(real: np.ndarray, fake: np.ndarray, groups: np.ndarray) -> float:
    x = np.vstack([real, fake])
    y = np.r_[np.zeros(len(real)), np.ones(len(fake))]
    g = np.r_[groups, groups]
    scores = np.zeros(len(y))
    for train, test in GroupKFold(n_splits=min(5, len(set(groups)))).split(x, y, g):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        clf.fit(x[train], y[train])
        scores[test] = clf.predict_proba(x[test])[:, 1]
    return float(roc_auc_score(y, scores))


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu = np.r_[a, b].mean(0)
    sd = np.r_[a, b].std(0) + 1e-9
    a, b = (a - mu) / sd, (b - mu) / sd
    covmean = linalg.sqrtm(np.cov(a, rowvar=False) @ np.cov(b, rowvar=False)).real
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(np.cov(a, rowvar=False) + np.cov(b, rowvar=False) - 2 * covmean))


def paste(ctx: np.ndarray, absolute: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Alpha-blend (1 mm feather) a lesion patch centred in the cube."""
    out = ctx.copy()
    box = ndi.find_objects(mask.astype(np.uint8))[0]
    mc = np.array([(s.start + s.stop - 1) / 2.0 for s in box])
    off = np.rint((P - 1) / 2.0 - mc).astype(int)
    alpha = feather_alpha(mask, (1.0, 1.0, 1.0), 1.0)
    src = [slice(max(0, -o), min(n, P - o)) for o, n in zip(off, mask.shape)]
    dst = [slice(s.start + o, s.stop + o) for s, o in zip(src, off)]
    a = alpha[tuple(src)]
    out[tuple(dst)] = out[tuple(dst)] * (1 - a) + absolute[tuple(src)] * a
    placed = np.zeros(out.shape, bool)
    placed[tuple(dst)] = mask[tuple(src)]
    return out, placed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--n", type=int, default=60, help="held-out nodules (<= 16 mm) to use")
    ap.add_argument("--steps", type=int, default=None, help="flow steps (default: the model's)")
    ap.add_argument("--library", default=LIBRARY)
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (best is reported)")
    ap.add_argument("--speed-only", action="store_true", help="only the speed table")
    ap.add_argument("--evaluate", metavar="OUT_DIR",
                    help="also score each fake set with the project's realism_report (napari_synthseg.evaluate; "
                         "CNN + random-forest two-sample tests, FRD) and write its reports under OUT_DIR")
    ap.add_argument("--cnn-steps", type=int, default=200, help="realism_report CNN steps (with --evaluate)")
    ap.add_argument("--no-cnn", action="store_true",
                    help="with --evaluate: features and FRD only (the CNN test's real-vs-real control "
                         "scored 0.71 at n = 40, so it ranks nothing here)")
    ap.add_argument("--no-speed", action="store_true", help="skip the speed table")
    ap.add_argument("--downstream", metavar="OUT_DIR",
                    help="only the usefulness comparison (section 5): real-50 vs real-50 + generated vs "
                         "real-50 + transplanted, 'synthseg evaluate downstream' at issue 14's CPU budget")
    ap.add_argument("--evaluation-work", default="/tmp/synthseg-bench-evaluation",
                    help="bench_evaluation.py's work folder (its real-50, test set, hosts and transplanted set)")
    ap.add_argument("--downstream-steps", type=int, default=200)
    ap.add_argument("--downstream-seeds", default="0,1,2")
    ap.add_argument("--no-transplanted", action="store_true",
                    help="with --downstream: train only real and real + generated (the transplanted arm "
                         "is deterministic: reuse a previous run's)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.downstream:
        return downstream(args)
    gen = get_generator(args.model)
    steps = args.steps or gen.config.inference_steps
    entries = read_lesion_index(args.library)
    train, test = split_by_group(entries)
    biharmonic = get_filler("biharmonic")

    # ---------------------------------------------------------------- 1. speed
    if not args.no_speed:
        _speed(gen, test, steps, args.repeats)
    if args.speed_only:
        return 0
    _realism(args, gen, steps, train, test, biharmonic)
    return 0


def _speed(gen, test, steps, repeats):
    rng = np.random.default_rng(0)
    hu, mask, sp = read_patch(test[0])
    ctx = resample_cube(hu, sp, mask_center(mask), P, 1.0)
    m = gen.shape_model.sample_mask(10.0, "solid", 1.0, rng, shape=(P, P, P))
    gen.fill([ctx], [m], ["solid"], [-100.0], [0], steps=steps)  # warm-up
    n = repeats
    t_gen, _ = _best(lambda: gen.fill([ctx], [m], ["solid"], [-100.0], [0], steps=steps), n)
    t_gen8, _ = _best(lambda: gen.fill([ctx], [m], ["solid"], [-100.0], [0], steps=8), n)
    t_gen50, _ = _best(lambda: gen.fill([ctx], [m], ["solid"], [-100.0], [0], steps=50), max(1, n - 1))
    t_batch, _ = _best(lambda: gen.fill([ctx] * 8, [m] * 8, ["solid"] * 8, [-100.0] * 8, list(range(8)),
                                        steps=steps), max(1, n - 1))
    t_proc, _ = _best(lambda: procedural_nodule(10.0, "solid", spacing=1.0, seed=0), n)
    print("\n## speed (one 32^3 nodule, 1 thread)")
    print("| method | seconds | ratio vs procedural |")
    print("|---|---|---|")
    print(f"| generator, {steps} flow steps | {t_gen:.3f} | {t_gen / t_proc:.1f} |")
    print(f"| generator, 8 flow steps | {t_gen8:.3f} | {t_gen8 / t_proc:.1f} |")
    print(f"| generator, 50 flow steps | {t_gen50:.3f} | {t_gen50 / t_proc:.1f} |")
    print(f"| generator, {steps} steps, per nodule in a batch of 8 | {t_batch / 8:.3f} | {t_batch / 8 / t_proc:.1f} |")
    print(f"| procedural 10 mm (reference) | {t_proc:.3f} | 1.0 |")


def _realism(args, gen, steps, train, test, biharmonic):
    # ---------------------------------------------------------------- 2-3. realism
    cases = []
    for e in test:
        hu, mask, sp = read_patch(e)
        if not mask.any() or not np.allclose(sp, 1.0, atol=0.05):
            continue
        d = (6 * mask.sum() / math.pi) ** (1 / 3)
        if d > 16.0 or mask.sum() < 8:
            continue
        cases.append((e, hu, mask, d))
    cases = cases[: args.n]
    feats = {k: [] for k in ("real", "generated", "generated_nohist", "generated_raw", "procedural", "transplanted",
                             "transplanted_heldout", "removed",
                             "healthy_real", "healthy_generated", "healthy_raw", "healthy_biharmonic")}
    groups, healthy_groups = [], []
    sets = {k: [] for k in ("real", "generated", "generated_nohist", "generated_raw", "procedural", "transplanted",
                            "transplanted_heldout")}
    library = _library_nodules(train)
    shapes_real, shapes_sampled = [], []
    t0 = time.perf_counter()
    prepared = []
    for i, (e, hu, mask, d) in enumerate(cases):
        c = mask_center(mask)
        real = resample_cube(hu, (1, 1, 1), c, P, 1.0)
        m = resample_cube(mask.astype(np.float32), (1, 1, 1), c, P, 1.0, mode="constant") >= 0.5
        cls = classify_nodule(hu, mask)
        region = generation_region(m, gen.config.edge_voxels)
        removed = np.asarray(biharmonic.fill(real, region, spacing=(1.0, 1.0, 1.0)), np.float32)
        seed = 1000 + i
        mean_hu = gen.default_mean_hu(cls, np.random.default_rng([seed, 1]), d)
        hmask = _healthy_region(real, m, np.random.default_rng(seed))
        prepared.append((e, hu, mask, d, real, m, cls, removed, seed, mean_hu, hmask))
    # the generator runs on batches of 8 cubes (each row has its own seed, so a sample does not
    # depend on its batch); oneDNN's 3D convolutions are several times faster per cube that way
    generated = []
    for a in range(0, len(prepared), 8):
        chunk = prepared[a:a + 8]
        generated += gen.fill([p[7] for p in chunk], [p[5] for p in chunk], [p[6] for p in chunk],
                              [p[9] for p in chunk], [p[8] for p in chunk], steps=steps, match_noise=False,
                              calibrate_mean=False, match_histogram=False)
    with_healthy = [p for p in prepared if p[10] is not None]
    healthy_generated, healthy_means = [], []
    for a in range(0, len(with_healthy), 8):
        chunk = with_healthy[a:a + 8]
        medians = []
        for p in chunk:
            hr = generation_region(p[10], gen.config.edge_voxels)
            ring = (ndi.distance_transform_edt(~hr) <= 4) & ~hr
            medians.append(float(np.median(p[4][ring])))
        healthy_means += medians
        # raw flow samples; the default (corrected) fill is derived below with the function fill()
        # applies (generator.sample.correct_sample), so both rows come from the same flow samples
        healthy_generated += gen.fill([p[4] for p in chunk], [p[10] for p in chunk], ["empty"] * len(chunk),
                                      medians, [p[8] for p in chunk], steps=steps, match_noise=False,
                                      calibrate_mean=False, match_histogram=False)
    healthy_iter = iter(zip(healthy_generated, healthy_means))
    for i, (e, _hu, mask, d, real, _m, cls, removed, seed, _mean_hu, hmask) in enumerate(prepared):
        r = d / 2.0
        feats["real"].append(features(real, r))
        feats["removed"].append(features(removed, r))
        raw_cube = generated[i]
        region_m = generation_region(_m, gen.config.edge_voxels)
        # the donor of histogram control is chosen from the flow's seed, as fill() does
        target = gen.histogram_target(cls, d, _mean_hu, seed)
        corrected = correct_sample(raw_cube, removed, _m, region_m, cls, _mean_hu, histogram=target)
        corrected_nohist = correct_sample(raw_cube, removed, _m, region_m, cls, _mean_hu)
        feats["generated"].append(features(corrected, r))
        feats["generated_nohist"].append(features(corrected_nohist, r))
        feats["generated_raw"].append(features(raw_cube, r))
        proc = procedural_nodule(d, cls, spacing=1.0, seed=seed, lobulation=0.3)
        proc_cube, proc_mask = paste(removed, proc.absolute, proc.mask)
        feats["procedural"].append(features(proc_cube, r))
        # transplant: the nearest-size train-side library nodule (the reference the issue names)
        lib_d, lib_cube, lib_mask = min(library, key=lambda o: abs(o[0] - d))
        tr_cube, tr_mask = paste(removed, lib_cube, lib_mask)
        feats["transplanted"].append(features(tr_cube, lib_d / 2.0))
        # the earlier reference: the nearest-size nodule of another held-out series
        others = [o for o in cases if o[0].group != e.group]
        o = min(others, key=lambda o: abs(o[3] - d))
        oc = mask_center(o[2])
        o_cube = resample_cube(o[1], (1, 1, 1), oc, P, 1.0)
        o_mask = resample_cube(o[2].astype(np.float32), (1, 1, 1), oc, P, 1.0, mode="constant") >= 0.5
        th_cube, th_mask = paste(removed, o_cube, o_mask)
        feats["transplanted_heldout"].append(features(th_cube, o[3] / 2.0))
        if args.evaluate:
            def sample(cube, cube_mask, kind, e=e, d=d):
                return LesionSample(image=cube, mask=cube_mask, spacing=(1.0, 1.0, 1.0), name=f"{e.name}_{kind}",
                                    source=kind, diameter_mm=float(d), group=e.group)

            sets["real"].append(sample(real, _m, "real"))
            sets["generated"].append(sample(corrected, _m, "generated"))
            sets["generated_nohist"].append(sample(corrected_nohist, _m, "generated_nohist"))
            sets["generated_raw"].append(sample(raw_cube, _m, "generated_raw"))
            sets["procedural"].append(sample(proc_cube, proc_mask, "procedural"))
            sets["transplanted"].append(sample(tr_cube, tr_mask, "transplanted"))
            sets["transplanted_heldout"].append(sample(th_cube, th_mask, "transplanted_heldout"))
        groups.append(e.group)
        if hmask is not None:
            hc = np.rint(mask_center(hmask)).astype(int)
            shift = tuple(int(v) for v in (np.array([(P - 1) // 2] * 3) - hc))

            def centred(a, shift=shift):
                return np.roll(a, shift, axis=(0, 1, 2))

            hr = generation_region(hmask, gen.config.edge_voxels)
            hb = np.asarray(biharmonic.fill(real, hr, spacing=(1.0, 1.0, 1.0)), np.float32)
            hd = (6 * hmask.sum() / math.pi) ** (1 / 3) / 2.0
            feats["healthy_real"].append(features(centred(real), hd))
            raw_fill, hmean = next(healthy_iter)
            feats["healthy_raw"].append(features(centred(raw_fill), hd))
            feats["healthy_generated"].append(
                features(centred(correct_sample(raw_fill, real, hmask, hr, "empty", hmean)), hd))
            feats["healthy_biharmonic"].append(features(centred(hb), hd))
            healthy_groups.append(e.group)
        shapes_real.append((d, sphericity(mask, (1, 1, 1)), cls))
        sm = gen.shape_model.sample_mask(d, cls, 1.0, np.random.default_rng(seed))
        shapes_sampled.append(((6 * sm.sum() / math.pi) ** (1 / 3), sphericity(sm, (1, 1, 1)), cls, sm))
    elapsed = time.perf_counter() - t0
    f = {k: np.asarray(v) for k, v in feats.items()}
    g = np.asarray(groups)
    print(f"\n## realism on {len(cases)} held-out nodules ({len(set(groups))} series, <= 16 mm), "
          f"{elapsed:.0f} s")
    print("| fake vs real | two-sample AUC | Frechet (hand features) |")
    print("|---|---|---|")
    for k in ("generated", "generated_nohist", "generated_raw", "procedural", "transplanted", "transplanted_heldout",
              "removed"):
        print(f"| {k} | {two_sample_auc(f['real'], f[k], g):.3f} | {frechet(f['real'], f[k]):.2f} |")
    if args.evaluate:
        from pathlib import Path

        from napari_synthseg.evaluate.realism import realism_report

        print(f"\n## realism_report (napari_synthseg.evaluate) on the same {len(sets['real'])} cases")
        print("| fake vs real | CNN two-sample AUC [95% CI] | feature AUC (random forest) [95% CI] | FRD | "
              f"control AUC (real vs real, {'features' if args.no_cnn else 'CNN'}) |")
        print("|---|---|---|---|---|")
        for k in ("generated", "generated_nohist", "generated_raw", "procedural", "transplanted", "transplanted_heldout"):
            rep = realism_report(sets["real"], sets[k], Path(args.evaluate) / k, steps=args.cnn_steps,
                                 control=(k == "generated"), seed=0, cnn=not args.no_cnn)
            ci = rep.get("auc_ci") or [float("nan")] * 2
            fci = rep.get("feature_auc_ci") or [float("nan")] * 2
            ctrl = rep.get("control_auc")
            cnn = "-" if args.no_cnn else f"{rep.get('auc', float('nan')):.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"
            ctrl = rep.get("control_auc") if not args.no_cnn else rep.get("control_feature_auc")
            print(f"| {k} | {cnn} | "
                  f"{rep.get('feature_auc', float('nan')):.3f} [{fci[0]:.2f}, {fci[1]:.2f}] | "
                  f"{rep.get('frd', float('nan')):.2f} ({rep.get('frd_backend', '')}) | "
                  f"{'-' if ctrl is None else f'{ctrl:.3f}'} |")
    if healthy_groups:
        hg_ = np.asarray(healthy_groups)
        print(f"\n## healthy fill on {len(healthy_groups)} held-out cubes")
        print("| fill vs untouched lung | two-sample AUC | Frechet (hand features) |")
        print("|---|---|---|")
        for k in ("healthy_generated", "healthy_raw", "healthy_biharmonic"):
            print(f"| {k.split('_')[1]} | {two_sample_auc(f['healthy_real'], f[k], hg_):.3f} | "
                  f"{frechet(f['healthy_real'], f[k]):.2f} |")

    # ---------------------------------------------------------------- 4. shapes
    real_d = np.array([s[0] for s in shapes_real])
    real_s = np.array([s[1] for s in shapes_real])
    samp_d = np.array([s[0] for s in shapes_sampled])
    samp_s = np.array([s[1] for s in shapes_sampled])
    train_masks = []
    for e in train[:200]:
        _, tm, tsp = read_patch(e)
        if tm.any() and np.allclose(tsp, 1.0, atol=0.05):
            train_masks.append(tm[ndi.find_objects(tm.astype(np.uint8))[0]])
    best_iou = [_best_iou(s[3], train_masks) for s in shapes_sampled]
    print(f"\n## mask shapes ({len(shapes_real)} held-out masks vs as many sampled for the same "
          f"diameter and class; IoU against {len(train_masks)} train-side masks)")
    print("| masks | eq. diameter mm (median, IQR) | sphericity (mean +- sd) | best IoU with a real mask (median, max) |")
    print("|---|---|---|---|")
    def q(a):
        return f"{np.median(a):.1f} ({np.percentile(a, 25):.1f}-{np.percentile(a, 75):.1f})"

    print(f"| real (held out) | {q(real_d)} | {real_s.mean():.3f} +- {real_s.std():.3f} | - |")
    print(f"| sampled | {q(samp_d)} | {samp_s.mean():.3f} +- {samp_s.std():.3f} | "
          f"{np.median(best_iou):.2f}, {np.max(best_iou):.2f} |")


def downstream(args) -> int:
    """5. Usefulness: does a segmenter trained on real-50 + generated nodules beat real-50 alone?

    Re-uses ``benchmarks/bench_evaluation.py``'s prepared work folder (issue 14), so the real
    training nodules, the 261 test-side nodules, the 50 train-side host patches with their real
    nodule removed (``synthseg remove --method biharmonic``) and the transplanted set are exactly
    those of the evaluation yardstick. Generated nodules are made by the CLI as a user would:
    ``synthseg place FILLED --lesion generated:CLASS --at <host nodule centre> --size-mm <host
    diameter>`` (CLASS = the host nodule's class by the mean-HU rule, seed = host number), then
    ``synthseg render``. All three arms (real, real + generated x1, real + transplanted x1) are
    trained in this one run with the same budget and seeds.
    """
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_evaluation import centre_xyz, cli, write_index

    work = Path(args.evaluation_work)
    out = Path(args.downstream)
    if not (work / "prepare.json").exists():
        raise SystemExit(f"run benchmarks/bench_evaluation.py --phase prepare first (no {work / 'prepare.json'})")
    prep = json.loads((work / "prepare.json").read_text())
    entries = read_lesion_index(args.library)
    train, _test = split_by_group(entries)
    # bench_evaluation.prepare's draw: real-50 = train[:50], synthetic hosts = train[50:100]
    order = np.random.default_rng(14).permutation(len(train))
    train = [train[i] for i in order]
    hosts = train[prep["n_real_train"]:prep["n_real_train"] + prep["n_synth_hosts"]]
    model = str(get_generator(args.model).path)
    rows, refused, classes = [], 0, {}
    t0 = time.perf_counter()
    for i, host in enumerate(hosts):
        case = work / "train" / f"{i:03d}"
        mine = out / "train" / f"{i:03d}"
        mine.mkdir(parents=True, exist_ok=True)
        hu, mask, _sp = read_patch(host)
        cls = classify_nodule(hu, mask)
        classes[cls] = classes.get(cls, 0) + 1
        x, y, z = centre_xyz(host.mask_path)
        size = host.diameter_mm or 8.0
        rendered = mine / "generated"
        if not (rendered / "labels.mha").exists():
            try:
                cli("place", case / "filled.mha", "--lesion", f"generated:{cls}@{model}", "--seed", str(i),
                    "--at", f"{x:.2f},{y:.2f},{z:.2f}", "--size-mm", f"{size:g}", "--constraint", "none",
                    "--out", mine / "scene", "--force")
            except RuntimeError as exc:
                print(f"  host {i}: refused ({exc})", flush=True)
                refused += 1
                continue
            cli("render", mine / "scene", rendered, "--format", ".mha", "--force")
        rows.append({"ct": str(rendered / "image.mha"), "seg": str(rendered / "labels.mha"), "diameter": size,
                     "group": host.group, "index": host.index_in_group})
    made = time.perf_counter() - t0
    generated_set = write_index(out / "sets" / "train_generated", rows)
    print(f"made {len(rows)} generated training nodules by the CLI in {made:.0f} s ({refused} refused; "
          f"classes {classes})", flush=True)
    report = out / "report"
    t1 = time.perf_counter()
    cli("evaluate", "downstream", "--real", work / "sets" / "real_train",
        "--synthetic", f"generated={generated_set}",
        *([] if args.no_transplanted else ["--synthetic", f"transplanted={work / 'sets' / 'train_transplanted'}"]),
        "--test", work / "sets" / "test", "--out", report, "--steps", args.downstream_steps,
        "--seeds", args.downstream_seeds, "--ratios", "1", "--no-synthetic-only", "--batch-size", 2,
        "--crop-mm", 32, "--spacing-mm", 1, "--test-crop-mm", 32)
    down = json.loads((report / "report.json").read_text())
    print(f"\n## downstream ({down['n_test']} test lesions of the held-out series; {args.downstream_steps} steps x "
          f"batch 2, seeds {args.downstream_seeds}; {time.perf_counter() - t1:.0f} s)")
    ref = next(a for a in down["arms"] if a["name"] == "real")
    print("| arm | real + synthetic | Dice [95 % CI] | Dice per seed | ratio vs real-only | sensitivity [95 % CI] | "
          "<6 mm | 6-10 mm | <10 mm | 10-20 mm | >20 mm | FROC |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for a in down["arms"]:
        by = a["sensitivity_by_size"]

        def sens(b, by=by):
            v = by[b]["sensitivity"]
            return f"{v:.2f} (n={by[b]['n']})" if v is not None else "-"

        small = [(by[b]["sensitivity"], by[b]["n"]) for b in ("<6 mm", "6-10 mm") if by[b]["sensitivity"] is not None]
        below10 = sum(v * n for v, n in small) / max(1, sum(n for _, n in small))
        seeds = " / ".join(f"{s['dice']:.2f}" for s in a["per_seed"]) if "per_seed" in a else "-"
        ci, sci = a["dice_ci"], a["sensitivity_ci"]
        print(f"| {a['name']} | {a['n_real'][0]} + {a['n_synthetic'][0]} | {a['dice']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | "
              f"{seeds} | {a['dice'] / ref['dice']:.2f} | {a['sensitivity']:.3f} [{sci[0]:.3f}, {sci[1]:.3f}] | "
              f"{sens('<6 mm')} | {sens('6-10 mm')} | {below10:.2f} | {sens('10-20 mm')} | {sens('>20 mm')} | "
              f"{a['froc']:.3f} |")
    return 0


def _library_nodules(train) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """(equivalent diameter, 32^3 cube, mask) of every train-side nodule on a 1 mm grid: the donors
    of the transplanted reference, from the side the generator was trained on (a library)."""
    out = []
    for e in train:
        hu, mask, sp = read_patch(e)
        if not mask.any() or not np.allclose(sp, 1.0, atol=0.05):
            continue
        c = mask_center(mask)
        m = resample_cube(mask.astype(np.float32), (1, 1, 1), c, P, 1.0, mode="constant") >= 0.5
        if m.sum() < 8:
            continue
        out.append(((6 * mask.sum() / math.pi) ** (1 / 3), resample_cube(hu, (1, 1, 1), c, P, 1.0), m))
    return out


def _healthy_region(cube, nodule_mask, rng):
    near = ndi.distance_transform_edt(~nodule_mask) < 4
    zz, yy, xx = np.mgrid[-3:4, -3:4, -3:4]
    ball = zz ** 2 + yy ** 2 + (xx / 1.3) ** 2 <= 9
    for _ in range(60):
        at = rng.integers(5, P - 12, size=3)
        region = np.zeros(cube.shape, bool)
        region[at[0]:at[0] + 7, at[1]:at[1] + 7, at[2]:at[2] + 7] = ball
        if (region & near).any() or np.mean(cube[region] < -500) < 0.8:
            continue
        return region
    return None


def _best_iou(mask, library):
    best = 0.0
    mb = mask[ndi.find_objects(mask.astype(np.uint8))[0]]
    for lm in library:
        if not 0.7 < lm.sum() / max(mb.sum(), 1) < 1.4:
            continue
        shape = np.maximum(mb.shape, lm.shape) + 2
        a = np.zeros(shape, bool)
        b = np.zeros(shape, bool)
        a[tuple(slice((s - n) // 2, (s - n) // 2 + n) for s, n in zip(shape, mb.shape))] = mb
        b[tuple(slice((s - n) // 2, (s - n) // 2 + n) for s, n in zip(shape, lm.shape))] = lm
        best = max(best, float((a & b).sum() / (a | b).sum()))
    return best


if __name__ == "__main__":
    raise SystemExit(main())
