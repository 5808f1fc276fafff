"""Choose the order of the lesion generator's post-flow corrections on TRAIN-side nodules.

The held-out benchmark (``bench_generator.py``) must not be used to pick settings, so the
choice between correction pipelines is made here, on train-side LIDC nodules of the fixed
series-level split: for each nodule (<= 16 mm, 1 mm patches) the real nodule is removed
(biharmonic), the generator fills the same mask in that context (same class, mean HU drawn for
the class, seed = case number), and every pipeline is applied to the same raw flow sample.
Histogram-control donors come from train-side nodules of *other* series (the file's own table
holds the nodule itself, which would leak its histogram). Each pipeline's nodules are scored
against the untouched real ones with the project's ``realism_report`` (feature forest with
series-grouped folds, FRD) and this benchmark's logistic-regression AUC; the v3 pipeline
(calibrate, smooth) is the reference row, so every other row reads as a change against it.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tune_generator_corrections.py [--model M] [--n 120]``
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generator import LIBRARY, P, _healthy_region, features, frechet, two_sample_auc

from napari_synthseg.evaluate.lesion_sets import LesionSample
from napari_synthseg.evaluate.realism import realism_report
from napari_synthseg.fill import get_filler
from napari_synthseg.generator import get_generator
from napari_synthseg.generator.classes import class_index, classify_nodule
from napari_synthseg.generator.data import mask_center, read_patch, resample_cube
from napari_synthseg.generator.histograms import QUANTILES, HistogramTable, match_histogram
from napari_synthseg.generator.network import generation_region
from napari_synthseg.generator.sample import NODULE_DENOISE_SIGMA, calibrate_to_mean_hu, match_context_noise
from napari_synthseg.io.lesion_index import read_lesion_index, split_by_group


def smooth(cube, region, sigma=NODULE_DENOISE_SIGMA):
    out = cube.copy()
    out[region] = ndi.gaussian_filter(cube, sigma)[region]
    return out


PIPELINES = {
    "calibrate, smooth (v3)": lambda c: smooth(c["cal"], c["region"]),
    "histogram, calibrate, smooth": lambda c: smooth(calibrate_to_mean_hu(
        match_histogram(c["raw"], c["m"], c["target"]), c["removed"], c["m"], c["region"], c["mean_hu"]), c["region"]),
    "calibrate, smooth, histogram": lambda c: match_histogram(smooth(c["cal"], c["region"]), c["m"], c["target"]),
    "histogram, smooth, histogram": lambda c: match_histogram(
        smooth(match_histogram(c["raw"], c["m"], c["target"]), c["region"]), c["m"], c["target"]),
    "histogram only": lambda c: match_histogram(c["raw"], c["m"], c["target"]),
    "calibrate, smooth 0.3 voxel, histogram": lambda c: match_histogram(smooth(c["cal"], c["region"], 0.3), c["m"],
                                                                         c["target"]),
    "calibrate, histogram (no smoothing)": lambda c: match_histogram(c["cal"], c["m"], c["target"]),
    "calibrate only": lambda c: c["cal"],
    "raw": lambda c: c["raw"],
}


def ring_quantiles(cube, region, voxels=4):
    """HU quantiles of the lung ring around a healthy-fill region (the site's own lung)."""
    ring = (ndi.distance_transform_edt(~region) <= voxels) & ~region
    return np.quantile(cube[ring].astype(np.float64), QUANTILES)


HEALTHY = {
    "noise matched (v3)": lambda c: match_context_noise(c["hraw"], c["hregion"]),
    "noise matched, ring histogram": lambda c: match_histogram(match_context_noise(c["hraw"], c["hregion"]),
                                                               c["hregion"], ring_quantiles(c["real"], c["hregion"])),
    "ring histogram only": lambda c: match_histogram(c["hraw"], c["hregion"], ring_quantiles(c["real"], c["hregion"])),
    "raw": lambda c: c["hraw"],
}


def healthy_table(gen, cases) -> None:
    """The same comparison for healthy fill (class ``empty``) of a lung region beside each nodule."""
    use = []
    for c in cases:
        hmask = _healthy_region(c["real"], c["m"], np.random.default_rng(c["seed"]))
        if hmask is None:
            continue
        c["hmask"], c["hregion"] = hmask, generation_region(hmask, gen.config.edge_voxels)
        ring = (ndi.distance_transform_edt(~c["hregion"]) <= 4) & ~c["hregion"]
        c["hmean"] = float(np.median(c["real"][ring]))
        use.append(c)
    for a in range(0, len(use), 8):
        chunk = use[a:a + 8]
        raws = gen.fill([c["real"] for c in chunk], [c["hmask"] for c in chunk], ["empty"] * len(chunk),
                        [c["hmean"] for c in chunk], [c["seed"] for c in chunk], match_noise=False,
                        calibrate_mean=False, match_histogram=False)
        for c, raw in zip(chunk, raws):
            c["hraw"] = raw

    def centred_features(c, cube):
        hc = np.rint(mask_center(c["hmask"])).astype(int)
        shift = tuple(int(v) for v in (np.array([(P - 1) // 2] * 3) - hc))
        hd = (6 * c["hmask"].sum() / math.pi) ** (1 / 3) / 2.0
        return features(np.roll(cube, shift, axis=(0, 1, 2)), hd)

    real = np.array([centred_features(c, c["real"]) for c in use])
    g = np.array([c["e"].group for c in use])
    print(f"\n## healthy fill pipelines on {len(use)} train-side lung regions")
    print("| pipeline | LR AUC (hand features) | Frechet (hand) |")
    print("|---|---|---|")
    for name, fn in HEALTHY.items():
        fake = np.array([centred_features(c, fn(c)) for c in use])
        print(f"| {name} | {two_sample_auc(real, fake, g):.3f} | {frechet(real, fake):.2f} |", flush=True)


def train_side_cases(gen, n: int, library: str = LIBRARY) -> list[dict]:
    """Up to ``n`` train-side nodules (<= 16 mm, 1 mm grid) ready for generation: the real cube and
    mask, class, the nodule removed (biharmonic), seed, default mean HU and histogram-control
    target, both drawn from a table of *other* series' nodules (the shipped table holds the
    nodule itself)."""
    entries = read_lesion_index(library)
    train, _test = split_by_group(entries)
    biharmonic = get_filler("biharmonic")
    t0 = time.perf_counter()
    # the donor table: every usable train-side nodule, with its series
    rows, cases = [], []
    for e in train:
        hu, mask, sp = read_patch(e)
        if not mask.any() or not np.allclose(sp, 1.0, atol=0.05):
            continue
        d = (6 * mask.sum() / math.pi) ** (1 / 3)
        c = mask_center(mask)
        cube = resample_cube(hu, (1, 1, 1), c, P, 1.0)
        m = resample_cube(mask.astype(np.float32), (1, 1, 1), c, P, 1.0, mode="constant") >= 0.5
        if m.sum() < 8:
            continue
        cls = classify_nodule(hu, mask)
        values = cube[m].astype(np.float64)
        rows.append((e.group, class_index(cls), d, float(values.mean()), np.quantile(values, QUANTILES)))
        if d <= 16.0 and len(cases) < n:
            cases.append({"e": e, "real": cube, "m": m, "cls": cls, "d": d})
    groups_all = np.array([r[0] for r in rows])
    print(f"{len(cases)} train-side cases, {len(rows)} donor rows ({time.perf_counter() - t0:.0f} s)", flush=True)
    for i, c in enumerate(cases):
        c["region"] = generation_region(c["m"], gen.config.edge_voxels)
        c["removed"] = np.asarray(biharmonic.fill(c["real"], c["region"], spacing=(1.0, 1.0, 1.0)), np.float32)
        c["seed"] = 1000 + i
        other = groups_all != c["e"].group  # donors of other series only
        table = HistogramTable(np.array([r[4] for r in rows])[other].astype(np.float32),
                               np.array([r[1] for r in rows])[other], np.array([r[2] for r in rows], np.float32)[other],
                               np.array([r[3] for r in rows], np.float32)[other])
        # the default mean HU is drawn from the table too: from other series only, as the donor
        shipped, gen.histograms = gen.histograms, table
        c["mean_hu"] = gen.default_mean_hu(c["cls"], np.random.default_rng([c["seed"], 1]), c["d"])
        gen.histograms = shipped
        donor = table.donor(class_index(c["cls"]), c["d"], c["mean_hu"], c["seed"])
        c["target"] = table.target(donor, c["mean_hu"])
    return cases


def generate_raw(gen, cases: list[dict]) -> None:
    """Each case's raw flow sample (``raw``) and its mean-calibrated form (``cal``), 8 at a time."""
    for a in range(0, len(cases), 8):
        chunk = cases[a:a + 8]
        raws = gen.fill([c["removed"] for c in chunk], [c["m"] for c in chunk], [c["cls"] for c in chunk],
                        [c["mean_hu"] for c in chunk], [c["seed"] for c in chunk], match_noise=False,
                        calibrate_mean=False, match_histogram=False)
        for c, raw in zip(chunk, raws):
            c["raw"] = raw
            c["cal"] = calibrate_to_mean_hu(raw, c["removed"], c["m"], c["region"], c["mean_hu"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--library", default=LIBRARY)
    ap.add_argument("--healthy-only", action="store_true", help="only the healthy-fill table")
    args = ap.parse_args(argv)
    gen = get_generator(args.model)
    t0 = time.perf_counter()
    cases = train_side_cases(gen, args.n, args.library)
    if args.healthy_only:
        healthy_table(gen, cases)
        return 0
    generate_raw(gen, cases)
    print(f"generated in {time.perf_counter() - t0:.0f} s", flush=True)

    def sample(c, cube, kind):
        return LesionSample(image=cube, mask=c["m"], spacing=(1.0, 1.0, 1.0), name=f"{c['e'].name}_{kind}",
                            source=kind, diameter_mm=float(c["d"]), group=c["e"].group)

    real = [sample(c, c["real"], "real") for c in cases]
    real_f = np.array([features(c["real"], c["d"] / 2) for c in cases])
    g = np.array([c["e"].group for c in cases])
    print(f"\n## post-flow correction pipelines on {len(cases)} train-side nodules ({len(set(g))} series), "
          f"model {gen.sha256[:12]}")
    print("| pipeline | feature AUC (forest) [95% CI] | FRD | LR AUC | Frechet (hand) | in-mask sd real / fake |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in PIPELINES.items():
            cubes = [fn(c) for c in cases]
            rep = realism_report(real, [sample(c, x, "fake") for c, x in zip(cases, cubes)],
                                 Path(tmp) / str(abs(hash(name))), cnn=False, control=False, seed=0, n_boot=300)
            fake_f = np.array([features(x, c["d"] / 2) for c, x in zip(cases, cubes)])
            sd_real = np.median([c["real"][c["m"]].std() for c in cases])
            sd_fake = np.median([x[c["m"]].std() for c, x in zip(cases, cubes)])
            ci = rep["feature_auc_ci"]
            print(f"| {name} | {rep['feature_auc']:.3f} [{ci[0]:.2f}, {ci[1]:.2f}] | {rep['frd']:.1f} | "
                  f"{two_sample_auc(real_f, fake_f, g):.3f} | {frechet(real_f, fake_f):.2f} | "
                  f"{sd_real:.0f} / {sd_fake:.0f} |", flush=True)
    healthy_table(gen, cases)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
