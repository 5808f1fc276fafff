"""A folder of lesion patches: ``<id>.safetensors`` (arrays) + ``<id>.json`` (metadata) + index.

Ids are content hashes (``<kind>-<12 hex>``), so adding the same lesion twice gives the same id
and two people filling one library never collide.

An item either holds its arrays (``<id>.safetensors``) or, for large real-lesion sets such as the
895 LIDC nodules, a *reference*: the ``.json`` names the source CT patch and mask with their
SHA-256, and :meth:`LesionLibrary.get` reads them on demand (and refuses them if they changed).
Importing by reference takes seconds instead of copying ~1 GB of float32 arrays; the measured
numbers are in ``docs/benchmarks.md`` (issue 15). Every file is written atomically; the index
(``index.json``) is a cache, checked against the item files on every read and regenerated
from the ``.json`` files when it disagrees, so a crash or two concurrent writers never lose an
item.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from scipy import ndimage as ndi

from ..errors import SynthsegError
from ..utils.atomic import atomic_path, atomic_write_text
from ..utils.progress import CancelToken, ProgressCallback, report
from .item import LesionPatch, bbox_with_margin

#: A voxel counts as *solid* at or above this HU (the usual split between ground glass and a
#: solid component on lung CT, e.g. Fleischner/Lung-RADS practice; ground glass lies about
#: -750..-300 HU).
SOLID_HU = -300.0
#: Classes from the fraction of solid voxels in the nodule's core (the mask eroded by one voxel,
#: so the partial-volume rim, which is ground-glass-like for every nodule, does not count):
#: below 0.2 ground glass, 0.2 to 0.5 part-solid, 0.5 and above solid. On the 895 LIDC nodules
#: this gives 12 % / 8 % / 80 %, close to the screening literature's proportions.
GROUND_GLASS_BELOW = 0.2
SOLID_FROM = 0.5
NODULE_CLASSES = ("solid", "part-solid", "ground-glass")
#: Margin kept around a referenced nodule's mask when it is loaded (mm): enough lung around it
#: for the background estimate (2-8 mm shell), an alpha feather and a thumbnail.
REFERENCE_MARGIN_MM = 10.0

FORMAT_VERSION = 1
INDEX_NAME = "index.json"
#: Ids of items that reference their source files instead of holding arrays start with this.
REFERENCE_PREFIX = "ref-"
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def _content_id(item: LesionPatch) -> str:
    h = hashlib.sha256()
    for arr in (item.intensity, item.mask, item.absolute, item.attachment):
        if arr is not None:
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
    h.update(json.dumps([item.spacing, item.kind, item.units, item.provenance], sort_keys=True,
                        default=str).encode())
    slug = re.sub(r"[^a-z0-9]+", "-", item.kind.lower()).strip("-") or "lesion"
    return f"{slug[:40]}-{h.hexdigest()[:12]}"


def _jsonable(obj):
    """Make provenance JSON-safe (numpy scalars/arrays, paths, tuples)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


class LesionLibrary:
    """A folder of :class:`LesionPatch` items.

    Parameters
    ----------
    folder : path
        Created if missing (its parent must exist).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise SynthsegError(f"lesion library path is a file, not a folder: {self.folder}")
        if not self.folder.exists():
            if not self.folder.parent.is_dir():
                raise SynthsegError(f"parent folder of the lesion library does not exist: {self.folder.parent}")
            self.folder.mkdir()
        self._index: dict | None = None
        self._index_stamp: tuple | None = None
        # loaded items by id: a referenced item costs a read, a hash and a crop (~10 ms), and a
        # batch draws the same few hundred items again and again
        self.cache_size = 256
        self._cache: OrderedDict[str, LesionPatch] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._hashes: dict[tuple, str] = {}

    # ------------------------------------------------------------------ index
    @property
    def index_path(self) -> Path:
        return self.folder / INDEX_NAME

    def _item_stems(self) -> set:
        # an item holds its arrays (.safetensors beside the .json) or references its source
        # files (its id starts with REFERENCE_PREFIX and it has no .safetensors)
        stems = set()
        for p in self.folder.glob("*.json"):
            if p.name == INDEX_NAME or p.name.startswith("."):
                continue
            if p.with_suffix(".safetensors").exists() or p.stem.startswith(REFERENCE_PREFIX):
                stems.add(p.stem)
        return stems

    def _stamp(self) -> tuple | None:
        try:
            index = self.index_path.stat()
            return (self.folder.stat().st_mtime_ns, index.st_mtime_ns, index.st_ino, index.st_size)
        except FileNotFoundError:
            return None

    def _load_index(self, adding: str | None = None) -> dict:
        # read from disk and check it against the item files: another process may have added
        # or removed items, or two writers may have raced on index.json. Every write renames a
        # file into the folder, which moves the folder's mtime: while neither it nor the index
        # moved, the last checked index is still right (a batch picks thousands of times).
        stamp = self._stamp()
        if adding is None and stamp is not None and self._index is not None and stamp == self._index_stamp:
            return self._index
        if self.index_path.exists():
            try:
                items = json.loads(self.index_path.read_text("utf-8"))["items"]
                known = set(items) | ({adding} if adding else set()) if isinstance(items, dict) else None
                if known is not None and known == self._item_stems():
                    self._index = items
                    self._index_stamp = stamp
                    return items
            except (json.JSONDecodeError, KeyError, TypeError):
                pass  # a damaged or stale cache: rebuild it from the item files
        return self.rebuild_index()

    def _write_index(self, items: dict) -> None:
        atomic_write_text(self.index_path, json.dumps({"version": FORMAT_VERSION, "items": items}, indent=1,
                                                      sort_keys=True))
        self._index = items
        self._index_stamp = self._stamp()

    @staticmethod
    def _summary(meta: dict) -> dict:
        return {k: meta[k] for k in ("kind", "units", "ndim", "shape", "spacing", "diameter_mm",
                                     "extent_diameter_mm", "nodule_class", "volume_mm3", "mean_hu",
                                     "solid_fraction", "series_uid", "split") if k in meta}

    def rebuild_index(self) -> dict:
        """Regenerate ``index.json`` from the items' ``.json`` files."""
        items = {}
        for stem in sorted(self._item_stems()):
            meta_path = self.folder / f"{stem}.json"
            try:
                meta = json.loads(meta_path.read_text("utf-8"))
            except json.JSONDecodeError:
                continue
            items[meta_path.stem] = self._summary(meta)
        self._write_index(items)
        return items

    # ------------------------------------------------------------------ API
    def add(self, item: LesionPatch) -> str:
        """Store ``item`` and return its id (a content hash; re-adding is a no-op)."""
        if not isinstance(item, LesionPatch):
            raise SynthsegError(f"only LesionPatch items can be added to a lesion library, got {type(item).__name__}")
        lesion_id = _content_id(item)
        meta = {"version": FORMAT_VERSION, "id": lesion_id, **_jsonable(item.metadata())}
        tensors = {"intensity": item.intensity, "mask": item.mask.astype(np.uint8)}
        if item.absolute is not None:
            tensors["absolute"] = item.absolute
        if item.attachment is not None:
            tensors["attachment"] = item.attachment
        # arrays first, metadata second: an item counts once its .json exists
        with atomic_path(self.folder / f"{lesion_id}.safetensors") as tmp:
            save_file(tensors, str(tmp), metadata={"format": "napari-synthseg-lesion", "version": str(FORMAT_VERSION)})
        atomic_write_text(self.folder / f"{lesion_id}.json", json.dumps(meta, indent=1, sort_keys=True))
        items = dict(self._load_index(adding=lesion_id))
        items[lesion_id] = self._summary(meta)
        self._write_index(items)
        return lesion_id

    def _paths(self, lesion_id: str) -> tuple[Path, Path]:
        if not isinstance(lesion_id, str) or not _ID_RE.match(lesion_id):
            raise SynthsegError(f"invalid lesion id {lesion_id!r}; use an id from LesionLibrary.list()")
        arrays, meta = self.folder / f"{lesion_id}.safetensors", self.folder / f"{lesion_id}.json"
        if lesion_id.startswith(REFERENCE_PREFIX) and meta.exists():
            return arrays, meta
        if not (arrays.exists() and meta.exists()):
            raise SynthsegError(f"lesion {lesion_id!r} is not in the library {self.folder}; see LesionLibrary.list()")
        return arrays, meta

    def get(self, lesion_id: str) -> LesionPatch:
        """Load one item by id (a referenced item is read from its source files, then cached)."""
        with self._cache_lock:
            if lesion_id in self._cache:
                self._cache.move_to_end(lesion_id)
                return self._cache[lesion_id]
        if isinstance(lesion_id, str) and lesion_id.startswith(REFERENCE_PREFIX):
            item = self._get_reference(lesion_id)
        else:
            item = self._get_arrays(lesion_id)
        with self._cache_lock:
            self._cache[lesion_id] = item
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return item

    def get_prepared(self, lesion_id: str, attachments: str = "remove") -> LesionPatch:
        """:meth:`get` with the item's vessel attachments removed or kept
        (:func:`~napari_synthseg.lesions.attachments.apply_attachments`), cached like the item."""
        from .attachments import apply_attachments, attachments_mode

        mode = attachments_mode(attachments).value
        key = f"{lesion_id}|attachments={mode}"
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        item = apply_attachments(self.get(lesion_id), mode)
        with self._cache_lock:
            self._cache[key] = item
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return item

    def _get_reference(self, lesion_id: str) -> LesionPatch:
        from .ct_patch import load_ct_patch

        meta = self.metadata(lesion_id)
        ref = meta["reference"]
        image_path, mask_path = Path(ref["image"]), Path(ref["mask"])
        for path in (image_path, mask_path):
            if not path.is_file():
                raise SynthsegError(f"lesion {lesion_id!r} references {path}, which is gone; import the set again")
        item = load_ct_patch(image_path, mask_path, kind=meta.get("kind", "ct-nodule"))
        if (item.provenance["sha256"], item.provenance["mask_sha256"]) != (ref["image_sha256"], ref["mask_sha256"]):
            raise SynthsegError(
                f"lesion {lesion_id!r}: its source file {image_path.name} changed since it was imported; import the set again"
            )
        item = item.crop_to_mask(REFERENCE_MARGIN_MM)
        item.provenance.update({k: meta[k] for k in ("nodule_class", "series_uid", "nodule_index", "mean_hu",
                                                     "volume_mm3", "solid_fraction", "annotated_diameter_mm")
                                if k in meta})
        item.provenance["library_id"] = lesion_id
        return item

    def item_sha256(self, lesion_id: str) -> str:
        """SHA-256 of the file that defines an item: its ``.safetensors`` (arrays), or for a
        referenced item its ``.json`` (which holds its source files' hashes, checked on read).

        Cached by the file's size and mtime: a batch draws the same items again and again.
        """
        arrays, meta = self._paths(lesion_id)
        path = arrays if arrays.exists() else meta
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._cache_lock:
            hit = self._hashes.get(key)
        if hit is None:
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            hit = digest.hexdigest()
            with self._cache_lock:
                self._hashes[key] = hit
        return hit

    def metadata(self, lesion_id: str) -> dict:
        """The item's stored ``.json`` (measurements, class, provenance, reference)."""
        if not isinstance(lesion_id, str) or not _ID_RE.match(lesion_id):
            raise SynthsegError(f"invalid lesion id {lesion_id!r}; use an id from LesionLibrary.list()")
        meta_path = self.folder / f"{lesion_id}.json"
        if not meta_path.exists():
            raise SynthsegError(f"lesion {lesion_id!r} is not in the library {self.folder}; see LesionLibrary.list()")
        try:
            return json.loads(meta_path.read_text("utf-8"))
        except json.JSONDecodeError:
            raise SynthsegError(f"lesion {lesion_id!r} in {self.folder} is damaged; remove it") from None

    def _get_arrays(self, lesion_id: str) -> LesionPatch:
        arrays_path, meta_path = self._paths(lesion_id)
        try:
            meta = json.loads(meta_path.read_text("utf-8"))
            arrays = load_file(str(arrays_path))
        except Exception as exc:  # noqa: BLE001 - any decoding failure means a damaged file
            raise SynthsegError(f"lesion {lesion_id!r} in {self.folder} is damaged ({exc.__class__.__name__}); remove it") from None
        return LesionPatch(
            intensity=arrays["intensity"],
            mask=arrays["mask"].astype(bool),
            spacing=tuple(meta["spacing"]),
            kind=meta["kind"],
            provenance=meta.get("provenance", {}),
            absolute=arrays.get("absolute"),
            units=meta.get("units", "HU"),
            attachment=arrays.get("attachment"),
        )

    def remove(self, lesion_id: str) -> None:
        """Delete one item."""
        arrays_path, meta_path = self._paths(lesion_id)
        with self._cache_lock:
            for key in [k for k in self._cache if k == lesion_id or k.startswith(f"{lesion_id}|")]:
                self._cache.pop(key, None)
        meta_path.unlink()
        arrays_path.unlink(missing_ok=True)
        items = dict(self._load_index())
        items.pop(lesion_id, None)
        self._write_index(items)

    # from here on `list` in this class body is this method: later annotations say builtins.list
    def list(self) -> list[dict]:
        """All items as dicts (``id``, ``kind``, ``units``, ``ndim``, ``shape``, ``spacing``, ``diameter_mm``)."""
        return [{"id": k, **v} for k, v in sorted(self._load_index().items())]

    def __len__(self) -> int:
        return len(self._load_index())

    def __contains__(self, lesion_id: object) -> bool:
        return lesion_id in self._load_index()

    def find(
        self,
        diameter_mm: float | None = None,
        kind: str | Iterable[str] | None = None,
        ndim: int | None = None,
        units: str | None = None,
        k: int | None = None,
        tolerance: float | None = None,
        measure: str = "diameter_mm",
        cls: str | Iterable[str] | None = None,
        split: str | None = None,
    ) -> builtins.list[str]:
        """Ids ordered by closeness of the diameter to ``diameter_mm`` (mm).

        Parameters
        ----------
        kind, ndim, units : filters (``kind`` may be a list).
        k : at most this many ids.
        tolerance : keep only items with ``|d - diameter_mm| <= tolerance * diameter_mm``.
        measure : 'diameter_mm' (equivalent sphere/circle) or 'extent_diameter_mm' (largest
            bounding-box side, NODE21's measure).
        cls : 'solid', 'part-solid', 'ground-glass' (or a list): the nodule class measured from
            HU at import (items without a class, e.g. procedural ones, use their ``kind``).
        split : 'train' or 'test': only items of that side of the series-level split.
        """
        if measure not in ("diameter_mm", "extent_diameter_mm"):
            raise SynthsegError(f"unknown measure {measure!r}; use 'diameter_mm' or 'extent_diameter_mm'")
        kinds = {kind} if isinstance(kind, str) else (set(kind) if kind is not None else None)
        classes = {cls} if isinstance(cls, str) else (set(cls) if cls is not None else None)
        if classes is not None and not classes <= set(NODULE_CLASSES):
            raise SynthsegError(f"nodule class must be some of {', '.join(NODULE_CLASSES)}, got {sorted(classes)}")
        if split not in (None, "train", "test"):
            raise SynthsegError(f"split must be 'train' or 'test', got {split!r}")
        rows = [r for r in self.list()
                if (kinds is None or r["kind"] in kinds)
                and (classes is None or r.get("nodule_class", r["kind"]) in classes)
                and (split is None or r.get("split") == split)
                and (ndim is None or r["ndim"] == ndim)
                and (units is None or r["units"] == units)]
        if diameter_mm is not None:
            if not (math.isfinite(diameter_mm) and diameter_mm > 0):
                raise SynthsegError(f"diameter_mm must be a positive number, got {diameter_mm}")
            rows.sort(key=lambda r: (abs(r[measure] - diameter_mm), r["id"]))
            if tolerance is not None:
                rows = [r for r in rows if abs(r[measure] - diameter_mm) <= tolerance * diameter_mm]
        return [r["id"] for r in rows][: k if k is not None else None]

    def pick(
        self,
        diameter_mm: float,
        rng: np.random.Generator | int | None = None,
        tolerance: float = 0.25,
        **filters,
    ) -> str:
        """Pick an id at random among items within ``tolerance`` of ``diameter_mm`` (NODE21's rule);
        the nearest one if none is that close.

        ``filters`` are :meth:`find`'s: ``cls='part-solid'``, ``split='train'``, ``kind``, ``ndim`` ...
        """
        ids = self.find(diameter_mm, tolerance=tolerance, **filters)
        if not ids:
            ids = self.find(diameter_mm, k=1, **filters)
        if not ids:
            raise SynthsegError(f"no lesion in {self.folder} matches {filters or 'the request'}; add lesions first")
        rng = np.random.default_rng(rng)
        return ids[int(rng.integers(len(ids)))]

    # ------------------------------------------------------------------ real-lesion sets
    def add_references(self, described: Sequence[dict]) -> builtins.list[str]:
        """Store items that reference their source files (see :func:`describe_lesion_entry`).

        The index is written once for the whole list, so importing hundreds of items stays linear.
        """
        ids = []
        items = dict(self._load_index())
        for meta in described:
            lesion_id = reference_id(meta["reference"])
            full = {"version": FORMAT_VERSION, "id": lesion_id, **_jsonable(meta)}
            atomic_write_text(self.folder / f"{lesion_id}.json", json.dumps(full, indent=1, sort_keys=True))
            items[lesion_id] = self._summary(full)
            ids.append(lesion_id)
        self._write_index(items)
        return ids

    def import_index(
        self,
        folder: str | os.PathLike,
        *,
        side: str | None = None,
        salt: str | None = None,
        test_fraction: float | None = None,
        workers: int | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> builtins.list[str]:
        """Import every lesion of an ``index.csv`` (CT patch + mask pairs) by reference.

        Parameters
        ----------
        folder : path
            Folder holding ``index.csv`` (e.g. ``../shared/data/ct/lidc_nodules``).
        side : 'train', 'test' or None
            Import only that side of :func:`~napari_synthseg.io.lesion_index.split_by_group`
            (series-level: every nodule of one LIDC series lands on the same side). Every item
            records its side either way, so ``find(split=...)`` works on a full import.
        workers : int, optional
            Reader threads (default: the CPU count, at most 8). SimpleITK and NumPy release the
            GIL while reading and measuring, so threads overlap the I/O and the arithmetic.
        """
        from ..io.lesion_index import (
            DEFAULT_SPLIT_SALT,
            DEFAULT_TEST_FRACTION,
            group_side,
            read_lesion_index,
        )

        salt = DEFAULT_SPLIT_SALT if salt is None else salt
        test_fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
        if side not in (None, "train", "test"):
            raise SynthsegError(f"side must be 'train' or 'test', got {side!r}")
        entries = read_lesion_index(folder)
        sides = {e.group: group_side(e.group, salt, test_fraction) for e in entries}
        if side is not None:
            entries = [e for e in entries if sides[e.group] == side]
        workers = workers or min(8, os.cpu_count() or 1)
        described: list[dict] = []
        total = len(entries)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for k, meta in enumerate(pool.map(describe_lesion_entry, entries)):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                meta["split"] = sides[meta["series_uid"]]
                meta["split_salt"] = salt
                described.append(meta)
                report(progress, k + 1, total, meta["reference"]["image"].rsplit("/", 1)[-1])
        return self.add_references(described)


_OPEN: dict[str, LesionLibrary] = {}
_OPEN_LOCK = threading.Lock()


def open_library(folder: str | Path) -> LesionLibrary:
    """The process's one :class:`LesionLibrary` for ``folder``, so its item and hash caches
    survive from one placement to the next (the lesion spec opens the library per lesion; a
    fresh instance re-read and re-hashed every referenced donor patch)."""
    key = str(Path(folder).resolve())
    with _OPEN_LOCK:
        library = _OPEN.get(key)
        if library is None:
            library = _OPEN[key] = LesionLibrary(key)
        return library


def reference_id(reference: dict) -> str:
    """Id of a referenced item: a hash of its image and mask contents."""
    digest = hashlib.sha256(f"{reference['image_sha256']}:{reference['mask_sha256']}".encode()).hexdigest()
    return f"{REFERENCE_PREFIX}ct-nodule-{digest[:12]}"


def nodule_class_from_hu(hu: np.ndarray, mask: np.ndarray) -> tuple[str, float]:
    """(class, solid fraction) of a CT nodule from the HU inside its mask.

    The solid fraction is the share of core voxels (mask eroded by one voxel; the whole mask if
    the core has under 10 voxels) at or above :data:`SOLID_HU`. See the thresholds above.
    """
    mask = np.asarray(mask, bool)
    core = ndi.binary_erosion(mask)
    if core.sum() < 10:
        core = mask
    fraction = float((np.asarray(hu)[core] >= SOLID_HU).mean())
    if fraction < GROUND_GLASS_BELOW:
        return "ground-glass", fraction
    if fraction < SOLID_FROM:
        return "part-solid", fraction
    return "solid", fraction


def describe_lesion_entry(entry) -> dict:
    """Measure one ``index.csv`` row (a :class:`~napari_synthseg.io.lesion_index.LesionEntry`).

    Returns the metadata of a referenced library item: diameter (equivalent sphere and extent,
    mm), volume (mm³), mean HU inside the mask, class and solid fraction, the LUNA16 diameter
    from the table, the series id, and the SHA-256 of both files.
    """
    import SimpleITK as sitk

    from .ct_patch import _sha256
    from .item import mask_diameter_mm

    try:
        image = sitk.DICOMOrient(sitk.ReadImage(str(entry.image_path)), "LPS")
        mask_image = sitk.DICOMOrient(sitk.ReadImage(str(entry.mask_path)), "LPS")
    except RuntimeError as exc:
        raise SynthsegError(f"cannot read {entry.image_path.name}: {str(exc).strip().splitlines()[-1][:120]}") from None
    hu = sitk.GetArrayFromImage(image)
    mask = sitk.GetArrayFromImage(mask_image) > 0
    if hu.shape != mask.shape or not mask.any():
        raise SynthsegError(f"{entry.mask_path.name} does not match {entry.image_path.name} or is empty")
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    cls, solid_fraction = nodule_class_from_hu(hu, mask)
    box = bbox_with_margin(mask, spacing, REFERENCE_MARGIN_MM)
    return {
        "kind": "ct-nodule",
        "units": "HU",
        "ndim": 3,
        "shape": [s.stop - s.start for s in box],
        "spacing": list(spacing),
        "diameter_mm": round(mask_diameter_mm(mask, spacing), 4),
        "extent_diameter_mm": round(mask_diameter_mm(mask, spacing, "extent"), 4),
        "annotated_diameter_mm": entry.diameter_mm,
        "volume_mm3": round(float(mask.sum() * np.prod(spacing)), 3),
        "mean_hu": round(float(hu[mask].mean()), 2),
        "nodule_class": cls,
        "solid_fraction": round(solid_fraction, 4),
        "series_uid": entry.group,
        "nodule_index": entry.index_in_group,
        "has_absolute": True,
        "reference": {
            "image": str(Path(entry.image_path).resolve()),
            "mask": str(Path(entry.mask_path).resolve()),
            "image_sha256": _sha256(Path(entry.image_path)),
            "mask_sha256": _sha256(Path(entry.mask_path)),
        },
        "provenance": {"source": "lesion_index", "index": str(Path(entry.image_path).parent)},
    }


#: Display window of a CT thumbnail (HU): the lung window, where nodules and ground glass show.
THUMBNAIL_WINDOW_HU = (-1000.0, 400.0)


def lesion_thumbnail(item: LesionPatch, size: int = 64, outline: tuple[int, int, int] = (255, 200, 0)) -> np.ndarray:
    """An RGB ``uint8`` (size, size, 3) picture of a lesion for a library browser (Qt-free).

    3D items show the axial slice through the mask's centroid; CT values in the lung window
    (absolute HU when the item has them, else the residual over -850 HU lung), other units
    stretched to their range. The mask's outline is drawn in ``outline``.
    """
    if size < 8:
        raise SynthsegError(f"thumbnail size must be at least 8 px, got {size}")
    mask = item.mask
    values = item.absolute if item.absolute is not None else item.intensity
    if item.ndim == 3:
        z = int(round(ndi.center_of_mass(mask)[0]))
        mask, values = mask[z], values[z]
    if item.units == "HU":
        if item.absolute is None:
            values = values - 850.0
        lo, hi = THUMBNAIL_WINDOW_HU
    else:
        lo, hi = float(values.min()), float(values.max())
        if item.units == "attenuation" and item.absolute is None:
            lo, hi = min(lo, 0.0), max(hi, 1e-6)
    grey = np.clip((values - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    # square canvas (pad the short side), then nearest/linear zoom to size x size
    side = max(grey.shape)
    pad = [((side - n) // 2, side - n - (side - n) // 2) for n in grey.shape]
    grey = np.pad(grey, pad, mode="edge")
    edge = mask ^ ndi.binary_erosion(mask)
    edge = np.pad(edge, pad)
    zoom = size / side
    grey = np.clip(ndi.zoom(grey, zoom, order=1, grid_mode=True, mode="nearest"), 0, 1)
    edge = ndi.zoom(edge.astype(np.uint8), zoom, order=0, grid_mode=True, mode="nearest").astype(bool)
    grey, edge = grey[:size, :size], edge[:size, :size]
    rgb = np.repeat((grey * 255.0 + 0.5).astype(np.uint8)[..., None], 3, axis=-1)
    rgb[edge] = outline
    return rgb


#: Environment variable naming the lesion library that batch generation and the editor use by
#: default (e.g. the imported LIDC nodules). Where it names a library, real nodules are the
#: default lesion source; otherwise procedural nodules are.
LIBRARY_ENV = "SYNTHSEG_LESION_LIBRARY"


def default_lesion_source() -> str:
    """The default lesion source: the library named by ``$SYNTHSEG_LESION_LIBRARY`` when that
    folder holds a library (an ``index.json``), else ``'procedural'``."""
    folder = os.environ.get(LIBRARY_ENV, "").strip()
    if folder and (Path(folder) / INDEX_NAME).is_file():
        return folder
    return "procedural"
