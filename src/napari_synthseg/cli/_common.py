"""Argument helpers shared by commands."""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from ..errors import SynthsegError
from ..io import MedicalImage, read_image

#: Largest magnitude any number option accepts unless it says otherwise: finite values past
#: this (``--at-mm 1e308``) only overflow somewhere downstream.
MAX_ABS_NUMBER = 1e9


def parse_floats(
    text: str, name: str, count: tuple[int, ...] | None = None, max_abs: float = MAX_ABS_NUMBER
) -> tuple[float, ...]:
    """'0.4,0.4' -> (0.4, 0.4), with a clear error naming the option.

    NaN, infinities and values beyond ``max_abs`` are refused here, in the parser, rather
    than overflowing later.
    """
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise SynthsegError(f"{name} takes comma-separated numbers, got {text!r}") from None
    if count is not None and len(values) not in count:
        raise SynthsegError(f"{name} takes {' or '.join(map(str, count))} numbers, got {text!r}")
    if any(not math.isfinite(v) or abs(v) > max_abs for v in values):
        raise SynthsegError(f"{name} takes finite numbers within +-{max_abs:g}, got {text!r}")
    return values


# ---- bounds for every number option ---------------------------------------------------------

#: dest -> (low, high) for int options; the parser refuses anything outside. Counts that make
#: work or memory grow (samples, lesions, items) have ceilings far above real use but far below
#: "hangs for a day"; seeds are what numpy and torch accept; thread/worker counts are positive.
INT_BOUNDS: dict[str, tuple[int, int]] = {
    "seed": (0, 2**32 - 1),
    "start_seed": (0, 2**32 - 1),
    "threads": (0, 1024),
    "workers": (1, 1024),
    "samples": (1, 1000),
    "scenes_per_image": (1, 1000),
    "n": (1, 100_000),
    "steps": (1, 100_000_000),
    "iterations": (1, 10_000_000),
    "size": (1, 8192),
    "batch": (1, 4096),
    "channels": (1, 4096),
    "bottleneck": (1, 4096),
    "channel_max": (1, 4096),
    "z_dim": (1, 4096),
    "blocks": (1, 256),
    "noise_channels": (0, 256),
    "context_slices": (0, 64),
    "checkpoint_every": (1, 100_000_000),
    "adv_start": (0, 100_000_000),
    "margin": (0, 100_000),
    "scale": (0, 64),
    "accept": (0, 999),
    "ensemble": (1, 1000),
    "epochs": (1, 1_000_000),
    "max_per_class": (1, 1_000_000_000),
    "dataset_id": (1, 999),
    "png_compression": (0, 9),
}
DEFAULT_INT_BOUNDS = (-(2**31), 2**31 - 1)

#: dest -> (low, high) for float options (all must also be finite).
FLOAT_BOUNDS: dict[str, tuple[float, float]] = {
    "size_mm": (0.0, 1000.0),
    "feather_mm": (0.0, 1000.0),
    "margin_mm": (0.0, 1000.0),
    "lr": (0.0, 10.0),
    "lr_tail": (0.0, 1.0),
    "lobulation": (0.0, 1.0),
    "spiculation": (0.0, 1.0),
    "texture": (0.0, 100.0),
}
DEFAULT_FLOAT_BOUNDS = (-MAX_ABS_NUMBER, MAX_ABS_NUMBER)


def bounded(kind: type, low: float, high: float):
    """An argparse ``type`` that parses ``kind`` and refuses values outside [low, high]."""

    def convert(text: str):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            noun = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if not low <= value <= high:
            shown = (f"{low:,} to {high:,}" if kind is int else f"{low:g} to {high:g}").replace(",", "_")
            raise argparse.ArgumentTypeError(f"{text} is out of range ({shown})")
        return value

    convert.__name__ = kind.__name__
    return convert


def _subparsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _subparsers(sub)


def bound_number_options(parser: argparse.ArgumentParser) -> None:
    """Give every plain ``type=int``/``type=float`` option of the tree its bounds.

    Done once here rather than in each command so that no count, seed or size option can be
    added without a bound: ``--samples 100000``, ``--seed -1``, ``--threads -3`` and
    ``--size-mm nan`` are refused in the parser with one line.
    """
    for sub in _subparsers(parser):
        for action in sub._actions:
            if action.type is int:
                action.type = bounded(int, *INT_BOUNDS.get(action.dest, DEFAULT_INT_BOUNDS))
            elif action.type is float:
                action.type = bounded(float, *FLOAT_BOUNDS.get(action.dest, DEFAULT_FLOAT_BOUNDS))


_NUMBER = r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_NEGATIVE_NUMBER_LIST = re.compile(rf"^-(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:\s*,\s*{_NUMBER})*$")


def value_options(parser: argparse.ArgumentParser) -> set[str]:
    """Option strings (anywhere in the tree) that take exactly one value."""
    found = set()
    for sub in _subparsers(parser):
        for action in sub._actions:
            if action.option_strings and action.nargs in (None, 1) and not isinstance(
                action, (argparse._StoreConstAction, argparse._CountAction,
                         argparse._HelpAction, argparse._VersionAction)
            ):
                found.update(action.option_strings)
    return found


def join_negative_values(argv: list[str], options: set[str]) -> list[str]:
    """``--at -1,5`` -> ``--at=-1,5`` for options that take a value.

    argparse takes ``-1,5`` (and ``-77.5,-155.2,224``) for an option, not a value, because it
    starts with ``-`` and is not a plain negative number; coordinates, spacings, ROIs and
    ranges are exactly such lists.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if (
            token in options
            and i + 1 < len(argv)
            and _NEGATIVE_NUMBER_LIST.match(argv[i + 1])
        ):
            out.append(f"{token}={argv[i + 1]}")
            i += 2
            continue
        if token == "--":
            out.extend(argv[i:])
            break
        out.append(token)
        i += 1
    return out


def check_output_file(path: str, force: bool) -> Path:
    """Refuse a bad output path before any work (validate first, write last)."""
    from ..io import WRITE_EXTENSIONS
    from ..io.read import file_extension

    out = Path(path)
    if file_extension(out) not in WRITE_EXTENSIONS:
        raise SynthsegError(f"cannot write {out.name}: use one of {', '.join(WRITE_EXTENSIONS)}")
    if not out.parent.is_dir():
        raise SynthsegError(f"output folder does not exist: {out.parent}")
    if out.is_dir():
        raise SynthsegError(f"{out} is a folder; give an output file name")
    if out.exists() and not force:
        raise SynthsegError(f"{out} already exists; pass --force to replace it")
    return out


def add_read_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--series-uid", help="DICOM series to load from a folder holding several")
    parser.add_argument("--modality", choices=["CT", "CXR", "MR"], help="override the modality guess")
    parser.add_argument(
        "--spacing", help="pixel spacing in mm, x,y[,z] or one value, for files that store none (PNG/JPEG)"
    )


def read_from_args(path: str, args: argparse.Namespace) -> MedicalImage:
    spacing = parse_floats(args.spacing, "--spacing") if getattr(args, "spacing", None) else None
    image = read_image(path, series_uid=args.series_uid, modality=args.modality, spacing=spacing)
    for warning in image.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return image
