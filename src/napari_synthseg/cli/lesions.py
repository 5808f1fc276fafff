"""Lesion commands: ``place``, ``remove``, ``extract``, ``render``, ``constraint``.

They call the same core functions as the widgets (``lesions.place``, ``render``, ``fill``,
``constraints``) and read and write scenes through the one scene model.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import SynthsegError
from ..io import MedicalImage, write_image
from ..scene import Scene
from ..utils.atomic import atomic_directory
from ..workflow.spec import DEFAULT_PLACE, BlendMode, LesionSpec, PlaceSettings, blend_mode
from ._common import add_read_options, check_output_file, parse_floats, read_from_args

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
    p.add_argument("--attachments", default=DEFAULT_PLACE.attachments.value, choices=["remove", "keep"],
                   help="real nodules: remove the vessels attached to them in the donor patch (default), or keep "
                        "them as stubs faded over 5 mm (labelled with the nodule)")
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
    p.add_argument("--method", default="biharmonic",
                   help="fill method: biharmonic, telea, learned (inpainting model), generated (the lesion "
                        "generator's healthy lung, CT only), or a registered plug-in")
    p.add_argument("--seed", type=int, default=0, help="seed of a stochastic fill (generated, learned texture)")
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

    # same shape, and (when both files store geometry) the same spacing, orientation and origin
    return read_mask(path, image)


#: ``remove``/``extract`` fill lesions: a mask over more than this fraction of the image, or
#: more than :data:`MAX_FILL_PIXELS` pixels, is refused (a near-whole-image biharmonic solve
#: took 120 s and 6 GB and is never what the user meant).
MAX_FILL_FRACTION = 0.5
MAX_FILL_PIXELS = 4_000_000


def _check_fill_mask(mask: np.ndarray, name: str) -> None:
    count = int(np.count_nonzero(mask))
    if count == 0:
        raise SynthsegError(f"mask {name} is empty; nothing to fill")
    if count > MAX_FILL_FRACTION * mask.size or count > MAX_FILL_PIXELS:
        raise SynthsegError(
            f"mask {name} covers {count} pixels ({100 * count / mask.size:.0f}% of the image); a lesion "
            f"fill takes at most {MAX_FILL_FRACTION:.0%} of the image and {MAX_FILL_PIXELS:,} pixels"
        )


def cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float result -> the source dtype (rounded and clipped for integers)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (both resolved)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _check_replaceable(out: Path, inputs: list[Path], force: bool) -> None:
    """``--out`` may replace only a previous scene, and never a folder holding an input.

    ``--force`` once meant ``rm -rf --out``: given the parent of the input scene it deleted
    the user's whole folder. Now it replaces a folder only if that folder is a scene (has
    ``scene.json``) and holds none of the inputs; an empty folder is used as it is.
    """
    for src in inputs:
        if _inside(src, out):
            raise SynthsegError(f"--out {out} holds the input {src}; choose a new folder for the scene")
        if src.is_dir() and _inside(out, src):
            raise SynthsegError(f"--out {out} lies inside the input scene {src}; choose a folder outside it")
    if not out.exists():
        return
    if not out.is_dir():
        raise SynthsegError(f"--out {out} exists and is not a folder")
    if (out / "scene.json").exists():
        if not force:
            raise SynthsegError(f"{out} already holds a scene; open it, or pass --force to replace it")
        return
    if any(out.iterdir()):
        raise SynthsegError(
            f"--out {out} is a folder that is not a scene and is not empty; --force replaces only a "
            "previous scene, so choose a new or empty folder"
        )


@contextlib.contextmanager
def _open_or_create_scene(args) -> Iterator[Scene]:
    """The scene ``place`` works on; a new scene folder appears only if the command succeeds.

    Into an image (or a copy of a scene at another ``--out``) the scene is built in a hidden
    staging folder beside ``--out`` and renamed into place at the end, so a failed command
    leaves nothing (and its re-run needs no ``--force``). A scene edited in place is changed
    in one undoable step by the caller.
    """
    src = Path(args.input)
    if (src / "scene.json").exists():
        if not args.out or Path(args.out).resolve() == src.resolve():
            yield Scene.open(src)
            return
        out = Path(args.out)
        _check_replaceable(out, [src], args.force)
        with atomic_directory(out, overwrite=True, create_parents=True) as staging:
            # never modify the input scene when --out names another
            shutil.copytree(src, staging, dirs_exist_ok=True)
            yield Scene.open(staging)
        return
    if not args.out:
        raise SynthsegError("give --out SCENE_DIR: placing into an image creates a new scene folder")
    out = Path(args.out)
    _check_replaceable(out, [src], args.force)
    image = read_from_args(args.input, args)
    with atomic_directory(out, overwrite=True, create_parents=True) as staging:
        yield Scene.create(image, staging, overwrite=True)


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
        lobulation=args.lobulation, spiculation=args.spiculation, attachments=args.attachments,
    )
    at = parse_floats(args.at, "--at", count=(2, 3)) if args.at else None
    at_mm = parse_floats(args.at_mm, "--at-mm", count=(2, 3)) if args.at_mm else None
    with _open_or_create_scene(args) as scene:
        session = EditSession(scene, actor="cli")
        # Constraint and lesion are one step: a failed placement leaves the scene as it was.
        with scene.batch("place lesion"):
            session.apply_constraint_choice(args.constraint)
            record = session.place(spec, settings, at_xyz=at, at_mm=at_mm)
        lesion_ids = scene.lesion_ids
    folder = args.out or args.input
    print(f"placed {record.id} (label {record.label}, {record.size_mm:.1f} mm, {args.blend}) in {folder}")
    print(f"scene lesions: {', '.join(lesion_ids)}")
    return 0


def run_remove(args) -> int:
    from ..workflow.fillers import filler

    check_output_file(args.out, args.force)
    image = read_from_args(args.image, args)
    mask = _mask_for(args.mask, image)
    _check_fill_mask(mask, Path(args.mask).name)
    from ._provenance import clip_to_source, model_reference, write_sidecar

    filled = filler(args.method).fill(image.array, mask, spacing=image.scale, seed=args.seed)
    filled, clipping = clip_to_source(filled, image.array)
    out = write_image(cast_like(filled, image.array.dtype), args.out, like=image, overwrite=args.force)
    write_sidecar(out, command="synthseg remove", method=args.method, image=image, mask_path=args.mask,
                  model=model_reference(args.method, "healthy"), clipping=clipping,
                  extra={"filled_pixels": int(mask.sum()), "seed": args.seed})
    note = f"; {clipping['clipped_below'] + clipping['clipped_above']} values clipped to the source's range" if (
        clipping["clipped_below"] or clipping["clipped_above"]) else ""
    print(f"wrote {out} ({int(mask.sum())} pixels filled with {args.method}{note}; provenance beside it)")
    return 0


def run_extract(args) -> int:
    from ..workflow.edit import extract_to_library

    image = read_from_args(args.image, args)
    mask = _mask_for(args.mask, image)
    _check_fill_mask(mask, Path(args.mask).name)
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
    from ._provenance import clip_to_source, write_sidecar

    # a lesion may push values past what the source's scanner produces (additive contrast 8 on
    # a 12-bit image): clip to the source's own range and record it
    clipped, clipping = clip_to_source(result.image, result.source.array)
    image = clipped if args.float else cast_like(clipped, result.source.array.dtype)
    labels = result.labels.astype(np.uint16 if result.labels.max() > 255 else np.uint8)
    img_path = write_image(image, out / f"image{ext}", like=result.source, overwrite=args.force)
    lab_path = write_image(labels, out / f"labels{ext}", like=result.source, overwrite=args.force)
    write_sidecar(img_path, command="synthseg render", method="render_scene", image=result.source, mask_path=None,
                  clipping=clipping, extra={"scene": str(Path(args.scene).resolve()), "scene_revision": scene.revision,
                                            "lesions": [r.id for r in scene.lesions]})
    n_clipped = clipping["clipped_below"] + clipping["clipped_above"]
    note = f"; {n_clipped} values clipped to the source's range" if n_clipped else ""
    print(f"wrote {img_path} and {lab_path} ({len(scene.lesions)} lesion records{note})")
    return 0


def run_constraint(args) -> int:
    from ..constraints import organ_constraint

    check_output_file(args.out, args.force)
    image = read_from_args(args.image, args)
    mask = organ_constraint(image.array, image.scale, image.modality)
    out = write_image(mask.astype(np.uint8), args.out, like=image, overwrite=args.force)
    print(f"wrote {out} ({image.modality} organ mask, {int(mask.sum())} pixels)")
    return 0
