"""``synthseg generate``: a shortcut that builds a batch recipe from options and runs it.

Everything runs through :mod:`napari_synthseg.batch` (``synthseg batch`` with a recipe file is the
full interface); ``--print-recipe`` shows the recipe these options make.
"""

from __future__ import annotations

import sys

import yaml

from ._common import parse_floats


def _range(text: str, name: str, cast=float) -> list:
    values = parse_floats(text, name, count=(1, 2)) if "," in text else parse_floats(text.replace("-", ",", 1), name, count=(1, 2))
    if len(values) == 1:
        values = values * 2
    return [cast(v) for v in values]


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="batch shortcut: random lesions into many images, one scene each (dask)")
    p.add_argument("images", nargs="+", help="image files, folders of images, DICOM folders or globs")
    p.add_argument("--out", required=True, help="output folder (scenes/, logs/, summary.json)")
    p.add_argument("--per-image", default="1-3", help="lesions per scene, N or MIN-MAX")
    p.add_argument("--scenes-per-image", type=int, default=1, help="scenes built on each image")
    p.add_argument("--size-mm", default="6-20", help="lesion diameter range in mm")
    p.add_argument("--lesion", default=None,
                   help="'procedural', a lesion library folder, an index.csv of patch+mask pairs, or a folder of CT "
                        "patches (default: the library named by $SYNTHSEG_LESION_LIBRARY if there is one, else procedural)")
    p.add_argument("--kinds", default="solid,part-solid,ground-glass", help="procedural kinds to draw from")
    p.add_argument("--blend", default="alpha,poisson", help="blend modes to draw from")
    p.add_argument("--contrast", default="0.8-1.2", help="contrast factor range, or 'node21' (CXR)")
    p.add_argument("--constraint", default="auto", choices=["auto", "none"])
    p.add_argument("--spacing", help="pixel spacing in mm for files that store none (a stored spacing is kept)")
    p.add_argument("--modality", choices=["CT", "CXR", "MR"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scheduler", default=None, help="local, local:N, tcp://HOST:PORT or synchronous (default local)")
    p.add_argument("--workers", type=int, default=None, help="LocalCluster workers (same as --scheduler local:N)")
    p.add_argument("--print-recipe", action="store_true", help="print the recipe these options make and stop")
    p.set_defaults(func=run)


def build_recipe_data(args) -> dict:
    """The recipe mapping these options describe (paths absolute: it is not saved beside them)."""
    from pathlib import Path

    source: dict = {"diameter_mm": _range(args.size_mm, "--size-mm"),
                    "blend": [b.strip() for b in args.blend.split(",") if b.strip()],
                    "contrast": "node21" if args.contrast == "node21" else _range(args.contrast, "--contrast")}
    from ..lesions.library import default_lesion_source

    lesion = args.lesion or default_lesion_source()
    if lesion == "procedural":
        source.update(type="procedural", kinds=[k.strip() for k in args.kinds.split(",") if k.strip()])
    else:
        source.update(type="library", path=str(Path(lesion).resolve()), split="all")
    spacing = parse_floats(args.spacing, "--spacing") if args.spacing else None
    return {
        "inputs": [str(Path(i).resolve()) if Path(i).exists() else i for i in args.images],
        "seed": args.seed,
        "out": str(Path(args.out).resolve()),
        "defaults": {"spacing_mm": list(spacing) if spacing else None, "modality": args.modality},
        "scenes_per_image": args.scenes_per_image,
        "lesions": {"count": _range(args.per_image, "--per-image", int), "sources": [source]},
        "constraint": {"organ": args.constraint},
    }


#: Lesions per scene this shortcut accepts: far above any real design, far below "hangs".
MAX_LESIONS_PER_SCENE = 100


def run(args) -> int:
    from ..batch import parse_recipe, run_recipe
    from ..errors import SynthsegError
    from .batch import exit_code, print_summary, show_progress

    data = build_recipe_data(args)
    low, high = data["lesions"]["count"]
    if not 0 <= low <= high <= MAX_LESIONS_PER_SCENE:
        raise SynthsegError(f"--per-image takes N or MIN-MAX within 0..{MAX_LESIONS_PER_SCENE}, got {args.per_image!r}")
    if args.print_recipe:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
        return 0
    recipe = parse_recipe(data, ".", where="generate options")
    scheduler = args.scheduler or (f"local:{args.workers}" if args.workers else "local")
    with show_progress():
        summary = run_recipe(recipe, scheduler)
    print_summary(summary)
    return exit_code(summary)
