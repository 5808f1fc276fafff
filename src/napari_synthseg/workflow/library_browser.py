"""Browsing a lesion library: filter by class and size, thumbnails, choose one to place.

The lesion editor's library strip (``widgets/_library_strip.py``) is a view over these calls;
every rule lives here, Qt-free:

- :func:`browse_library` lists the items of a library that match a nodule class and a diameter
  range, smallest first, as :class:`LibraryEntry` rows (id, diameter, class, mean HU, caption);
- :func:`library_thumbnails` makes their pictures (the axial slice through the mask's centroid
  in the lung window, outline drawn; :func:`~napari_synthseg.lesions.library.lesion_thumbnail`)
  one at a time, for a worker thread, with progress and cancel. Pictures are cached in memory
  and on disk (``$XDG_CACHE_HOME/napari-synthseg/thumbnails``): a referenced LIDC nodule costs a
  read of two files, a hash check and a crop (tens of ms), so the 895-nodule library would take
  half a minute every time the editor opens without the disk cache, and a blink with it;
- :func:`choose_library_lesion` is what a click on a thumbnail means: the lesion spec text of
  that one item and its own diameter (a real nodule is placed at its own size unless the user
  changes it: rescaling a real nodule changes its texture scale and its noise).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import SynthsegError
from ..lesions.library import NODULE_CLASSES, LesionLibrary, lesion_thumbnail
from ..utils.progress import CancelToken, ProgressCallback, report

logger = logging.getLogger(__name__)

#: Class filter choices of the browser ("any" keeps every item).
CLASS_CHOICES = ("any",) + tuple(NODULE_CLASSES)
#: Thumbnail edge in pixels: four fit side by side in the 340 px editor panel.
THUMBNAIL_PX = 56
#: Diameter range the browser starts with (mm): every LIDC nodule (3-46 mm).
DEFAULT_DIAMETER_RANGE = (0.0, 60.0)
#: Pictures kept in memory (about 9 kB each at 56 px).
MEMORY_CACHE_ITEMS = 2048

_SHORT_CLASS = {"solid": "solid", "part-solid": "part-solid", "ground-glass": "GGO"}


@dataclass(frozen=True)
class LibraryEntry:
    """One library item as the browser shows it."""

    lesion_id: str
    diameter_mm: float
    nodule_class: str
    mean_hu: float | None = None
    split: str | None = None

    @property
    def caption(self) -> str:
        """Two short lines under a thumbnail: diameter and class (ground glass as GGO)."""
        return f"{self.diameter_mm:.1f} mm\n{_SHORT_CLASS.get(self.nodule_class, self.nodule_class)}"

    @property
    def tooltip(self) -> str:
        parts = [self.lesion_id, f"{self.diameter_mm:.1f} mm", self.nodule_class]
        if self.mean_hu is not None:
            parts.append(f"mean {self.mean_hu:.0f} HU")
        if self.split:
            parts.append(f"{self.split} split")
        return ", ".join(parts)


def open_library(folder: str | os.PathLike) -> LesionLibrary:
    """The library in ``folder`` (a user error when the folder holds none)."""
    text = str(folder).strip()
    if not text:
        raise SynthsegError("give a lesion library folder (e.g. one made by 'synthseg library import-lidc')")
    path = Path(text).expanduser()
    if not (path / "index.json").is_file():
        raise SynthsegError(f"{path} is not a lesion library (no index.json); build one with 'synthseg library import-lidc'")
    return LesionLibrary(path)


def browse_library(
    folder: str | os.PathLike,
    nodule_class: str = "any",
    min_diameter_mm: float = DEFAULT_DIAMETER_RANGE[0],
    max_diameter_mm: float = DEFAULT_DIAMETER_RANGE[1],
) -> list[LibraryEntry]:
    """Items of the library in ``folder`` of that class within the diameter range, smallest first.

    Only items that can go into an image are listed (3D CT nodules and 2D patches alike); items
    without a measured class show their ``kind``.
    """
    if nodule_class not in CLASS_CHOICES:
        raise SynthsegError(f"nodule class must be one of {', '.join(CLASS_CHOICES)}, got {nodule_class!r}")
    lo, hi = float(min_diameter_mm), float(max_diameter_mm)
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo <= hi):
        raise SynthsegError(f"the diameter range must be 0 <= min <= max, got {lo:g}..{hi:g} mm")
    rows = open_library(folder).list()
    entries = []
    for row in rows:
        cls = str(row.get("nodule_class", row.get("kind", "")))
        diameter = float(row.get("diameter_mm", 0.0))
        if nodule_class != "any" and cls != nodule_class:
            continue
        if not lo <= diameter <= hi:
            continue
        entries.append(LibraryEntry(row["id"], diameter, cls, row.get("mean_hu"), row.get("split")))
    entries.sort(key=lambda e: (e.diameter_mm, e.lesion_id))
    return entries


# ---- thumbnails -------------------------------------------------------------------------------

_memory: OrderedDict[tuple[str, str, int], np.ndarray] = OrderedDict()
_memory_lock = threading.Lock()


def thumbnail_cache_dir() -> Path:
    """Where thumbnails are kept between sessions (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "napari-synthseg" / "thumbnails"


def _disk_path(library: LesionLibrary, lesion_id: str, size: int) -> Path:
    # Ids are content hashes (of the arrays, or of the referenced files' sha256): the same id
    # is the same picture in any library folder. The folder goes into the key anyway, so two
    # libraries never share a picture of an item one of them re-imported.
    folder = hashlib.sha256(str(library.folder.resolve()).encode()).hexdigest()[:10]
    return thumbnail_cache_dir() / folder / f"{lesion_id}-{size}.npy"


def _remember(key: tuple[str, str, int], rgb: np.ndarray) -> None:
    with _memory_lock:
        _memory[key] = rgb
        _memory.move_to_end(key)
        while len(_memory) > MEMORY_CACHE_ITEMS:
            _memory.popitem(last=False)


def library_thumbnail(library: LesionLibrary, lesion_id: str, size: int = THUMBNAIL_PX) -> np.ndarray:
    """The RGB ``uint8`` (size, size, 3) picture of one item, from the caches when there."""
    key = (str(library.folder.resolve()), lesion_id, int(size))
    with _memory_lock:
        if key in _memory:
            _memory.move_to_end(key)
            return _memory[key]
    path = _disk_path(library, lesion_id, size)
    if path.is_file():
        try:
            rgb = np.load(path, allow_pickle=False)
            if rgb.shape == (size, size, 3) and rgb.dtype == np.uint8:
                _remember(key, rgb)
                return rgb
        except (OSError, ValueError):
            pass  # a damaged cache file: make the picture again
    rgb = lesion_thumbnail(library.get(lesion_id), size)
    _remember(key, rgb)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.npy")
        np.save(tmp, rgb, allow_pickle=False)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home: the memory cache still works
        logger.debug("thumbnail cache not written: %s", exc)
    return rgb


def library_thumbnails(
    folder: str | os.PathLike,
    lesion_ids: Sequence[str],
    size: int = THUMBNAIL_PX,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Iterator[tuple[str, np.ndarray]]:
    """``(id, rgb)`` for each id, one at a time (a worker yields each to the UI as it comes).

    An item whose files are gone or damaged gets a grey picture with a red cross and a warning
    in the log instead of stopping the others.
    """
    library = open_library(folder)
    total = len(lesion_ids)
    for done, lesion_id in enumerate(lesion_ids, start=1):
        if cancel is not None:
            cancel.raise_if_cancelled()
        try:
            rgb = library_thumbnail(library, lesion_id, size)
        except SynthsegError as exc:
            logger.warning("no thumbnail for %s: %s", lesion_id, exc)
            rgb = _broken_picture(size)
        report(progress, done, total, f"thumbnails {done}/{total}")
        yield lesion_id, rgb


def _broken_picture(size: int) -> np.ndarray:
    rgb = np.full((size, size, 3), 60, np.uint8)
    diagonal = np.arange(size)
    rgb[diagonal, diagonal] = (220, 40, 40)
    rgb[diagonal, size - 1 - diagonal] = (220, 40, 40)
    return rgb


def clear_thumbnail_memory() -> None:
    """Forget the in-memory pictures (tests; the disk cache stays)."""
    with _memory_lock:
        _memory.clear()


# ---- choosing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LibraryChoice:
    """What a click on a thumbnail selects: the spec text of that item and its own size."""

    spec_text: str
    size_mm: float
    entry: LibraryEntry


def choose_library_lesion(folder: str | os.PathLike, lesion_id: str) -> LibraryChoice:
    """The lesion spec of one library item (``LIBRARY/<id>.json``) and its own diameter."""
    library = open_library(folder)
    if lesion_id not in library:
        raise SynthsegError(f"lesion {lesion_id!r} is not in the library {library.folder}")
    row = next(r for r in library.list() if r["id"] == lesion_id)
    entry = LibraryEntry(lesion_id, float(row.get("diameter_mm", 0.0)),
                         str(row.get("nodule_class", row.get("kind", ""))), row.get("mean_hu"), row.get("split"))
    spec_text = str(library.folder.resolve() / f"{lesion_id}.json")
    # the spec parses back to exactly this item (a check now, not at the first click)
    from .spec import LesionSourceKind, LesionSpec

    spec = LesionSpec.parse(spec_text)
    if spec.source is not LesionSourceKind.LIBRARY_ITEM or spec.item_id != lesion_id:
        raise SynthsegError(f"lesion {lesion_id!r} cannot be named as a library item")
    return LibraryChoice(spec_text, round(entry.diameter_mm, 1), entry)


def default_library_folder() -> str:
    """The library the browser opens first: ``$SYNTHSEG_LESION_LIBRARY`` when it names one."""
    from ..lesions.library import default_lesion_source

    source = default_lesion_source()
    return "" if source == "procedural" else source


__all__ = [
    "CLASS_CHOICES",
    "DEFAULT_DIAMETER_RANGE",
    "THUMBNAIL_PX",
    "LibraryChoice",
    "LibraryEntry",
    "browse_library",
    "choose_library_lesion",
    "clear_thumbnail_memory",
    "default_library_folder",
    "library_thumbnail",
    "library_thumbnails",
    "open_library",
    "thumbnail_cache_dir",
]
