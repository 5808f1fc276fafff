"""A folder of lesion patches: ``<id>.safetensors`` (arrays) + ``<id>.json`` (metadata) + index.

Ids are content hashes (``<kind>-<12 hex>``), so adding the same lesion twice gives the same id
and two people filling one library never collide. Every file is written atomically; the index
(``index.json``) is a cache, checked against the item files on every read and regenerated
from the ``.json`` files when it disagrees, so a crash or two concurrent writers never lose an
item.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Iterable

import numpy as np
from safetensors.numpy import load_file, save_file

from ..errors import SynthsegError
from ..utils.atomic import atomic_path, atomic_write_text
from .item import LesionPatch

FORMAT_VERSION = 1
INDEX_NAME = "index.json"
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def _content_id(item: LesionPatch) -> str:
    h = hashlib.sha256()
    for arr in (item.intensity, item.mask, item.absolute):
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

    # ------------------------------------------------------------------ index
    @property
    def index_path(self) -> Path:
        return self.folder / INDEX_NAME

    def _item_stems(self) -> set:
        return {p.stem for p in self.folder.glob("*.json")
                if p.name != INDEX_NAME and not p.name.startswith(".") and p.with_suffix(".safetensors").exists()}

    def _load_index(self, adding: str | None = None) -> dict:
        # read from disk every time and check it against the item files: another process may
        # have added or removed items, or two writers may have raced on index.json
        if self.index_path.exists():
            try:
                items = json.loads(self.index_path.read_text("utf-8"))["items"]
                known = set(items) | ({adding} if adding else set()) if isinstance(items, dict) else None
                if known is not None and known == self._item_stems():
                    self._index = items
                    return items
            except (json.JSONDecodeError, KeyError, TypeError):
                pass  # a damaged or stale cache: rebuild it from the item files
        return self.rebuild_index()

    def _write_index(self, items: dict) -> None:
        atomic_write_text(self.index_path, json.dumps({"version": FORMAT_VERSION, "items": items}, indent=1,
                                                      sort_keys=True))
        self._index = items

    @staticmethod
    def _summary(meta: dict) -> dict:
        return {k: meta[k] for k in ("kind", "units", "ndim", "shape", "spacing", "diameter_mm",
                                     "extent_diameter_mm") if k in meta}

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
        if not (arrays.exists() and meta.exists()):
            raise SynthsegError(f"lesion {lesion_id!r} is not in the library {self.folder}; see LesionLibrary.list()")
        return arrays, meta

    def get(self, lesion_id: str) -> LesionPatch:
        """Load one item by id."""
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
        )

    def remove(self, lesion_id: str) -> None:
        """Delete one item."""
        arrays_path, meta_path = self._paths(lesion_id)
        meta_path.unlink()
        arrays_path.unlink(missing_ok=True)
        items = dict(self._load_index())
        items.pop(lesion_id, None)
        self._write_index(items)

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
    ) -> list[str]:
        """Ids ordered by closeness of the diameter to ``diameter_mm`` (mm).

        Parameters
        ----------
        kind, ndim, units : filters (``kind`` may be a list).
        k : at most this many ids.
        tolerance : keep only items with ``|d - diameter_mm| <= tolerance * diameter_mm``.
        measure : 'diameter_mm' (equivalent sphere/circle) or 'extent_diameter_mm' (largest
            bounding-box side, NODE21's measure).
        """
        if measure not in ("diameter_mm", "extent_diameter_mm"):
            raise SynthsegError(f"unknown measure {measure!r}; use 'diameter_mm' or 'extent_diameter_mm'")
        kinds = {kind} if isinstance(kind, str) else (set(kind) if kind is not None else None)
        rows = [r for r in self.list()
                if (kinds is None or r["kind"] in kinds)
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
        the nearest one if none is that close."""
        ids = self.find(diameter_mm, tolerance=tolerance, **filters)
        if not ids:
            ids = self.find(diameter_mm, k=1, **filters)
        if not ids:
            raise SynthsegError(f"no lesion in {self.folder} matches {filters or 'the request'}; add lesions first")
        rng = np.random.default_rng(rng)
        return ids[int(rng.integers(len(ids)))]
