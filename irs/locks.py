"""Locks between processes that share a database folder.

Two kinds, both `flock` on a file in the database folder (released by the kernel when a process dies,
so a kill -9 never leaves a database locked):

- the *writer* lock: one indexer (CLI, app or API) at a time; searches never take it. The holder
  writes who it is into the file, so a second indexer can say which process is busy.
- the *open* lock: creating a database (SQLite schema, manifest, Chroma's own tables) is serialised,
  so several processes can open a new database at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType


class DatabaseBusy(RuntimeError):
    """Another process holds the database's writer lock; the message names it."""


class FileLock:
    """An exclusive flock on `path`, held from `acquire` to `release` (or the end of a `with`)."""

    def __init__(self, path: Path, describe: str = "") -> None:
        self.path = path
        self.describe = describe
        self._fd: int | None = None

    def acquire(self, timeout: float | None = None) -> bool:
        """Take the lock, waiting up to `timeout` seconds (None: forever). Returns whether it was taken."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.05)
        self._fd = fd
        if self.describe:
            os.ftruncate(fd, 0)
            os.pwrite(fd, self.describe.encode(), 0)
        return True

    def release(self) -> None:
        if self._fd is not None:
            if self.describe:
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        if self._fd is None:  # writer_lock hands it over already taken
            self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def writer_lock(db: Path, timeout: float) -> FileLock:
    """The database's writer lock, taken; DatabaseBusy (naming the holder) if it stays held for `timeout` s."""
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))[:200],
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    lock = FileLock(db / "irs.lock", json.dumps(me))
    if not lock.acquire(timeout):
        raise DatabaseBusy(f"{db} is being indexed by {holder(db)}; " + _busy_hint(timeout))
    return lock


def holder(db: Path) -> str:
    """Who holds the writer lock, in words (as the holder recorded it)."""
    try:
        info = json.loads((db / "irs.lock").read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return f"process {info.get('pid')} on {info.get('host')} ({info.get('command')}, since {info.get('since')})"


def _busy_hint(timeout: float) -> str:
    waited = f"waited {timeout:g} s; " if timeout else ""
    return waited + "try again when it ends, or set lock_timeout (IRS_LOCK_TIMEOUT) to wait for it"


def open_lock(db: Path) -> FileLock:
    """The lock that serialises creating and opening the database's stores."""
    return FileLock(db / ".open.lock")
