"""One writer per index: an advisory lock the kernel releases when the writer dies."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import IndexLockedError

LOCK_FILE = ".lock"


class WriterLock:
    """flock on INDEX/.lock: a SIGKILLed writer cannot leave it stuck; readers never take it."""

    def __init__(self, root: Path):
        self.path = root / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> "WriterLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise IndexLockedError(
                f"another xmodal run (pid {holder}) is writing to {self.path.parent}; "
                "wait for it to finish, then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # no writer now; a killed writer leaves its (dead) pid behind
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def running_writer(root: Path) -> int | None:
    """The pid of the process writing to `root`, if one is alive; readers never take the lock to ask."""
    try:
        text = (root / LOCK_FILE).read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return int(text)
