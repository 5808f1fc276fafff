"""One live :class:`Scene` per folder in a process.

Every widget, job and command that opens a scene folder asks the store, and gets the same
object: the lesion editor and the QA review of one folder see each other's changes at once (one
undo history, one set of listeners) instead of each holding a copy that the other overwrites.
Across processes, :meth:`Scene.save` merges or refuses (see its docstring).
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path

from ..errors import SynthsegError
from ..io import MedicalImage
from .scene import SCENE_FILE, Scene


def _key(folder: str | os.PathLike) -> Path:
    return Path(folder).expanduser().resolve()


class SceneStore:
    """Hands out the one live scene of each folder (held weakly: a scene nobody uses goes)."""

    def __init__(self) -> None:
        self._scenes: "weakref.WeakValueDictionary[Path, Scene]" = weakref.WeakValueDictionary()
        self._lock = threading.RLock()

    def get(self, folder: str | os.PathLike) -> Scene | None:
        """The live scene of ``folder``, or None when no one has it open."""
        with self._lock:
            scene = self._scenes.get(_key(folder))
            return None if scene is None or scene.closed else scene

    def open(self, folder: str | os.PathLike) -> Scene:
        """The live scene of ``folder``, opening it from disk if no one has it yet.

        A scene already live takes in what other programs saved since (``Scene.refresh``).
        """
        key = _key(folder)
        with self._lock:
            scene = self.get(key)
            if scene is not None:
                scene.refresh()
                return scene
            scene = Scene.open(key)
            self._scenes[key] = scene
            return scene

    def create(
        self,
        image: MedicalImage,
        folder: str | os.PathLike,
        *,
        patient_id: str | None = None,
        overwrite: bool = False,
    ) -> Scene:
        """A new scene in ``folder``; with ``overwrite`` the live one there (if any) is closed."""
        key = _key(folder)
        with self._lock:
            live = self.get(key)
            if live is not None:
                if not overwrite:
                    raise SynthsegError(f"{folder} holds a scene that is open; open it, or start over explicitly")
                live.closed = True
            scene = Scene.create(image, key, patient_id=patient_id, overwrite=overwrite)
            self._scenes[key] = scene
            return scene

    def release(self, folder: str | os.PathLike) -> None:
        """Forget the live scene of ``folder`` (the next :meth:`open` reads it from disk)."""
        with self._lock:
            self._scenes.pop(_key(folder), None)

    @staticmethod
    def is_scene_folder(folder: str | os.PathLike) -> bool:
        return (Path(folder) / SCENE_FILE).is_file()


#: The process-wide store every adapter (widgets, CLI, batch workers) uses.
scene_store = SceneStore()


def open_scene(folder: str | os.PathLike) -> Scene:
    """The process's live scene of ``folder`` (see :class:`SceneStore`)."""
    return scene_store.open(folder)


def create_scene(
    image: MedicalImage, folder: str | os.PathLike, *, patient_id: str | None = None, overwrite: bool = False
) -> Scene:
    """A new live scene in ``folder`` (see :class:`SceneStore`)."""
    return scene_store.create(image, folder, patient_id=patient_id, overwrite=overwrite)
