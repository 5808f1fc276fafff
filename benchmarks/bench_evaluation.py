"""Yardstick of issue 14: how real do the product's lesions look, and do they help a segmenter?

On the shared LIDC nodules (``../shared/data/ct/lidc_nodules``) with the project's fixed
series-level split (:func:`napari_synthseg.io.lesion_index.split_by_group`):

1. **prepare** — synthetic lesions made BY THE CLI, as a user would: ``synthseg remove`` the real
   nodule of a patch (biharmonic fill), then ``synthseg place`` at the same centre and size
   (``--size``: LUNA16's diameter, issue 14's protocol, the real mask's equivalent diameter, or a smaller one)
   either ``procedural:solid``, another train-side LIDC patch (a transplanted real nodule,
   ``--lesion PATCH.mha --lesion-mask SEG.mha``) or a learned one
   (``--lesion generated:CLASS@MODEL --seed i``, CLASS = the removed nodule's class by the
   mean-HU rule; issue 16), then ``synthseg render``. Generated lesions are cached per model
   file hash, so a new model is measured on the same hosts without redoing the others. Hosts for the
   realism test are test-side patches; hosts for the downstream synthetic training lesions are
   train-side patches outside the 50 real training nodules. (The CLI runs in-process through
   ``napari_synthseg.cli.main`` to save 500 interpreter start-ups; same code path.)
2. **realism** — ``synthseg evaluate realism`` of the untouched host patches against each
   synthetic set (the control: two halves of the real set).
3. **downstream** — ``synthseg evaluate downstream``: real-50 only and real-50 + 50 of each
   synthetic kind (``--kinds``; plus each kind alone unless ``--no-synthetic-only``); 3 seeds;
   scored on every test-side nodule. ``--steps``/``--batch-size`` set the segmenter budget
   (issue 14's CPU yardstick: 200 x 2; issue 16's longer run: 1000 x 4); each budget and set
   of kinds has its own report folder.

Prints tables with ratios against the reference computed in the same run (the real-vs-real
control AUC; the real-only arm). Run niced in the background::

    OMP_NUM_THREADS=1 nohup nice -n 10 .venv/bin/python benchmarks/bench_evaluation.py > bench_eval.log 2>&1 &
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LIDC = Path(os.environ.get("SYNTHSEG_SHARED_DATA", REPO.parent / "shared" / "data")) / "ct" / "lidc_nodules"


def cli(*argv: str) -> None:
    from napari_synthseg.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in argv])
    if code != 0:
        raise RuntimeError(f"synthseg {' '.join(map(str, argv))} exited {code}")


def centre_xyz(mask_path: Path) -> tuple[float, float, float]:
    from napari_synthseg.io import read_image

    mask = np.asarray(read_image(mask_path).array) != 0
    zyx = np.argwhere(mask).mean(axis=0)
    return float(zyx[2]), float(zyx[1]), float(zyx[0])


def mask_diameter_mm(mask_path: Path) -> float:
    """Equivalent-sphere diameter of a mask file (mm)."""
    from napari_synthseg.io import read_image

    image = read_image(mask_path)
    volume = float((np.asarray(image.array) != 0).sum()) * float(np.prod(image.scale))
    return (6.0 * volume / np.pi) ** (1.0 / 3.0)


#: How each synthetic lesion's requested size is chosen: LUNA16's diameter (issue 14's protocol:
#: larger than the mask, 9.1 vs 7.2 mm median), the real mask's equivalent diameter, or
#: ``small``: the mask's diameter scaled by a factor drawn uniformly in [0.5, 1] (at least
#: 3 mm, LIDC's smallest annotated nodule). ``small`` puts more synthetic nodules below 6 mm,
#: where the 50 real training nodules are thinnest (8 % of them), and every synthetic nodule
#: still sits inside the site its host's nodule was removed from.
SIZE_FROM = ("luna16", "mask", "small")
SMALL_SCALE = (0.5, 1.0)
SMALL_MIN_MM = 3.0


def write_index(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["ct_file,seg_file,diameter_mm,lidc_series_uid,nodule_index"]
    for r in rows:
        lines.append(f"{r['ct']},{r['seg']},{r['diameter']},{r['group']},{r['index']}")
    (folder / "index.csv").write_text("\n".join(lines) + "\n")
    return folder


REFUSED: dict[str, dict[str, int]] = {}
KINDS = ("procedural", "transplanted", "generated")


def generator_file(model: str) -> tuple[Path, str]:
    """The generator file a ``--generator`` choice means, and the tag its lesions are cached under
    (short hash and sampler revision)."""
    import hashlib

    from napari_synthseg.generator import resolve_model_path
    from napari_synthseg.generator.sample import SAMPLER_REVISION

    path = resolve_model_path(model)
    # the same model samples differently under another sampler revision: its own cache
    return path, f"{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}r{SAMPLER_REVISION}"


def make_synthetic(hosts, donors, work: Path, tag: str, kinds=KINDS, generator: str = "builtin",
                   size_from: str = "luna16") -> dict[str, list[dict]]:
    """Remove each host's nodule and place each kind of synthetic nodule there (CLI)."""
    from napari_synthseg.generator.classes import classify_nodule
    from napari_synthseg.generator.data import read_patch

    rows: dict[str, list[dict]] = {kind: [] for kind in kinds}
    refused = REFUSED.setdefault(tag, {})
    for kind in kinds:
        refused[kind] = 0
    model_path, model_tag = generator_file(generator) if "generated" in kinds else (None, "")
    rng = np.random.default_rng(0)
    for i, host in enumerate(hosts):
        case = work / tag / f"{i:03d}"
        case.mkdir(parents=True, exist_ok=True)
        filled = case / "filled.mha"
        if not filled.exists():
            cli("remove", host.image_path, "--mask", host.mask_path, "--method", "biharmonic", "--out", filled)
        x, y, z = centre_xyz(host.mask_path)
        if size_from == "luna16":
            size = host.diameter_mm or 8.0
        elif size_from == "mask":
            size = round(mask_diameter_mm(host.mask_path), 2)
        else:  # small: one draw per host from its own stream, so a host's size does not depend on the others
            scale = np.random.default_rng([14, i]).uniform(*SMALL_SCALE)
            size = round(max(SMALL_MIN_MM, scale * mask_diameter_mm(host.mask_path)), 2)
        # A donor of similar size (one of the 5 closest diameters): placing scales the donor's
        # whole patch, so a 5 mm donor shown at 37 mm would be a 7x blow-up (minutes and GBs in
        # place, and no real transplant looks like that).
        closest = sorted(donors, key=lambda d: abs((d.diameter_mm or 8.0) - size))[:5]
        donor = closest[int(rng.integers(len(closest)))]
        recipes = {"procedural": ["procedural:solid", "--seed", str(i)],
                   "transplanted": [donor.image_path, "--lesion-mask", donor.mask_path]}
        if "generated" in kinds:
            hu, mask, _ = read_patch(host)
            recipes["generated"] = [f"generated:{classify_nodule(hu, mask)}@{model_path}", "--seed", str(i)]
        for kind in kinds:
            lesion = recipes[kind]
            folder = f"generated_{model_tag}" if kind == "generated" else kind
            out = case / folder
            if (case / f"refused_{folder}").exists():
                refused[kind] += 1
                continue
            if not (out / "labels.mha").exists():
                try:
                    cli("place", filled, "--lesion", *lesion, "--at", f"{x:.2f},{y:.2f},{z:.2f}", "--size-mm", f"{size:g}",
                        "--constraint", "none", "--out", case / f"scene_{folder}", "--force")
                except RuntimeError:
                    # The CLI refused (e.g. a 37 mm lesion larger than the 50 mm patch allows):
                    # counted and reported, the host stays in the real set.
                    (case / f"refused_{folder}").write_text("refused by synthseg place")
                    refused[kind] += 1
                    continue
                cli("render", case / f"scene_{folder}", out, "--format", ".mha", "--force")
            rows[kind].append({"ct": f"{tag}/{i:03d}/{folder}/image.mha", "seg": f"{tag}/{i:03d}/{folder}/labels.mha",
                               "diameter": size, "group": host.group, "index": host.index_in_group})
        if (i + 1) % 20 == 0:
            print(f"  {tag}: {i + 1}/{len(hosts)} hosts", flush=True)
    return rows


def prepare(work: Path, n_realism: int, n_real: int, n_synth: int, kinds=KINDS, generator: str = "builtin",
            size_from: str = "luna16") -> dict:
    from napari_synthseg.io.lesion_index import read_lesion_index, split_by_group

    previous = work / "prepare.json"
    if previous.exists() and json.loads(previous.read_text()).get("size_from", "luna16") != size_from:
        # the cached lesions were made at the other sizes
        raise SystemExit(f"{work} holds lesions sized by another --size; use another --work")

    entries = read_lesion_index(LIDC)
    train, test = split_by_group(entries)
    rng = np.random.default_rng(14)
    train = [train[i] for i in rng.permutation(len(train))]
    test = [test[i] for i in rng.permutation(len(test))]
    real_train = train[:n_real]
    synth_hosts = train[n_real:n_real + n_synth]
    donors = train[n_real + n_synth:]
    realism_hosts = test[:n_realism]

    def rel(e):
        return {"ct": str(e.image_path.resolve()), "seg": str(e.mask_path.resolve()),
                "diameter": e.diameter_mm, "group": e.group, "index": e.index_in_group}

    t0 = time.perf_counter()
    sets = {"real_train": write_index(work / "sets" / "real_train", [rel(e) for e in real_train]),
            "test": write_index(work / "sets" / "test", [rel(e) for e in test]),
            "realism_real": write_index(work / "sets" / "realism_real", [rel(e) for e in realism_hosts])}
    for tag, hosts in (("realism", realism_hosts), ("train", synth_hosts)):
        rows = make_synthetic(hosts, donors, work, tag, kinds, generator, size_from)
        for kind, kind_rows in rows.items():
            for r in kind_rows:
                r["ct"], r["seg"] = f"../../{r['ct']}", f"../../{r['seg']}"
            sets[f"{tag}_{kind}"] = write_index(work / "sets" / f"{tag}_{kind}", kind_rows)
    info = {"kinds": list(kinds), "generator": generator_file(generator)[1] if "generated" in kinds else None,
            "n_train_side": len(train), "n_test_side": len(test), "n_real_train": len(real_train),
            "n_synth_hosts": len(synth_hosts), "n_donors": len(donors), "n_realism_hosts": len(realism_hosts),
            "n_test": len(test), "refused_by_place": REFUSED, "prepare_seconds": round(time.perf_counter() - t0, 1),
            "size_from": size_from}
    if previous.exists():  # a re-run reuses the cached lesions: keep the first run's timing
        before = json.loads(previous.read_text())
        info["prepare_seconds"] = max(info["prepare_seconds"], before["prepare_seconds"])
        # a run for some kinds keeps what earlier runs recorded of the others
        info["kinds"] = sorted(set(before.get("kinds", ["procedural", "transplanted"])) | set(kinds))
        for tag, counts in before.get("refused_by_place", {}).items():
            for kind, n in counts.items():
                REFUSED.setdefault(tag, {}).setdefault(kind, n)
        if "generated" not in kinds and before.get("generator"):
            info["generator"] = before["generator"]
    (work / "prepare.json").write_text(json.dumps(info, indent=2))
    return info


def realism(work: Path, steps: int, folds: int, kinds=KINDS) -> dict:
    out = {}
    for kind in kinds:
        t0 = time.perf_counter()
        rep = work / "reports" / f"realism_{kind}"
        cli("evaluate", "realism", work / "sets" / "realism_real", work / "sets" / f"realism_{kind}", "--out", rep,
            "--steps", steps, "--folds", folds, "--crop-mm", 32, "--spacing-mm", 1)
        out[kind] = json.loads((rep / "report.json").read_text())
        out[kind]["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def downstream(work: Path, steps: int, seeds: str, batch: int, kinds=KINDS, synthetic_only: bool = True,
               ratio: float = 1.0) -> dict:
    legacy = (tuple(kinds) == ("procedural", "transplanted") and (steps, batch) == (200, 2) and synthetic_only
              and ratio == 1.0)
    # issue 14's yardstick keeps its folder; every other budget, ratio or set of kinds has its own
    tail = "" if ratio == 1.0 else f"_ratio{ratio:g}"
    rep = work / "reports" / ("downstream" if legacy else f"downstream_{'+'.join(kinds)}_{steps}x{batch}{tail}")
    t0 = time.perf_counter()
    synthetic = [a for kind in kinds for a in ("--synthetic", f"{kind}={work / 'sets' / f'train_{kind}'}")]
    cli("evaluate", "downstream", "--real", work / "sets" / "real_train", *synthetic,
        "--test", work / "sets" / "test", "--out", rep, "--steps", steps, "--seeds", seeds, "--ratios", f"{ratio:g}",
        "--batch-size", batch, "--crop-mm", 32, "--spacing-mm", 1, "--test-crop-mm", 32,
        *([] if synthetic_only else ["--no-synthetic-only"]))
    data = json.loads((rep / "report.json").read_text())
    data["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return data


def _ci(v, ci):
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def print_tables(prep: dict, real: dict | None, down: dict | None) -> None:
    print(f"\nsplit: {prep['n_train_side']} train-side / {prep['n_test_side']} test-side nodules; "
          f"{prep['n_real_train']} real training nodules, {prep['n_synth_hosts']} synthetic hosts, "
          f"{prep['n_realism_hosts']} realism hosts, {prep['n_test']} test nodules; prepare {prep['prepare_seconds']} s")
    if real:
        print("\n| synthetic lesions (CLI: remove -> place) | n real / synth | CNN AUC [95 % CI] | control AUC | ratio AUC/control "
              "| feature AUC | control feature AUC | FRD (backend) | top give-away features |")
        print("|---|---|---|---|---|---|---|---|---|")
        for kind, r in real.items():
            top = ", ".join(r["features_test"]["ranked_features"][:3])
            print(f"| {kind} | {r['n_real']} / {r['n_synthetic']} | {_ci(r['auc'], r['auc_ci'])} | {r['control_auc']:.3f} | "
                  f"{r['auc'] / r['control_auc']:.2f} | {_ci(r['feature_auc'], r['feature_auc_ci'])} | "
                  f"{r['control_feature_auc']:.3f} | {r['frd']:.3f} ({r['frd_backend']}) | {top} |")
    if down:
        ref = next(a for a in down["arms"] if a["name"] == "real")
        print("\n| arm | real + synthetic | Dice [95 % CI] | Dice ratio vs real-only | sensitivity [95 % CI] | FROC | "
              "<6 | 6-10 | 10-20 | >20 mm | < 10 mm |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for a in down["arms"]:
            sizes = " | ".join(f"{(a['sensitivity_by_size'][b]['sensitivity'] or 0):.2f} (n={a['sensitivity_by_size'][b]['n']})"
                               for b in ("<6 mm", "6-10 mm", "10-20 mm", ">20 mm"))
            small = f"{a['sensitivity_small']:.3f} (n={a['n_small']})" if "sensitivity_small" in a else "-"
            print(f"| {a['name']} | {a['n_real'][0]} + {a['n_synthetic'][0]} | {_ci(a['dice'], a['dice_ci'])} | "
                  f"{a['dice'] / ref['dice']:.2f} | {_ci(a['sensitivity'], a['sensitivity_ci'])} | {a['froc']:.3f} | {sizes} "
                  f"| {small} |")
        if down.get("paired"):
            print("\n| gain over real only (paired: same seeds, same test cases) | Δ Dice [95 % CI] | Δ sensitivity [95 % CI] "
                  "| Δ sensitivity < 10 mm [95 % CI] |")
            print("|---|---|---|---|")
            for c in down["paired"]:
                print(f"| {c['arm']} | {_ci(c['delta_dice'], c['delta_dice_ci'])} | "
                      f"{_ci(c['delta_sensitivity'], c['delta_sensitivity_ci'])} | "
                      f"{_ci(c['delta_sensitivity_small'], c['delta_sensitivity_small_ci'])} |")
        print(f"\ndownstream wall time {down['wall_seconds']} s; settings: {json.dumps(down['settings']['segmenter'])}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/synthseg-bench-evaluation")
    p.add_argument("--phase", default="all", choices=["prepare", "realism", "downstream", "all", "tables"])
    p.add_argument("--n-realism", type=int, default=120)
    p.add_argument("--n-real", type=int, default=50)
    p.add_argument("--n-synthetic", type=int, default=50)
    p.add_argument("--realism-steps", type=int, default=150)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--kinds", default=",".join(KINDS),
                   help="synthetic kinds to make and score (default: all; generated = the learned generator)")
    p.add_argument("--generator", default="builtin", help="generator model file for the generated kind")
    p.add_argument("--no-synthetic-only", action="store_true", help="downstream: skip the synthetic-only arms")
    p.add_argument("--size", default="luna16", choices=SIZE_FROM,
                   help="prepare: size of every synthetic lesion: LUNA16's diameter (issue 14), the real mask's "
                        "equivalent diameter, or small (the mask's scaled by 0.5-1, >= 3 mm); each needs its own --work")
    p.add_argument("--ratio", type=float, default=1.0,
                   help="downstream: synthetic lesions per real one (needs --n-synthetic >= ratio x --n-real at prepare)")
    args = p.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    if not kinds or any(k not in KINDS for k in kinds):
        p.error(f"--kinds takes some of {','.join(KINDS)}")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not LIDC.is_dir():
        print(f"LIDC nodules not found at {LIDC}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    prep = json.loads((work / "prepare.json").read_text()) if (work / "prepare.json").exists() else None
    if args.phase in ("prepare", "all") or prep is None:
        prep = prepare(work, args.n_realism, args.n_real, args.n_synthetic, kinds, args.generator, args.size)
        print(f"prepared in {prep['prepare_seconds']} s", flush=True)
    real = down = None
    if args.phase in ("realism", "all"):
        real = realism(work, args.realism_steps, args.folds, kinds)
        # one realism.json holds the latest report of every kind (a generated kind names its model)
        known = json.loads((work / "realism.json").read_text()) if (work / "realism.json").exists() else {}
        if "generated" in real:
            real["generated"]["generator_sha256_12"] = prep.get("generator")
        known.update(real)
        (work / "realism.json").write_text(json.dumps(known))
        print(f"realism done at {time.perf_counter() - t0:.0f} s", flush=True)
    if args.phase in ("downstream", "all"):
        down = downstream(work, args.steps, args.seeds, args.batch_size, kinds, not args.no_synthetic_only, args.ratio)
        (work / "downstream.json").write_text(json.dumps(down))
    if args.phase == "tables":
        real = json.loads((work / "realism.json").read_text()) if (work / "realism.json").exists() else None
        down = json.loads((work / "downstream.json").read_text()) if (work / "downstream.json").exists() else None
    print_tables(prep, real, down)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s (load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
