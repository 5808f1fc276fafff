"""Read a set of lesions from any of the layouts the product meets, as lesion-centred crops.

Every evaluation compares lesions *alike*: each lesion becomes a crop of the same physical size
(``crop_mm``) centred on it and resampled to the same pixel size (``spacing_mm``), so a
classifier cannot tell the sets apart by resolution or field of view. Layouts
(:func:`detect_layout`):

``index``
    A folder with ``index.csv`` (``ct_file``/``seg_file``), like ``shared/data/ct/lidc_nodules``.
    One lesion per row: the largest connected part of its mask.
``nnunet``
    An nnU-Net v2 raw dataset (``dataset.json``, ``imagesTr``/``labelsTr``, ``imagesTs``/
    ``labelsTs``), or an export in the ``nifti`` layout (``images``/``labels``). Every
    connected component of a label map is one lesion.
``scenes``
    A scene folder or a folder of scene folders: every lesion record that draws a label and was
    not rejected, cropped from ``render_scene``.
``boxes``
    Radiographs whose lesions have boxes only: a COCO ``instances*.json`` or a CSV with
    ``image,x,y,width,height`` columns (NODE21 style, pixels). The mask is the ellipse
    inscribed in the box and the sample is marked ``box_only`` (shape features are then the
    box's, not the lesion's).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage as ndi

from ..errors import SynthsegError
from ..io import MedicalImage, read_image
from ..io.lesion_index import read_lesion_index
from ..utils.progress import CancelToken, ProgressCallback, report

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "index", "nnunet", "scenes", "boxes")
_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".png", ".tif", ".tiff", ".dcm")


@dataclass
class LesionSample:
    """One lesion as a crop on the common grid.

    Attributes
    ----------
    image : ndarray of float32
        Native units (HU for CT), shape ``(n, n)`` or ``(n, n, n)``, ``n = round(crop_mm / spacing_mm)``.
    mask : ndarray of bool
        Every lesion voxel inside the crop (the centred lesion and any neighbour).
    spacing : tuple of float
        Pixel size of the crop in mm, numpy order (all equal).
    name : str
        A stable, unique name (``<source stem>_<component>``).
    source : str
        The file or scene the lesion came from.
    diameter_mm : float
        The table's diameter when given, else the equivalent diameter of the lesion's mask.
    group : str
        Patient / series id (splits keep a group on one side).
    box_only : bool
        The mask is an ellipse in a box, not a segmentation.
    """

    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, ...]
    name: str
    source: str
    diameter_mm: float
    group: str = ""
    box_only: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        return self.image.ndim


@dataclass
class LesionSet:
    """The lesions of one folder, plus what identifies the folder in a report."""

    samples: list[LesionSample]
    path: str
    layout: str
    sha256: str
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def describe(self) -> dict:
        return {"path": self.path, "layout": self.layout, "n": len(self.samples), "sha256": self.sha256,
                "skipped": self.skipped[:20], "n_skipped": len(self.skipped)}


# ---- geometry -------------------------------------------------------------------------------


def crop_lesion(
    array: np.ndarray,
    mask: np.ndarray,
    scale: Sequence[float],
    centre: Sequence[float],
    crop_mm: float,
    spacing_mm: float,
    fill_value: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a cube (square) of ``crop_mm`` centred on ``centre`` to ``spacing_mm`` pixels.

    ``centre`` is a continuous numpy index, ``scale`` the pixel size in mm (numpy order).
    The image is interpolated linearly, the mask by nearest neighbour; outside the image the
    crop holds ``fill_value`` (default the image's minimum, i.e. air for CT). Crops are taken
    along the array axes: the direction matrix rotates the whole image, not the lesion.
    """
    n = max(2, int(round(crop_mm / spacing_mm)))
    offsets = (np.arange(n) - (n - 1) / 2.0) * spacing_mm
    axes = [c + offsets / float(s) for c, s in zip(centre, scale)]
    grid = np.meshgrid(*axes, indexing="ij")
    coords = np.stack(grid)
    fill = float(np.min(array)) if fill_value is None else float(fill_value)
    image = ndi.map_coordinates(np.asarray(array, dtype=np.float32), coords, order=1, mode="constant", cval=fill)
    labels = ndi.map_coordinates(np.asarray(mask, dtype=np.uint8), coords, order=0, mode="constant", cval=0)
    return image.astype(np.float32), labels.astype(bool)


def _equivalent_diameter(mask: np.ndarray, scale: Sequence[float]) -> float:
    size = float(mask.sum()) * float(np.prod(scale))
    if mask.ndim == 3:
        return (6.0 * size / math.pi) ** (1.0 / 3.0)
    return 2.0 * math.sqrt(size / math.pi)


def components(mask: np.ndarray) -> list[tuple[np.ndarray, tuple[float, ...]]]:
    """Connected parts of ``mask`` (full connectivity), largest first: (part mask, centroid)."""
    structure = ndi.generate_binary_structure(mask.ndim, mask.ndim)
    labelled, n = ndi.label(mask, structure=structure)
    if n == 0:
        return []
    sizes = ndi.sum_labels(np.ones_like(labelled), labelled, index=range(1, n + 1))
    order = np.argsort(-np.asarray(sizes), kind="stable")
    out = []
    for i in order:
        part = labelled == (i + 1)
        out.append((part, tuple(float(c) for c in ndi.center_of_mass(part))))
    return out


def samples_from_image(
    image: MedicalImage,
    mask: np.ndarray,
    name: str,
    crop_mm: float,
    spacing_mm: float,
    *,
    diameter_mm: float | None = None,
    group: str = "",
    largest_only: bool = False,
    box_only: bool = False,
) -> list[LesionSample]:
    """One :class:`LesionSample` per connected lesion of ``mask`` (or only the largest)."""
    mask = np.asarray(mask) != 0
    parts = components(mask)
    if largest_only:
        parts = parts[:1]
    out = []
    ndim = image.ndim
    for k, (part, centre) in enumerate(parts):
        crop, crop_mask = crop_lesion(image.array, mask, image.scale, centre, crop_mm, spacing_mm)
        # A table's diameter describes its one lesion; further components get their own size.
        own = diameter_mm is not None and (largest_only or len(parts) == 1)
        d = diameter_mm if own else _equivalent_diameter(part, image.scale)
        out.append(LesionSample(crop, crop_mask, (float(spacing_mm),) * ndim, f"{name}_{k}", str(image.source or name),
                                float(d), group or name, box_only))
    return out


# ---- layouts --------------------------------------------------------------------------------


def _strip_suffix(name: str) -> str:
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def detect_layout(path: str | os.PathLike) -> str:
    """``index``, ``nnunet``, ``scenes`` or ``boxes`` for a lesion set path (see module doc)."""
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() == ".json":
            return "boxes"
        if p.suffix.lower() == ".csv":
            with p.open(newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), [])
            if {"ct_file", "seg_file"} <= set(header) or {"image_file", "mask_file"} <= set(header):
                return "index"
            return "boxes"
        raise SynthsegError(f"{p} is not a lesion set: give a folder, an index.csv, a COCO .json or a boxes .csv")
    if not p.is_dir():
        raise SynthsegError(f"lesion set not found: {p}")
    if (p / "index.csv").is_file():
        return "index"
    if (p / "dataset.json").is_file() or (p / "labelsTr").is_dir() or (p / "labels").is_dir():
        return "nnunet"
    if (p / "scene.json").is_file() or any(p.glob("*/scene.json")):
        return "scenes"
    if list(p.glob("annotations/instances*.json")) or (p / "boxes.csv").is_file():
        return "boxes"
    raise SynthsegError(
        f"{p} is not a lesion set: expected index.csv, an nnU-Net/NIfTI dataset (labelsTr/ or labels/), "
        "scene folders, or COCO/CSV boxes"
    )


def _hash_files(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(set(Path(p) for p in paths)):
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digest.update(f"{path.name}:{h.hexdigest()}\n".encode())
    return digest.hexdigest()


def _read_index(path: Path, crop_mm, spacing_mm, limit, progress, cancel):
    entries = read_lesion_index(path)
    if limit:
        entries = entries[:limit]
    samples, files = [], []
    for i, entry in enumerate(entries):
        if cancel is not None:
            cancel.raise_if_cancelled()
        image = read_image(entry.image_path)
        mask = read_image(entry.mask_path)
        if mask.shape != image.shape:
            raise SynthsegError(f"{entry.mask_path.name}: mask shape {mask.shape} differs from its image {image.shape}")
        found = samples_from_image(image, np.asarray(mask.array), entry.name, crop_mm, spacing_mm,
                                   diameter_mm=entry.diameter_mm, group=entry.group, largest_only=True)
        for s in found:
            s.name = entry.name
        samples.extend(found)
        files += [entry.image_path, entry.mask_path]
        report(progress, i + 1, len(entries), f"read {entry.image_path.name}")
    return samples, files, []


def _dataset_pairs(root: Path) -> list[tuple[Path, Path]]:
    pairs = []
    for images_dir, labels_dir in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs"), ("images", "labels")):
        idir, ldir = root / images_dir, root / labels_dir
        if not ldir.is_dir():
            continue
        for label in sorted(ldir.iterdir()):
            if not label.name.lower().endswith(_IMAGE_SUFFIXES):
                continue
            case = _strip_suffix(label.name)
            ending = label.name[len(case):]
            for candidate in (idir / f"{case}_0000{ending}", idir / f"{case}{ending}"):
                if candidate.is_file():
                    pairs.append((candidate, label))
                    break
            else:
                raise SynthsegError(f"{label}: no image {case}_0000{ending} (or {case}{ending}) in {idir}")
    if not pairs:
        raise SynthsegError(f"{root} holds no labelled cases (labelsTr/, labelsTs/ or labels/)")
    return pairs


def _read_dataset(path: Path, crop_mm, spacing_mm, limit, progress, cancel):
    pairs = _dataset_pairs(path)
    samples, files, skipped = [], [], []
    for i, (image_path, label_path) in enumerate(pairs):
        if cancel is not None:
            cancel.raise_if_cancelled()
        if limit and len(samples) >= limit:
            break
        image, labels = read_image(image_path), read_image(label_path)
        if labels.shape != image.shape:
            raise SynthsegError(f"{label_path.name}: label shape {labels.shape} differs from its image {image.shape}")
        found = samples_from_image(image, np.asarray(labels.array) > 0, _strip_suffix(label_path.name), crop_mm, spacing_mm)
        if not found:
            skipped.append(f"{label_path.name}: no lesion")
        samples.extend(found)
        files += [image_path, label_path]
        report(progress, i + 1, len(pairs), f"read {label_path.name}")
    return samples[:limit] if limit else samples, files, skipped


def _read_scenes(path: Path, crop_mm, spacing_mm, limit, progress, cancel):
    from ..qa.review import find_scenes
    from ..render import render_scene
    from ..scene import Scene

    folders = find_scenes(path)
    samples, files, skipped = [], [], []
    for i, folder in enumerate(folders):
        if cancel is not None:
            cancel.raise_if_cancelled()
        scene = Scene.open(folder)
        result = render_scene(scene)
        source = result.source
        for rec in scene.lesions:
            if rec.kind == "removal" or rec.status == "rejected":
                continue
            part = result.labels == rec.label
            if not part.any():
                skipped.append(f"{folder.name}/{rec.id}: not drawn")
                continue
            centre = ndi.center_of_mass(part)
            crop, crop_mask = crop_lesion(result.image, result.labels > 0, source.scale, centre, crop_mm, spacing_mm)
            samples.append(LesionSample(crop, crop_mask, (float(spacing_mm),) * source.ndim, f"{folder.name}_{rec.id}",
                                        str(folder), _equivalent_diameter(part, source.scale), folder.name))
        files.append(folder / "scene.json")
        report(progress, i + 1, len(folders), f"rendered {folder.name}")
        if limit and len(samples) >= limit:
            break
    return samples[:limit] if limit else samples, files, skipped


def _box_rows(path: Path) -> tuple[Path, dict[str, list[tuple[float, float, float, float]]]]:
    """(image folder, image file -> boxes x, y, w, h in pixels) from COCO JSON or boxes CSV."""
    if path.is_dir():
        found = sorted(path.glob("annotations/instances*.json")) or ([path / "boxes.csv"] if (path / "boxes.csv").is_file() else [])
        if not found:
            raise SynthsegError(f"{path}: no annotations/instances*.json or boxes.csv")
        merged: dict[str, list] = {}
        for f in found:
            _root, rows = _box_rows(f)
            for k, v in rows.items():
                merged.setdefault(k, []).extend(v)
        return path, merged
    root = path.parent.parent if path.parent.name == "annotations" else path.parent
    boxes: dict[str, list] = {}
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            names = {im["id"]: im["file_name"] for im in data["images"]}
            for ann in data["annotations"]:
                boxes.setdefault(names[ann["image_id"]], []).append(tuple(float(v) for v in ann["bbox"]))
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise SynthsegError(f"{path.name} is not a COCO annotation file: {exc}") from None
        return root, boxes
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        needed = {"x", "y", "width", "height"}
        image_col = next((c for c in ("image", "img_name", "file_name") if c in (reader.fieldnames or [])), None)
        if image_col is None or not needed <= set(reader.fieldnames or []):
            raise SynthsegError(f"{path.name}: a boxes CSV needs columns image (or img_name), x, y, width, height")
        for row in reader:
            w, h = float(row["width"]), float(row["height"])
            if w <= 0 or h <= 0 or str(row.get("label", "1")) in ("0", "0.0"):
                continue  # NODE21 lists negatives as zero boxes with label 0
            boxes.setdefault(row[image_col], []).append((float(row["x"]), float(row["y"]), w, h))
    return root, boxes


def _read_boxes(path: Path, crop_mm, spacing_mm, limit, progress, cancel):
    root, boxes = _box_rows(path)
    samples, files, skipped = [], [], []
    items = sorted(boxes.items())
    for i, (file_name, rows) in enumerate(items):
        if cancel is not None:
            cancel.raise_if_cancelled()
        image_path = root / file_name
        if not image_path.is_file() and (root / "images" / file_name).is_file():
            image_path = root / "images" / file_name
        if not image_path.is_file():
            raise SynthsegError(f"boxes name {file_name}, which is not in {root}")
        image = read_image(image_path)
        if image.ndim != 2:
            raise SynthsegError(f"{file_name}: boxes are for 2D radiographs, this image is {image.ndim}D")
        yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
        for k, (x, y, w, h) in enumerate(rows):
            cy, cx = y + h / 2.0 - 0.5, x + w / 2.0 - 0.5
            ellipse = ((yy - cy) / (h / 2.0)) ** 2 + ((xx - cx) / (w / 2.0)) ** 2 <= 1.0
            crop, crop_mask = crop_lesion(image.array, ellipse, image.scale, (cy, cx), crop_mm, spacing_mm)
            samples.append(LesionSample(crop, crop_mask, (float(spacing_mm),) * 2, f"{_strip_suffix(file_name)}_{k}",
                                        str(image_path), float(math.sqrt(w * h) * np.mean(image.scale)),
                                        _strip_suffix(file_name), box_only=True))
        files.append(image_path)
        report(progress, i + 1, len(items), f"read {file_name}")
        if limit and len(samples) >= limit:
            break
    files.append(path if path.is_file() else next(iter(sorted(path.glob("annotations/*.json"))), path / "boxes.csv"))
    return samples[:limit] if limit else samples, [f for f in files if Path(f).is_file()], skipped


_READERS = {"index": _read_index, "nnunet": _read_dataset, "scenes": _read_scenes, "boxes": _read_boxes}


def read_lesion_set(
    path: str | os.PathLike,
    crop_mm: float = 32.0,
    spacing_mm: float = 1.0,
    layout: str = "auto",
    limit: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> LesionSet:
    """Every lesion of ``path`` as a crop of ``crop_mm`` at ``spacing_mm`` (see module doc).

    Parameters
    ----------
    path : path-like
        The lesion set (a folder, an ``index.csv``, a COCO ``.json`` or a boxes ``.csv``).
    crop_mm, spacing_mm : float
        Edge length of the crop and its pixel size, mm.
    layout : str
        One of :data:`LAYOUTS`; ``auto`` detects it.
    limit : int, optional
        Read at most this many lesions (in the layout's order).

    Raises
    ------
    SynthsegError
        Unknown layout, missing files, or a set with no lesion.
    """
    if crop_mm <= 0 or spacing_mm <= 0:
        raise SynthsegError(f"crop and spacing must be positive, got {crop_mm} mm and {spacing_mm} mm")
    if layout not in LAYOUTS:
        raise SynthsegError(f"unknown lesion-set layout {layout!r}; use {', '.join(LAYOUTS)}")
    path = Path(path)
    kind = detect_layout(path) if layout == "auto" else layout
    samples, files, skipped = _READERS[kind](path, crop_mm, spacing_mm, limit, progress, cancel)
    if not samples:
        raise SynthsegError(f"{path} holds no lesions")
    dims = {s.ndim for s in samples}
    if len(dims) > 1:
        raise SynthsegError(f"{path} mixes 2D and 3D lesions; evaluate them separately")
    return LesionSet(samples, str(path), kind, _hash_files(files), skipped)


def split_halves(samples: Sequence[LesionSample], seed: int = 0) -> tuple[list[LesionSample], list[LesionSample]]:
    """Two halves of a set with every group (patient/series) on one side: the real-vs-real control."""
    groups = sorted({s.group or s.name for s in samples})
    rng = np.random.default_rng(seed)
    rng.shuffle(groups)
    counts = {g: 0 for g in groups}
    for s in samples:
        counts[s.group or s.name] += 1
    side, sizes = {}, [0, 0]
    for g in groups:  # each group to the half that is smaller so far: balanced, patient-disjoint
        k = 0 if sizes[0] <= sizes[1] else 1
        side[g] = k
        sizes[k] += counts[g]
    first = [s for s in samples if side[s.group or s.name] == 0]
    second = [s for s in samples if side[s.group or s.name] == 1]
    return first, second
