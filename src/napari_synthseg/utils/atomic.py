"""Atomic file and folder writes: a reader sees the old version or the new one, never half.

The pattern is write to a temporary name in the same folder, flush and fsync, then
``os.replace`` (atomic on POSIX and Windows within one file system).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import SynthsegError


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a closed file's data to disk (a full disk can surface here as ENOSPC)."""
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported (e.g. Windows); the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # Elsewhere: set and restore at once (a short race with other threads creating files).
    old = os.umask(0o022)
    os.umask(old)
    return old


def honour_umask(path: str | os.PathLike, folder: bool = False) -> None:
    """Give a file made by :mod:`tempfile` (always 0600/0700) the mode a plain ``open`` would.

    Outputs are shared data (datasets, scenes, models): a private 0600 file that a colleague or
    a training job under another account cannot read is a surprise, so a temporary file that
    becomes a final output gets ``0666 & ~umask`` (``0777`` for folders) like any other file.
    """
    base = 0o777 if folder else 0o666
    with contextlib.suppress(OSError):
        os.chmod(path, base & ~current_umask())


def _check_writable(folder: Path) -> None:
    if not folder.exists():
        raise SynthsegError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise SynthsegError(f"output folder is not writable: {folder}")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` atomically.

    The temporary name keeps ``target``'s extension(s) so writers that pick the format from the
    extension (SimpleITK, PIL) still work.
    """
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    _check_writable(folder)
    if suffix is None:
        suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".part{suffix}", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        honour_umask(tmp)
        os.replace(tmp, target)
        fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(target, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(
    target: str | os.PathLike, overwrite: bool = False, create_parents: bool = False
) -> Iterator[Path]:
    """Yield a temporary folder beside ``target`` that becomes ``target`` on success.

    An interrupted write leaves only a hidden ``.<name>.partial-*`` folder, never a half
    ``target``. With ``overwrite`` the old folder is swapped out and removed after the rename.
    With ``create_parents`` missing parent folders are made, and removed again on failure, so
    a failed command leaves no empty folders behind.
    """
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    made: list[Path] = []
    if create_parents:
        missing = parent
        while not missing.exists() and missing != missing.parent:
            made.append(missing)
            missing = missing.parent
        for folder in reversed(made):
            try:
                folder.mkdir()
            except OSError as exc:
                _remove_empty(made)
                raise SynthsegError(f"cannot create folder {folder}: {exc.strerror}") from None
    try:
        _check_writable(parent)
        if target.exists() and not overwrite:
            raise SynthsegError(f"{target} already exists; pass --force to replace it")
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=parent))
        except OSError as exc:
            raise SynthsegError(f"cannot create a folder in {parent}: {exc.strerror}") from None
    except BaseException:
        _remove_empty(made)
        raise
    try:
        yield tmp
        honour_umask(tmp, folder=True)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(made)
        raise


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders this module created (innermost first) if they are still empty."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


_fsync_dir = fsync_dir  # the name other modules used before it became public
