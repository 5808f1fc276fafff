"""Lesion commands: ``place``, ``remove``, ``extract``, ``render``, ``constraint``.

They call the same core functions as the widgets (``lesions.place``, ``render``, ``fill``,
``constraints``) and read and write scenes through the one scene model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..errors import SynthsegError
from ..io import MedicalImage, read_image, write_image
from ..scene import Scene
from ..workflow.spec import DEFAULT_PLACE, BlendMode, LesionSpec, PlaceSettings, blend_mode
from ._common import add_read_options, parse_floats, read_from_args

RENDER_FORMATS = (".nii.gz", ".nii", ".mha", ".nrrd", ".png")


def register(subparsers) -> None:
    p = subparsers.add_parser("place", help="place a lesion into an image or scene (saved as a scene folder)")
    p.add_argument("input", help="image file, DICOM folder or scene folder")
    p.add_argument(
        "--lesion", required=True,
        help="library item (<library>/<id>.json), CT patch file (mask beside it as *_seg.*), "
        "procedural:<solid|part-solid|ground-glass>, or generated[:solid|part-solid|ground-glass][@MODEL] "
        "(the learned generator, made in the target's own context; radiographs: projected)",
    )
    p.add_argument("--lesion-mask", help="mask of a CT patch file, if not beside it as *_seg.*")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--at", help="centre as a pixel/voxel index x,y[,z]")
    where.add_argument("--at-mm", help="centre as a physical (LPS) point x,y[,z] in mm")
    p.add_argument("--size-mm", type=float,
                   help=f"diameter to render at (default: the lesion's own; procedural {DEFAULT_PLACE.size_mm:g} mm)")
    p.add_argument("--rotation", default="0", help="degrees: one angle (in-plane), or z,y,x angles for 3D")
    p.add_argument("--blend", default=DEFAULT_PLACE.blend.value, choices=[m.value for m in BlendMode])
    p.add_argument("--contrast", default=str(DEFAULT_PLACE.contrast),
                   help="number multiplying the lesion's contrast, or 'node21' (NODE21 contrast matching, CXR)")
    p.add_argument("--feather-mm", type=float, default=DEFAULT_PLACE.feather_mm, help="alpha ramp across the border")
    p.add_argument("--seed", type=int, default=DEFAULT_PLACE.seed, help="seed for procedural lesions")
    p.add_argument("--lobulation", type=float, default=DEFAULT_PLACE.lobulation, help="procedural lesions: 0..1")
    p.add_argument("--spiculation", type=float, default=DEFAULT_PLACE.spiculation, help="procedural lesions: 0..1")
    p.add_argument(
        "--constraint", default="scene",
        help="where lesions may go: 'scene' (the scene's own, if any), 'auto' (organ mask), "
        "'none', or a mask file",
    )
    p.add_argument("--out", help="scene folder to write (default: the input scene itself)")
    p.add_argument("--force", action="store_true", help="replace an existing scene at --out")
    add_read_options(p)
    p.set_defaults(func=run_place)

    p = subparsers.add_parser("remove", help="replace a masked lesion by healthy tissue (writes a new image)")
    p.add_argument("image")
    p.add_argument("--mask", required=True, help="mask file (non-zero = lesion) on the image's grid")
    p.add_argument("--method", default="biharmonic", help="fill method: biharmonic, telea, or a learned model name")
    p.add_argument("--out", required=True, help="output image file")
    p.add_argument("--force", action="store_true")
    add_read_options(p)
    p.set_defaults(func=run_remove)

    p = subparsers.add_parser("extract", help="store a real lesion (original minus healthy fill) in a lesion library")
    p.add_argument("image")
    p.add_argument("--mask", required=True, help="mask file (non-zero = lesion)")
    p.add_argument("--library", required=True, help="lesion library folder (created if missing)")
    p.add_argument("--method", default="biharmonic")
    p.add_argument("--margin-mm", type=float, default=3.0)
    p.add_argument("--kind", default="extracted")
    add_read_options(p)
    p.set_defaults(func=run_extract)

    p = subparsers.add_parser("render", help="write a scene's image and label map")
    p.add_argument("scene")
    p.add_argument("out", help="output folder: gets image<ext> and labels<ext>")
    p.add_argument("--format", default=None, choices=RENDER_FORMATS, help="default .nii.gz (3D) or .mha (2D)")
    p.add_argument("--float", action="store_true", help="keep float32 values (default: the source's dtype)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=run_render)

    p = subparsers.add_parser("constraint", help="organ mask (CT lungs, CXR lung fields, brain) of an image")
    p.add_argument("image")
    p.add_argument("--out", required=True, help="mask file to write")
    p.add_argument("--force", action="store_true")
    add_read_options(p)
    p.set_defaults(func=run_constraint)


# ---- helpers --------------------------------------------------------------------------------


def _mask_for(path: str, image: MedicalImage) -> np.ndarray:
    from ..workflow.edit import read_mask

    return read_mask(path, image)


def cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float result -> the source dtype (rounded and clipped for integers)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _open_or_create_scene(args) -> Scene:
    src = Path(args.input)
    if (src / "scene.json").exists():
        if args.out and Path(args.out).resolve() != src.resolve():
            out = Path(args.out)
            if out.exists():
                if not args.force:
                    raise SynthsegError(f"{out} already exists; pass --force to replace it")
                shutil.rmtree(out)
            shutil.copytree(src, out)  # never modify the input scene when --out names another
            return Scene.open(out)
        return Scene.open(src)
    if not args.out:
        raise SynthsegError("give --out SCENE_DIR: placing into an image creates a new scene folder")
    image = read_from_args(args.input, args)
    return Scene.create(image, args.out, overwrite=args.force)


def _contrast_arg(text: str) -> float | str:
    if text == "node21":
        return text
    try:
        return float(text)
    except ValueError:
        raise SynthsegError(f"--contrast takes a number or 'node21', got {text!r}") from None


# ---- commands -------------------------------------------------------------------------------


def run_place(args) -> int:
    from ..workflow.edit import EditSession

    spec = LesionSpec.parse(args.lesion, args.lesion_mask)  # a typo fails before any scene is touched
    rotation = parse_floats(args.rotation, "--rotation", count=(1, 3))
    size = args.size_mm
    if size is None and spec.source.value == "procedural":
        size = DEFAULT_PLACE.size_mm
    settings = PlaceSettings(
        size_mm=size, rotation_deg=rotation[0] if len(rotation) == 1 else rotation, blend=blend_mode(args.blend),
        contrast=_contrast_arg(args.contrast), feather_mm=args.feather_mm, seed=args.seed,
        lobulation=args.lobulation, spiculation=args.spiculation,
    )
    at = parse_floats(args.at, "--at") if args.at else None
    at_mm = parse_floats(args.at_mm, "--at-mm") if args.at_mm else None
    session = EditSession(_open_or_create_scene(args), actor="cli")
    session.apply_constraint_choice(args.constraint)
    record = session.place(spec, settings, at_xyz=at, at_mm=at_mm)
    scene = session.scene
    print(f"placed {record.id} (label {record.label}, {record.size_mm:.1f} mm, {args.blend}) in {scene.folder}")
    print(f"scene lesions: {', '.join(scene.lesion_ids)}")
    return 0


def run_remove(args) -> int:
    from ..workflow.fillers import filler

    image = read_from_args(args.image, args)
    mask = _mask_for(args.mask, image)
    filled = filler(args.method).fill(image.array, mask, spacing=image.scale)
    out = write_image(cast_like(filled, image.array.dtype), args.out, like=image, overwrite=args.force)
    print(f"wrote {out} ({int(mask.sum())} pixels filled with {args.method})")
    return 0


def run_extract(args) -> int:
    from ..workflow.edit import extract_to_library

    image = read_from_args(args.image, args)
    mask = _mask_for(args.mask, image)
    lesion_id = extract_to_library(image, mask, args.library, method=args.method, margin_mm=args.margin_mm,
                                   kind=args.kind)
    print(f"stored {lesion_id} in {args.library}")
    return 0


def run_render(args) -> int:
    from ..render import render_scene

    scene = Scene.open(args.scene)
    result = render_scene(scene)
    ext = args.format or (".nii.gz" if result.image.ndim == 3 else ".mha")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image = result.image if args.float else cast_like(result.image, result.source.array.dtype)
    labels = result.labels.astype(np.uint16 if result.labels.max() > 255 else np.uint8)
    img_path = write_image(image, out / f"image{ext}", like=result.source, overwrite=args.force)
    lab_path = write_image(labels, out / f"labels{ext}", like=result.source, overwrite=args.force)
    print(f"wrote {img_path} and {lab_path} ({len(scene.lesions)} lesion records)")
    return 0


def run_constraint(args) -> int:
    from ..constraints import organ_constraint

    image = read_from_args(args.image, args)
    mask = organ_constraint(image.array, image.scale, image.modality)
    out = write_image(mask.astype(np.uint8), args.out, like=image, overwrite=args.force)
    print(f"wrote {out} ({image.modality} organ mask, {int(mask.sum())} pixels)")
    return 0
