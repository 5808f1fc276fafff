"""``synthseg qa SCENES_DIR`` (review in napari) and ``synthseg review SCENES_DIR`` (headless)."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from ..errors import SynthsegError
from ..utils.progress import ConsoleProgress


def register(subparsers) -> None:
    p = subparsers.add_parser("qa", help="review the lesions of a folder of scenes in napari")
    p.add_argument("scenes", help="folder of scene folders (or one scene folder)")
    p.add_argument("--renderer", help="scene renderer as module:function (default: the built-in one)")
    p.add_argument("--sheet", metavar="PNG", help="write a contact sheet of the batch instead of opening napari")
    p.add_argument("--no-block", action="store_true", help="build the viewer and return (for scripts and tests)")
    p.set_defaults(func=run_qa)

    r = subparsers.add_parser(
        "review", help="decide lesions without a GUI: accept all undecided, or apply RULES.yaml thresholds"
    )
    r.add_argument("scenes", help="folder of scene folders (or one scene folder)")
    how = r.add_mutually_exclusive_group(required=True)
    how.add_argument("--accept-all", action="store_true", help="accept every undecided lesion")
    how.add_argument("--rules", metavar="RULES.yaml", help="thresholds on the QA numbers (see docs)")
    r.add_argument("--overwrite", action="store_true", help="also re-decide lesions that already have a decision")
    r.add_argument("--no-visibility-rule", dest="visibility_rule", action="store_false",
                   help="with --accept-all: also accept lesions too faint to see (CNR below 1); by default they are flagged")
    r.add_argument("--sheet", metavar="PNG", help="also write a contact sheet of the batch to this file")
    r.add_argument("--renderer", help="scene renderer as module:function (default: the built-in one)")
    r.set_defaults(func=run_review)


def run_review(args) -> int:
    from ..qa import find_scenes, load_rules, review_scenes

    folders = find_scenes(args.scenes)
    rules = load_rules(args.rules) if args.rules else None
    by = f"cli:accept-all ({getpass.getuser()})" if args.accept_all else ""
    results = review_scenes(
        folders, rules=rules, accept_all=args.accept_all, by=by, overwrite=args.overwrite,
        renderer=args.renderer, progress=ConsoleProgress(), visibility_rule=args.visibility_rule,
    )
    counts: dict[str, int] = {}
    for decided in results.values():
        for status, _by, _reason in decided.values():
            counts[status or "undecided"] = counts.get(status or "undecided", 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to decide"
    print(f"{len(folders)} scenes: {summary}")
    if args.sheet:
        write_sheet(folders, Path(args.sheet), args.renderer)
        print(f"contact sheet: {args.sheet}")
    return 0


def write_sheet(folders, path: Path, renderer) -> None:
    from ..qa import SheetEntry, contact_sheet, qa_scene
    from ..scene import Scene

    entries = []
    for folder in folders:
        q = qa_scene(Scene.open(folder), renderer)
        entries.append(SheetEntry(Path(folder).name, q.rendered, q.metrics))
    contact_sheet(entries, path, title=f"{len(folders)} scenes from {Path(folders[0]).parent}")


def run_qa(args) -> int:
    from ..qa import find_scenes, resolve_renderer

    folders = find_scenes(args.scenes)
    resolve_renderer(args.renderer)  # fail now with one line, not inside Qt
    if args.sheet:
        write_sheet(folders, Path(args.sheet), args.renderer)
        print(f"contact sheet: {args.sheet}")
        return 0
    try:
        import napari
    except ImportError:
        raise SynthsegError("napari is not installed: pip install 'napari-synthseg[gui]'") from None
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") and os.name == "posix":
        raise SynthsegError("no display found: run on a desktop, or under xvfb-run -a for a virtual one")
    from ..widgets.qa_widget import QAWidget

    viewer = napari.Viewer(title="napari-synthseg QA")
    widget = QAWidget(viewer, renderer=args.renderer)
    viewer.window.add_dock_widget(widget, name="Lesion QA", area="right")
    widget.load_folders(folders)
    if args.no_block:
        widget.wait_idle()
        if widget.scene is None:
            viewer.close()
            raise SynthsegError(str(widget.last_load_error or f"could not show {folders[0]}"))
        print(f"{len(folders)} scenes loaded", file=sys.stderr)
        viewer.close()
        return 0
    napari.run()
    return 0
