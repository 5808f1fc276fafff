"""``synthseg info FILE``: what an image is, without opening a viewer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..io import list_dicom_series, sha256_of_files
from ._common import add_read_options, read_from_args


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="modality, shape, dtype, geometry and value range of an image")
    p.add_argument("path", help="image file or DICOM series folder")
    add_read_options(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--sha256", action="store_true", help="also hash the source file(s)")
    p.set_defaults(func=run)


def describe(image, with_hash: bool = False) -> dict:
    arr = image.array
    info = {
        "path": image.source if len(image.source_paths) == 1 else str(Path(image.source).parent),
        "files": len(image.source_paths),
        "modality": image.modality,
        "shape": list(arr.shape),
        "dtype": str(arr.dtype),
        "spacing_mm": [round(float(v), 6) for v in image.spacing],
        "origin_mm": [round(float(v), 6) for v in image.origin],
        "direction": [round(float(v), 6) for v in image.direction],
        "intensity_range": [float(np.min(arr)), float(np.max(arr))],
        "series_uid": image.series_uid,
        "warnings": image.warnings,
    }
    if with_hash:
        info["sha256"] = sha256_of_files(image.source_paths)
    return info


def run(args) -> int:
    image = read_from_args(args.path, args)
    info = describe(image, with_hash=args.sha256)
    if Path(args.path).is_dir():
        info["series"] = [
            {"uid": s.uid, "files": s.n_files, "description": s.description, "modality": s.modality}
            for s in list_dicom_series(args.path)
        ]
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    unit = "HU" if image.modality == "CT" else "native units"
    lines = [
        f"path:       {info['path']}" + (f" ({info['files']} files)" if info["files"] > 1 else ""),
        f"modality:   {info['modality']}",
        f"shape:      {' x '.join(map(str, info['shape']))} (numpy order)",
        f"dtype:      {info['dtype']}",
        f"spacing:    {' x '.join(f'{v:g}' for v in info['spacing_mm'])} mm (x, y[, z])",
        f"origin:     {', '.join(f'{v:g}' for v in info['origin_mm'])} mm",
        f"direction:  {', '.join(f'{v:g}' for v in info['direction'])}",
        f"intensity:  {info['intensity_range'][0]:g} .. {info['intensity_range'][1]:g} {unit}",
    ]
    if image.series_uid:
        lines.append(f"series uid: {image.series_uid}")
    if "sha256" in info:
        lines.append(f"sha256:     {info['sha256']}")
    for s in info.get("series", []):
        desc = f" '{s['description']}'" if s["description"] else ""
        lines.append(f"series:     {s['uid']} {s['modality']}{desc}: {s['files']} files")
    print("\n".join(lines))
    return 0
