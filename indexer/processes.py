"""The processes xmodal starts end with it, and hold nothing of its own.

A process forked from xmodal gets a copy of every descriptor it has open: the index's writer lock and the
pipes to the other children among them. A child that keeps the lock holds the index locked after the writer
dies (flock belongs to the open file, not to a process), and a child that keeps another child's pipe end
stops that one from ever seeing its parent go. So the owner of such a descriptor names it here, and every
forked child closes it at once; a child that must not outlive its parent also watches for its going.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

PARENT_POLL_SECONDS = 0.2  # how often an orphan-to-be looks for its parent: it ends within about this

_parent_only: dict[int, tuple[int, int]] = {}  # descriptor -> (device, inode) of what it was opened on


def parent_only(fd: int) -> None:
    """`fd` stays with this process: a child forked from now on closes its copy at once."""
    status = os.fstat(fd)
    _parent_only[fd] = (status.st_dev, status.st_ino)  # a dict's set and pop are atomic: a fork never sees half


def release(fd: int) -> None:
    """`fd` is about to be closed by its owner: children forked after this leave that number alone."""
    _parent_only.pop(fd, None)


def _close_in_child() -> None:
    """/dev/null put in place of each: the number stays taken, so an object of the parent's copied into the
    child that closes its descriptor later closes /dev/null, never a file the child opened since. A number
    now open on another file (closed and reused without a release) is left alone."""
    if not _parent_only:
        return
    null = os.open(os.devnull, os.O_RDWR)
    for fd, opened_on in _parent_only.items():
        try:
            status = os.fstat(fd)
            if (status.st_dev, status.st_ino) == opened_on:
                os.dup2(null, fd, inheritable=False)
        except OSError:
            pass
    os.close(null)
    _parent_only.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


def end_with_parent(parent_pid: int) -> None:
    """In a child: end this process as soon as `parent_pid` is gone, however it went (kill -9 included).

    A thread watches getppid(), which turns to a reaper's pid when the parent dies. Linux's
    PR_SET_PDEATHSIG would be quicker, but it fires when the forking *thread* ends, not the process, and
    exists on Linux alone.
    """
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent went before this child could watch for it
    watcher = threading.Thread(target=_watch_parent, args=(parent_pid,), name="xmodal-parent-watch",
                               daemon=True)
    watcher.start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


TOKEN_VARIABLE = "XMODAL_REAP_TOKEN"
REAP_GRACE_SECONDS = 1.0  # SIGTERM first; what still runs this long after it gets SIGKILL
REAP_SECONDS = 10.0  # the most a reaper goes on finding and ending marked processes
WATCH_SECONDS = 0.5  # how often a reaper notes the processes below its parent


class Reaper:
    """A watcher process for the processes this one starts that do not end with it by themselves (a local
    Ray's agents outlive its raylet for good when the driver is killed). When this process ends, however it
    ends, the reaper sees its pipe close and ends those processes, then itself.

    Which processes: those started while `marking()` is in force, which carry a token in their environment,
    and those the reaper saw below this one whose command line holds one of `commands` (a process that
    rewrites its title, as Ray's agents do, can overwrite the environment /proc shows)."""

    def __init__(self, commands: list[str]) -> None:
        import secrets
        import subprocess

        self.token = secrets.token_hex(8)
        self._process = subprocess.Popen(
            [sys.executable, "-c", "from xmodal.indexer.processes import reap; reap()", self.token,
             str(os.getpid()), *commands],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)
        parent_only(self._process.stdin.fileno())

    @contextlib.contextmanager
    def marking(self):
        """Processes started in this block (and theirs) carry the token."""
        before = os.environ.get(TOKEN_VARIABLE)
        os.environ[TOKEN_VARIABLE] = self.token
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(TOKEN_VARIABLE, None)
            else:
                os.environ[TOKEN_VARIABLE] = before

    def close(self) -> None:
        """End what is left of those processes now, and wait for that."""
        if self._process.stdin and not self._process.stdin.closed:
            release(self._process.stdin.fileno())
            self._process.stdin.close()
        self._process.wait()


def reap() -> None:
    """The reaper's life (`python -c ... TOKEN PARENT_PID COMMAND...`): note the parent's descendants whose
    command line holds a COMMAND until the parent goes or lets go, then end those and every process that
    carries TOKEN. A terminal's Ctrl-C is the parent's to handle."""
    import select

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    token, parent, commands = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    seen: dict[int, str] = {}
    while not select.select([sys.stdin], [], [], WATCH_SECONDS)[0] or sys.stdin.buffer.read1(4096):
        seen.update(descendants(parent, commands))
    deadline = time.monotonic() + REAP_SECONDS
    while time.monotonic() < deadline:  # again until none is left: a dying raylet may start a new agent
        left = {pid: started for pid, started in seen.items() if _started(pid) == started}
        left.update((pid, _started(pid)) for pid in _pids_carrying(TOKEN_VARIABLE, token))
        left = {pid: started for pid, started in left.items() if started and pid not in (os.getpid(), parent)}
        if not left:
            return
        _signal(left, signal.SIGTERM)
        end_processes(left, REAP_GRACE_SECONDS)


def _stats() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, start time) of every process, from /proc (none elsewhere)."""
    found = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            found[int(entry)] = (int(fields[1]), fields[0], fields[19])
    return found


def descendants(root: int, commands: list[str]) -> dict[int, str]:
    """pid -> start time of the processes below `root` whose command line holds one of `commands`."""
    stats, children = _stats(), {}
    for pid, (parent, _, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    below, found = list(children.get(root, [])), {}
    while below:
        pid = below.pop()
        below += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(marker in command for marker in commands):
            found[pid] = stats[pid][2]
    return found


def _started(pid: int) -> str | None:
    """The start time of a running `pid` (a pid given to a new process has another one); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if fields[0] != "Z" else None


def _pids_carrying(name: str, value: str) -> list[int]:
    """Processes whose environment, as they were started, holds name=value (Linux's /proc; none elsewhere)."""
    wanted = f"{name}={value}".encode()
    found = []
    for pid in _stats():
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                if wanted in handle.read().split(b"\0"):
                    found.append(pid)
        except OSError:
            continue
    return found


def _signal(processes: dict[int, str], how: int) -> None:
    for pid in processes:
        try:
            os.kill(pid, how)
        except OSError:  # ended meanwhile
            pass


def end_processes(processes: dict[int, str], grace: float) -> None:
    """`processes` (pid -> start time) given `grace` seconds to end, then killed, and waited for (as long
    again, at most). A pid whose start time changed is another process now, and is left alone."""
    alive = _running_after(processes, grace)
    _signal(alive, signal.SIGKILL)
    _running_after(alive, grace)


def _running_after(processes: dict[int, str], seconds: float) -> dict[int, str]:
    deadline = time.monotonic() + seconds
    alive = {pid: started for pid, started in processes.items() if _started(pid) == started}
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = {pid: started for pid, started in alive.items() if _started(pid) == started}
    return alive
