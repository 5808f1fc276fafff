"""``synthseg evaluate realism|downstream|collect|reader-study|reader-study-score``.

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
