"""Which images a recipe names, and what the recipe knows about each (spacing, modality, patient).

``inputs`` is a list of globs (files, folders of images, DICOM series folders), or the path of a
CSV with one row per image and the columns ``path`` (required), ``spacing_mm``, ``modality``
and ``patient_id`` (optional, may be empty). Relative paths resolve against the recipe's folder
(CSV paths: against the CSV's folder).

Spacing rule (docs/batch.md): a file that stores its pixel size (DICOM, MHA, NIfTI, NRRD) keeps
it; the CSV's ``spacing_mm`` applies to files that store none (PNG/JPEG); ``defaults.spacing_mm``
applies only to files that store none and have no CSV value. An image whose pixel size is known
from none of these fails with a clear error instead of being treated as 1 mm per pixel.
"""

from __future__ import annotations

import csv
import glob
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import SynthsegError
from ..io.read import IMAGE_EXTENSIONS, file_extension, is_supported_path
from .recipe import Recipe

CSV_COLUMNS = ("path", "spacing_mm", "modality", "patient_id")
MODALITIES = ("CT", "CXR", "MR")


@dataclass(frozen=True)
class ImageItem:
    """One input image and what the recipe says about it."""

    path: str
    index: int
    spacing_mm: tuple[float, ...] | None = None  # from the CSV row
    modality: str | None = None
    patient_id: str | None = None

    @property
    def stem(self) -> str:
        name = Path(self.path).name
        ext = file_extension(name)
        stem = name[: -len(ext)] if ext and name.lower().endswith(ext) else name
        return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-") or "image"


def parse_spacing(text: str, where: str) -> tuple[float, ...] | None:
    """'0.35' or '0.35,0.35' or '0.35 x 0.35' -> floats; '' -> None."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        values = tuple(float(v) for v in re.split(r"[,;x\s]+", text) if v)
    except ValueError:
        raise SynthsegError(f"{where}: spacing_mm must be numbers in mm like 0.35 or 0.35,0.35, got {text!r}") from None
    if not 1 <= len(values) <= 3 or any(not v > 0 for v in values):
        raise SynthsegError(f"{where}: spacing_mm must be 1 to 3 positive mm values, got {text!r}")
    return values


def _expand(pattern: Path) -> list[Path]:
    if pattern.is_dir():
        if is_supported_path(pattern) and not any(
                file_extension(f) in IMAGE_EXTENSIONS and file_extension(f) != ".dcm" for f in pattern.iterdir()):
            return [pattern]  # a DICOM series folder is one image
        return sorted(p for p in pattern.iterdir() if p.is_file() and file_extension(p) in IMAGE_EXTENSIONS)
    if pattern.exists():
        return [pattern]
    return [Path(p) for p in sorted(glob.glob(str(pattern), recursive=True))]


def _from_csv(path: Path) -> list[ImageItem]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            if "path" not in fields:
                raise SynthsegError(f"{path.name}: the CSV needs a 'path' column (optional: spacing_mm, modality, patient_id)")
            unknown = [f for f in fields if f not in CSV_COLUMNS]
            if unknown:
                raise SynthsegError(f"{path.name}: unknown column {unknown[0]!r}; columns are {', '.join(CSV_COLUMNS)}")
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except FileNotFoundError:
        raise SynthsegError(f"inputs CSV not found: {path}") from None
    items = []
    for n, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{path.name} line {n}"
        if not row.get("path"):
            raise SynthsegError(f"{where}: empty path")
        image = Path(row["path"])
        image = image if image.is_absolute() else path.parent / image
        if not image.exists():
            raise SynthsegError(f"{where}: no such file or folder: {image}")
        modality = row.get("modality") or None
        if modality is not None and modality.upper() not in MODALITIES:
            raise SynthsegError(f"{where}: modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
        items.append(ImageItem(str(image.resolve()), len(items), parse_spacing(row.get("spacing_mm", ""), where),
                               modality.upper() if modality else None, row.get("patient_id") or None))
    return items


def list_inputs(recipe: Recipe) -> list[ImageItem]:
    """The recipe's images in a fixed order (their index seeds their scenes)."""
    inputs = recipe.inputs
    if isinstance(inputs, str) and inputs.lower().endswith(".csv"):
        items = _from_csv(recipe.resolve(inputs))
    else:
        patterns = [inputs] if isinstance(inputs, str) else list(inputs)
        paths: list[str] = []
        for pattern in patterns:
            found = _expand(recipe.resolve(pattern))
            if not found:
                raise SynthsegError(f"inputs: {pattern!r} matches no image (relative to {recipe.base_dir or '.'})")
            paths.extend(str(p.resolve()) for p in found)
        seen: set[str] = set()
        unique = [p for p in paths if not (p in seen or seen.add(p))]
        items = [ImageItem(p, i) for i, p in enumerate(unique)]
    if not items:
        raise SynthsegError("inputs: no images")
    return items
