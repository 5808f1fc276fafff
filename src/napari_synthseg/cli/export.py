"""``synthseg export SCENES_DIR --format nnunet|coco|csv|nifti --out DIR``."""

from __future__ import annotations

from ..export import FORMATS
from ..utils.progress import ConsoleProgress


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="write the accepted lesions as a training set (nnU-Net v2, COCO, CSV boxes, NIfTI)",
        description="Only accepted lesions are rendered and labelled. The dataset appears at once when "
        "complete; an interrupted export resumes when run again with the same options.",
    )
    p.add_argument("scenes", help="folder of scene folders (or one scene folder)")
    p.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
    p.add_argument("--out", required=True, help="nnunet: the nnUNet_raw folder; other formats: the dataset folder")
    p.add_argument("--force", action="store_true", help="replace an existing dataset (after the new one is complete)")
    p.add_argument("--name", default="Synthseg", help="dataset name (nnU-Net: DatasetXXX_<name>)")
    p.add_argument("--dataset-id", type=int, default=501, help="nnU-Net dataset number 1..999 (default 501)")
    p.add_argument("--split", default=None, help="train,val,test fractions of PATIENTS, e.g. 0.8,0.1,0.1 (default all train)")
    p.add_argument("--real-fraction", type=float, default=0.0,
                   help="fraction of the real training images to include unmodified (0..1, default 0)")
    p.add_argument("--synthetic-ratio", type=float, default=None,
                   help="synthetic training cases per real training case (0.5 = +50%%); default: all accepted")
    p.add_argument("--synthetic-in", choices=["train", "all"], default="train",
                   help="splits that get synthetic cases (default train: val/test stay real)")
    p.add_argument("--seed", type=int, default=0, help="seed of the patient split and subsampling")
    p.add_argument("--classes", choices=["binary", "kind"], default="binary",
                   help="one 'lesion' class, or one class per lesion kind")
    p.add_argument("--file-ending", default=None, help=".png (2D default) | .nii.gz (3D default) | .nii | .mha | .nrrd")
    p.add_argument("--png-compression", type=int, default=None, help="zlib level 0..9 (lossless at every level)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count)")
    p.add_argument("--nnunet-preprocessed", metavar="DIR", default=None,
                   help="nnunet with --split: the nnUNet_preprocessed folder that gets DatasetXXX_Name/splits_final.json, "
                   "where nnU-Net reads it (default: $nnUNet_preprocessed, else a nnUNet_preprocessed folder beside --out)")
    p.add_argument("--renderer", help="scene renderer as module:function (default: the built-in one)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..export import export_dataset
    from ..export.pixels import DEFAULT_PNG_COMPRESSION

    result = export_dataset(
        args.scenes, args.out, fmt=args.fmt, name=args.name, dataset_id=args.dataset_id, force=args.force,
        split=args.split, real_fraction=args.real_fraction, synthetic_ratio=args.synthetic_ratio,
        synthetic_in=args.synthetic_in, seed=args.seed, classes=args.classes, file_ending=args.file_ending,
        png_compression=DEFAULT_PNG_COMPRESSION if args.png_compression is None else args.png_compression,
        renderer=args.renderer, workers=args.workers, nnunet_preprocessed=args.nnunet_preprocessed,
        progress=ConsoleProgress(),
    )
    counts = "; ".join(
        f"{split}: " + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        for split, kinds in result.plan.counts().items()
    )
    resumed = f" ({result.resumed} resumed from an interrupted run)" if result.resumed else ""
    print(f"wrote {result.path}: {counts}{resumed}")
    if result.splits_final:
        print(f"wrote {result.splits_final} (nnU-Net's patient-level fold 0: train with fold 0)")
    excluded = result.plan.excluded
    if excluded["lesions_not_accepted"]:
        print(f"left out {excluded['lesions_not_accepted']} lesions that are not accepted")
    return 0
