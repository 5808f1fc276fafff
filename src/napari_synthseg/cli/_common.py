"""Argument helpers shared by commands."""

from __future__ import annotations

import argparse
import sys

from ..errors import SynthsegError
from ..io import MedicalImage, read_image


def parse_floats(text: str, name: str, count: tuple[int, ...] | None = None) -> tuple[float, ...]:
    """'0.4,0.4' -> (0.4, 0.4), with a clear error naming the option."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise SynthsegError(f"{name} takes comma-separated numbers, got {text!r}") from None
    if count is not None and len(values) not in count:
        raise SynthsegError(f"{name} takes {' or '.join(map(str, count))} numbers, got {text!r}")
    return values


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
