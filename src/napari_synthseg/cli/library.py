"""``synthseg library``: fill and list a lesion library (CT patches, procedural nodules)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..errors import SynthsegError
from ._common import parse_floats


def register(subparsers) -> None:
    p = subparsers.add_parser("library", help="add CT patches or procedural nodules to a lesion library, list it")
    sub = p.add_subparsers(dest="library_command", metavar="ACTION")
    sub.required = True

    a = sub.add_parser("add", help="add CT lesion patches (mask beside each as *_seg.*)")
    a.add_argument("patches", nargs="+", help="CT patch files")
    a.add_argument("--library", required=True)
    a.add_argument("--project", metavar="SPACING", help="store the CXR projection at this pixel spacing (mm) instead of the 3D patch")
    a.set_defaults(func=run_add)

    g = sub.add_parser("procedural", help="add seeded procedural nodules")
    g.add_argument("--library", required=True)
    g.add_argument("--kind", default="solid", choices=["solid", "part-solid", "ground-glass"])
    g.add_argument("--size-mm", type=float, default=10.0)
    g.add_argument("--n", type=int, default=1, help="how many (seeds seed, seed+1, ...)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--lobulation", type=float, default=0.3)
    g.add_argument("--spiculation", type=float, default=0.0)
    g.add_argument("--project", metavar="SPACING", help="store the CXR projection at this pixel spacing (mm)")
    g.set_defaults(func=run_procedural)

    for name in ("import", "import-lidc"):
        i = sub.add_parser(name, help="import every CT patch + mask pair of an index.csv (e.g. the LIDC nodules) by reference"
                           if name == "import" else "same as 'import' (the LIDC nodule folder's index.csv)")
        i.add_argument("folder", help="folder holding index.csv (ct_file, seg_file, diameter_mm, lidc_series_uid, ...)")
        i.add_argument("--library", required=True)
        i.add_argument("--side", choices=["train", "test"],
                       help="import only this side of the fixed series-level split (io.lesion_index.split_by_group)")
        i.add_argument("--workers", type=int, default=None, help="reader threads (default: CPU count, at most 8)")
        i.set_defaults(func=run_import)

    ls = sub.add_parser("list", help="list the items of a library")
    ls.add_argument("library")
    ls.set_defaults(func=run_list)


@contextlib.contextmanager
def _library(folder: str):
    """The library at ``folder``; a folder this command creates is removed again if it fails.

    Items are prepared before the library is opened, so a bad patch or option leaves no empty
    library folder behind.
    """
    from ..lesions import LesionLibrary

    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise SynthsegError(f"--library {path} exists and is not a folder")
    created = [p for p in [path, *path.parents] if not p.exists()]  # innermost first
    if created:
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise SynthsegError(f"cannot create library folder {path}: {exc.strerror}") from None
    try:
        yield LesionLibrary(path)
    except BaseException:
        for made in created:
            with contextlib.suppress(OSError):
                made.rmdir()  # only if still empty
        raise


def _maybe_project(item, spacing_text: str | None):
    if not spacing_text:
        return item
    from ..lesions import project_ct_lesion

    spacing = parse_floats(spacing_text, "--project", count=(1, 2))
    return project_ct_lesion(item, spacing if len(spacing) == 2 else spacing[0])


def run_add(args) -> int:
    from ..lesions import load_ct_patch

    items = [(path, _maybe_project(load_ct_patch(path), args.project)) for path in args.patches]
    with _library(args.library) as library:
        for path, item in items:
            lesion_id = library.add(item)
            print(f"{lesion_id}  {item.diameter_mm():5.1f} mm  {item.ndim}D  {item.units}  from {path}")
    return 0


def run_procedural(args) -> int:
    from ..lesions import procedural_nodule

    if args.n < 1:
        raise SynthsegError("--n must be at least 1")
    spacing = min(1.0, max(0.25, args.size_mm / 12.0))

    def make(k: int):
        item = procedural_nodule(args.size_mm, args.kind, spacing=spacing, lobulation=args.lobulation,
                                 spiculation=args.spiculation, seed=args.seed + k)
        return _maybe_project(item, args.project)

    first = make(0)  # made before the folder exists: a bad option fails with no folder left
    with _library(args.library) as library:
        for k in range(args.n):
            item = first if k == 0 else make(k)
            print(f"{library.add(item)}  {item.diameter_mm():5.1f} mm  {item.ndim}D  {item.units}  seed {args.seed + k}")
    return 0


def run_import(args) -> int:
    import collections
    import time

    from ..utils.progress import ConsoleProgress

    if args.workers is not None and args.workers < 1:
        raise SynthsegError("--workers must be at least 1")
    start = time.perf_counter()
    with _library(args.library) as library:  # a failed import leaves no empty library folder
        ids = library.import_index(args.folder, side=args.side, workers=args.workers, progress=ConsoleProgress())
        rows = [r for r in library.list() if r["id"] in set(ids)]
    classes = collections.Counter(r.get("nodule_class", r["kind"]) for r in rows)
    sides = collections.Counter(r.get("split", "?") for r in rows)
    print(f"imported {len(ids)} lesions into {args.library} in {time.perf_counter() - start:.1f} s: "
          + ", ".join(f"{n} {c}" for c, n in sorted(classes.items()))
          + "; split " + ", ".join(f"{n} {s}" for s, n in sorted(sides.items())))
    return 0


def run_list(args) -> int:
    from ..lesions import LesionLibrary

    if not Path(args.library).is_dir():
        raise SynthsegError(f"no lesion library at {args.library}")
    rows = LesionLibrary(args.library).list()
    for row in rows:
        extra = f"  {row['nodule_class']}  {row.get('split', '')}" if "nodule_class" in row else ""
        print(f"{row['id']}  {row['kind']:12s} {row['diameter_mm']:6.1f} mm  {row['ndim']}D  {row['units']}{extra}")
    print(f"{len(rows)} items")
    return 0
