"""Drawing lesion patches for batch scenes through the shared lesion spec.

Procedural nodules, lesion libraries and folders of CT patches are resolved by
:class:`~napari_synthseg.workflow.spec.LesionSpec`, the same code the CLI and the lesion editor
use (shape sampling per dimensionality, sha256 provenance of every file read). Batch adds what a
recipe needs on top: drawing a kind, size and shape per lesion from the recipe's ranges, and
tables of real lesions (``index.csv``, e.g. the LIDC nodules) with their patient-level split.

Per worker process, parsed specs, lesion tables and harmonizers are cached
(``functools.lru_cache``): a dask worker reads a table's index or loads a model once and serves
every scene it builds from memory. Draws take the scene's own ``numpy.random.Generator``, so a
scene's lesions depend on the recipe seed and the scene, never on the worker or the order.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SynthsegError
from ..workflow.spec import LesionSourceKind, LesionSpec, PlaceSettings, procedural_kind
from .recipe import GeneratedSource, InpaintedSource, LibrarySource, ProceduralSource


@functools.lru_cache(maxsize=32)
def _spec(path: str) -> LesionSpec:
    return LesionSpec.parse(path)


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


@functools.lru_cache(maxsize=4)
def harmonizer(path: str):
    """A trained harmonizer, loaded once per process."""
    from ..harmonize import Harmonizer

    return Harmonizer.load(path)


@functools.lru_cache(maxsize=4)
def inpainter(path: str):
    """A lesion-fill inpainting model, loaded once per process (refused unless trained for it)."""
    from ..inpaint import Inpainter
    from ..inpaint.infer import resolve_model_path

    model = Inpainter(resolve_model_path(path, "lesion"), device="cpu")
    model.check_mode("lesion")
    return model


def _is_table(path: Path) -> bool:
    return (path.is_file() and path.name.lower().endswith(".csv")) or (
        path.is_dir() and (path / "index.csv").exists() and not (path / "index.json").exists())


def check_source(source, resolve) -> None:
    """Fail before the run (exit 2) when a library source cannot be opened."""
    if isinstance(source, LibrarySource):
        path = resolve(source.path)
        if _is_table(path):
            _index_entries(str(path), source.split)
        else:
            _spec(str(path))
    elif isinstance(source, GeneratedSource) and source.model is not None:
        if not Path(resolve(source.model)).is_file():
            raise SynthsegError(f"lesion generator model not found: {resolve(source.model)}")
    elif isinstance(source, InpaintedSource):
        model = source.model if source.model.startswith("builtin") else str(resolve(source.model))
        if not source.model.startswith("builtin") and not Path(model).is_file():
            raise SynthsegError(f"inpainting model not found: {model}")
        inpainter(model)


def draw_patch(source, size_mm: float, image, rng: np.random.Generator, resolve,
               center_mm: tuple[float, ...] | None = None) -> tuple[Any, dict]:
    """A lesion patch of about ``size_mm`` for ``image`` from ``source``, and its provenance.

    ``center_mm`` is the drawn site: generated lesions are made in the image's context there.
    """
    seed = int(rng.integers(2**31 - 1))
    settings = PlaceSettings(size_mm=size_mm, seed=seed)
    if isinstance(source, ProceduralSource):
        kind = source.kinds[int(rng.integers(len(source.kinds)))]
        shape = {"lobulation": float(rng.uniform(*source.lobulation)),
                 "spiculation": float(rng.uniform(*source.spiculation))}
        spec = LesionSpec(LesionSourceKind.PROCEDURAL, kind=procedural_kind(kind), shape=shape)
        resolved = spec.resolve(image, settings, rng=rng)
        return resolved.patch, resolved.source
    if isinstance(source, GeneratedSource):
        kind = source.kinds[int(rng.integers(len(source.kinds)))]
        model = None if source.model is None else Path(resolve(source.model))
        spec = LesionSpec(LesionSourceKind.GENERATED, kind=procedural_kind(kind), path=model)
        resolved = spec.resolve(image, settings, rng=rng, center_mm=center_mm)
        return resolved.patch, resolved.source
    if isinstance(source, LibrarySource):
        settings = settings.with_changes(attachments=source.attachments)
        path = resolve(source.path)
        if _is_table(path):
            entry = _pick_entry(_index_entries(str(path), source.split), size_mm, rng)
            spec = LesionSpec(LesionSourceKind.CT_PATCH, path=entry.image_path, mask_path=entry.mask_path)
            resolved = spec.resolve(image, settings, rng=rng)
            return resolved.patch, dict(resolved.source, type="lesion_index", table=str(path), group=entry.group,
                                        split=source.split)
        resolved = _spec(str(path)).resolve(image, settings, rng=rng)
        return resolved.patch, resolved.source
    raise SynthsegError(f"unknown lesion source {source!r}")


def _pick_entry(entries, size_mm: float, rng: np.random.Generator, tolerance: float = 0.25):
    """NODE21's rule (as :meth:`LesionLibrary.pick`): a random lesion whose diameter is within
    ``tolerance`` of the request, else the nearest; entries without a diameter are always eligible."""
    diam = np.array([e.diameter_mm if e.diameter_mm is not None else np.nan for e in entries])
    close = np.flatnonzero(np.isnan(diam) | (np.abs(diam - size_mm) <= tolerance * size_mm))
    if close.size == 0:
        close = np.array([int(np.nanargmin(np.abs(diam - size_mm)))])
    return entries[int(close[int(rng.integers(close.size))])]
