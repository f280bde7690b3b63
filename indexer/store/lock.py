"""One writer per index: an advisory lock the kernel releases when the writer dies.

The lock is flock on INDEX/.lock, which belongs to the open file, not to a process: any process that holds
a copy of the writer's descriptor holds the lock too. xmodal's own children close their copy at once
(`processes.parent_only`), but a process that kept one (a worker orphaned by an older xmodal, a program of
the user's that forked while writing) would hold the index locked for as long as it lives. So the lock
file names its writer, and a run that finds the lock held by something that is not a live writer of this
index takes the lock over: it puts a fresh lock file in place of the old one, which the stray holder keeps
to itself.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import IndexLockedError
from ..processes import parent_only, release

LOCK_FILE = ".lock"
TAKEOVER_FILE = ".lock.takeover"  # held only while a run replaces a lock no writer holds
ATTEMPTS = 5  # rounds of taking the lock while other runs replace the file: each round loses to a live run


class WriterLock:
    """flock on INDEX/.lock: a SIGKILLed writer cannot leave it stuck; readers never take it."""

    def __init__(self, root: Path):
        self.path = root / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> "WriterLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(ATTEMPTS):
            fd = _locked(self.path) or self._take_over()
            if fd is not None:
                self._fd = fd
                return self
        raise IndexLockedError(f"other xmodal runs keep replacing the lock of {self.path.parent}; "
                               "wait for them to finish, then run again")

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # no writer now; a killed writer leaves its (dead) pid behind
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            _close(self._fd)
            self._fd = None

    def _take_over(self) -> int | None:
        """The lock is held: refused if by a live writer; else a fresh lock file replaces the held one.

        One run at a time decides, under a second lock, so that two runs never both replace it."""
        with _Flock(self.path.with_name(TAKEOVER_FILE)):
            fd = _open(self.path)
            if _try_flock(fd):
                return _owned(fd, self.path)
            writer = _writer_of(fd)
            _close(fd)
            if writer is not None:
                raise IndexLockedError(
                    f"another xmodal run (pid {writer}) is writing to {self.path.parent}; "
                    "wait for it to finish, then run again"
                )
            fresh = self.path.with_name(f"{LOCK_FILE}.{os.getpid()}")
            fd = _open(fresh)
            fcntl.flock(fd, fcntl.LOCK_EX)  # a name of this process's own: no one else can hold it
            _record(fd)
            os.replace(fresh, self.path)
            return fd


class _Flock:
    """A short, blocking flock of a file of its own, kept by this process alone."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> None:
        self._fd = _open(self.path)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc) -> None:
        _close(self._fd)


def _open(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    parent_only(fd)
    return fd


def _close(fd: int) -> None:
    release(fd)
    os.close(fd)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _locked(path: Path) -> int | None:
    """The lock taken at once, or None when another process holds it."""
    fd = _open(path)
    if _try_flock(fd):
        return _owned(fd, path)
    _close(fd)
    return None


def _owned(fd: int, path: Path) -> int | None:
    """A lock taken on a file that another run has since replaced locks nothing: try again."""
    try:
        same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        _close(fd)
        return None
    _record(fd)
    return fd


def _record(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)


def _writer_of(fd: int) -> int | None:
    """The pid the lock file names, if that process is alive and has this very lock file open."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    if not text.isdigit():
        return None
    pid = int(text)
    return pid if _holds(pid, os.fstat(fd)) else None


def _holds(pid: int, lock: os.stat_result) -> bool:
    """Whether process `pid` is alive and has the lock file open: a pid reused by another program, or a
    writer that died, has not. Where /proc cannot tell (another OS, another user's process), alive is enough."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fds = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fds.iterdir())
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no /proc here at all: alive is all there is to know
    except PermissionError:
        return True
    for entry in entries:
        try:
            seen = entry.stat()
        except OSError:
            continue
        if (seen.st_dev, seen.st_ino) == (lock.st_dev, lock.st_ino):
            return True
    return False


def running_writer(root: Path) -> int | None:
    """The pid of the process writing to `root`, if one is alive; readers never take the lock to ask."""
    path = root / LOCK_FILE
    try:
        text = path.read_text().strip()
        lock = path.stat()
    except OSError:
        return None
    if not text.isdigit():
        return None
    return int(text) if _holds(int(text), lock) else None
