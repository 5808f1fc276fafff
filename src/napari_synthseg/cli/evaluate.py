"""``synthseg evaluate realism|downstream|compare|collect|reader-study|reader-study-score``.

Thin adapters over :mod:`napari_synthseg.evaluate`; every number and rule lives there.
"""

from __future__ import annotations

import argparse

from ..errors import SynthsegError
from ..utils.progress import ConsoleProgress
from ._common import parse_floats


def _set_options(p: argparse.ArgumentParser, crop_default: float = 32.0) -> None:
    p.add_argument("--crop-mm", type=float, default=crop_default, help=f"edge of the lesion-centred crop, mm (default {crop_default:g})")
    p.add_argument("--spacing-mm", type=float, default=1.0, help="pixel size every crop is resampled to, mm (default 1)")
    p.add_argument("--limit", type=int, default=None, help="read at most this many lesions per set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N or mps")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="measure synthetic lesions: realism tests, downstream training, reader study",
        description="Lesion sets are folders with index.csv (ct_file, seg_file), nnU-Net/NIfTI datasets, scene "
        "folders, or COCO/CSV boxes (radiographs).",
    )
    sub = p.add_subparsers(dest="evaluate_command", metavar="WHAT")
    sub.required = True

    r = sub.add_parser("realism", help="can a classifier tell SYNTH from REAL? (AUC, FRD, features, control)")
    r.add_argument("real", help="real lesion set")
    r.add_argument("synthetic", help="synthetic lesion set")
    r.add_argument("--out", required=True, help="report folder")
    _set_options(r)
    r.add_argument("--folds", type=int, default=5)
    r.add_argument("--steps", type=int, default=200, help="CNN training steps per fold (default 200)")
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs")
    r.add_argument("--frd-backend", default="auto", choices=["auto", "frd-score", "synthseg-features"])
    r.add_argument("--no-cnn", action="store_true", help="features only (fast)")
    r.add_argument("--no-control", action="store_true", help="skip the real-vs-real control")
    r.set_defaults(func=run_realism)

    d = sub.add_parser("downstream", help="train the same segmenter per arm (real, real+synthetic, synthetic only) "
                       "and score it on real TEST lesions")
    d.add_argument("--real", help="real training lesion set")
    d.add_argument("--synthetic", action="append", default=[], metavar="[NAME=]SET",
                   help="synthetic lesion set (repeat for several, each named NAME=PATH)")
    d.add_argument("--test", required=True, help="real test lesion set (patients not in --real)")
    d.add_argument("--out", help="report folder (not with --nnunet)")
    d.add_argument("--nnunet", metavar="DIR", help="instead of training here: write one nnU-Net v2 dataset per arm "
                   "(with splits_final.json) into DIR and print the nnU-Net commands; then run 'evaluate collect DIR'")
    d.add_argument("--dataset-id", type=int, default=601, help="--nnunet: id of the first arm's dataset (default 601)")
    d.add_argument("--folds", type=int, default=5, help="--nnunet: cross-validation folds in splits_final.json")
    _set_options(d)
    d.add_argument("--steps", type=int, default=300, help="training steps per arm and seed (default 300)")
    d.add_argument("--seeds", default="0,1,2", help="training seeds (default 0,1,2)")
    d.add_argument("--ratios", default="0.5,1", help="synthetic lesions per real lesion (default 0.5,1: +50 %%, +100 %%)")
    d.add_argument("--real-fractions", default="", help="extra arms with fractions of the real lesions, e.g. 0.125,0.25,0.5")
    d.add_argument("--no-synthetic-only", action="store_true", help="skip the synthetic-only arms")
    d.add_argument("--batch-size", type=int, default=4)
    d.add_argument("--features", default="8,8,16,32,64,8", help="BasicUNet features (6 numbers)")
    d.add_argument("--learning-rate", type=float, default=2e-3)
    d.add_argument("--bootstrap", type=int, default=1000)
    d.add_argument("--test-crop-mm", type=float, default=None,
                   help="edge of the test crops (default 1.5x --crop-mm rounded up to 16 voxels)")
    d.set_defaults(func=run_downstream)

    m = sub.add_parser("compare", help="paired gains of downstream arms over a baseline arm, across one or more "
                       "reports on the same test set (same seeds and test cases; an arm run the same way with "
                       "other seeds in another report has its seeds pooled)")
    m.add_argument("reports", nargs="+", help="downstream report folders (or their report.json)")
    m.add_argument("--baseline", default="real", help="arm to compare with (default real; a repeated name from "
                   "another report with other outcomes that cannot be pooled is NAME@FOLDER)")
    m.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs")
    m.set_defaults(func=run_compare)

    k = sub.add_parser("collect", help="score nnU-Net's predictions of the arms written by downstream --nnunet")
    k.add_argument("folder", help="the --nnunet folder (holds evaluation_plan.json and predictions/<arm>/<run>/)")
    k.add_argument("--out", default=None, help="report folder (default FOLDER/report)")
    k.add_argument("--bootstrap", type=int, default=1000)
    k.set_defaults(func=run_collect)

    s = sub.add_parser("reader-study", help="write a blinded, balanced, shuffled real-vs-synthetic case set")
    s.add_argument("real")
    s.add_argument("synthetic")
    s.add_argument("--out", required=True, help="study folder for the readers (new or empty)")
    s.add_argument("--n", type=int, default=100, help="number of cases, half of each (default 100)")
    s.add_argument("--key", default=None, help="where the key goes (default OUT.key.json beside the folder)")
    s.add_argument("--window", default=None, help="display window low,high in native units (default: CT lung window)")
    _set_options(s, crop_default=48.0)
    s.set_defaults(func=run_reader_study)

    o = sub.add_parser("read", help="answer a reader study in napari (keys R/S then 1-5)")
    o.add_argument("study", help="study folder")
    o.add_argument("--reader", required=True, help="your name (answers go to STUDY/answers/NAME.csv)")
    o.add_argument("--no-block", action="store_true", help="build the viewer and return (for scripts and tests)")
    o.set_defaults(func=run_read)

    c = sub.add_parser("reader-study-score", help="accuracy, sensitivity, specificity, AUC with CIs per reader and pooled")
    c.add_argument("study", help="study folder")
    c.add_argument("--key", default=None, help="the key (default STUDY.key.json beside the folder)")
    c.add_argument("--out", default=None, help="report folder (default STUDY.score beside the folder)")
    c.add_argument("--bootstrap", type=int, default=1000)
    c.set_defaults(func=run_reader_score)


def run_realism(args) -> int:
    from ..evaluate.realism import realism_report

    result = realism_report(
        args.real, args.synthetic, args.out, crop_mm=args.crop_mm, spacing_mm=args.spacing_mm, folds=args.folds,
        steps=args.steps, batch_size=args.batch_size, seed=args.seed, n_boot=args.bootstrap,
        frd_backend=args.frd_backend, control=not args.no_control, cnn=not args.no_cnn, limit=args.limit,
        device=args.device, progress=ConsoleProgress(),
    )
    ci = result["auc_ci"]
    control = result["control_auc"]
    print(f"realism AUC {result['auc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] ({result['auc_method']}), "
          f"features AUC {result['feature_auc']:.3f}, control AUC "
          f"{'n/a' if control is None else f'{control:.3f}'}, FRD {result['frd']:.3f} ({result['frd_backend']}); "
          f"{result['n_real']} real, {result['n_synthetic']} synthetic")
    print(f"report: {args.out}/report.md")
    return 0


def _ints(text: str, name: str) -> list[int]:
    values = parse_floats(text, name)
    if any(v != int(v) for v in values):
        raise SynthsegError(f"{name} takes whole numbers, got {text!r}")
    return [int(v) for v in values]


def _synthetic_sets(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, item in enumerate(items):
        name, sep, path = item.partition("=")
        if not sep:
            name, path = ("synthetic" if len(items) == 1 else f"synthetic{i + 1}"), item
        if name in out:
            raise SynthsegError(f"two synthetic sets are called {name!r}")
        out[name] = path
    return out


def run_downstream(args) -> int:
    from ..evaluate.downstream import downstream_report

    if args.nnunet:
        return _write_nnunet(args)
    if not args.out:
        raise SynthsegError("give --out REPORT_DIR (or --nnunet DIR to train with nnU-Net instead)")
    features = _ints(args.features, "--features")
    if len(features) != 6:
        raise SynthsegError(f"--features takes 6 numbers (BasicUNet), got {len(features)}")
    result = downstream_report(
        args.real, _synthetic_sets(args.synthetic) or None, args.test, args.out, steps=args.steps,
        seeds=_ints(args.seeds, "--seeds"), ratios=parse_floats(args.ratios, "--ratios") if args.ratios else (),
        real_fractions=parse_floats(args.real_fractions, "--real-fractions") if args.real_fractions else (),
        synthetic_only=not args.no_synthetic_only, crop_mm=args.crop_mm, spacing_mm=args.spacing_mm,
        batch_size=args.batch_size, features=features, learning_rate=args.learning_rate, n_boot=args.bootstrap,
        test_crop_mm=args.test_crop_mm, limit=args.limit, device=args.device, progress=ConsoleProgress(),
    )
    for arm in result["arms"]:
        ci = arm["dice_ci"]
        print(f"{arm['name']}: Dice {arm['dice']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}], sensitivity "
              f"{arm['sensitivity']:.3f}, FROC {arm['froc']:.3f} ({arm['n_real'][0]} real + {arm['n_synthetic'][0]} synthetic)")
    for c in result.get("paired", []):
        lo, hi = c["delta_dice_ci"]
        slo, shi = c["delta_sensitivity_small_ci"]
        print(f"{c['arm']} - {c['baseline']} (paired): Dice {c['delta_dice']:+.3f} [{lo:+.3f}, {hi:+.3f}], "
              f"sensitivity < 10 mm {c['delta_sensitivity_small']:+.3f} [{slo:+.3f}, {shi:+.3f}] ({c['n_small']} lesions)")
    print(f"report: {args.out}/report.md")
    return 0


def run_compare(args) -> int:
    from ..evaluate.downstream import compare_arms, load_report_arms

    arms = load_report_arms(args.reports)
    rows = compare_arms(arms, args.baseline, args.bootstrap)
    if not rows:
        raise SynthsegError(f"no other arm shares seeds with {args.baseline!r}")
    for arm in arms:
        if len(arm.get("reports", [])) > 1:
            print(f"{arm['name']}: seeds {', '.join(map(str, arm['outcomes']['seeds']))} pooled from "
                  f"{', '.join(arm['reports'])} (same settings and data)")
    print(f"paired gains over {args.baseline} (same seeds, same test cases; 95 % bootstrap CIs)")
    for c in rows:
        d, s_, sm = c["delta_dice_ci"], c["delta_sensitivity_ci"], c["delta_sensitivity_small_ci"]
        print(f"{c['arm']}: Dice {c['delta_dice']:+.3f} [{d[0]:+.3f}, {d[1]:+.3f}], sensitivity "
              f"{c['delta_sensitivity']:+.3f} [{s_[0]:+.3f}, {s_[1]:+.3f}], sensitivity < 10 mm "
              f"{c['delta_sensitivity_small']:+.3f} [{sm[0]:+.3f}, {sm[1]:+.3f}] ({c['n_seeds']} seeds)")
    return 0


def run_reader_study(args) -> int:
    from ..evaluate.reader_study import make_reader_study

    low_high = parse_floats(args.window, "--window", count=(2,)) if args.window else None
    window = (low_high[0], low_high[1]) if low_high else None
    study = make_reader_study(args.real, args.synthetic, args.out, n=args.n, key_path=args.key, crop_mm=args.crop_mm,
                              spacing_mm=args.spacing_mm, window=window, seed=args.seed)
    print(f"wrote {study['n']} blinded cases to {args.out}; key: {study['key_path']} (keep it away from readers)")
    return 0


def run_read(args) -> int:
    import os
    import sys

    from ..evaluate.reader_study import ReaderSession

    ReaderSession(args.study, args.reader)  # fail now with one line, not inside Qt
    try:
        import napari
    except ImportError:
        raise SynthsegError("napari is not installed: pip install 'napari-synthseg[gui]'") from None
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") and os.name == "posix":
        raise SynthsegError("no display found: run on a desktop, or under xvfb-run -a for a virtual one")
    from ..widgets.reader_study_widget import ReaderStudyWidget

    viewer = napari.Viewer(title="napari-synthseg reader study")
    widget = ReaderStudyWidget(viewer, study=args.study, reader=args.reader)
    viewer.window.add_dock_widget(widget, name="Reader study", area="right")
    if args.no_block:
        print(f"{args.reader}: {widget.session.done if widget.session else 0} answered", file=sys.stderr)
        viewer.close()
        return 0
    napari.run()
    return 0


def run_reader_score(args) -> int:
    from ..evaluate.reader_study import score_reader_study

    result = score_reader_study(args.study, args.key, args.out, n_boot=args.bootstrap)
    for name, m in list(result["readers"].items()) + [("pooled", result["pooled"])]:
        print(f"{name}: {m['n']} answered, accuracy {m['accuracy']:.3f} [{m['accuracy_ci'][0]:.3f}, "
              f"{m['accuracy_ci'][1]:.3f}], sensitivity {m['sensitivity']:.3f}, specificity {m['specificity']:.3f}, "
              f"AUC {m['auc']:.3f}")
    print(f"report: {result['out']}/report.md")
    return 0


def _write_nnunet(args) -> int:
    from ..evaluate.nnunet import write_nnunet_arms

    plan = write_nnunet_arms(
        args.real, _synthetic_sets(args.synthetic) or None, args.test, args.nnunet,
        ratios=parse_floats(args.ratios, "--ratios") if args.ratios else (),
        real_fractions=parse_floats(args.real_fractions, "--real-fractions") if args.real_fractions else (),
        synthetic_only=not args.no_synthetic_only, crop_mm=args.crop_mm, spacing_mm=args.spacing_mm,
        dataset_id=args.dataset_id, folds=args.folds, seed=_ints(args.seeds, "--seeds")[0], limit=args.limit,
    )
    for arm in plan["arms"]:
        print(f"{arm['dataset']}: {arm['n_real']} real + {arm['n_synthetic']} synthetic, {arm['folds']} folds")
    print("run nnU-Net (GPU), then collect:")
    for command in plan["commands"]:
        print(f"  {command}")
    return 0


def run_collect(args) -> int:
    from ..evaluate.nnunet import collect_nnunet

    result = collect_nnunet(args.folder, args.out, n_boot=args.bootstrap)
    for arm in result["arms"]:
        print(f"{arm['name']}: Dice {arm['dice']:.3f} [{arm['dice_ci'][0]:.3f}, {arm['dice_ci'][1]:.3f}], "
              f"sensitivity {arm['sensitivity']:.3f}, FROC {arm['froc']:.3f} ({len(arm['per_seed'])} runs)")
    for item in result["missing_predictions"]:
        print(f"missing predictions: {item}")
    return 0
