"""Drawing lesion patches for batch scenes, with libraries loaded once per worker process.

Every loader here is cached per process (``functools.lru_cache``): a dask worker reads a lesion
library's index, lists a CT-patch folder or loads a harmonizer once and serves every scene it
builds from memory. Draws take the scene's own ``numpy.random.Generator``, so a scene's lesions
depend on the recipe seed and the scene, never on which worker built it or in which order.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SynthsegError
from .recipe import LibrarySource, ProceduralSource

_CT_SUFFIXES = (".mha", ".mhd", ".nii", ".gz", ".nrrd")


@functools.lru_cache(maxsize=16)
def _library(folder: str):
    from ..lesions import LesionLibrary

    return LesionLibrary(folder)


@functools.lru_cache(maxsize=16)
def _index_entries(table: str, split: str) -> tuple:
    from ..io.lesion_index import read_lesion_index, split_by_group

    entries = read_lesion_index(table)
    if split != "all":
        train, test = split_by_group(entries)
        entries = train if split == "train" else test
    if not entries:
        raise SynthsegError(f"{table}: no lesion on the {split} side of the split")
    return tuple(entries)


@functools.lru_cache(maxsize=16)
def _ct_files(folder: str) -> tuple[Path, ...]:
    files = tuple(sorted(p for p in Path(folder).iterdir()
                         if "_seg" not in p.name and p.name.lower().endswith(_CT_SUFFIXES)))
    if not files:
        raise SynthsegError(f"lesion source {folder} is not a lesion library (index.json), a lesion table "
                            "(index.csv) nor a folder of CT patches (*_ct + *_seg)")
    return files


@functools.lru_cache(maxsize=512)
def _ct_patch(path: str, mask: str | None):
    from ..lesions import load_ct_patch

    return load_ct_patch(path, mask)


@functools.lru_cache(maxsize=4)
def harmonizer(path: str):
    """A trained harmonizer, loaded once per process."""
    from ..harmonize import Harmonizer

    return Harmonizer.load(path)


def library_kind(path: Path) -> str:
    """'library' (index.json), 'index' (index.csv) or 'ct_patches' (a folder of patches)."""
    if path.is_dir() and (path / "index.json").exists():
        return "library"
    if (path.is_file() and path.name.lower().endswith(".csv")) or (path.is_dir() and (path / "index.csv").exists()):
        return "index"
    if path.is_dir():
        return "ct_patches"
    raise SynthsegError(f"lesion source not found: {path}")


def check_source(source, resolve) -> None:
    """Fail before the run (exit 2) when a library source cannot be opened."""
    if isinstance(source, LibrarySource):
        path = resolve(source.path)
        kind = library_kind(path)
        if kind == "library":
            _library(str(path))
        elif kind == "index":
            _index_entries(str(path), source.split)
        else:
            _ct_files(str(path))


def draw_patch(source, size_mm: float, rng: np.random.Generator, resolve) -> tuple[Any, dict]:
    """A lesion patch of about ``size_mm`` from ``source`` and a record of where it came from."""
    if isinstance(source, ProceduralSource):
        from ..lesions import procedural_nodule

        kind = source.kinds[int(rng.integers(len(source.kinds)))]
        seed = int(rng.integers(2**31 - 1))
        # Patch voxels about 1/12 of the diameter: fine enough for the smallest nodules, cheap
        # for the largest (the renderer resamples onto the image grid in one interpolation).
        spacing = min(1.0, max(0.25, size_mm / 12.0))
        lobulation = float(rng.uniform(*source.lobulation))
        spiculation = float(rng.uniform(*source.spiculation))
        patch = procedural_nodule(size_mm, kind, spacing=spacing, lobulation=lobulation,
                                  spiculation=spiculation, seed=seed)
        return patch, {"type": "procedural", "kind": kind, "seed": seed, "lobulation": lobulation,
                       "spiculation": spiculation}
    if isinstance(source, LibrarySource):
        path = resolve(source.path)
        kind = library_kind(path)
        if kind == "library":
            library = _library(str(path))
            lesion_id = library.pick(size_mm, rng)
            return library.get(lesion_id), {"type": "library", "library": str(path), "id": lesion_id}
        if kind == "index":
            entries = _index_entries(str(path), source.split)
            entry = _pick_entry(entries, size_mm, rng)
            patch = _ct_patch(str(entry.image_path), str(entry.mask_path))
            return patch, {"type": "lesion_index", "table": str(path), "file": entry.image_path.name,
                           "group": entry.group, "split": source.split}
        files = _ct_files(str(path))
        chosen = files[int(rng.integers(len(files)))]
        return _ct_patch(str(chosen), None), {"type": "ct_patch", "path": str(chosen)}
    raise SynthsegError(f"unknown lesion source {source!r}")


def _pick_entry(entries, size_mm: float, rng: np.random.Generator, tolerance: float = 0.25):
    """NODE21's rule (as :meth:`LesionLibrary.pick`): a random lesion whose diameter is within
    ``tolerance`` of the request, else the nearest; entries without a diameter are always eligible."""
    diam = np.array([e.diameter_mm if e.diameter_mm is not None else np.nan for e in entries])
    close = np.flatnonzero(np.isnan(diam) | (np.abs(diam - size_mm) <= tolerance * size_mm))
    if close.size == 0:
        close = np.array([int(np.nanargmin(np.abs(diam - size_mm)))])
    return entries[int(close[int(rng.integers(close.size))])]
