"""Small file-system helpers every stage shares: one slug rule, one atomic write, one lock."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from promptrec.errors import PromptrecError

log = logging.getLogger("promptrec")


def slug(name: str) -> str:
    """A file- and collection-safe form of ``name``: runs of other characters become "-"."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip("-._") or "x"


def ensure_dir(path: Path, what: str = "folder") -> Path:
    """``mkdir -p`` that names the folder when it cannot be created or written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PromptrecError(f"cannot create the {what} {path}: {exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise PromptrecError(
            f"the {what} {path} is not writable; fix its permissions or point the setting at another folder"
        )
    return path


class DiskFullError(PromptrecError):
    """The disk holding a file promptrec writes has no space left."""


def disk_full(path: Path, what: str) -> DiskFullError:
    """The error for a write that ran out of space, naming the folder and what space is left."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return DiskFullError(f"no space left on the disk holding {folder} ({free}) while {what}; free some space "
                         "(or point the setting at another disk) and run the command again")


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error (an OSError, or a store's error that quotes one) says the disk is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return "no space left" in text or "database or disk is full" in text


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: The mode a plain ``open(path, "w")`` would give; mkstemp's own is 0600, which would hide an
#: index or a run folder from the other users of a shared machine.
_FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Write through a temporary file in the same folder (``write(tmp)``), fsync it, then rename:
    readers see the old file or the new one, never a half-written one."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, _FILE_MODE)
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full(path, f"writing {path.name}") from exc
        if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise PromptrecError(f"cannot write {path}: {exc.strerror}; fix the folder's permissions") from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


class LockHeld(PromptrecError):
    """Another process holds the lock (`file_lock` with ``wait=False``)."""


@contextlib.contextmanager
def file_lock(path: Path, what: str, wait: bool = True) -> Iterator[None]:
    """An exclusive ``fcntl.flock`` on ``path`` for the block; waits (and says so) when another
    process holds it, e.g. two `promptrec index` runs on one index, or raises `LockHeld` when
    ``wait`` is false."""
    import fcntl

    path = Path(path)
    try:
        handle = open(path, "a+")
    except OSError as exc:
        raise PromptrecError(f"cannot open the lock file {path}: {exc.strerror or exc}") from exc
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise LockHeld(f"another process holds {path} ({what})") from None
            log.info("waiting for another process that is building %s (lock %s)", what, path)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
