"""``synthseg generate``: a scene per image with random lesions inside the organ constraint."""

from __future__ import annotations

import glob
from pathlib import Path

from ..batch import BatchConfig, generate_batch, list_images
from ..errors import SynthsegError
from ..utils.progress import ConsoleProgress
from ._common import parse_floats


def _range(text: str, name: str, cast=float) -> tuple:
    values = parse_floats(text, name, count=(1, 2)) if "," in text else parse_floats(text.replace("-", ",", 1), name, count=(1, 2))
    if len(values) == 1:
        values = values * 2
    return tuple(cast(v) for v in values)


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="batch: random lesions into many images, one scene each (Dask)")
    p.add_argument("images", nargs="+", help="image files, folders of images, DICOM folders or globs")
    p.add_argument("--out", required=True, help="folder for the scenes (one sub-folder per image) and batch.json")
    p.add_argument("--per-image", default="1-3", help="lesions per image, N or MIN-MAX")
    p.add_argument("--size-mm", default="6-20", help="lesion diameter range in mm")
    p.add_argument("--lesion", default="procedural", help="'procedural', a lesion library folder, or a folder of CT patches")
    p.add_argument("--kinds", default="solid,part-solid,ground-glass", help="procedural kinds to draw from")
    p.add_argument("--blend", default="alpha,poisson", help="blend modes to draw from")
    p.add_argument("--contrast", default="0.8-1.2", help="contrast factor range, or 'node21' (CXR)")
    p.add_argument("--constraint", default="auto", choices=["auto", "none"])
    p.add_argument("--spacing", help="pixel spacing in mm for files that store none (x,y[,z] or one value)")
    p.add_argument("--modality", choices=["CT", "CXR", "MR"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="parallel workers (default: all cores)")
    p.add_argument("--scheduler", default="processes", choices=["processes", "threads", "synchronous"])
    p.set_defaults(func=run)


#: Lesions per image the batch accepts: far above any real design, far below "hangs".
MAX_LESIONS_PER_IMAGE = 100
_KINDS = ("solid", "part-solid", "ground-glass")
_BLENDS = ("alpha", "additive", "poisson")


def _expand_inputs(inputs: list[str]) -> list[str]:
    """Globs expanded here (absolute ones too: ``Path.glob`` refuses them), each must match."""
    expanded = []
    for item in inputs:
        if any(ch in item for ch in "*?[") and not Path(item).exists():
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise SynthsegError(f"no files match {item}")
            expanded.extend(matches)
        else:
            expanded.append(item)
    return expanded


def _validated_ranges(args) -> None:
    """Every config option checked before any image is read or any folder is made."""
    per_image = _range(args.per_image, "--per-image", int)
    if not 0 <= per_image[0] <= per_image[1] <= MAX_LESIONS_PER_IMAGE:
        raise SynthsegError(f"--per-image takes N or MIN-MAX within 0..{MAX_LESIONS_PER_IMAGE}, got {args.per_image!r}")
    size_mm = _range(args.size_mm, "--size-mm")
    if not 0 < size_mm[0] <= size_mm[1] <= 1000:
        raise SynthsegError(f"--size-mm takes a diameter or MIN-MAX in (0, 1000] mm, got {args.size_mm!r}")
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if not kinds or any(k not in _KINDS for k in kinds):
        raise SynthsegError(f"--kinds takes a comma list of {', '.join(_KINDS)}, got {args.kinds!r}")
    blends = tuple(b.strip() for b in args.blend.split(",") if b.strip())
    if not blends or any(b not in _BLENDS for b in blends):
        raise SynthsegError(f"--blend takes a comma list of {', '.join(_BLENDS)}, got {args.blend!r}")
    node21 = args.contrast == "node21"
    contrast = (1.0, 1.0) if node21 else _range(args.contrast, "--contrast")
    if not 0 < contrast[0] <= contrast[1] <= 100:
        raise SynthsegError(f"--contrast takes a factor or MIN-MAX in (0, 100], or node21, got {args.contrast!r}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SynthsegError(f"--out {out} exists and is not a folder")


def run(args) -> int:
    _validated_ranges(args)
    args.images = _expand_inputs(list(args.images))
    node21 = args.contrast == "node21"
    config = BatchConfig(
        lesions_per_image=_range(args.per_image, "--per-image", int),
        size_mm=_range(args.size_mm, "--size-mm"),
        lesion_source=args.lesion,
        kinds=tuple(k.strip() for k in args.kinds.split(",") if k.strip()),
        blends=tuple(b.strip() for b in args.blend.split(",") if b.strip()),
        contrast=(1.0, 1.0) if node21 else _range(args.contrast, "--contrast"),
        node21_contrast=node21,
        constraint=args.constraint,
        seed=args.seed,
        modality=args.modality,
        spacing=parse_floats(args.spacing, "--spacing") if args.spacing else None,
    )
    summaries = generate_batch(
        list_images(args.images), args.out, config, scheduler=args.scheduler, workers=args.workers,
        progress=ConsoleProgress(),
    )
    placed = sum(len(s.lesions) for s in summaries)
    failed = [s for s in summaries if s.error]
    print(f"{len(summaries) - len(failed)} scenes, {placed} lesions in {args.out} (details: batch.json)")
    for s in failed:
        print(f"failed: {s.image}: {s.error}")
    return 0 if not failed else 1
