"""Is the transplanted reference of the realism benchmark fair? A train-side check of FRD.

FRD compares the radiomics feature distribution of a fake set with the real set's. A
transplanted reference whose donors come from the compared real set itself (the first four
passes of ``bench_generator.py``: the nearest-size nodule of another held-out series) re-uses
the real set's own nodules, so its FRD is low by construction. This check measures that on the
TRAIN side only (no held-out data): train-side nodules (<= 16 mm, 1 mm grid) are split by series
into halves A and B; each A site gets

* ``generated``: the shipped sampler in the site's context (nodule removed, same mask, class,
  default mean HU and histogram donor from other series, as ``tune_generator_corrections.py``),
* ``transplanted, donors from A``: the nearest-size nodule of another series *of A* (the old
  rule),
* ``transplanted, donors from B``: the nearest-size nodule of B (a separate library: the
  reference the issue names),

and each is scored against A's real nodules with frd-score (v0, as ``synthseg evaluate``). The
mean and covariance terms come from the same features (frd-score's v0 extractor, joint min-max
scaling) recomputed here, with the features whose terms weigh most. Two random halves of the
real nodules give the distance between real sets of that size.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/check_frd_reference.py [--n 240]`` (needs
frd-score and pyradiomics: docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
from scipy import linalg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generator import LIBRARY, paste
from tune_generator_corrections import generate_raw, train_side_cases

from napari_synthseg.evaluate.frd import package_frd
from napari_synthseg.evaluate.lesion_sets import LesionSample
from napari_synthseg.generator import get_generator
from napari_synthseg.generator.histograms import match_histogram


def radiomics_rows(cubes, masks) -> tuple[list[str], np.ndarray]:
    """frd-score v0's features (its own extractor, original image) of each cube inside its mask."""
    import radiomics
    import SimpleITK as sitk
    from frd_score.frd import V0_DEFAULT_FEATURES, get_feature_extractor_v0

    radiomics.setVerbosity(logging.ERROR)  # one "GLCM is symmetrical" line per nodule otherwise
    extractor = get_feature_extractor_v0([f for f in V0_DEFAULT_FEATURES if f != "shape2D"])
    names, rows = [], []
    for cube, mask in zip(cubes, masks):
        image = sitk.GetImageFromArray(np.asarray(cube, np.float32))
        label = sitk.GetImageFromArray(np.asarray(mask, np.uint8))
        label.CopyInformation(image)
        result = extractor.execute(image, label)
        names = [k for k in result if not k.startswith("diagnostics")]
        rows.append([float(result[k]) for k in names])
    return names, np.asarray(rows)


def frechet_terms(real: np.ndarray, fake: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(mean term, covariance term, per-feature diagonal terms, kept columns) after v0's joint min-max."""
    from frd_score.frd import V0_DEFAULT_NORM_RANGE

    joint = np.concatenate([real, fake])
    lo, hi = joint.min(axis=0), joint.max(axis=0)
    keep = np.isfinite(joint).all(axis=0) & (hi > lo)
    scaled = (joint[:, keep] - lo[keep]) / (hi - lo)[keep] * V0_DEFAULT_NORM_RANGE[1]
    a, b = scaled[:len(real)], scaled[len(real):]
    diff = a.mean(axis=0) - b.mean(axis=0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    cov_term = float(np.trace(s1) + np.trace(s2) - 2.0 * np.trace(np.real(linalg.sqrtm(s1 @ s2))))
    per_feature = diff ** 2 + (np.sqrt(np.diag(s1)) - np.sqrt(np.diag(s2))) ** 2
    return float(diff @ diff), cov_term, per_feature, keep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--n", type=int, default=240, help="train-side nodules to use (both halves)")
    ap.add_argument("--library", default=LIBRARY)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    gen = get_generator(args.model)
    cases = train_side_cases(gen, args.n, args.library)
    generate_raw(gen, cases)
    groups = sorted({c["e"].group for c in cases})
    half = set(np.random.default_rng(5).permutation(groups)[: len(groups) // 2])
    side_a = [c for c in cases if c["e"].group in half]
    side_b = [c for c in cases if c["e"].group not in half]

    def transplant(c, pool):
        donor = min((o for o in pool if o["e"].group != c["e"].group), key=lambda o: abs(o["d"] - c["d"]))
        return paste(c["removed"], donor["real"], donor["m"]), donor["e"].name

    def sample(cube, mask, c, kind):
        return LesionSample(image=cube, mask=mask, spacing=(1.0, 1.0, 1.0), name=f"{c['e'].name}_{kind}", source=kind,
                            diameter_mm=float(c["d"]), group=c["e"].group)

    real = [sample(c["real"], c["m"], c, "real") for c in side_a]
    arms = {"generated (shipped sampler)": [sample(match_histogram(c["cal"], c["m"], c["target"]), c["m"], c, "gen")
                                            for c in side_a]}
    donors = {}
    for label, pool in (("transplanted, donors from A (old rule)", side_a),
                        ("transplanted, donors from B (library)", side_b)):
        made = [transplant(c, pool) for c in side_a]
        arms[label] = [sample(cube, mask, c, "trans") for c, ((cube, mask), _) in zip(side_a, made)]
        donors[label] = len({name for _, name in made})
    print(f"{len(side_a)} sites in half A ({len(half)} series), {len(side_b)} nodules in half B; "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    names, real_rows = radiomics_rows([s.image for s in real], [s.mask for s in real])
    print(f"\n## FRD against A's {len(real)} real nodules (train side, model {gen.sha256[:12]})")
    print("| fake set | distinct donors | FRD (frd-score v0) | mean term | covariance term | top features (diagonal term) |")
    print("|---|---|---|---|---|---|")
    for label, fake in arms.items():
        value = package_frd(real, fake)
        _, fake_rows = radiomics_rows([s.image for s in fake], [s.mask for s in fake])
        mean_term, cov_term, per_feature, keep = frechet_terms(real_rows, fake_rows)
        kept = np.asarray(names)[keep]
        top = ", ".join(f"{kept[j].replace('original_', '')} {per_feature[j]:.2f}" for j in np.argsort(-per_feature)[:3])
        print(f"| {label} | {donors.get(label, '-')} | {value:.1f} | {mean_term:.1f} | {cov_term:.1f} | {top} |",
              flush=True)
    rng = np.random.default_rng(0)
    everyone = [sample(c["real"], c["m"], c, "real") for c in cases]
    halves = []
    for _ in range(3):
        order = rng.permutation(len(everyone))
        halves.append(package_frd([everyone[i] for i in order[: len(order) // 2]],
                                  [everyone[i] for i in order[len(order) // 2:]]))
    print(f"| real vs real: two random halves of all {len(everyone)} (3 splits) | - | "
          f"{' / '.join(f'{v:.1f}' for v in halves)} | | | |")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
