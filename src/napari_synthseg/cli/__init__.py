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
import pkgutil
import sys

from .. import __version__
from ..errors import CancelledError, SynthsegError

COMMAND_ORDER = ("info", "view", "convert")


def command_modules() -> list[str]:
    found = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return [n for n in COMMAND_ORDER if n in found] + sorted(n for n in found if n not in COMMAND_ORDER)

EXIT_USER_ERROR = 2
EXIT_CANCELLED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthseg",
        description="Segmented synthetic training data for lesion detection (CXR, CT, MRI).",
    )
    parser.add_argument("--version", action="version", version=f"napari-synthseg {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in command_modules():
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
    except CancelledError:
        print(f"synthseg {args.command}: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        print(f"synthseg {args.command}: interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
