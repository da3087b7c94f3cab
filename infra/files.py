"""Files the harness shares with people and with other processes: one file lock, one
atomic write, one tolerant reader for files people edit by hand."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, TypeVar

from pydantic import BaseModel

from events import ValidationFailed

T = TypeVar("T")
HAND_EDIT_SETTLE_S = 0.15


class FileLock:
    """An exclusive `flock` on `path` (created if missing), between threads that open it
    separately and between processes; the kernel drops it when the holder dies.

        with FileLock(path):              # wait for it
            ...
        lock = FileLock(path)
        if lock.acquire(wait=False):      # or take it only if free
            try: ...
            finally: lock.release()
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def acquire(self, *, wait: bool = True) -> bool:
        """Take the lock; with `wait=False`, False at once when another holds it."""
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        except BaseException:
            fh.close()
            raise
        self._fh = fh
        return True

    def release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def note(self, text: str) -> None:
        """Write who holds the lock into the lock file (a pid, for the next one's message)."""
        if self._fh is None:
            raise RuntimeError(f"{self.path}: note() without the lock")
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(text)
        self._fh.flush()

    def holder(self) -> str:
        """What the holder noted in the lock file ('' if nothing, or unreadable)."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def write_text_atomic(path: Path, text: str, *, mode: int | None = None) -> None:
    """Write `text` so that a reader never sees a half-written file, and a crash leaves
    the old file or the new one.

    A temporary file of a fresh random name in the same directory (created exclusively,
    never through a symlink), fsync, `os.replace`, then the directory is synced. The
    file gets `mode`, else keeps the mode it had, else the umask's default; a `mode`
    such as 0o600 holds from the first byte written.
    """
    path = Path(path)
    directory = path.parent
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # not every filesystem lets us open a directory
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_json_atomic(path: Path, data: object) -> None:
    """`data` (a pydantic model: as the user wrote it, by alias, without unset fields)
    as indented JSON, written atomically (`write_text_atomic`): `jq` never sees half."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json", by_alias=True, exclude_unset=True)
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def load_settled(load: Callable[[Path], T], path: Path, *, tries: int = 3) -> T:
    """`load(path)` for a file people edit by hand: a file an editor is still writing
    fails to parse half-way, so a `ValidationFailed` stands only after the file was read
    again `tries` times, `HAND_EDIT_SETTLE_S` apart."""
    for attempt in range(tries):
        try:
            return load(path)
        except ValidationFailed:
            if attempt == tries - 1:
                raise
            time.sleep(HAND_EDIT_SETTLE_S)  # let the writer finish, then read again
    raise AssertionError("unreachable")
