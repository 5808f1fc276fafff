"""``synthseg``: the headless entry point to everything the plugin does.

Each command group lives in its own module of this package that defines
``register(subparsers)``; every such module not starting with ``_`` is picked up, in
:data:`COMMAND_ORDER` first and then alphabetically. User errors
(:class:`~napari_synthseg.errors.SynthsegError`) print one line to stderr and exit with status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

from .. import __version__
from ..errors import CancelledError, SynthsegError
from ..io import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV
from ._common import bound_number_options, join_negative_values, value_options

COMMAND_ORDER = ("info", "view", "convert")


def command_modules() -> list[str]:
    found = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return [n for n in COMMAND_ORDER if n in found] + sorted(n for n in found if n not in COMMAND_ORDER)

EXIT_USER_ERROR = 2
EXIT_CANCELLED = 130


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (exit 2) like every other user error."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="synthseg",
        description="Segmented synthetic training data for lesion detection (CXR, CT, MRI).",
    )
    parser.add_argument("--version", action="version", version=f"napari-synthseg {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument(
        "--max-pixels", type=float, default=None,
        help=f"largest image (pixels or voxels) a reader decodes; default {DEFAULT_MAX_PIXELS:.3g} "
        f"or ${MAX_PIXELS_ENV}",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    subparsers.required = True
    for name in command_modules():
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(subparsers)
    bound_number_options(parser)
    parser.set_defaults(max_pixels=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if argv is None:
        argv = sys.argv[1:]
    try:
        args = parser.parse_args(join_negative_values(list(argv), value_options(parser)))
    except SystemExit as exc:  # usage errors (one line, see OneLineParser), --help, --version
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    saved_budget = os.environ.get(MAX_PIXELS_ENV)
    if args.max_pixels is not None:
        if not 1 <= args.max_pixels <= 2**48:
            print(f"synthseg: error: --max-pixels must be from 1 to {2**48:.3g}", file=sys.stderr)
            return EXIT_USER_ERROR
        # through the environment, so worker processes (generate, export) get it too
        os.environ[MAX_PIXELS_ENV] = str(int(args.max_pixels))
    try:
        return _run(args)
    finally:
        if saved_budget is None:
            os.environ.pop(MAX_PIXELS_ENV, None)
        else:
            os.environ[MAX_PIXELS_ENV] = saved_budget


def _run(args: argparse.Namespace) -> int:
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = args.func(args)
    except SynthsegError as exc:
        if args.debug:
            raise
        print(f"synthseg {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        # File-system problems (permissions, full disk) are the user's to fix, not bugs.
        if args.debug:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"synthseg {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USER_ERROR
    except MemoryError:
        if args.debug:
            raise
        print(f"synthseg {args.command}: error: not enough memory for this input "
              f"(a smaller image, region or count, or --max-pixels, bounds what is decoded)", file=sys.stderr)
        return EXIT_USER_ERROR
    except CancelledError:
        print(f"synthseg {args.command}: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        print(f"synthseg {args.command}: interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
