"""``synthseg batch RECIPE.yaml [--scheduler local[:N]|tcp://HOST:PORT|synchronous]``.

Exit status: 0 when every scene was built (or already done) and every export written; 1 when
some image failed or an export failed (details in OUT/summary.json and OUT/logs/); 2 for a bad
recipe or another user error.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from ..errors import SynthsegError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "batch", help="run a batch recipe (YAML) on dask.distributed: scenes with random lesions, review, export",
        description="Builds one scene per task on a LocalCluster (default) or an existing dask cluster; "
        "resumes from done markers; exit 0 all fine, 1 some image or export failed, 2 bad recipe.",
    )
    p.add_argument("recipe", nargs="?", help="the recipe file (see --example and docs/batch.md)")
    p.add_argument("--scheduler", default="local",
                   help="local (one worker per core), local:N, tcp://HOST:PORT (an existing cluster) "
                   "or synchronous (in this process)")
    p.add_argument("--example", action="store_true",
                   help="print a complete, commented recipe that runs on sample_data/ (synthseg batch --example > recipe.yaml)")
    p.set_defaults(func=run)


@contextlib.contextmanager
def show_progress() -> Iterator[None]:
    """Progress lines (with ETA) are INFO records of the batch logger: show them without -v."""
    logger = logging.getLogger("napari_synthseg.batch")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    old = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        # distributed logs every worker start and stop at INFO; -v shows them again. Imported
        # first: its import configures the "distributed" logger (and would undo this).
        import distributed  # noqa: F401

        logging.getLogger("distributed").setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old[0])
        logger.propagate = old[1]


def print_summary(summary: dict) -> None:
    c = summary["counts"]
    print(f"{c['scenes']} scenes from {c['images']} images in {summary['out']}: {c['built']} built, "
          f"{c['resumed']} already done, {c['failed']} failed; {c['lesions']} lesions "
          f"({', '.join(f'{k} {v}' for k, v in c['lesions_by_class'].items()) or 'none'}) "
          f"in {summary['seconds']:.1f} s on {summary['workers']} worker(s)")
    if c["review"]:
        print("review: " + ", ".join(f"{k} {v}" for k, v in c["review"].items()))
    for kind, reasons in summary["rejects"].items():
        for reason, n in reasons.items():
            print(f"rejected ({kind}): {n} x {reason}")
    for f in summary["failed"]:
        print(f"failed: {f['image']}: {f['error']} (log: {f['log']})")
    for e in summary.get("exports", []):
        line = f"export {e['format']}: {e['status']} {e.get('path', '')}"
        if e.get("splits_final"):
            line += f"; splits_final.json: {e['splits_final']}"
        if e.get("error"):
            line += f": {e['error']}"
        print(line)
    print(f"summary: {summary['out']}/summary.json")


def exit_code(summary: dict) -> int:
    """0 all fine, 1 some scene or export failed."""
    failed_export = any(e["status"] == "failed" for e in summary.get("exports", []))
    return 1 if summary["counts"]["failed"] or failed_export else 0


def run(args) -> int:
    from ..batch import example_recipe, load_recipe, run_recipe

    if args.example:
        sys.stdout.write(example_recipe())
        return 0
    if not args.recipe:
        raise SynthsegError("give a recipe file (synthseg batch --example > recipe.yaml writes one)")
    recipe = load_recipe(args.recipe)
    with show_progress():
        summary = run_recipe(recipe, args.scheduler, recipe_path=args.recipe)
    print_summary(summary)
    return exit_code(summary)
