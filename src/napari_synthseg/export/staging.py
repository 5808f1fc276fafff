"""A dataset folder that appears all at once, and whose build can resume after a crash.

Like :func:`napari_synthseg.utils.atomic.atomic_directory` (build beside the target, rename
at the end), but the temporary folder has a fixed name (``.<name>.partial``) and is kept when
the export is interrupted, so the next run finds the cases already written (a done-marker per
case, written after the case's files) and continues. A plan fingerprint stored in the folder
makes sure only an identical export resumes; a different one starts over. An flock keeps two
exports from writing the same folder at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import SynthsegError
from ..utils.atomic import _fsync_dir, atomic_write_text

PLAN_FILE = ".export-plan.json"
DONE_DIR = ".done"
LOCK_FILE = ".lock"


def write_done_marker(staging: Path, case_id: str, summary: dict) -> None:
    """Record that ``case_id``'s files are complete (written after the files).

    Temporary name + rename, without fsync: that is atomic against a killed process, which
    is what resuming is for; durability against power loss comes from the single sync
    before the final rename (an fsync per case cost 18 ms, more than writing the PNGs).
    """
    final = Path(staging) / DONE_DIR / f"{case_id}.json"
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(summary), encoding="utf-8")
    os.replace(tmp, final)


class StagingDirectory:
    """Temporary build folder of ``target``.

    Use :meth:`open` first, write case files under :attr:`path`, mark each case with
    :meth:`mark_done`, then :meth:`commit`. Never removes the staging folder on errors.
    """

    def __init__(self, target: str | os.PathLike, force: bool = False) -> None:
        self.target = Path(target).absolute()
        self.parent = self.target.parent
        self.path = self.parent / f".{self.target.name}.partial"
        self.force = force
        self.resumed = 0
        self._lock_fd: int | None = None

    def check_target(self) -> None:
        if not self.parent.is_dir():
            raise SynthsegError(f"output folder does not exist: {self.parent}")
        if not os.access(self.parent, os.W_OK):
            raise SynthsegError(f"output folder is not writable: {self.parent}")
        if self.target.exists() and not self.force:
            raise SynthsegError(f"{self.target} already exists; pass --force to replace it")

    def open(self, fingerprint: dict) -> set[str]:
        """Create or resume the staging folder; returns the ids of cases already done."""
        self.check_target()
        self.path.mkdir(exist_ok=True)
        self._lock()
        plan_path = self.path / PLAN_FILE
        wanted = json.dumps(fingerprint, sort_keys=True)
        if plan_path.exists():
            try:
                same = json.dumps(json.loads(plan_path.read_text(encoding="utf-8")), sort_keys=True) == wanted
            except (OSError, ValueError):
                same = False
            if not same:
                self._clear()
        if not plan_path.exists():
            atomic_write_text(plan_path, wanted)
        done_dir = self.path / DONE_DIR
        done_dir.mkdir(exist_ok=True)
        done = {p.stem for p in done_dir.glob("*.json")}
        self.resumed = len(done)
        return done

    def _lock(self) -> None:
        fd = os.open(self.path / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SynthsegError(f"another export is writing {self.target.name} right now; wait for it") from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _clear(self) -> None:
        # Settings changed since the interrupted run: its cases cannot be reused.
        for item in self.path.iterdir():
            if item.name == LOCK_FILE:
                continue
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item)
            else:
                item.unlink()

    def done_marker(self, case_id: str) -> Path:
        return self.path / DONE_DIR / f"{case_id}.json"

    def read_done(self, case_id: str) -> dict:
        return json.loads(self.done_marker(case_id).read_text(encoding="utf-8"))

    def mark_done(self, case_id: str, summary: dict) -> None:
        write_done_marker(self.path, case_id, summary)

    def commit(self) -> Path:
        """Drop the bookkeeping files and rename the folder into place (swapping with --force)."""
        shutil.rmtree(self.path / DONE_DIR, ignore_errors=True)
        (self.path / PLAN_FILE).unlink(missing_ok=True)
        (self.path / LOCK_FILE).unlink(missing_ok=True)
        os.sync()  # every case file on disk before the dataset becomes visible
        try:
            if self.target.exists():
                if not self.force:
                    raise SynthsegError(f"{self.target} appeared during the export; pass --force to replace it")
                old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.old-", dir=self.parent))
                os.replace(self.target, old / self.target.name)
                os.replace(self.path, self.target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(self.path, self.target)
            _fsync_dir(self.parent)
        finally:
            self._unlock()
        return self.target

    def release(self) -> None:
        """Give up the lock but keep the folder for a later resume."""
        self._unlock()

    def discard(self) -> None:
        self._unlock()
        shutil.rmtree(self.path, ignore_errors=True)
