"""The scene: one source image, its masks and an ordered list of lesion records.

It is the single source of truth shared by the widgets, the CLI and batch jobs. Pixels are
always ``render(scene)``; every change (place, edit, delete, decide, paint a mask) is one
undoable step that is written to the scene folder at once (atomic JSON + write-once assets), so
killing the process loses nothing that was on screen.

Folder layout::

    scene.json      schema version, source (paths, sha256, geometry), masks, lesions, revision
    history.json    undo/redo steps, valid only for the revision it names
    assets/         content-addressed arrays (masks, lesion patches, harmonized pixels)
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .. import __version__
from ..errors import SynthsegError
from ..io import MedicalImage, read_image, sha256_of_files
from ..utils.atomic import atomic_write_text
from .assets import AssetStore
from .records import LESION_STATUSES, LesionRecord, utc_now

try:  # POSIX advisory locks; elsewhere saves rely on the revision check alone
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SCENE_FILE = "scene.json"
HISTORY_FILE = "history.json"
LOCK_FILE = ".lock"
MAX_HISTORY = 500


class SceneConflictError(SynthsegError):
    """Another program changed the same lesion (or mask) on disk since this scene read it."""


@dataclass
class SourceInfo:
    """The image a scene is built on, identified by content hash."""

    paths: list[str]
    sha256: str
    geometry: dict[str, Any]
    series_uid: str | None = None
    patient_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "paths": list(self.paths),
            "sha256": self.sha256,
            "geometry": copy.deepcopy(self.geometry),
            "series_uid": self.series_uid,
            "patient_id": self.patient_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SourceInfo":
        return cls(
            paths=list(data["paths"]),
            sha256=data["sha256"],
            geometry=dict(data["geometry"]),
            series_uid=data.get("series_uid"),
            patient_id=data.get("patient_id"),
        )

    @property
    def read_path(self) -> str:
        """What :func:`read_image` opens: the file, or the folder of a series."""
        if len(self.paths) == 1:
            return self.paths[0]
        return str(Path(self.paths[0]).parent)


@dataclass
class Change:
    """What one step changed; listeners (the renderer, widgets) use it to update only that."""

    label: str
    lesions_before: list[dict | None] = field(default_factory=list)
    lesions_after: list[dict | None] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)
    undo: bool = False
    redo: bool = False

    @property
    def lesion_ids(self) -> list[str]:
        ids = []
        for rec in self.lesions_before + self.lesions_after:
            if rec is not None and rec["id"] not in ids:
                ids.append(rec["id"])
        return ids


def _patient_id(image: MedicalImage) -> str | None:
    pid = image.metadata.get("0010|0020", "").strip()
    return pid or None


class Scene:
    """Source image + masks + lesion records, with undo/redo and autosave.

    Create with :meth:`Scene.create` (new) or :meth:`Scene.open` (existing folder).
    """

    def __init__(self, source: SourceInfo, folder: str | os.PathLike | None = None) -> None:
        self.source = source
        self.folder = Path(folder) if folder is not None else None
        self.assets = AssetStore(self.folder)
        self.lesions: list[LesionRecord] = []
        self.masks: dict[str, str] = {}
        self.meta: dict[str, Any] = {}
        self.revision = 0
        self.created = utc_now()
        self.modified = self.created
        self._counter = 0
        self._undo: list[dict] = []
        self._redo: list[dict] = []
        self._pending: list[tuple] | None = None
        self._pending_label = ""
        self._listeners: list[Callable[[Change], None]] = []
        self._image: MedicalImage | None = None
        self.autosave = True
        # Optimistic concurrency: the save id of scene.json as this object last read or wrote
        # it, and the steps applied here since then. A save that finds another save id on disk
        # replays those steps on top of what is there (or refuses when they touch the same
        # lesion), so two programs editing one folder never undo each other's decisions.
        self._save_id: str | None = None
        self._unsynced: list[tuple[str, Any, bool]] = []
        self._last_action: str | None = None
        self.closed = False

    # ---- construction ------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        image: MedicalImage,
        folder: str | os.PathLike | None = None,
        patient_id: str | None = None,
        overwrite: bool = False,
    ) -> "Scene":
        """A new scene on ``image`` (which must come from a file), saved in ``folder`` if given."""
        if not image.source_paths:
            raise SynthsegError("a scene needs an image read from a file (save the image first)")
        source = SourceInfo(
            paths=[str(Path(p).resolve()) for p in image.source_paths],
            sha256=sha256_of_files(image.source_paths),
            geometry=image.geometry(),
            series_uid=image.series_uid,
            patient_id=patient_id or _patient_id(image),
        )
        if folder is not None:
            folder = Path(folder)
            if (folder / SCENE_FILE).exists() and not overwrite:
                raise SynthsegError(f"{folder} already holds a scene; open it, or pass --force to start over")
            if folder.exists() and not folder.is_dir():
                raise SynthsegError(f"{folder} exists and is not a folder")
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SynthsegError(f"cannot create scene folder {folder}: {exc.strerror}") from None
        scene = cls(source, folder)
        scene._image = image
        if folder is not None:
            scene.save()
        return scene

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "Scene":
        """Reopen a scene folder exactly as it was last saved."""
        folder = Path(folder)
        path = folder / SCENE_FILE
        if not path.exists():
            raise SynthsegError(f"{folder} is not a scene folder (no {SCENE_FILE})")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SynthsegError(f"{path} is corrupt (not valid JSON)") from None
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise SynthsegError(
                f"{path} has schema version {version}; this napari-synthseg reads version {SCHEMA_VERSION}"
            )
        scene = cls(SourceInfo.from_dict(data["source"]), folder)
        scene._load_state(data)
        history_path = folder / HISTORY_FILE
        if history_path.exists():
            try:
                history = json.loads(history_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                history = {}
            scene._restore_history(history)
        return scene

    def _load_state(self, data: dict[str, Any]) -> None:
        """Records, masks and counters from a parsed scene.json (history untouched)."""
        self.lesions = [LesionRecord.from_dict(d) for d in data.get("lesions", [])]
        self.masks = dict(data.get("masks", {}))
        self.meta = dict(data.get("meta", {}))
        self.revision = int(data.get("revision", 0))
        self.created = data.get("created", self.created)
        self.modified = data.get("modified", self.modified)
        self._counter = int(data.get("counter", len(self.lesions)))
        self._save_id = data.get("save_id")

    def _restore_history(self, history: dict[str, Any]) -> None:
        """Undo/redo from history.json, also after a kill between its write and scene.json's.

        history.json is written first. When the process dies before scene.json follows, the
        history is one step ahead of the scene; ``last`` says which step that was, so it is
        taken back instead of dropping the whole history.
        """
        if not isinstance(history, dict) or not isinstance(history.get("revision"), int):
            return
        undo, redo = list(history.get("undo", [])), list(history.get("redo", []))
        if history["revision"] == self.revision + 1:
            last = history.get("last")
            if last == "do" and undo:
                undo.pop()
            elif last == "undo" and redo:
                undo.append(redo.pop())
            elif last == "redo" and undo:
                redo.append(undo.pop())
            else:
                return
        elif history["revision"] != self.revision:
            return
        self._undo, self._redo = undo, redo

    # ---- source image ------------------------------------------------------------------------

    def load_image(self, verify: bool = True) -> MedicalImage:
        """The source image (read once, then cached); checks it is the file the scene was made on."""
        if self._image is not None:
            return self._image
        missing = [p for p in self.source.paths if not Path(p).exists()]
        if missing:
            raise SynthsegError(
                f"the scene's source image is missing: {missing[0]} (sha256 {self.source.sha256[:12]}…)"
            )
        if verify and sha256_of_files(self.source.paths) != self.source.sha256:
            raise SynthsegError(
                f"the source image {self.source.read_path} changed since the scene was made (sha256 differs)"
            )
        image = read_image(self.source.read_path, series_uid=self.source.series_uid)
        spacing = self.source.geometry.get("spacing")
        if spacing and tuple(spacing) != tuple(image.spacing):
            # Spacing given by the user at creation time (PNG/JPEG) is part of the scene.
            image.spacing = tuple(spacing)
            image.warnings = [w for w in image.warnings if "stores no pixel spacing" not in w]
        if list(image.shape) != list(self.source.geometry["shape"]):
            raise SynthsegError("the source image's shape differs from the scene's record")
        self._image = image
        return image

    # ---- lookup ------------------------------------------------------------------------------

    def lesion(self, lesion_id: str) -> LesionRecord:
        for rec in self.lesions:
            if rec.id == lesion_id:
                return rec
        raise SynthsegError(f"no lesion {lesion_id!r} in this scene (it has: {', '.join(self.lesion_ids) or 'none'})")

    @property
    def lesion_ids(self) -> list[str]:
        return [rec.id for rec in self.lesions]

    def _index(self, lesion_id: str) -> int:
        for i, rec in enumerate(self.lesions):
            if rec.id == lesion_id:
                return i
        raise SynthsegError(f"no lesion {lesion_id!r} in this scene")

    def mask(self, name: str) -> np.ndarray | None:
        key = self.masks.get(name)
        return None if key is None else self.assets.get(key)

    # ---- listeners ---------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``callback(change)`` after every step, undo and redo. Returns an unsubscribe."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    # ---- primitive operations (each records its inverse) -------------------------------------

    def _apply_lesion(self, before: dict | None, after: dict | None, index: int) -> None:
        if before is None:  # add
            assert after is not None, "an op adds or removes a lesion, never neither"
            self.lesions.insert(index, LesionRecord.from_dict(after))
        elif after is None:  # remove
            del self.lesions[self._index(before["id"])]
        else:
            self.lesions[self._index(before["id"])] = LesionRecord.from_dict(after)

    def _apply_mask(self, name: str, key: str | None) -> None:
        if key is None:
            self.masks.pop(name, None)
        else:
            self.masks[name] = key

    @contextlib.contextmanager
    def batch(self, label: str) -> Iterator["Scene"]:
        """Group several changes into one undo step (one save, one change event)."""
        if self._pending is not None:  # nested: join the outer step
            yield self
            return
        self._pending, self._pending_label = [], label
        try:
            yield self
        except BaseException:
            ops, self._pending = self._pending, None
            self._rollback(ops)
            raise
        ops, self._pending = self._pending, None
        if ops:
            self._commit_step(label, ops)

    def _rollback(self, ops: list[tuple]) -> None:
        for op in reversed(ops):
            self._apply_inverse(op)

    def _apply(self, op: tuple, forward: bool = True) -> None:
        """Apply a primitive op or its inverse.

        Ops: ``("lesion", before, after, index)``, ``("mask", name, before, after)``,
        ``("meta", key, before, after)``; ``None`` means absent.
        """
        if op[0] == "lesion":
            _, before, after, index = op
            self._apply_lesion(*((before, after) if forward else (after, before)), index)
            return
        kind, key, before, after = op
        value = after if forward else before
        if kind == "mask":
            self._apply_mask(key, value)
        elif value is None:
            self.meta.pop(key, None)
        else:
            self.meta[key] = value

    def _apply_inverse(self, op: tuple) -> None:
        self._apply(op, forward=False)

    def _apply_forward(self, op: tuple) -> None:
        self._apply(op, forward=True)

    def _commit_step(self, label: str, ops: list[tuple]) -> None:
        self.revision += 1
        step = {"label": label, "ops": [list(op) for op in ops]}
        self._undo.append(step)
        del self._undo[:-MAX_HISTORY]
        self._redo.clear()
        self._unsynced.append((label, step["ops"], True))
        self._last_action = "do"
        self._after_change(self._change_of(label, ops))

    @staticmethod
    def _change_of(label: str, ops, undo: bool = False, redo: bool = False) -> Change:
        change = Change(label=label, undo=undo, redo=redo)
        for op in ops:
            if op[0] == "lesion":
                before, after = op[1], op[2]
                if undo:
                    before, after = after, before
                change.lesions_before.append(copy.deepcopy(before))
                change.lesions_after.append(copy.deepcopy(after))
            elif op[0] == "mask":
                change.masks.append(op[1])
        return change

    def _after_change(self, change: Change) -> None:
        self.modified = utc_now()
        if self.autosave and self.folder is not None:
            try:
                self.save()
            except SceneConflictError as exc:
                # The step was refused: the scene now shows what is on disk. Listeners
                # re-render from that state before the error reaches the user.
                self._notify(exc.change)  # type: ignore[attr-defined]
                raise
        self._notify(change)

    def _notify(self, change: Change | None) -> None:
        if change is None:
            return
        for callback in list(self._listeners):
            callback(change)

    # ---- public edits ------------------------------------------------------------------------

    def add_lesion(self, record: LesionRecord, label: str = "place lesion") -> LesionRecord:
        """Append a lesion; assigns its ``id`` and ``label``. Returns the stored record."""
        record.validate()
        self._counter += 1
        now = utc_now()
        stored = record.copy(id=f"L{self._counter:04d}", label=self._counter, created=now, modified=now)
        op = ("lesion", None, stored.to_dict(), len(self.lesions))
        self._apply_forward(op)
        self._op(op, label)
        return self.lesion(stored.id)

    def update_lesion(self, lesion_id: str, label: str = "edit lesion", **changes: Any) -> LesionRecord:
        """Change fields of a lesion (``center_mm=``, ``size_mm=``, ``blend=`` ...)."""
        for fixed in ("id", "label", "created"):
            if fixed in changes:
                raise SynthsegError(f"a lesion's {fixed} cannot be changed")
        index = self._index(lesion_id)
        old = self.lesions[index]
        new = old.copy(**changes, modified=utc_now())
        new.validate()
        op = ("lesion", old.to_dict(), new.to_dict(), index)
        self._apply_forward(op)
        self._op(op, label)
        return self.lesions[index]

    def remove_lesion(self, lesion_id: str, label: str = "delete lesion") -> None:
        index = self._index(lesion_id)
        op = ("lesion", self.lesions[index].to_dict(), None, index)
        self._apply_forward(op)
        self._op(op, label)

    def set_decision(
        self, lesion_id: str, status: str, by: str, reason: str = "", label: str | None = None
    ) -> LesionRecord:
        """Record a QA decision (who or which rule decided, and why) on a lesion."""
        if status not in LESION_STATUSES:
            raise SynthsegError(f"decision must be one of {', '.join(LESION_STATUSES)}, got {status!r}")
        decision = {"status": status, "by": by, "reason": reason, "time": utc_now()}
        return self.update_lesion(lesion_id, label=label or f"{status} {lesion_id}", status=status, decision=decision)

    def set_mask(self, name: str, array: np.ndarray | None, label: str | None = None) -> str | None:
        """Store (or with ``None`` remove) a named mask, e.g. ``"constraint"``."""
        key = None
        if array is not None:
            array = np.asarray(array)
            expected = tuple(self.source.geometry["shape"])
            if array.shape != expected:
                raise SynthsegError(f"mask {name!r} has shape {array.shape}, the image has {expected}")
            key = self.assets.put(array.astype(bool) if array.dtype != bool and name == "constraint" else array)
        op = ("mask", name, self.masks.get(name), key)
        if op[2] == op[3]:
            return key
        self._apply_forward(op)
        self._op(op, label or f"set mask {name}")
        return key

    def set_meta(self, key: str, value: Any, label: str | None = None) -> None:
        op = ("meta", key, copy.deepcopy(self.meta.get(key)), copy.deepcopy(value))
        self._apply_forward(op)
        self._op(op, label or f"set {key}")

    def _op(self, op: tuple, label: str) -> None:
        if self._pending is not None:
            self._pending.append(op)
        else:
            self._commit_step(label, [op])

    # ---- undo / redo -------------------------------------------------------------------------

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def undo_label(self) -> str | None:
        return self._undo[-1]["label"] if self._undo else None

    @property
    def redo_label(self) -> str | None:
        return self._redo[-1]["label"] if self._redo else None

    def undo(self) -> Change | None:
        if not self._undo:
            return None
        step = self._undo.pop()
        ops = [tuple(op) for op in step["ops"]]
        for op in reversed(ops):
            self._apply_inverse(op)
        self._redo.append(step)
        self.revision += 1
        self._unsynced.append((step["label"], step["ops"], False))
        self._last_action = "undo"
        change = self._change_of(step["label"], ops, undo=True)
        self._after_change(change)
        return change

    def redo(self) -> Change | None:
        if not self._redo:
            return None
        step = self._redo.pop()
        ops = [tuple(op) for op in step["ops"]]
        for op in ops:
            self._apply_forward(op)
        self.revision += 1
        self._undo.append(step)
        self._unsynced.append((step["label"], step["ops"], True))
        self._last_action = "redo"
        change = self._change_of(step["label"], ops, redo=True)
        self._after_change(change)
        return change

    # ---- persistence -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "software": f"napari-synthseg {__version__}",
            "created": self.created,
            "modified": self.modified,
            "revision": self.revision,
            "save_id": self._save_id,
            "counter": self._counter,
            "source": self.source.to_dict(),
            "masks": dict(self.masks),
            "meta": copy.deepcopy(self.meta),
            "lesions": [rec.to_dict() for rec in self.lesions],
        }

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write the scene atomically (history first, then scene.json, which is the truth).

        When scene.json on disk was written by another program since this scene read it, the
        steps made here since then are replayed on top of the disk's state (a merge); when one
        of them touches a lesion, mask or setting that the other program changed too, nothing
        is written, this scene reloads the disk's state and :class:`SceneConflictError` says
        which lesion collided.
        """
        if self.closed:
            raise SynthsegError("this scene was replaced by a newer one in the same folder; open it again")
        if folder is not None:
            self.folder = Path(folder)
            self.folder.mkdir(parents=True, exist_ok=True)
            self.assets.attach(self.folder)
            self._save_id = None
        if self.folder is None:
            raise SynthsegError("this scene has no folder; give one to save it")
        with self._folder_lock():
            disk = self._read_disk_state()
            if disk is not None and disk.get("save_id") != self._save_id and self._save_id is not None:
                merged = self._rebase_onto(disk)
                self._notify(merged)
            self._write_files()
        return self.folder

    def _require_folder(self) -> Path:
        if self.folder is None:
            raise SynthsegError("this scene has no folder; give one to save it")
        return self.folder

    def _write_files(self) -> None:
        folder = self._require_folder()
        self._save_id = uuid.uuid4().hex
        atomic_write_text(
            folder / HISTORY_FILE,
            json.dumps(
                {"revision": self.revision, "last": self._last_action, "undo": self._undo, "redo": self._redo},
                separators=(",", ":"),
            ),
        )
        atomic_write_text(folder / SCENE_FILE, json.dumps(self.to_dict(), indent=1))
        self._unsynced.clear()
        self._last_action = None

    @contextlib.contextmanager
    def _folder_lock(self) -> Iterator[None]:
        if fcntl is None:
            yield
            return
        try:
            handle = open(self._require_folder() / LOCK_FILE, "a+b")
        except OSError as exc:
            raise SynthsegError(f"cannot write in scene folder {self.folder}: {exc.strerror}") from None
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _read_disk_state(self) -> dict[str, Any] | None:
        path = self._require_folder() / SCENE_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SynthsegError(f"{path} is corrupt (not valid JSON); not overwriting it") from None

    def _state_snapshot(self) -> tuple[dict[str, dict], dict[str, str], dict[str, Any]]:
        return ({r.id: r.to_dict() for r in self.lesions}, dict(self.masks), copy.deepcopy(self.meta))

    def _rebase_onto(self, disk: dict[str, Any]) -> Change:
        """Replay the unsynced steps on the disk's state; returns what changed here because of it."""
        before_lesions, before_masks, _ = self._state_snapshot()
        # The ops are the undo history's own lists: an added lesion renumbered below stays
        # renumbered in the history too.
        mine = [(label, [tuple(op) for op in ops], forward) for label, ops, forward in self._unsynced]
        self._load_state(disk)
        try:
            for label, ops, forward in mine:
                for op in (ops if forward else reversed(ops)):
                    self._replay(op, forward, label)
        except SceneConflictError as exc:
            self._load_state(disk)
            self._undo.clear()
            self._redo.clear()
            self._unsynced.clear()
            exc.change = self._diff_change(before_lesions, before_masks, "reloaded after a conflict")  # type: ignore[attr-defined]
            raise
        self.revision = int(disk.get("revision", 0)) + 1
        logger.info("scene %s: merged %d step(s) onto changes made by another program", self.folder, len(mine))
        return self._diff_change(before_lesions, before_masks, "merged changes from disk")

    def _replay(self, op: tuple, forward: bool, label: str) -> None:
        """Apply one op on a state another program wrote, checking what it expects to find."""
        if op[0] == "lesion":
            _, before, after, index = op
            if not forward:
                before, after = after, before
            if before is None:  # an added lesion: its id may have been taken meanwhile
                if after["id"] in self.lesion_ids:
                    self._counter += 1
                    after.update(id=f"L{self._counter:04d}", label=self._counter)
                else:
                    self._counter = max(self._counter, int(after.get("label", 0)))
                self.lesions.insert(min(index, len(self.lesions)), LesionRecord.from_dict(after))
                return
            current = next((r for r in self.lesions if r.id == before["id"]), None)
            if current is None or current.to_dict() != before:
                raise SceneConflictError(
                    f"lesion {before['id']} was changed by another program while you edited it ({label} refused); "
                    "the scene now shows the saved version"
                )
            position = self._index(before["id"])
            if after is None:
                del self.lesions[position]
            else:
                self.lesions[position] = LesionRecord.from_dict(after)
            return
        kind, key, before, after = op
        if not forward:
            before, after = after, before
        store = self.masks if kind == "mask" else self.meta
        if store.get(key) != before:
            raise SceneConflictError(
                f"the {kind} {key!r} was changed by another program meanwhile ({label} refused); "
                "the scene now shows the saved version"
            )
        if after is None:
            store.pop(key, None)
        else:
            store[key] = after

    def _diff_change(self, lesions: dict[str, dict], masks: dict[str, str], label: str) -> Change:
        now_lesions, now_masks, _ = self._state_snapshot()
        change = Change(label=label)
        for lesion_id in list(lesions) + [i for i in now_lesions if i not in lesions]:
            old, new = lesions.get(lesion_id), now_lesions.get(lesion_id)
            if old != new:
                change.lesions_before.append(old)
                change.lesions_after.append(new)
        change.masks = sorted(k for k in set(masks) | set(now_masks) if masks.get(k) != now_masks.get(k))
        return change

    def refresh(self) -> Change | None:
        """Take in what another program saved to this folder (None when nothing changed)."""
        if self.folder is None or self._unsynced:
            return None
        disk = self._read_disk_state()
        if disk is None or disk.get("save_id") == self._save_id:
            return None
        before_lesions, before_masks, _ = self._state_snapshot()
        self._load_state(disk)
        self._undo.clear()
        self._redo.clear()
        change = self._diff_change(before_lesions, before_masks, "changes made by another program")
        self._notify(change)
        return change

    def referenced_assets(self) -> set[str]:
        keys = set(self.masks.values())
        for rec in self.lesions:
            keys.update(rec.assets.values())
        for step in self._undo + self._redo:
            for op in step["ops"]:
                if op[0] == "mask":
                    keys.update(k for k in op[2:4] if k)
                elif op[0] == "lesion":
                    for rec in op[1:3]:
                        if rec:
                            keys.update(rec.get("assets", {}).values())
        return keys

    def compact(self) -> int:
        """Delete assets that neither the scene nor its history uses."""
        return self.assets.prune(self.referenced_assets())
