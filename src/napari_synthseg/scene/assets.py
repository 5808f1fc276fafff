"""Content-addressed array store of a scene folder (``assets/<key>.safetensors``).

Arrays are written once under the hash of their dtype, shape and bytes, so autosave never
rewrites them, undo can point back to an old mask for free, and a crash can at worst leave an
unreferenced file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path
from typing import Callable

import numpy as np
from safetensors.numpy import load_file, save_file

from ..errors import SynthsegError
from ..utils.atomic import atomic_path

#: What every asset key looks like: the first 32 hex digits of a sha256 (see :func:`array_key`).
#: Keys come from scene.json, which is user-editable data; anything else (``../../x``, an
#: absolute path) would be used as a path outside the scene's store, so it is refused.
ASSET_KEY = re.compile(r"[0-9a-f]{32}")


def is_asset_key(key: object) -> bool:
    """Whether ``key`` is a well-formed asset key (hash-shaped, so it names a file in the store)."""
    return isinstance(key, str) and ASSET_KEY.fullmatch(key) is not None


def check_asset_key(key: object, where: str = "scene") -> str:
    """``key`` if well-formed, else a one-line :class:`SynthsegError`."""
    if not is_asset_key(key):
        shown = repr(key)[:60]
        raise SynthsegError(f"{where} names an invalid asset key {shown}; keys are 32 hex digits")
    return key  # type: ignore[return-value]


def array_key(array: np.ndarray) -> str:
    arr = np.ascontiguousarray(array)
    h = hashlib.sha256()
    h.update(f"{arr.dtype.str}|{arr.shape}|".encode())
    h.update(arr.data)
    return h.hexdigest()[:32]


#: Automatic compaction lets at most this many unreferenced asset files accumulate in a
#: scene's store before they are removed (see :meth:`AssetStore.maybe_compact`).
COMPACT_SLACK_FILES = 64


class AssetStore:
    """Arrays by key, in memory and (when the scene has a folder) on disk."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._cache: dict[str, np.ndarray] = {}
        self._files_after_compaction = 0

    def attach(self, folder: Path) -> None:
        """Give an in-memory store a folder and write what it holds."""
        self.folder = folder
        for key, array in self._cache.items():
            self._write(key, array)

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        check_asset_key(key)
        return self.folder / "assets" / f"{key}.safetensors"

    def _write(self, key: str, array: np.ndarray) -> None:
        path = self._path(key)
        if path.exists():
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                # bool is not a safetensors dtype; store as uint8 and remember.
                data = array.astype(np.uint8) if array.dtype == bool else array
                save_file({"data": np.ascontiguousarray(data)}, str(tmp), metadata={"bool": str(array.dtype == bool)})
        except SynthsegError:
            raise
        except Exception as exc:  # OSError, or safetensors' own error type on a full disk
            reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[-1][:160]
            raise SynthsegError(f"cannot write scene asset {path.name}: {reason}") from None

    def put(self, array: np.ndarray) -> str:
        array = np.asarray(array)
        key = array_key(array)
        if key not in self._cache:
            frozen = np.array(array, copy=True)
            frozen.flags.writeable = False
            self._cache[key] = frozen
        if self.folder is not None:
            self._write(key, self._cache[key])
        return key

    def get(self, key: str) -> np.ndarray:
        check_asset_key(key)
        if key in self._cache:
            return self._cache[key]
        if self.folder is None or not self._path(key).exists():
            raise SynthsegError(f"scene asset {key} is missing; the scene folder is incomplete")
        from safetensors import safe_open

        path = self._path(key)
        try:
            with safe_open(str(path), framework="numpy") as fh:
                is_bool = (fh.metadata() or {}).get("bool") == "True"
            array = load_file(str(path))["data"]
        except Exception:  # safetensors raises its own error type for a cut or foreign file
            raise SynthsegError(f"scene asset {path.name} is corrupt or truncated") from None
        if array_key(array.astype(bool) if is_bool else array) != key:
            # Content addressing is also an integrity check: a file under another key's name
            # (copied in, or damaged) would otherwise be used as that key's pixels.
            raise SynthsegError(f"scene asset {path.name} does not hold the array its name promises (corrupt)")
        if is_bool:
            array = array.astype(bool)
        array.flags.writeable = False
        self._cache[key] = array
        return array

    def __contains__(self, key: str) -> bool:
        if not is_asset_key(key):
            return False
        return key in self._cache or (self.folder is not None and self._path(key).exists())

    def prune(self, keep: set[str]) -> int:
        """Delete stored arrays not in ``keep``; returns how many were removed."""
        if self.folder is None or not (self.folder / "assets").is_dir():
            return 0
        removed = 0
        for path in (self.folder / "assets").glob("*.safetensors"):
            if path.stem not in keep:
                with contextlib.suppress(FileNotFoundError):  # another process pruned it first
                    path.unlink()
                self._cache.pop(path.stem, None)
                removed += 1
        return removed

    def file_count(self) -> int:
        """How many asset files the store's folder holds (one ``listdir``)."""
        if self.folder is None or not (self.folder / "assets").is_dir():
            return 0
        return sum(1 for name in os.listdir(self.folder / "assets") if name.endswith(".safetensors"))

    def maybe_compact(self, referenced: Callable[[], set[str]], slack: int = COMPACT_SLACK_FILES) -> int:
        """Prune unreferenced assets once more than ``slack`` new files have appeared.

        Meant to run after every save: it costs one ``listdir`` until the store has grown by
        ``slack`` files since the last compaction, and only then asks ``referenced()`` (the
        scene's current state plus its undo/redo history) and deletes the rest. So the store
        holds what the scene and its history use plus at most ``slack`` files, however long the
        edit session. Call it only after ``scene.json`` and ``history.json`` are written, so
        that every asset either file names is in ``referenced()``.
        """
        count = self.file_count()
        if count <= self._files_after_compaction + slack:
            return 0
        removed = self.prune(referenced())
        self._files_after_compaction = count - removed
        return removed
